"""Pattern scores per head, TransformerLens's `detect_head` style: score = sum(A * P) / sum(A)
over the query rows where the pattern P has any entry.

Patterns from the input tokens (tokens int [T]; P bool [T, T], P[i, j]: query i should
attend key j):
* previous token: j = i - 1;
* duplicate token: j < i and tokens[j] == tokens[i];
* prefix matching / induction (Olsson et al., 2022, "In-context Learning and Induction
  Heads", Sec. 2): j < i, j >= 1 and tokens[j - 1] == tokens[i] -- the token after an
  earlier occurrence of the current one (on a repeated random sequence [r, r] of length
  2n, the query at n + k attends key k + 1).
Scores lie in [0, 1] for non-negative weights; 1 means all of those rows' mass is on P.
"""

from __future__ import annotations

import numpy as np


def previous_token_pattern(tokens) -> np.ndarray:
  """bool [T, T]: P[i, i - 1]."""
  t = len(tokens)
  return np.eye(t, k=-1, dtype=bool)


def duplicate_token_pattern(tokens) -> np.ndarray:
  """bool [T, T]: j < i and tokens[j] == tokens[i]."""
  tok = np.asarray(tokens)
  return (tok[:, None] == tok[None, :]) & np.tri(len(tok), k=-1, dtype=bool)


def prefix_matching_pattern(tokens) -> np.ndarray:
  """bool [T, T]: 1 <= j < i and tokens[j - 1] == tokens[i] (the induction target)."""
  tok = np.asarray(tokens)
  t = len(tok)
  p = np.zeros((t, t), bool)
  p[:, 1:] = tok[:, None] == tok[None, :-1]
  return p & np.tri(t, k=-1, dtype=bool)


PATTERNS = {"previous_token": previous_token_pattern, "duplicate_token": duplicate_token_pattern,
            "prefix_matching": prefix_matching_pattern}


def pattern_score(weights, pattern) -> np.ndarray:
  """weights [..., H, T, T], pattern bool [..., T, T] (broadcast over heads) -> [..., H]:
  sum over the pattern's rows of A * P, divided by those rows' total mass (NaN if P is empty)."""
  w = np.abs(np.asarray(weights, np.float64))
  p = np.asarray(pattern, bool)[..., None, :, :]
  rows = p.any(axis=-1, keepdims=True)
  on = (w * p).sum(axis=(-2, -1))
  total = (w * rows).sum(axis=(-2, -1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return on / total


def scores(weights, tokens, names=tuple(PATTERNS)) -> dict[str, np.ndarray]:
  """{pattern name: [L, H] score averaged over the batch}: weights [L] of [B, H, T, T],
  tokens int [B, T]."""
  out = {}
  for name in names:
    pats = np.stack([PATTERNS[name](row) for row in np.asarray(tokens)])  # [B, T, T]
    out[name] = np.stack([np.nanmean(pattern_score(w, pats), axis=0) for w in weights])
  return out


def last_query_scores(weights, tokens, name: str = "prefix_matching") -> np.ndarray:
  """[L, H] score of pattern `name` at the last query row only, averaged over the batch
  (inputs with no match there are left out): weights [L] of [B, H, T, T], tokens int [B, T].
  On the induction task that row is the one the task scores (the second TRIGGER)."""
  pats = np.stack([PATTERNS[name](row) for row in np.asarray(tokens)])
  last = np.zeros_like(pats)
  last[:, -1] = pats[:, -1]
  return np.stack([np.nanmean(pattern_score(np.asarray(w), last), axis=0) for w in weights])


__all__ = ["PATTERNS", "duplicate_token_pattern", "last_query_scores", "pattern_score",
           "prefix_matching_pattern", "previous_token_pattern", "scores"]
