"""Attention rollout and attention flow (Abnar & Zuidema, 2020, "Quantifying Attention
Flow in Transformers", Sec. 3).

Both treat the stack as a layered graph whose layer-l edges are the head-averaged
attention with the residual connection added, A'_l = rownorm(mean_h A_l + I), where
rownorm divides each row by its sum (A'_l[i, j]: how much output token i of layer l
takes from input token j).
* rollout: R = A'_L ... A'_2 A'_1 ([T, T]; R[i, j] = input token j's share in output i).
* flow: the max-flow from input node j (layer 0) to output node i (layer L) with the
  A'_l entries as edge capacities, each output row then normalised to sum 1, as in the
  paper's code (`compute_flows`); exponential in nothing but slow (one max-flow per
  pair), so for short sequences only.
Weights must be non-negative (softmax, sparse, normalised linear); signed weights
(cog, diff, retention) have no flow or rollout interpretation: callers refuse them
(`capture.refusal(kinds=("probability", "nonnegative"))`).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

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


def flow(weights, *, max_length: int = MAX_FLOW_LENGTH, rows=None) -> np.ndarray:
  """Attention flow: weights [L] of [H, T, T] (one input) -> [T, T], row i the max-flow
  from every input token to output token i, normalised to sum 1 (networkx, Edmonds-Karp).
  `rows`: only these output rows are solved (the others stay 0).

  T > max_length raises ValueError (T^2 max-flow problems on an L*T-node graph)."""
  mats = residual_attention(weights)
  n_layers, t, _ = mats.shape
  if t > max_length:
    raise ValueError(f"attention flow runs T^2 max-flow problems; T={t} exceeds max_length={max_length}")
  graph = nx.DiGraph()
  for layer, a in enumerate(mats):
    rows, cols = np.nonzero(a > 0)
    graph.add_edges_from(((layer, int(j)), (layer + 1, int(i)), {"capacity": float(a[i, j])})
                         for i, j in zip(rows, cols))
  out = np.zeros((t, t))
  for i in (range(t) if rows is None else rows):
    sink = (n_layers, i)
    for j in range(t):
      if graph.has_node((0, j)) and nx.has_path(graph, (0, j), sink):
        out[i, j] = nx.maximum_flow_value(graph, (0, j), sink,
                                          flow_func=nx.algorithms.flow.edmonds_karp)
  total = out.sum(axis=-1, keepdims=True)
  return out / np.where(total > 0, total, 1.0)


__all__ = ["MAX_FLOW_LENGTH", "flow", "residual_attention", "rollout"]
