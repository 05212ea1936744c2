"""kNN attention with a mean context key (family "routed"): Wang et al., 2022, "KVT:
k-NN Attention for Boosting Vision Transformers" (ECCV), plus issue 18's mean context key.

Each query softmaxes over its top_k best allowed keys (the `topk` variant's selection,
`ops.sparse.block_select.topk_select`) plus one extra key/value, the mean of the keys and
values it may see (`ops.sparse.knn`). Cost as `topk`: O(T^2) compute, O(T) memory.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops.sparse import knn as KNN
from attnlab.attention.registry import register
from attnlab.attention.variants.common import attend_or_capture
from attnlab.attention.variants.routed import TopkConfig, _CachedQKV


@dataclasses.dataclass(frozen=True)
class KnnConfig(TopkConfig):
  """top_k: keys kept per query (besides the mean context key); block_k, positional,
  rope_base as `topk`."""


@register("knn", family="routed", config=KnnConfig, cost=("T^2", "T"),
          patterns=("causal-self", "noncausal-self", "decode"),
          paper="Wang et al., 2022 (KVT: k-NN Attention); mean context key: attnlab issue 18")
class KnnAttention(_CachedQKV):
  """kNN attention with a mean context key (`ops.sparse.knn.knn_mean_attention`): each
  query softmaxes over its top_k best allowed keys (the `topk` variant's selection) plus
  one extra key/value, the mean of the keys/values it may see. Departure from KVT (Wang
  et al., 2022): KVT keeps only the top-k; the mean context key is issue 18's addition (a
  summary of the unselected keys). Masks: None or `masks.KeyPadding` (the mean is over
  valid keys); any other mask raises. Compute O(T^2) as `topk`, memory O(T).

  Analysis hook: the output is linear in the values (the mean value is too), so the sown
  matrix is read off the op with the identity as values (`ops.implied`; the op has no
  separate reference): the top-k softmax weights plus the mean key's weight spread evenly
  over the keys the query sees. Rows sum to 1 ("probability")."""

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    self.check_pattern(context, decode)
    cfg = self.cfg
    if mask is not None and not isinstance(mask, M.KeyPadding):
      raise ValueError(f"variant 'knn' supports only mask=None or masks.KeyPadding, got {type(mask).__name__}")
    q, k, v, q_offset = self.qkv(x, context, positions, decode)
    valid = None
    if mask is not None:
      valid = jnp.broadcast_to(jnp.asarray(mask.kv_valid, bool), (k.shape[0], k.shape[1]))
    y = attend_or_capture(self, lambda vv, impl: KNN.knn_mean_attention(
        q, k, vv, top_k=cfg.top_k, causal=cfg.causal, key_valid=valid, q_offset=q_offset,
        block_k=cfg.block_k), v, decode=decode)
    return self.project_out(y, x.shape[-1])
