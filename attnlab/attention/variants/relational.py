"""relational: Dual Attention, sensory (standard) heads beside relational heads.

Altabaa, Webb, Cohen & Lafferty, 2024, "Disentangling and Integrating Relational and
Sensory Information in Transformer Architectures" (arXiv:2405.16727), Algorithm 1 (relational
attention) inside dual attention (sensory heads and relational heads, concatenated,
one output projection). A relational head h of query i outputs

  a_i^h = sum_j alpha_ij^h (r_ij W_r^h + s_j W_s^h),   alpha^h = softmax_j(q_i^h . k_j^h / sqrt(D))
  r_ij  = (<phi_l(x_i), psi_l(x_j)> / sqrt(d_k))_{l = 1..d_r}   (shared by the relational heads)

with s_j the positional symbol of position j (a learned vector per position, the paper's
positional symbol retriever). The sum is never materialised as [T, T, d_r]: r is bilinear,
so sum_j alpha_ij r_ij^l = <phi_l(x_i), sum_j alpha_ij psi_l(x_j)> / sqrt(d_k), i.e. the
relational heads attend over the values [psi(x_j) (d_r * d_k), s_j W_s^h (D)] with the
ordinary softmax op. All heads share one op call: a sensory head's values are v_j padded
with zeros to that width (wasted work of d_r * d_k / D per sensory head; none with no
relational head, where the layer is exactly mha, the reduction the tests check).

RoPE (positional="rope") rotates every head's attention q, k; the relations are
content-content (no RoPE), as in the paper, where order enters through the symbols.
Symbol positions past max_len are clipped to the last symbol (decode of long sequences).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops.softmax import softmax_attention
from attnlab.attention.ops.softmax.reference import softmax_attention_reference
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionModule
from attnlab.attention.variants.common import rope_and_cache
from attnlab.attention.variants.softmax_base import SoftmaxConfig


@dataclasses.dataclass(frozen=True)
class RelationalConfig(SoftmaxConfig):
  """num_relational: relational heads among num_heads (0 = mha, num_heads = all
  relational); num_relations: d_r; relation_dim: d_k of each relation's projections
  (0 = head_dim); max_len: positional symbols learned (positions beyond are clipped).
  num_kv_heads is not taken (every head has its own keys)."""
  num_relational: int = 2
  num_relations: int = 8
  relation_dim: int = 0
  max_len: int = 2048

  POSITIVE_SIZES = SoftmaxConfig.POSITIVE_SIZES + ("num_relations", "max_len")

  def __post_init__(self):
    super().__post_init__()
    if not 0 <= self.num_relational <= self.num_heads:
      raise ValueError(f"relational: num_relational must be in [0, num_heads={self.num_heads}], "
                       f"got {self.num_relational!r}")
    if self.num_kv_heads not in (0, self.num_heads):
      raise ValueError("relational: num_kv_heads is not supported (every head has its own keys)")
    if self.relation_dim < 0:
      raise ValueError(f"relational: relation_dim must be >= 0, got {self.relation_dim!r}")


@register("relational", family="heads", config=RelationalConfig, patterns=("causal-self", "noncausal-self", "decode"),
          paper="Altabaa et al., 2024 (Dual Attention Transformer)", cost=("T^2", "T"))
class RelationalAttention(AttentionModule):
  """Dual attention (see the module docstring). Parameters: query/key [d, H, D] for every
  head's scores; value [d, H_s, D] (sensory heads); with H_r > 0 relational heads also
  rel_query/rel_key [d, d_r, d_k] (phi, psi), symbols [max_len, d], symbol [d, H_r, D]
  (W_s) and rel_out [H_r, d_r, D] (W_r); out [H, D, d]."""

  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    b, t, d_model = x.shape
    h, hr = cfg.num_heads, cfg.num_relational
    hs, hd = h - hr, self.head_dim_for(d_model)
    dr, dk = cfg.num_relations, cfg.relation_dim or hd
    q, k = self.project_heads(x, h, hd, "query"), self.project_heads(x, h, hd, "key")
    parts = []
    if hs:
      v = self.project_heads(x, hs, hd, "value")
      parts.append(jnp.pad(v, ((0, 0), (0, 0), (0, 0), (0, dr * dk if hr else 0))))
    if hr:
      phi = self.project_heads(x, dr, dk, "rel_query")  # [B, T, d_r, d_k]
      psi = self.project_heads(x, dr, dk, "rel_key")
      pos = self.default_positions(b, t, self.cache_offset(decode)) if positions is None else positions
      table = self.param("symbols", nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed")),
                         (cfg.max_len, d_model), jnp.float32)
      sym = self.project_heads(jnp.take(table, pos, axis=0, mode="clip"), hr, hd, "symbol")  # s_j W_s^h
      rel_v = jnp.broadcast_to(psi.reshape(b, t, 1, dr * dk), (b, t, hr, dr * dk))
      parts.append(jnp.concatenate([sym, rel_v.astype(sym.dtype)], axis=-1))
    vals = jnp.concatenate(parts, axis=2)  # [B, T, H, D + d_r d_k (if H_r)]
    q, k, vals, q_offset = rope_and_cache(self, q, k, vals, positions=positions, context=None, decode=decode)
    mask = M.combine(M.Causal() if cfg.causal else None, mask)
    if self.capturing() and not decode:
      w = softmax_attention_reference(q, k, vals, mask=mask, return_weights=True)[1]
      y = self.attend_captured(w, vals)
    else:
      y = softmax_attention(q, k, vals, mask=mask, q_offset=q_offset, impl=cfg.impl)
    heads = [y[:, :, :hs, :hd]] if hs else []
    if hr:
      yr = y[:, :, hs:]
      pooled = yr[..., hd:].reshape(b, t, hr, dr, dk)  # sum_j alpha_ij psi_l(x_j)
      rel = jnp.einsum("btld,bthld->bthl", phi, pooled) / jnp.sqrt(float(dk))  # sum_j alpha_ij r_ij
      init = nn.with_logical_partitioning(nn.initializers.normal(dr ** -0.5), ("heads", None, "head_dim"))
      w_r = self.param("rel_out", init, (hr, dr, hd), jnp.float32)
      heads.append(yr[..., :hd] + jnp.einsum("bthl,hld->bthd", rel, w_r).astype(yr.dtype))
    return self.project_out(jnp.concatenate(heads, axis=2), d_model)


__all__ = ["RelationalAttention", "RelationalConfig"]
