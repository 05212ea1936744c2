"""Attention rollout and attention flow (Abnar & Zuidema, 2020, "Quantifying Attention
Flow in Transformers", Sec. 3).

Both treat the stack as a layered graph whose layer-l edges are the head-averaged
attention with the residual connection added, A'_l = rownorm(mean_h A_l + I), where
rownorm divides each row by its sum (A'_l[i, j]: how much output token i of layer l
takes from input token j).
* rollout: R = A'_L ... A'_2 A'_1 ([T, T]; R[i, j] = input token j's share in output i).
* flow: the max-flow from input node j (layer 0) to output node i (layer L) with the
  A'_l entries as edge capacities, each output row then normalised to sum 1, as in the
  paper's code (`compute_flows`); one max-flow per pair, so for short sequences only.
Weights must be non-negative (softmax, sparse, normalised linear); signed weights
(cog, diff, retention) have no flow or rollout interpretation: callers refuse them
(`capture.refusal(kinds=("probability", "nonnegative"))`).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_flow

MAX_FLOW_LENGTH = 64


def residual_attention(weights) -> np.ndarray:
  """A'_l = rownorm(mean_h A_l + I) per layer: weights [L] of [H, T, T] -> [L, T, T] float64."""
  mats = []
  for w in weights:
    a = np.asarray(w, np.float64).mean(axis=0) + np.eye(np.shape(w)[-1])
    mats.append(a / a.sum(axis=-1, keepdims=True))
  return np.stack(mats)


def rollout(weights) -> np.ndarray:
  """Attention rollout R = A'_L ... A'_1: weights [L] of [H, T, T] (one input) -> [T, T].

  Rows sum to 1 (a product of row-stochastic matrices)."""
  mats = residual_attention(weights)
  r = np.eye(mats.shape[-1])
  for a in mats:  # layer 1 first: R_l = A'_l R_{l-1}
    r = a @ r
  return r


def flow(weights, *, max_length: int = MAX_FLOW_LENGTH, rows=None, resolution: float = 1e-7) -> np.ndarray:
  """Attention flow: weights [L] of [H, T, T] (one input) -> [T, T], row i the max-flow
  from every input token to output token i, normalised to sum 1.
  `rows`: only these output rows are solved (the others stay 0).

  Solved by scipy's max-flow (`scipy.sparse.csgraph.maximum_flow`, Dinic) on capacities
  rounded to multiples of `resolution` (it takes integers; networkx's pure-Python solvers
  took minutes per row at T = 32, their augmenting paths many and tiny on float
  capacities). T > max_length raises ValueError (T^2 max-flow problems on an L*T-node graph)."""
  mats = residual_attention(weights)
  n_layers, t, _ = mats.shape
  if t > max_length:
    raise ValueError(f"attention flow runs T^2 max-flow problems; T={t} exceeds max_length={max_length}")
  n = (n_layers + 1) * t  # node (l, i) = l * t + i
  src, dst, cap = [], [], []
  for layer, a in enumerate(mats):
    i, j = np.nonzero(a > 0)  # edge (layer, j) -> (layer + 1, i) with capacity a[i, j]
    src.append(layer * t + j)
    dst.append((layer + 1) * t + i)
    cap.append(np.rint(a[i, j] / resolution).astype(np.int64))
  src, dst, cap = np.concatenate(src), np.concatenate(dst), np.concatenate(cap)
  keep = cap > 0
  graph = csr_matrix((cap[keep].astype(np.int32), (src[keep], dst[keep])), shape=(n, n))
  out = np.zeros((t, t))
  for i in (range(t) if rows is None else rows):
    sink = n_layers * t + i
    for j in range(t):
      out[i, j] = maximum_flow(graph, j, sink).flow_value * resolution
  total = out.sum(axis=-1, keepdims=True)
  return out / np.where(total > 0, total, 1.0)


__all__ = ["MAX_FLOW_LENGTH", "flow", "residual_attention", "rollout"]
