"""Twins-SVT spatially separable attention: `twins` (Chu et al., 2021, "Twins: Revisiting the
Design of Spatial Attention in Vision Transformers").

Tokens on a row-major grid (grid=(H, W); () = a 1-D sequence). Twins-SVT alternates two
layers, here by layer_index (as `shifted_window` and `maxvit` do):

- LSA, locally-grouped self-attention (even layers): attention inside non-overlapping
  s x s windows (s = `window_size`);
- GSA, global sub-sampled attention (odd layers): every query attends to T / r^2 keys and
  values computed from a sub-sampled image: a conv of kernel r and stride r (r =
  `sr_ratio`; here the equivalent linear map "sr" of each flattened r x r patch, row-major
  inside the patch) then LayerNorm ("sr_norm"), then the key/value projections, as in
  Twins' GlobalSubSampleAttn. r = 1 is full attention.

An axis of at most s (r) tokens is one window (one patch); otherwise its length must be a
multiple of s (r). Departures: Twins' conditional position encoding (PEG) belongs to the
backbone, not the attention, and is left out; no relative position bias (Twins has none).

Shapes: LSA scores [B, T/s^2, H, s^2, s^2] (O(T * s^2)); GSA scores [B, H, T, T/r^2]
(O(T^2 / r^2): quadratic in T at a fixed r, as in the paper). The declared class is the
GSA layer's; tests/attention/test_vision2d.py measures it (the generic cost test measures
layer 0, an LSA layer).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention.registry import register
from attnlab.attention.variants.grid import GridAttentionModule, GridConfig, clipped_sizes, to_windows, window_index


@dataclasses.dataclass(frozen=True)
class TwinsConfig(GridConfig):
  """window_size: s, the LSA window side (Twins uses 7; 8 divides the cost test's
  power-of-two lengths); sr_ratio: r, GSA's sub-sampling (Twins-SVT: 8, 4, 2, 1 by stage;
  default 4); grid: () or (H, W) (-1 entries inferred, as in `neighborhood`)."""
  window_size: int = 8
  sr_ratio: int = 4
  POSITIVE_SIZES = GridConfig.POSITIVE_SIZES + ("window_size", "sr_ratio")


@register("twins", family="local2d", config=TwinsConfig, cost=("T^2/b", "T^2/b"),
          patterns=("noncausal-self",), paper="Chu et al., 2021 (Twins-SVT, LSA + GSA)")
class TwinsAttention(GridAttentionModule):
  """LSA on even layers, GSA on odd layers (see the module docstring).

  Analysis hook: LSA layers sow [B, H, T, T] (nonzero inside each s x s window, rows sum
  to 1). GSA layers have no token x token matrix (`weights_unavailable`)."""

  @property
  def weights_unavailable(self):
    """None on LSA (even) layers; on GSA (odd) layers the reason there is no token matrix."""
    if self.cfg.layer_index % 2 == 0:
      return None
    return ("Twins GSA (odd layers) attends to T/r^2 sub-sampled keys whose values are a LayerNorm of a "
            "linear map of whole r x r patches, not a weighted sum of per-token values: no token x token matrix")

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    d_model = x.shape[-1]
    if cfg.layer_index % 2 == 0:                                   # LSA
      shape, q, k, v = self.grid_qkv(x, context, mask, decode)
      index = window_index(shape, clipped_sizes(shape, cfg.window_size, "twins window_size"))
      return self.project_out(self.grouped(q, k, v, index, index), d_model)
    self.check_call(context, mask, decode)                         # GSA
    b = x.shape[0]
    shape = self.grid_shape(x)
    patch = clipped_sizes(shape, cfg.sr_ratio, "twins sr_ratio")
    hd = self.head_dim_for(d_model)
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    sub = to_windows(x, shape, patch)                              # [B, T/r^2, r^2, d]
    sub = nn.Dense(d_model, dtype=self.compute_dtype, name="sr")(sub.reshape(b, sub.shape[1], -1))
    sub = nn.LayerNorm(dtype=self.compute_dtype, name="sr_norm")(sub)
    k = self.project_heads(sub, cfg.num_heads, hd, "key")
    v = self.project_heads(sub, cfg.num_heads, hd, "value")
    s = jnp.einsum("bthd,bshd->bhts", q.astype(jnp.float32) * hd ** -0.5, k.astype(jnp.float32))
    y = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(s, axis=-1), v.astype(jnp.float32)).astype(q.dtype)
    return self.project_out(y, d_model)
