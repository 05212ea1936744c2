"""higher_order: 2-simplicial (trilinear) attention over pairs of keys, for short sequences.

Clift et al., 2019, "Logic and the 2-Simplicial Transformer", and Roy et al., 2025, "Fast
and Simplex: 2-Simplicial Attention in Triton", Eq. (3)-(5): logits
a_ijk = sum_d q_id k_jd k'_kd / sqrt(D), softmax over the allowed key pairs (j, k)
(causal: j, k <= i), output sum_jk a_ijk (v_j ⊙ v'_k) (ops/softmax/simplicial.py).

Departures: every pair is scored (Roy et al. restrict k to a sliding window w2 and j to
w1 for speed; here the full O(T^3) definition, so use it on short sequences), and there
is no positional encoding (RoPE is a bilinear encoding; the trilinear form is not
rotation-invariant under it, Roy et al. Sec. 4): order enters only through the causal
structure. Masks: None or key padding (`masks.KeyPadding`). Cost: T^3 compute, T^2
memory (one [q_chunk, T, T] logit block per head at a time).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from attnlab.attention.ops.softmax.simplicial import two_simplicial_attention
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule
from attnlab.attention.variants.common import check_no_positions, key_valid_from_mask


@dataclasses.dataclass(frozen=True)
class HigherOrderConfig(AttentionConfig):
  """q_chunk: queries per block of the op (memory knob, no effect on the result)."""
  q_chunk: int = 16

  POSITIVE_SIZES = AttentionConfig.POSITIVE_SIZES + ("q_chunk",)


@register("higher_order", family="softmax_like", config=HigherOrderConfig,
          patterns=("causal-self", "noncausal-self", "decode"),
          paper="Clift et al., 2019; Roy et al., 2025 (2-simplicial attention)", cost=("T^3", "T^2"))
class HigherOrderAttention(AttentionModule):
  """2-simplicial attention (see the module docstring). Parameters: query, key, key2,
  value, value2 [d, H, D] and out [H, D, d]. Decode caches [k | k'] and [v | v'] in the
  standard KV cache (concatenated along the feature axis)."""

  weights_unavailable = "its weights are over key pairs (a [Tq, Tk, Tk] tensor), not a [Tq, Tk] matrix"

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    check_no_positions(self.variant, positions)
    if decode and not cfg.causal:
      raise ValueError(f"{self.variant}: decode needs causal=True")
    b, t, d_model = x.shape
    hd = self.head_dim_for(d_model)
    q, k1, k2, v1, v2 = (self.project_heads(x, cfg.num_heads, hd, n)
                         for n in ("query", "key", "key2", "value", "value2"))
    q_offset = 0
    if decode:
      k, v, q_offset = self.kv_cache(jnp.concatenate([k1, k2], -1), jnp.concatenate([v1, v2], -1))
      k1, k2, v1, v2 = k[..., :hd], k[..., hd:], v[..., :hd], v[..., hd:]
    valid = key_valid_from_mask(self.variant, mask, b, k1.shape[1])
    y = two_simplicial_attention(q, k1, k2, v1, v2, key_valid=valid, causal=cfg.causal, q_offset=q_offset,
                                 q_chunk=cfg.q_chunk)
    return self.project_out(y.astype(self.compute_dtype), d_model)


__all__ = ["HigherOrderAttention", "HigherOrderConfig"]
