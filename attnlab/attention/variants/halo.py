"""HaloNet blocked local attention: `halo` (Vaswani et al., 2021, "Scaling Local
Self-Attention for Parameter Efficient Visual Backbones").

Tokens on a row-major grid (grid=(H, W); () = a 1-D sequence) are split into
non-overlapping query blocks of b x b tokens (b = `block_size`; b tokens in 1-D). Every
query of a block attends to the same (b + 2h) x (b + 2h) keys: its block plus a halo of h
(`halo`) tokens on every side. At the image borders the halo falls outside the image; the
paper zero-pads there, here the padded keys are masked (they get no weight, rather than
the weight of a zero key). An axis of at most b tokens is one block. H and W must be
multiples of b. With rel_pos_bias a learned bias per head, indexed by the key's offset
from the query ((2b + 2h - 1) entries per axis), is added to the scores.

Departures from the paper: HaloNet's relative position term is content-dependent
(q . r with factorised row/column embeddings, as in Stand-Alone Self-Attention); here it
is a learned scalar bias per head and offset (Swin's form). The paper's attention
downsampling (strided blocks) is left out: output tokens = input tokens.

Shapes: q [B, T, H, D] gathered to [B, blocks, b^2, H, D], keys to [B, blocks, (b+2h)^2,
H, D], scores [B, blocks, H, b^2, (b+2h)^2]: compute and memory O(T * (b + 2h)^2), linear
in the pixels, no [T, T] array (an analysis call alone materialises it: `GridAttentionModule.grouped`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from attnlab.attention.registry import register
from attnlab.attention.variants.grid import (GridAttentionModule, GridConfig, clipped_sizes, relative_index_between,
                                             window_index)


@dataclasses.dataclass(frozen=True)
class HaloConfig(GridConfig):
  """block_size: b, query block side (HaloNet's default 8); halo: h >= 0 extra key rows and
  columns around each block (default 3: a 14 x 14 key window); grid: () for 1-D over the
  sequence, (H, W) for a row-major 2-D grid (-1 entries inferred, as in `neighborhood`);
  rel_pos_bias: the learned relative position bias."""
  block_size: int = 8
  halo: int = 3
  rel_pos_bias: bool = True

  def __post_init__(self):
    super().__post_init__()
    if isinstance(self.halo, bool) or not isinstance(self.halo, int) or self.halo < 0:
      raise ValueError(f"halo must be an integer >= 0, got {self.halo!r}")


def halo_layout(shape: tuple[int, ...], block: int, halo: int):
  """Static layout for axis sizes `shape`: (q_index int [G, b^nd], k_index int [G, (b+2h)^nd],
  valid bool [G, (b+2h)^nd], rel int [b^nd, (b+2h)^nd], blocks) with G query blocks.

  k_index names the key window of each block (positions outside the image point at T, a
  padding slot, with valid False); rel indexes the flattened relative-bias table."""
  blocks = clipped_sizes(shape, block, "halo attention block_size")
  t = int(np.prod(shape))
  q_index = window_index(shape, blocks)
  corners = []  # per axis: the first coordinate of each block, [n // b]
  per_axis_keys = []
  for n, bb in zip(shape, blocks):
    start = np.arange(0, n, bb)[:, None] - halo + np.arange(bb + 2 * halo)[None, :]  # [n/b, b+2h]
    corners.append(start)
    per_axis_keys.append((start >= 0) & (start < n))
  if len(shape) == 1:
    (pos,), (ok,) = corners, per_axis_keys
    k_index, valid = np.where(ok, pos, t), ok
  else:
    (ph, pw), (oh, ow) = corners, per_axis_keys
    w = shape[1]
    flat = ph[:, None, :, None] * w + pw[None, :, None, :]         # [nh, nw, kh, kw]
    ok = oh[:, None, :, None] & ow[None, :, None, :]
    g = ph.shape[0] * pw.shape[0]
    k_index, valid = np.where(ok, flat, t).reshape(g, -1), ok.reshape(g, -1)
  rel = relative_index_between(blocks, [bb + 2 * halo for bb in blocks], [-halo] * len(shape))
  return q_index, k_index, valid, rel, blocks


@register("halo", family="local2d", config=HaloConfig, cost=("T*w", "T*w"),
          patterns=("noncausal-self",), paper="Vaswani et al., 2021 (HaloNet)")
class HaloAttention(GridAttentionModule):
  """Multi-head blocked local attention with a halo, over a 1-D sequence or a 2-D grid.

  Analysis hook: sows [B, H, T, T], each query's row nonzero on its block's (b + 2h)^nd
  key window inside the image (the masked padding keys get no weight); rows sum to 1."""
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    shape, q, k, v = self.grid_qkv(x, context, mask, decode)
    q_index, k_index, valid, rel, blocks = halo_layout(shape, cfg.block_size, cfg.halo)
    pad = jnp.zeros_like(k[:, :1])
    k, v = jnp.concatenate([k, pad], axis=1), jnp.concatenate([v, pad], axis=1)  # slot T: padding
    bias = None
    if cfg.rel_pos_bias:                                           # [H, b^nd, (b+2h)^nd]
      bias = self.rel_bias(rel, int(np.prod([2 * bb + 2 * cfg.halo - 1 for bb in blocks])))
    y = self.grouped(q, k, v, q_index, k_index, valid[:, None, :], bias)
    return self.project_out(y, x.shape[-1])
