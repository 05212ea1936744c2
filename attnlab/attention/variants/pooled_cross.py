"""pooled_cross: pooled-query attention over unpooled keys and values, with DCAL's pair-wise
cross-attention regulariser as an option.

Queries are average-pooled over non-overlapping windows of `pool` tokens (the last window
may be partial) before the query projection, so T / pool queries attend to all S keys and
values of the context (cross-attention) or of x itself (self), which are not pooled; each
token then receives its window's output (nearest upsampling) before the output projection.
pool = 1 is plain (cross-)attention. Compute O(T S / pool): quadratic in T for self
attention, divided by the pool factor.

pair_distractor (Zhu et al., 2022, "Dual Cross-Attention Learning for Fine-Grained Visual
Categorization and Object Re-Identification", Sec. 3.3, pair-wise cross-attention, PWCA):
during training (deterministic=False) the keys and values of another batch element are
concatenated to each element's own, so the softmax spreads over both and the distractor
acts as a regulariser: softmax(Q_1 [K_1; K_2]^T / sqrt(d)) [V_1; V_2]. DCAL samples the
partner image at random; here element b is paired with element (b - 1) mod B (a fixed
roll, reproducible; with B = 1 an element is paired with itself, which changes nothing,
since a duplicated key set leaves the softmax unchanged). At inference (deterministic=True)
it is off, and the layer is its plain form. DCAL's other branch (GLCA, top-R queries by
attention rollout) is not part of this layer.

Non-causal only (a pooled query sees its whole window); positional = "none" only (a pooled
query has no single position to rotate).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.registry import register
from attnlab.attention.variants.common import attend_or_capture, key_valid_from_mask
from attnlab.attention.variants.softmax_base import SoftmaxAttention, SoftmaxConfig


@dataclasses.dataclass(frozen=True)
class PooledCrossConfig(SoftmaxConfig):
  """pool: tokens per pooled query (1 = plain attention); pair_distractor: DCAL's PWCA in
  training calls (another batch element's keys and values concatenated)."""
  pool: int = 4
  pair_distractor: bool = False
  POSITIVE_SIZES = SoftmaxConfig.POSITIVE_SIZES + ("pool",)


def pool_queries(x, pool: int):
  """x [B, T, d] -> [B, ceil(T / pool), d]: the mean of each window of `pool` tokens (the last
  window averages the tokens it has)."""
  b, t, d = x.shape
  n = -(-t // pool)
  padded = jnp.pad(x, ((0, 0), (0, n * pool - t), (0, 0))).reshape(b, n, pool, d)
  counts = np.minimum(pool, t - pool * np.arange(n)).astype(np.float32)  # tokens per window
  return padded.sum(2) / counts[None, :, None]


@register("pooled_cross", family="softmax_like", config=PooledCrossConfig,
          patterns=("noncausal-self", "noncausal-cross"), causal=False, positional="none",
          paper="pooled-query cross-attention; Zhu et al., 2022 (DCAL, pair-wise cross-attention)",
          cost=("T^2/r", "T"))
class PooledCrossAttention(SoftmaxAttention):
  """T / pool pooled queries over unpooled keys/values, optional PWCA (see the module docstring)."""

  # The analysis hook sows the [T, Tk] matrix the layer applies to v: each token's row is its
  # window's pooled query's softmax row (nearest upsampling), so rows still sum to 1.
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    """x [B, T, d_model] (context [B, S, d_model]) -> [B, T, d_model]."""
    cfg = self.cfg
    self.check_pattern(context, decode)
    if cfg.positional != "none" or positions is not None:
      raise ValueError("pooled_cross: positional must be 'none' and positions None (pooled queries have no position)")
    b, t, d_model = x.shape
    hd, hkv = self.head_dim_for(d_model), self.num_kv_heads()
    src = x if context is None else context
    q = self.project_heads(pool_queries(x, cfg.pool), cfg.num_heads, hd, "query")
    k = self.project_heads(src, hkv, hd, "key", "kv_heads")
    v = self.project_heads(src, hkv, hd, "value", "kv_heads")
    valid = key_valid_from_mask(self.variant, mask, b, src.shape[1])
    if cfg.pair_distractor and not deterministic:  # PWCA: element b also sees element b - 1's keys
      k = jnp.concatenate([k, jnp.roll(k, 1, axis=0)], axis=1)
      v = jnp.concatenate([v, jnp.roll(v, 1, axis=0)], axis=1)
      if valid is not None:
        valid = jnp.concatenate([valid, jnp.roll(valid, 1, axis=0)], axis=1)
    kp = None if valid is None else M.KeyPadding(valid)

    def attend(values, impl):  # [B, ceil(T / pool), H, D] -> each token reads its window's output
      return jnp.repeat(softmax_attention(q, k, values, mask=kp, impl=impl), cfg.pool, axis=1)[:, :t]

    return self.project_out(attend_or_capture(self, attend, v, impl=cfg.impl), d_model)
