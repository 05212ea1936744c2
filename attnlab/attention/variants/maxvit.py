"""MaxViT multi-axis attention: `maxvit` (Tu et al., 2022, "MaxViT: Multi-Axis Vision Transformer").

Tokens on a row-major grid (grid=(H, W); () = a 1-D sequence). Two sparse patterns:

- block attention (even layers, layer_index 0, 2, ...): the image is cut into
  non-overlapping P x P windows (P = `block_size`) and each token attends to its window;
- grid attention (odd layers): a fixed G x G grid (G = `grid_size`) covers the whole image
  sparsely: the image is viewed as [G, H/G, G, W/G] and token (i, j) attends to the G x G
  tokens (i', j') with i' = i (mod H/G) and j' = j (mod W/G) (MaxViT's `grid_partition`,
  x.view(B, G, H/G, G, W/G, C).permute(0, 2, 4, 1, 3, 5)): dilated, global mixing.

In MaxViT a block is MBConv -> block attention -> FFN -> grid attention -> FFN, each
attention with its own residual and FFN. One attention module per backbone layer matches
that by alternating on layer_index (as `shifted_window` alternates its shift): layer
2l is block attention and layer 2l + 1 grid attention, each followed by the backbone's
FFN; two consecutive layers reach every token when P >= H/G per axis (as with P = G and
H = P * G; the paper's P = G = 7 at 224 px). MBConv is left out (the backbone has no
convolution). Per axis, an axis of at most P (resp. G) tokens is one window (resp. one
grid group) of the whole axis, otherwise its length must be a multiple of P (resp. G).

With rel_pos_bias each layer has a learned relative position bias per head over the
positions inside its window or grid group ((2P - 1)^nd or (2G - 1)^nd entries), as MaxViT
uses in both. Defaults P = G = 8 (the paper uses 7; 8 divides the power-of-two lengths of
the cost test).

Shapes: groups [B, T / K, K, H, D] with K = P^nd or G^nd, scores [B, T / K, H, K, K]:
compute and memory O(T * K), no [T, T] array.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import numpy as np

from attnlab.attention.registry import register
from attnlab.attention.variants.grid import (GridAttentionModule, GridConfig, clipped_sizes, dilated_index,
                                             relative_index, window_index)


@dataclasses.dataclass(frozen=True)
class MaxViTConfig(GridConfig):
  """block_size: P, window side of block attention (even layers); grid_size: G, grid side of
  grid attention (odd layers); grid: () or (H, W) (-1 entries inferred, as in
  `neighborhood`); rel_pos_bias: the learned relative position bias inside each group."""
  block_size: int = 8
  grid_size: int = 8
  rel_pos_bias: bool = True
  POSITIVE_SIZES = GridConfig.POSITIVE_SIZES + ("grid_size",)


def maxvit_layout(shape: tuple[int, ...], block: int, grid: int, grid_layer: bool):
  """(index int [G, K], sizes): the token groups of a block layer (P-windows) or of a grid
  layer (G x G dilated groups), and the group's size per axis."""
  if grid_layer:
    sizes = clipped_sizes(shape, grid, "maxvit grid attention")
    return dilated_index(shape, sizes), sizes
  sizes = clipped_sizes(shape, block, "maxvit block attention")
  return window_index(shape, sizes), sizes


@register("maxvit", family="local2d", config=MaxViTConfig, cost=("T*w", "T*w"),
          patterns=("noncausal-self",), paper="Tu et al., 2022 (MaxViT)")
class MaxViTAttention(GridAttentionModule):
  """Block attention on even layers, grid attention on odd layers (see the module docstring).

  Analysis hook: each layer is one of MaxViT's two stages, so each layer sows its own
  stage's [B, H, T, T] matrix (block layers: nonzero inside each P x P window; grid layers:
  on the G x G dilated group); the two stages are two layers' entries, not composed here
  (rollout composes them, with the residual, as it composes any two layers)."""
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    shape, q, k, v = self.grid_qkv(x, context, mask, decode)
    index, sizes = maxvit_layout(shape, cfg.block_size, cfg.grid_size, cfg.layer_index % 2 == 1)
    bias = None
    if cfg.rel_pos_bias:                                           # [H, K, K]
      bias = self.rel_bias(relative_index(sizes), int(np.prod([2 * m - 1 for m in sizes])))
    y = self.grouped(q, k, v, index, index, None, bias)
    return self.project_out(y, x.shape[-1])
