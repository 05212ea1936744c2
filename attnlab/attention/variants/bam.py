"""bam: a soft mixture of attention experts (BAM's attention experts, soft-routed).

Zhang et al., 2024, "BAM! Just Like That: Simple and Efficient Parameter Upcycling for
Mixture of Experts" (arXiv:2408.08274), Sec. 3: E attention experts, each with its own
query and output projections and (default) its own key/value projections, or, with
`shared_kv`, keys and values shared by every expert (the paper's KV-sharing variant);
a per-token router mixes all experts with softmax weights (the paper's soft routing):

  y_i = sum_e g_e(x_i) O_e Attn(q^e_i, K^e, V^e),   g(x_i) = softmax(x_i W_router) over e.

All E * H expert heads run in one softmax op call (head order (h, e); with shared K/V the
op's GQA grouping maps expert heads (h, *) to kv head h, so K/V are never repeated), and
the E output projections are one projection over the E * H heads of the gated outputs.
Departure: BAM initialises the experts from separately trained dense seed models
(upcycling); here they are initialised independently, as any layer (upcycling is a
training-recipe choice outside the layer). With E = 1 the router is the constant 1 and
the layer is mha; with shared K/V and identical experts it is mha too (the reductions the
tests check). Cost: E times mha's (T^2 compute, T memory).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.ops.softmax.reference import softmax_attention_reference
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionModule
from attnlab.attention.variants.common import rope_and_cache
from attnlab.attention.variants.softmax_base import SoftmaxConfig


@dataclasses.dataclass(frozen=True)
class BAMConfig(SoftmaxConfig):
  """num_experts: E attention experts; shared_kv: one key/value projection shared by the
  experts (else one per expert). num_kv_heads is not taken."""
  num_experts: int = 4
  shared_kv: bool = False

  POSITIVE_SIZES = SoftmaxConfig.POSITIVE_SIZES + ("num_experts",)

  def __post_init__(self):
    super().__post_init__()
    if self.num_kv_heads not in (0, self.num_heads):
      raise ValueError("bam: num_kv_heads is not supported (shared_kv shares K/V across experts)")


@register("bam", family="heads", config=BAMConfig, patterns=("causal-self", "noncausal-self", "decode"),
          paper="Zhang et al., 2024 (BAM, soft attention experts)", cost=("T^2", "T"))
class BAMAttention(AttentionModule):
  """Soft mixture of E attention experts (see the module docstring). Parameters: query
  [d, H * E, D] (heads (h, e)), key/value [d, H * E, D] or [d, H, D] with shared_kv,
  router [d, E, 1], out [H * E, D, d] (the E output projections)."""

  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    b, t, d_model = x.shape
    h, e = cfg.num_heads, cfg.num_experts
    hd = self.head_dim_for(d_model)
    hkv = h if cfg.shared_kv else h * e
    q = self.project_heads(x, h * e, hd, "query")
    k, v = (self.project_heads(x, hkv, hd, n, "kv_heads") for n in ("key", "value"))
    gate = jax.nn.softmax(self.project_heads(x, e, 1, "router")[..., 0].astype(jnp.float32), axis=-1)  # [B, T, E]
    q, k, v, q_offset = rope_and_cache(self, q, k, v, positions=positions, context=None, decode=decode)
    mask = M.combine(M.Causal() if cfg.causal else None, mask)
    if self.capturing() and not decode:
      y = self.attend_captured(softmax_attention_reference(q, k, v, mask=mask, return_weights=True)[1], v)
    else:
      y = softmax_attention(q, k, v, mask=mask, q_offset=q_offset, impl=cfg.impl)  # [B, T, H * E, D]
    y = y.reshape(b, t, h, e, hd) * gate[:, :, None, :, None].astype(y.dtype)
    return self.project_out(y.reshape(b, t, h * e, hd), d_model)


__all__ = ["BAMAttention", "BAMConfig"]
