"""HiLo attention: `hilo` (Pan et al., 2022, "Fast Vision Transformers with HiLo Attention", LITv2).

Tokens on a row-major grid (grid=(H, W); () = a 1-D sequence); s = `window_size`. The heads
split in two groups (LITv2's `l_heads = int(num_heads * alpha)`, the rest Hi-Fi):

- Hi-Fi (the first num_heads - l_heads heads): attention inside non-overlapping s x s
  windows (local, high-frequency detail);
- Lo-Fi (the last l_heads heads): every query attends to the keys and values of the s x s
  average-pooled image (T / s^2 keys: global, low-frequency structure). Pooling x and then
  projecting (the paper's AvgPool2d before `l_kv`) equals pooling the projected k, v (the
  projection is linear), which is what is done here.

An axis of at most s tokens is one window (and pools to one key); otherwise its length
must be a multiple of s. Departures: the paper gives each branch its own output
projection on its own slice of channels (h_proj, l_proj, concatenated); here one output
projection reads all heads (the block-diagonal paper form is a special case). No
relative position bias (LITv2 has none in HiLo).

Shapes: Hi-Fi scores [B, T/s^2, Hh, s^2, s^2], Lo-Fi scores [B, Hl, T, T/s^2]: the Lo-Fi
branch is dense over the pooled keys, so compute and memory are T^2 / s^2 (quadratic in
T at a fixed s, 1/s^2 of full attention), as in the paper.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention.registry import register
from attnlab.attention.variants.grid import (GridAttentionModule, GridConfig, clipped_sizes, group_attention,
                                             group_weights, inverse_index, to_windows, window_index)


@dataclasses.dataclass(frozen=True)
class HiLoConfig(GridConfig):
  """window_size: s, the Hi-Fi window side and the Lo-Fi pooling size (LITv2's default 2);
  alpha: fraction of heads that are Lo-Fi (l_heads = int(num_heads * alpha); default 0.9
  as in LITv2); grid: () or (H, W) (-1 entries inferred, as in `neighborhood`)."""
  window_size: int = 2
  alpha: float = 0.9
  POSITIVE_SIZES = GridConfig.POSITIVE_SIZES + ("window_size",)

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 <= float(self.alpha) <= 1.0:
      raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")


@register("hilo", family="local2d", config=HiLoConfig, cost=("T^2/b", "T^2/b"),
          patterns=("noncausal-self",), paper="Pan et al., 2022 (LITv2, HiLo)")
class HiLoAttention(GridAttentionModule):
  """Hi-Fi window heads beside Lo-Fi heads over average-pooled keys (see the module docstring).

  Analysis hook: the two branches are separate heads, so one [B, H, T, T] matrix: Hi-Fi
  heads nonzero inside each s x s window; a Lo-Fi head gives token j the weight of its
  pooled window divided by s^2 (the pooled value is the window's mean v). Rows sum to 1."""
  weights_unavailable = None

  def lo_heads(self) -> int:
    """Number of Lo-Fi heads: int(num_heads * alpha)."""
    return int(self.cfg.num_heads * float(self.cfg.alpha))

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    shape, q, k, v = self.grid_qkv(x, context, mask, decode)
    wins = clipped_sizes(shape, cfg.window_size, "hilo attention window_size")
    hi = cfg.num_heads - self.lo_heads()
    index = window_index(shape, wins)
    capturing, t = self.capturing(), x.shape[1]
    outs = []                                                      # head groups' outputs, or weights
    if hi:                                                         # Hi-Fi: window attention
      qkv = (q[:, :, :hi], k[:, :, :hi], v[:, :, :hi])
      outs.append(group_weights(*qkv[:2], index, index, t) if capturing else group_attention(*qkv, index, index))
    if hi < cfg.num_heads:                                         # Lo-Fi: pooled keys, values
      kp = jnp.mean(to_windows(k[:, :, hi:], shape, wins), axis=2)  # [B, T/s^2, Hl, D]
      vp = jnp.mean(to_windows(v[:, :, hi:], shape, wins), axis=2)
      ql = q[:, :, hi:]
      s = jnp.einsum("bthd,bshd->bhts", ql.astype(jnp.float32) * ql.shape[-1] ** -0.5, kp.astype(jnp.float32))
      p = jax.nn.softmax(s, axis=-1)
      if capturing:  # vp = mean of a window's v, so token j gets its window's weight / s^2
        window_of = inverse_index(index) // index.shape[1]         # int [T]: each token's window
        outs.append(jnp.take(p, jnp.asarray(window_of), axis=-1) / index.shape[1])
      else:
        outs.append(jnp.einsum("bhts,bshd->bthd", p, vp.astype(jnp.float32)).astype(q.dtype))
    if capturing:
      return self.project_out(self.attend_captured(jnp.concatenate(outs, axis=1), v), x.shape[-1])
    return self.project_out(jnp.concatenate(outs, axis=2), x.shape[-1])
