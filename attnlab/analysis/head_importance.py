"""Head importance, single-head ablation and pruning curves (Michel, Levy & Neubig, 2019,
"Are Sixteen Heads Really Better than One?", Secs. 3-4).

Every head's output is multiplied by a gate xi_h (all ones; the "head_gates" hook,
`capture.unit_head_gates`). Importance I_h = E_x |d L(x) / d xi_h| (Eq. 2), normalised by
its l2 norm within each layer as in the paper (Sec. 4.1). Ablation sets one xi_h = 0;
pruning sets the k least important heads' gates to 0, for k over a grid, in importance
order or in random orders.

`loss_fn(gates) -> scalar` and `metric_fn(gates) -> scalar` are jitted closures over the
model, variables and inputs (`analyze_cli` builds them); gates are float [L, H].
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np


def importance(loss_grad: Callable, num_layers: int, num_heads: int, *, normalize: bool = True) -> np.ndarray:
  """|d L / d xi| at xi = 1 -> [L, H]; `loss_grad(gates [L, H]) -> d L / d gates [L, H]`
  (already averaged over the inputs). With `normalize`, each layer's row has unit l2 norm."""
  g = np.abs(np.asarray(loss_grad(np.ones((num_layers, num_heads), np.float32)), np.float64))
  if normalize:
    g = g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-30)
  return g


def ablation(metric_fn: Callable, num_layers: int, num_heads: int) -> np.ndarray:
  """metric with head (l, h) removed -> [L, H] (one forward per head)."""
  out = np.zeros((num_layers, num_heads))
  for layer in range(num_layers):
    for head in range(num_heads):
      gates = np.ones((num_layers, num_heads), np.float32)
      gates[layer, head] = 0.0
      out[layer, head] = float(metric_fn(gates))
  return out


def pruning_curve(metric_fn: Callable, order, fractions, shape) -> np.ndarray:
  """metric after removing the first round(f * N) heads of `order` (flat indices into
  `shape` = (L, H), N = L * H) for each f in `fractions` -> [len(fractions)]."""
  order = np.asarray(order)
  out = []
  for f in fractions:
    k = int(round(float(f) * order.size))
    gates = np.ones(order.size, np.float32)
    gates[order[:k]] = 0.0
    out.append(float(metric_fn(gates.reshape(shape))))
  return np.array(out)


def pruning_curves(metric_fn: Callable, scores: np.ndarray, fractions, *, seeds: int = 3) -> dict[str, np.ndarray]:
  """{"importance": curve removing the least important heads first (by `scores` [L, H]),
  "random": the mean curve over `seeds` random orders, "random_std"}."""
  fractions, shape = np.asarray(fractions, np.float64), np.shape(scores)
  imp = pruning_curve(metric_fn, np.argsort(np.asarray(scores).ravel(), kind="stable"), fractions, shape)
  rng = np.random.default_rng(0)
  rand = np.stack([pruning_curve(metric_fn, rng.permutation(np.size(scores)), fractions, shape)
                   for _ in range(seeds)])
  return {"fractions": fractions, "importance": imp, "random": rand.mean(0), "random_std": rand.std(0)}


def jit_gate_fns(forward: Callable, loss: Callable, metric: Callable, gate_tree: Callable):
  """(loss_grad, metric_fn) jitted once: `forward(gates_tree) -> outputs`, `loss(outputs)`,
  `metric(outputs)` scalars; `gate_tree(gates [L, H]) -> the "head_gates" collection`."""
  def loss_of(g):
    return loss(forward(gate_tree(g)))

  grad = jax.jit(jax.grad(loss_of))
  met = jax.jit(lambda g: metric(forward(gate_tree(g))))
  return grad, met


__all__ = ["ablation", "importance", "jit_gate_fns", "pruning_curve", "pruning_curves"]
