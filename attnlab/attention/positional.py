"""Positional schemes used inside attention: RoPE and ALiBi."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def apply_rope(x, positions, base: float = 10000.0):
  """Rotary position embedding (Su et al., 2021, RoFormer), half-split layout.

  x [B, T, H, D] (D even), positions int [B, T] -> same shape; pairs (i, i + D/2) are
  rotated by angle position * base^(-2i/D).
  """
  d = x.shape[-1]
  if d % 2:
    raise ValueError(f"RoPE needs an even head_dim, got {d}")
  freq = base ** (-jnp.arange(0, d // 2, dtype=jnp.float32) * 2 / d)  # [D/2]
  ang = positions.astype(jnp.float32)[..., None, None] * freq  # [B, T, 1, D/2]
  cos, sin = jnp.cos(ang), jnp.sin(ang)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def alibi_slopes(num_heads: int):
  """ALiBi head slopes (Press et al., 2022): geometric 2^(-8/n) series, extended for non-powers of 2."""
  def pow2(n):
    start = 2 ** (-(2 ** -(math.log2(n) - 3)))
    return [start * start ** i for i in range(n)]
  if math.log2(num_heads).is_integer():
    s = pow2(num_heads)
  else:
    closest = 2 ** math.floor(math.log2(num_heads))
    s = pow2(closest) + pow2(2 * closest)[0::2][: num_heads - closest]
  return jnp.asarray(s, jnp.float32)


class AlibiBias:
  """ALiBi as a positional score bias: bias[h, i, j] = -slope_h * |pos_i - pos_j|.

  A callable bias: ops evaluate it tile by tile, `bias(q_pos, k_pos)` with absolute
  position vectors q_pos [tq], k_pos [tk] -> [1, H, tq, tk], so blocked implementations
  never build the full [Tq, Tk] array.
  """

  def __init__(self, num_heads: int, heads=None):
    """heads: optional index array: the bias of those heads only ([1, len(heads), tq, tk])."""
    self.num_heads = num_heads
    self.heads = heads

  def __call__(self, q_pos, k_pos):
    dist = jnp.abs(q_pos[:, None] - k_pos[None, :]).astype(jnp.float32)
    slopes = alibi_slopes(self.num_heads)
    if self.heads is not None:
      slopes = slopes[np.asarray(self.heads)]
    return -slopes[None, :, None, None] * dist[None, None]
