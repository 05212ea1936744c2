"""Per-head statistics of attention weights, and massive activations.

From weights [L] of [B, H, T, T] (non-negative; each row is renormalised to sum 1 over
its keys, so sigmoid / sink-softmax rows are comparable), averaged over the batch and the
query positions with any mass:
* entropy (nats) of each row, - sum_j w_ij log w_ij;
* mean attention distance sum_j w_ij |i - j| (in positions);
* previous-token share w_{i, i-1} (rows i >= 1);
* first-token (sink) share w_{i, 0} (rows i >= 1; Xiao et al., 2024, "Efficient Streaming
  Language Models with Attention Sinks").
Massive activations (Sun et al., 2024, "Massive Activations in Large Language Models"):
per layer, the largest |hidden| against the median |hidden|, and where it sits.
"""

from __future__ import annotations

import numpy as np


def _rows(w):
  w = np.abs(np.asarray(w, np.float64))
  s = w.sum(axis=-1, keepdims=True)
  valid = s[..., 0] > 0
  return np.where(s > 0, w / np.where(s > 0, s, 1.0), 0.0), valid


def head_statistics(weights) -> dict[str, np.ndarray]:
  """{"entropy", "distance", "previous_token", "first_token"}: each [L, H]."""
  out = {k: [] for k in ("entropy", "distance", "previous_token", "first_token")}
  for w in weights:
    p, valid = _rows(w)  # [B, H, T, T], [B, H, T]
    t = p.shape[-1]
    idx = np.arange(t)
    with np.errstate(divide="ignore", invalid="ignore"):
      ent = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    dist = (p * np.abs(idx[:, None] - idx[None, :])).sum(-1)
    later = valid & (idx >= 1)
    mean = lambda x, m: (x * m).sum(axis=(0, 2)) / np.maximum(m.sum(axis=(0, 2)), 1)  # noqa: E731
    out["entropy"].append(mean(ent, valid))
    out["distance"].append(mean(dist, valid))
    prev = np.concatenate([np.zeros(p.shape[:-2] + (1,)), p[..., idx[1:], idx[:-1]]], axis=-1)
    out["previous_token"].append(mean(prev, later))
    out["first_token"].append(mean(p[..., :, 0], later))
  return {k: np.stack(v) for k, v in out.items()}


def massive_activations(hidden) -> dict[str, np.ndarray]:
  """hidden [L] of [B, T, d] -> {"max" [L], "median" [L], "ratio" [L], "position" [L]
  (the token position of the largest |hidden|, first input)}."""
  mx, med, pos = [], [], []
  for h in hidden:
    a = np.abs(np.asarray(h, np.float64))
    mx.append(a.max())
    med.append(np.median(a))
    pos.append(int(np.unravel_index(np.argmax(a[0]), a[0].shape)[0]))
  mx, med = np.array(mx), np.array(med)
  return {"max": mx, "median": med, "ratio": mx / np.maximum(med, 1e-30), "position": np.array(pos)}


def top_token_mass(weights, k: int = 1) -> np.ndarray:
  """[L, H]: the attention mass each head puts on the k keys that receive the most attention
  (summed over queries), averaged over queries and the batch."""
  out = []
  for w in weights:
    p, valid = _rows(w)
    received = p.sum(axis=-2)  # [B, H, T]
    top = np.argsort(-received, axis=-1)[..., :k]  # [B, H, k]
    mass = np.take_along_axis(p, top[..., None, :], axis=-1).sum(-1)  # [B, H, T]
    out.append((mass * valid).sum(axis=(0, 2)) / np.maximum(valid.sum(axis=(0, 2)), 1))
  return np.stack(out)


__all__ = ["head_statistics", "massive_activations", "top_token_mass"]
