"""Static local and window patterns, computed as gathers (never as a dense mask).

block_local: attention inside fixed blocks (Parmar et al., 2018, "Image Transformer",
  local 1D attention; causal = causal inside the block).
dilated_window: a sliding window with a per-head dilation rate (Beltagy et al., 2020,
  "Longformer: The Long-Document Transformer", Sec. 3.1 dilated sliding window; the
  per-head rate schedule as in Ding et al., 2023, "LongNet").
longformer: sliding window plus global tokens (Beltagy et al., 2020, Sec. 3.1).

Shared machinery: sparse_base.py.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from attnlab.attention.registry import register
from attnlab.attention.variants.base import window_extents
from attnlab.attention.variants.sparse_base import (SELF_PATTERNS, KeyPlan, SparseConfig, StaticSparseAttention,
                                                    check_nonnegative, check_positive, window_key_table)


@dataclasses.dataclass(frozen=True)
class BlockLocalConfig(SparseConfig):
  """block_size: queries attend to keys of their own block of block_size positions."""
  block_size: int = 64


@register("block_local", family="local", config=BlockLocalConfig, patterns=SELF_PATTERNS,
          paper="Parmar et al., 2018 (Image Transformer, local 1D)", cost=("T*b", "T"))
class BlockLocalAttention(StaticSparseAttention):
  """Attention within non-overlapping blocks: floor(i / b) == floor(j / b) (and j <= i)."""

  def check_hparams(self):
    check_positive(block_size=self.cfg.block_size)

  def allowed(self, heads, tk):
    bs, causal = self.cfg.block_size, self.cfg.causal

    def fn(qp, kp):
      ok = (qp // bs) == (kp // bs)
      return ok & (kp <= qp) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    bs = self.cfg.block_size
    return [KeyPlan(tuple(range(self.cfg.num_heads)), bs,
                    lambda qb: (qb[:, None] * bs + jnp.arange(bs))[None])]


# ---- dilated_window ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DilatedConfig(SparseConfig):
  """window: w keys, the query included, r apart: q, q - r, ..., q - (w - 1) r when causal;
  non-causal centred, q - floor(w/2) r .. q + (w - 1 - floor(w/2)) r (the library's window
  convention, `variants.base.window_extents`, in units of r). dilations: the rate r per
  head, cycling over heads (head h uses dilations[h % len(dilations)])."""
  window: int = 16
  dilations: tuple = (1, 2, 4, 8)


@register("dilated_window", family="sparse", config=DilatedConfig, patterns=SELF_PATTERNS,
          paper="Beltagy et al., 2020 (Longformer dilated window); Ding et al., 2023 (LongNet)",
          cost=("T*w", "T"))
class DilatedWindowAttention(StaticSparseAttention):
  """Dilated sliding window: w keys at distances multiple of r_h (see DilatedConfig).

  Gathers window keys per query: O(T * window) per head.
  """

  def check_hparams(self):
    cfg = self.cfg
    check_positive(window=cfg.window)
    if not cfg.dilations:
      raise ValueError("dilations must be a non-empty tuple of positive integers")
    for r in cfg.dilations:
      check_positive(dilation=r)

  def rates(self, heads):
    d = self.cfg.dilations
    return np.asarray([d[h % len(d)] for h in range(self.cfg.num_heads)], np.int32)[np.asarray(heads)]

  def allowed(self, heads, tk):
    r = self.rates(heads).reshape(-1, 1, 1, 1)
    causal = self.cfg.causal
    left, right = window_extents(self.cfg.window, causal)

    def fn(qp, kp):
      dist = qp - kp
      ok = (dist % r == 0) & (dist >= -right * r) & (dist <= left * r)
      return ok & (dist >= 0) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    left, right = window_extents(self.cfg.window, self.cfg.causal)
    j = np.arange(-right, left + 1)  # window offsets (keys before the query are > 0)
    heads = tuple(range(self.cfg.num_heads))
    steps = jnp.asarray(j[None, :] * self.rates(heads)[:, None])  # [H, K]: distances

    def kv_pos(qb):  # query tile of one position
      return qb[None, :, None] - steps[:, None, :]
    return [KeyPlan(heads, 1, kv_pos)]


# ---- longformer --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LongformerConfig(SparseConfig):
  """window: w, the sliding window (the library's convention, `variants.base.window_extents`):
  keys t - w + 1 .. t when causal, t - floor(w/2) .. t + w - 1 - floor(w/2) otherwise (the
  query's own position included; non-causal this is Longformer's window of w tokens).
  num_global: the first num_global positions are global, unless global_indices (a tuple
  of positions) is given. block_size: query tile of the efficient path (no effect on
  the result)."""
  window: int = 64
  num_global: int = 1
  global_indices: tuple = ()
  block_size: int = 64


@register("longformer", family="sparse", config=LongformerConfig, patterns=SELF_PATTERNS,
          paper="Beltagy et al., 2020", cost=("T*(w+g)", "T"))
class LongformerAttention(StaticSparseAttention):
  """Sliding window plus global tokens that attend to all and are attended by all.

  Causal: j <= i always; a global token is then visible to every later query and a
  global query sees every earlier key.
  """

  def check_hparams(self):
    cfg = self.cfg
    check_nonnegative(num_global=cfg.num_global)
    check_positive(window=cfg.window, block_size=cfg.block_size)

  def globals_(self, tk):
    cfg = self.cfg
    g = sorted(set(cfg.global_indices)) if cfg.global_indices else list(range(min(cfg.num_global, tk)))
    bad = [i for i in g if not 0 <= i < tk]
    if bad:
      raise ValueError(f"global_indices {bad} are outside the sequence of length {tk}")
    return np.asarray(g, np.int32)

  def allowed(self, heads, tk):
    g = jnp.asarray(self.globals_(tk))
    causal = self.cfg.causal
    left, right = window_extents(self.cfg.window, causal)  # keys before / after the query

    def is_global(p):
      return jnp.any(p[..., None] == g, axis=-1)

    def fn(qp, kp):
      dist = qp - kp
      local = (dist >= -right) & (dist <= left)
      ok = local | is_global(kp) | is_global(qp)
      return ok & (dist >= 0) if causal else ok
    return fn

  def key_plans(self, tq, tk):
    bs = self.cfg.block_size
    left, right = window_extents(self.cfg.window, self.cfg.causal)
    # global keys outside the tile's window are appended (inside it they are already there)
    kv_pos = window_key_table(bs, left, right, jnp.asarray(self.globals_(tk)))
    return [KeyPlan(tuple(range(self.cfg.num_heads)), bs, kv_pos)]

  def global_rows(self, tq, tk):
    g = self.globals_(tk)
    return g[g < tq]


# ---- bigbird -----------------------------------------------------------------------------
