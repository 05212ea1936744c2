"""DaViT channel group attention: `channel` (Ding et al., 2022, "DaViT: Dual Attention Vision
Transformers").

Tokens and channels swap roles: the channels are split into num_heads groups of C_g =
head_dim channels, and inside each group every channel attends to the group's channels,
with the T tokens as the feature dimension. With q, k, v [B, T, heads, C_g] (one linear
projection each), per example and head, as in DaViT's released ChannelAttention:

    A = softmax_j( sum_t k[t, i] v[t, j] * C_g^-0.5 )     [C_g, C_g]
    y[t, i] = sum_j A[i, j] q[t, j]                        [T, C_g]

(the paper writes softmax(Q^T K / sqrt(C_g)) V^T; the code, followed here, scores with
k^T v and applies the weights to q: the same form with the three projections renamed).
The attention is global (every token enters every channel's score) at a cost linear in
T: compute O(T * d_model * C_g), memory O(T * d_model + heads * C_g^2); no [T, T]
array. It has no notion of the token grid, so it runs on any sequence (2-D or not).
DaViT alternates it with window attention per block; here it is one variant (mix it with
`window` through config.model.layers). Non-causal self-attention only: every output
mixes all tokens.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig
from attnlab.attention.variants.grid import GridAttentionModule


@dataclasses.dataclass(frozen=True)
class ChannelConfig(AttentionConfig):
  """num_heads: channel groups (head_dim = channels per group, default d_model // num_heads)."""


@register("channel", family="channel", config=ChannelConfig, cost=("T", "T"),
          patterns=("noncausal-self",), paper="Ding et al., 2022 (DaViT, channel group attention)")
class ChannelAttention(GridAttentionModule):  # its check_call; it uses no grid
  """Channel group attention: channels attend to channels within each group (see the module docstring)."""
  weights_unavailable = ("DaViT channel attention weights channels, not tokens: a [C_g, C_g] matrix per head "
                         "applied to each token's own q, so there is no token x token matrix")

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_call(context, mask, decode)
    hd = self.head_dim_for(x.shape[-1])
    q, k, v = (self.project_heads(x, cfg.num_heads, hd, name).astype(jnp.float32) for name in ("query", "key", "value"))
    scores = jnp.einsum("bthi,bthj->bhij", k * hd ** -0.5, v)     # [B, heads, C_g, C_g]
    y = jnp.einsum("bhij,bthj->bthi", jax.nn.softmax(scores, axis=-1), q)
    return self.project_out(y.astype(self.compute_dtype), x.shape[-1])
