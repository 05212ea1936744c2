"""Swin window attention: `window` and `shifted_window` (Liu et al., 2021, "Swin Transformer").

Tokens on a row-major grid (grid=(H, W); () = a 1-D sequence) are split into
non-overlapping windows of M x M tokens (M = `window`; M tokens in 1-D); each token attends
to the tokens of its window only, with a learned relative position bias per head from a
table of (2M - 1)^2 entries ((2M - 1) in 1-D), indexed by the key's offset from the query.

`shifted_window` cyclically shifts the grid by floor(M/2) towards the top-left before
windowing on odd layers (layer_index 1, 3, ...; even layers are plain `window`) and shifts
back after; tokens brought together by the wrap-around belong to different regions of the
shifted image (the 3 x 3 = 9 regions cut by the lines at -M and -floor(M/2) on each axis)
and do not attend to each other. As in Swin, when an axis is at most M long the window
becomes the whole axis and there is no shift. H and W must be multiples of M.

Scores are [B, windows, heads, M^2, M^2]: compute and memory O(T * M^2), no [T, T] array.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule
from attnlab.attention.variants.grid import (from_windows, relative_index, resolve_grid, scatter_groups, to_windows,
                                             window_index)

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class SwinConfig(AttentionConfig):
  """window: M (tokens per window side; default 8, a divisor of the power-of-two lengths the
  cost test uses, where Swin's 224-px models use 7); grid: () or (H, W) (-1 entries inferred, as in
  `neighborhood`); shift: shift by floor(M/2) on odd layers; rel_pos_bias: the learned
  (2M-1)^ndim relative position bias."""
  window: int = 8
  grid: tuple = ()
  shift: bool = False
  rel_pos_bias: bool = True

  def __post_init__(self):
    super().__post_init__()
    object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
    if len(self.grid) not in (0, 2):
      raise ValueError(f"grid must be () or (H, W), got {self.grid!r}")


def window_and_shift(shape: tuple[int, ...], window: int, shifted: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """Per-axis (window sizes, shifts): an axis of length <= window is one window with no shift."""
  wins, shifts = [], []
  for n in shape:
    if n <= window:
      wins.append(n)
      shifts.append(0)
    else:
      if n % window:
        raise ValueError(f"window attention: axis length {n} is not a multiple of window {window}")
      wins.append(window)
      shifts.append(window // 2 if shifted else 0)
  return tuple(wins), tuple(shifts)


def region_ids(shape, wins, shifts) -> np.ndarray:
  """int [*shape]: Swin's region label of each token of the shifted grid (slices at -M, -s)."""
  labels = np.zeros(shape, np.int64)
  for axis, (n, m, s) in enumerate(zip(shape, wins, shifts)):
    bounds = np.zeros(n, np.int64)
    if s:
      bounds[n - m:n - s] = 1
      bounds[n - s:] = 2
    labels = labels * 3 + bounds.reshape([-1 if a == axis else 1 for a in range(len(shape))])
  return labels


class SwinAttention(AttentionModule):
  """Multi-head attention inside (optionally shifted) non-overlapping windows.

  Analysis hook: sows [B, H, T, T] over the row-major tokens of the unshifted grid (the
  cyclic shift undone): nonzero only between tokens of one window of the shifted
  partition and, on shifted layers, of one region; rows sum to 1."""
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    if mask is not None:
      raise ValueError(f"variant {self.variant!r} takes no extra mask (set model.key_padding=False)")
    b, t, d_model = x.shape
    shape = resolve_grid(cfg.grid, t)
    shifted = cfg.shift and cfg.layer_index % 2 == 1
    wins, shifts = window_and_shift(shape, cfg.window, shifted)
    hd = self.head_dim_for(d_model)
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(x, cfg.num_heads, hd, "key")
    v = self.project_heads(x, cfg.num_heads, hd, "value")
    axes = tuple(range(1, 1 + len(shape)))

    def roll(a, sign):
      if not any(shifts):
        return a
      a = a.reshape(b, *shape, *a.shape[2:])
      a = jnp.roll(a, tuple(sign * s for s in shifts), axis=axes)
      return a.reshape(b, t, *a.shape[1 + len(shape):])

    qw, kw, vw = (to_windows(roll(a, -1), shape, wins) for a in (q, k, v))   # [B, nW, K, H, D]
    s = jnp.einsum("bnqhd,bnkhd->bnhqk", qw.astype(jnp.float32) * hd ** -0.5, kw.astype(jnp.float32))
    if cfg.rel_pos_bias:
      table = self.param("rel_pos_bias", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                      ("heads", None)),
                         (cfg.num_heads, int(np.prod([2 * m - 1 for m in wins]))))
      s = s + jnp.take(table, jnp.asarray(relative_index(wins)), axis=1)[None, None]  # [H, K, K]
    if any(shifts):
      reg = to_windows(region_ids(shape, wins, shifts).reshape(1, t), shape, wins)[0]  # numpy [nW, K]
      same = jnp.asarray(reg[:, :, None] == reg[:, None, :])       # [nW, K, K]
      s = jnp.where(same[None, :, None], s, NEG_INF)
    p = jax.nn.softmax(s, axis=-1)
    if self.capturing():  # analysis: [B, H, T, T] in the unshifted token order, sown and applied
      # window member m of window n sits at rolled position window_index[n, m], which holds
      # the original token roll(arange(T), -shift)[that position]
      where = np.roll(np.arange(t).reshape(shape), tuple(-n for n in shifts), tuple(range(len(shape))))
      index = where.reshape(-1)[window_index(shape, wins)]
      y = self.attend_captured(scatter_groups(p, index, index, t), v)
      return self.project_out(y, d_model)
    y = jnp.einsum("bnhqk,bnkhd->bnqhd", p, vw.astype(jnp.float32)).astype(q.dtype)
    y = roll(from_windows(y, shape, wins), +1)
    return self.project_out(y, d_model)


register("window", family="local2d", config=SwinConfig, cost=("T*w", "T*w"),
         patterns=("noncausal-self",), paper="Liu et al., 2021 (Swin, W-MSA)")(SwinAttention)
register("shifted_window", family="local2d", config=SwinConfig, cost=("T*w", "T*w"),
         patterns=("noncausal-self",), paper="Liu et al., 2021 (Swin, SW-MSA)", shift=True)(SwinAttention)
