"""The query-key joint embedding of each head (AttentionViz: Yeh et al., 2023, "AttentionViz:
A Global View of Transformer Attention", Sec. 4.1).

Queries and keys of one head are placed in one space: the keys are translated so their
centroid is the queries' (softmax is unchanged: q . (k + c) shifts a query's row by a
constant), then q is scaled by s and k by 1/s so their mean norms match (q . k unchanged),
and the joint set is projected on its first two principal components (scikit-learn's
PCA). Near points then attend to each other. For a linear variant the vectors are its
feature maps phi(q), phi(k) (what its implied matrix is built from).

The vectors are taken at the call of a softmax variant's `attention_weights(q, k, v, ...)`
or a linear variant's `run_linear(fq, fk, v, ...)` in an analysis call (intercepted with
`flax.linen.intercept_methods`; nothing in the variants changes). Shapes: q [B, T, H, D],
k [B, T, Hkv, D] per layer.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import numpy as np
from sklearn.decomposition import PCA

from attnlab.analysis.capture import _LAYER
from attnlab.attention.variants.base import ATTENTION

QK_METHODS = ("attention_weights", "run_linear")  # the calls whose first two arguments are (q, k)


def capture_qk(model, variables: Any, inputs: Any) -> list[tuple[Any, Any]]:
  """[(q [B, T, H, D], k [B, T, Hkv, D])] per layer, in layer order, from one analysis call
  (jit it). A layer whose variant has neither call contributes nothing."""
  found = {}

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name in QK_METHODS:
      layer = [int(m.group(1)) for p in context.module.path if (m := _LAYER.match(str(p)))]
      if layer:
        found[layer[-1]] = (args[0], args[1])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    model.apply(variables, inputs, deterministic=True, mutable=[ATTENTION])
  return [found[i] for i in sorted(found)]


def joint_embedding(q, k) -> tuple[np.ndarray, np.ndarray]:
  """One head's queries q [N, D] and keys k [M, D] -> their 2-D joint PCA coordinates
  ([N, 2], [M, 2]) after AttentionViz's key translation and norm matching."""
  q = np.asarray(q, np.float64)
  k = np.asarray(k, np.float64)
  k = k - k.mean(0) + q.mean(0)
  s = np.sqrt(np.linalg.norm(k, axis=-1).mean() / max(np.linalg.norm(q, axis=-1).mean(), 1e-12))
  joint = PCA(n_components=2).fit_transform(np.concatenate([q * s, k / s]))
  return joint[:len(q)], joint[len(q):]


def embeddings(qk: list[tuple[Any, Any]]) -> list[list[tuple[np.ndarray, np.ndarray]]]:
  """Per layer, per query head: `joint_embedding` of all B * T queries and keys of that head
  (a grouped key head serves each of its query heads)."""
  out = []
  for q, k in qk:
    q, k = np.asarray(q), np.asarray(k)
    h, hkv = q.shape[2], k.shape[2]
    out.append([joint_embedding(q[:, :, i].reshape(-1, q.shape[-1]),
                                k[:, :, i // (h // hkv)].reshape(-1, k.shape[-1])) for i in range(h)])
  return out


__all__ = ["QK_METHODS", "capture_qk", "embeddings", "joint_embedding"]
