"""In-context linear regression prompts (Garg et al., 2022, "What can transformers learn
in-context?"; the one-layer setting of He et al., 2025, "In-context linear regression
demystified: training dynamics and mechanistic interpretability of multi-head softmax
attention").

A prompt draws a fresh task w ~ N(0, I_d), n in-context inputs x_1..x_n and a query x_q,
all ~ N(0, I_d), and y = w . x (noise-free unless `noise` > 0).

Encoding: one token per example, (x_i, y_i) concatenated (d + 1 features), and the query
as (x_q, 0): its y is zeroed. This is the encoding of the one-layer analyses (He et al.,
2025; von Oswald et al., 2023; Zhang, Frei & Bartlett, 2024). Garg et al. instead give x_i
and y_i separate tokens, which a single attention layer cannot use: the product y_i x_i
that every in-context estimator needs (one step of gradient descent is
sum_i y_i x_i . x_q) pairs a key from one token with a value from another, and one layer
has no step that first moves y_i next to x_i.

Every prompt has `slots` context positions (the longest prompt evaluated) and the query
last: token `slots`. Positions n..slots-1 are padding (zeros, `valid` False), so prompts of
every length share one shape and a model masks the padding keys. The model's prediction
is read at the query token.
"""

from __future__ import annotations

import numpy as np

from attnlab.data.seeding import example_rng


def check_prompt_args(*, dim: int, slots: int, min_examples: int, max_examples: int,
                      noise: float = 0.0) -> None:
  """One-line ValueError unless 1 <= dim, 0 <= min_examples <= max_examples <= slots, noise >= 0."""
  if dim < 1:
    raise ValueError(f"icl_regression: dim must be >= 1, got {dim}")
  if not 0 <= min_examples <= max_examples <= slots:
    raise ValueError(f"icl_regression: need 0 <= min_examples ({min_examples}) <= max_examples "
                     f"({max_examples}) <= slots ({slots})")
  if noise < 0:
    raise ValueError(f"icl_regression: noise must be >= 0, got {noise}")


def prompt(seed: int, index: int, *, dim: int, slots: int, min_examples: int,
           max_examples: int, noise: float = 0.0) -> dict[str, np.ndarray]:
  """Prompt `index` of stream `seed`: n ~ U{min_examples..max_examples} in-context pairs and a query.

  Returns {"inputs": {"tokens" float32 [slots + 1, dim + 1], "valid" bool [slots + 1]},
  "targets" float32 [] (y_q = w . x_q, noise included), "weights" float32 [] (1),
  "num_examples" int32 [] (n)}. tokens[i] = (x_i, y_i) for i < n, zeros for the padding
  n <= i < slots, tokens[slots] = (x_q, 0); valid is True at i < n and at the query.
  Deterministic in (seed, index) (`attnlab.data.seeding.example_rng`).
  """
  rng = example_rng(seed, index)
  n = int(rng.integers(min_examples, max_examples + 1))
  w = rng.standard_normal(dim)
  x = rng.standard_normal((n + 1, dim))
  y = x @ w + noise * rng.standard_normal(n + 1)
  tokens = np.zeros((slots + 1, dim + 1), np.float32)
  tokens[:n, :dim], tokens[:n, dim] = x[:n], y[:n]
  tokens[slots, :dim] = x[n]  # the query; its y column stays 0
  valid = np.zeros(slots + 1, bool)
  valid[:n] = valid[slots] = True
  return {"inputs": {"tokens": tokens, "valid": valid}, "targets": np.float32(y[n]),
          "weights": np.float32(1.0), "num_examples": np.int32(n)}


def split_prompt(tokens: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """One prompt's (X [n, d], y [n], x_q [d]) from tokens [slots + 1, d + 1] and valid [slots + 1]."""
  context = valid[:-1]
  return tokens[:-1][context, :-1], tokens[:-1][context, -1], tokens[-1, :-1]


def ridge_weights(tokens: np.ndarray, valid: np.ndarray, ridge: float = 0.0) -> np.ndarray:
  """Least-squares / ridge fits of each prompt's context: float64 [B, d] from tokens
  [B, slots + 1, d + 1] and valid [B, slots + 1] (the layout of `prompt`).

  ridge = 0: the minimum-norm least-squares fit w_hat = pinv(X) y (exactly w when n >= d
  on noise-free prompts; 0 for n = 0); ridge > 0: w_hat = (X^T X + ridge I)^-1 X^T y.
  """
  out = np.zeros((tokens.shape[0], tokens.shape[-1] - 1))
  for b in range(tokens.shape[0]):
    x, y, _ = (np.asarray(a, np.float64) for a in split_prompt(tokens[b], valid[b]))
    if x.shape[0] == 0:
      continue
    if ridge > 0:
      out[b] = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    else:
      out[b] = np.linalg.pinv(x) @ y
  return out


def ridge_prediction(tokens: np.ndarray, valid: np.ndarray, ridge: float = 0.0) -> np.ndarray:
  """The least-squares / ridge baseline's prediction w_hat . x_q of each query: float64 [B]
  (shapes and fit as `ridge_weights`)."""
  return np.einsum("bd,bd->b", ridge_weights(tokens, valid, ridge),
                   np.asarray(tokens[:, -1, :-1], np.float64))
