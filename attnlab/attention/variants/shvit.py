"""Single-head attention on a fraction of the channels: `shvit` (Yun & Ro, 2024, "SHViT:
Single-Head Vision Transformer with Memory Efficient Macro Design").

SHViT's SHSA with x [B, T, d]: the first p = round(d * `partial`) channels x1 go through
one attention head, the other d - p channels x2 pass through untouched:

    x1 <- GroupNorm(1 group)(x1)     (mean and variance over all T x p entries per example,
                                      then a per-channel scale and bias: the paper's pre_norm)
    q, k = x1 W_q, x1 W_k  [T, qk_dim];  v = x1 W_v  [T, p]
    y1 = softmax(q k^T * qk_dim^-0.5) v
    y  = ReLU([y1, x2]) W_o           (the paper's proj: ReLU then a d x d linear)

Defaults as the paper: partial = 1 / 4.67 (its r = 4.67), qk_dim = 16. Departures: the
paper's Conv2d_BN (1x1 convolutions with BatchNorm folded at inference) are plain linear
maps here. num_heads must be 1 (the design is single-head; any other value raises rather
than being ignored). It attends globally, so it has no token grid: compute O(T^2 qk_dim),
memory O(T^2) for the one head's scores, as in the paper (its savings are in the channels,
not in T). Non-causal self-attention (the GroupNorm reads every token).
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
class SHViTConfig(AttentionConfig):
  """partial: fraction of the channels that attend (p = max(1, round(d_model * partial)));
  qk_dim: the single head's query/key size (the paper's 16); num_heads: must be 1."""
  num_heads: int = 1
  partial: float = 1 / 4.67
  qk_dim: int = 16
  POSITIVE_SIZES = AttentionConfig.POSITIVE_SIZES + ("qk_dim",)

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 < float(self.partial) <= 1.0:
      raise ValueError(f"partial must be in (0, 1], got {self.partial!r}")


@register("shvit", family="channel", config=SHViTConfig, cost=("T^2", "T^2"),
          patterns=("noncausal-self",), paper="Yun & Ro, 2024 (SHViT, single-head attention)")
class SHViTAttention(GridAttentionModule):  # its check_call; it uses no grid
  """SHSA: one attention head over a fraction of the channels (see the module docstring).

  Analysis hook: sows the single head's softmax weights [B, 1, T, T] (rows sum to 1); the
  ReLU and the pass-through channels x2 come after them, before the output projection."""
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_call(context, mask, decode)
    if cfg.num_heads != 1:  # checked here, after the pattern, so a causal task gets the pattern error
      raise ValueError(f"shvit is single-head: num_heads must be 1, got {cfg.num_heads} "
                       "(set config.model.num_heads=1)")
    d_model = x.shape[-1]
    p = max(1, round(d_model * float(cfg.partial)))
    x1, x2 = x[..., :p].astype(jnp.float32), x[..., p:]
    mu = jnp.mean(x1, axis=(1, 2), keepdims=True)
    var = jnp.mean((x1 - mu) ** 2, axis=(1, 2), keepdims=True)
    scale = self.param("pre_norm_scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)), (p,))
    bias = self.param("pre_norm_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), (p,))
    x1 = ((x1 - mu) / jnp.sqrt(var + 1e-5) * scale + bias).astype(x.dtype)
    q = self.project_heads(x1, 1, cfg.qk_dim, "query")[:, :, 0]
    k = self.project_heads(x1, 1, cfg.qk_dim, "key")[:, :, 0]
    v = self.project_heads(x1, 1, p, "value")[:, :, 0]
    s = jnp.einsum("bqd,bkd->bqk", q.astype(jnp.float32) * cfg.qk_dim ** -0.5, k.astype(jnp.float32))
    if self.capturing():  # analysis: the one head's [B, 1, T, T] weights, sown and applied
      y1 = self.attend_captured(jax.nn.softmax(s, axis=-1)[:, None], v[:, :, None])[:, :, 0].astype(x.dtype)
    else:
      y1 = jnp.einsum("bqk,bkd->bqd", jax.nn.softmax(s, axis=-1), v.astype(jnp.float32)).astype(x.dtype)
    y = jax.nn.relu(jnp.concatenate([y1, x2], axis=-1))
    return self.project_out(y[:, :, None, :], d_model)
