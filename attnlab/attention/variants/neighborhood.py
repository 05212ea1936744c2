"""Neighborhood attention (NATTEN's definition), 1-D and 2-D, by gathering each query's keys.

Hassani et al., 2023, "Neighborhood Attention Transformer"; Hassani & Shi, 2022, "Dilated
Neighborhood Attention Transformer". Per axis of length L, with window w and dilation d:

- the query at i lives in the residue class r = i mod d, a sub-axis of L_r = ceil((L - r) / d)
  positions r, r + d, ...; its index there is i' = i // d (w * d <= L, so L_r >= w);
- non-causal: the window holds floor(w/2) keys before i' and floor(w/2) + (w mod 2) - 1 after;
  at the borders it shifts inward (start = clip(i' - floor(w/2), 0, L_r - w)), so every
  query sees exactly w keys; with w = L (d = 1) it is full attention;
- causal: the w keys i' - w + 1 .. i' that are >= 0 (the window does not shift);
- key m of the window is position r + d * (start + m).

In 2-D (grid=(H, W), tokens in row-major order) the window is the product of the per-axis
windows: w x w keys. `causal_axes` sets causality per axis (() = cfg.causal on every
axis). With rel_pos_bias, a learned bias per head indexed by the key's offset from the
query in dilated units, in [-(w-1), w-1] per axis ((2w-1)^d entries), is added to the scores.

The keys are gathered ([B, T, w^d, H, D]), never a dense [T, T] score or mask, so compute
and memory are O(T * w^d).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule
from attnlab.attention.variants.grid import resolve_grid, scatter_groups

NEG_INF = -1e30


@dataclasses.dataclass(frozen=True)
class NeighborhoodConfig(AttentionConfig):
  """window: w keys per axis (NATTEN's kernel size); dilation: d >= 1; grid: () for 1-D over
  the sequence, (H, W) for a row-major 2-D grid (an entry -1 is inferred from T; (-1, -1) is
  a square); causal_axes: per-axis causal flags (() = `causal` on every axis);
  rel_pos_bias: learned relative position bias per head."""
  window: int = 7
  dilation: int = 1
  grid: tuple = ()
  causal_axes: tuple = ()
  rel_pos_bias: bool = True

  def __post_init__(self):
    super().__post_init__()
    object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
    object.__setattr__(self, "causal_axes", tuple(bool(c) for c in self.causal_axes))
    if isinstance(self.dilation, bool) or not isinstance(self.dilation, int) or self.dilation < 1:
      raise ValueError(f"dilation must be an integer >= 1, got {self.dilation!r}")
    if len(self.grid) not in (0, 2) or any(g == 0 or g < -1 for g in self.grid):
      raise ValueError(f"grid must be () or (H, W) with positive sizes or -1, got {self.grid!r}")
    if self.causal_axes and len(self.causal_axes) != max(1, len(self.grid)):
      raise ValueError(f"causal_axes needs one flag per axis ({max(1, len(self.grid))}), got {self.causal_axes!r}")


def axis_neighborhood(length: int, window: int, dilation: int = 1, causal: bool = False):
  """Per-axis windows: (keys int [L, w], valid bool [L, w], offset int [L, w]) as numpy.

  keys[i, m] is the m-th key of query i (see the module docstring), valid False for the
  causal window's positions before 0, offset the key's distance from i in dilated units."""
  if window * dilation > length:
    raise ValueError(f"neighborhood window {window} x dilation {dilation} exceeds the axis length {length}")
  i = np.arange(length)
  r, ii = i % dilation, i // dilation
  sub_len = (length - r + dilation - 1) // dilation
  if causal:
    start = ii - (window - 1)
  else:
    start = np.clip(ii - window // 2, 0, sub_len - window)
  m = start[:, None] + np.arange(window)[None, :]
  valid = m >= 0
  m = np.maximum(m, 0)
  return r[:, None] + dilation * m, valid, m - ii[:, None]


def neighborhood_layout(shape: tuple[int, ...], window: int, dilation: int, causal: tuple[bool, ...]):
  """For axis sizes `shape` (1 or 2 axes): keys int [T, K], valid bool [T, K] and the
  relative-bias index int [T, K] into a flattened (2w-1)^ndim table (K = w^ndim)."""
  per_axis = [axis_neighborhood(n, window, dilation, c) for n, c in zip(shape, causal)]
  if len(shape) == 1:
    keys, valid, off = per_axis[0]
    return keys, valid, off + window - 1
  (kh, vh, oh), (kw, vw, ow) = per_axis
  h, w = shape
  keys = kh[:, None, :, None] * w + kw[None, :, None, :]          # [H, W, w, w]
  valid = vh[:, None, :, None] & vw[None, :, None, :]
  rel = (oh[:, None, :, None] + window - 1) * (2 * window - 1) + (ow[None, :, None, :] + window - 1)
  t, k = h * w, window * window
  return keys.reshape(t, k), valid.reshape(t, k), rel.reshape(t, k)


def neighborhood_probs(q, k, keys, valid, bias=None, key_valid=None):
  """The weights of `neighborhood_attention` (same arguments, no v): [B, T, H, K] fp32."""
  scale = q.shape[-1] ** -0.5
  kg = jnp.take(k, keys, axis=1)                                   # [B, T, K, H, D]
  s = jnp.einsum("bthd,btkhd->bthk", q.astype(jnp.float32) * scale, kg.astype(jnp.float32))
  if bias is not None:
    s = s + jnp.transpose(bias, (1, 0, 2))[None].astype(jnp.float32)
  allowed = jnp.asarray(valid)[None, :, None, :]
  if key_valid is not None:
    allowed = allowed & key_valid[:, :, None, :]
  s = jnp.where(allowed, s, NEG_INF)
  p = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True)) * allowed
  return p / jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-30)


def neighborhood_attention(q, k, v, keys, valid, bias=None, key_valid=None):
  """q [B, T, H, D], k/v [B, T, H, D], keys int [T, K] -> [B, T, H, D].

  Each query attends to k[:, keys[t]] where valid [T, K] (and key_valid [B, T, K], if
  given); bias [H, T, K] is added to the scaled scores. Gathers [B, T, K, H, D]."""
  p = neighborhood_probs(q, k, keys, valid, bias, key_valid)
  vg = jnp.take(v, keys, axis=1)
  return jnp.einsum("bthk,btkhd->bthd", p, vg.astype(jnp.float32)).astype(q.dtype)


@register("neighborhood", family="local2d", config=NeighborhoodConfig, cost=("T*w", "T"),
          patterns=("causal-self", "noncausal-self"),
          paper="Hassani et al., 2023 (NAT); Hassani & Shi, 2022 (DiNAT)")
class NeighborhoodAttention(AttentionModule):
  """Multi-head neighborhood attention over a 1-D sequence or a 2-D grid of tokens.

  Analysis hook: sows [B, H, T, T] over the row-major tokens, each row nonzero on its
  query's w^nd neighbours (fewer where the causal window or a mask cuts it); rows sum to 1."""
  weights_unavailable = None

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    self.check_pattern(context, decode)
    b, t, d_model = x.shape
    shape = resolve_grid(cfg.grid, t)
    causal = cfg.causal_axes or (cfg.causal,) * len(shape)
    keys, valid, rel = neighborhood_layout(shape, cfg.window, cfg.dilation, causal)
    hd = self.head_dim_for(d_model)
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(x, cfg.num_heads, hd, "key")
    v = self.project_heads(x, cfg.num_heads, hd, "value")
    bias = None
    if cfg.rel_pos_bias:
      table = self.param("rel_pos_bias", nn.with_logical_partitioning(nn.initializers.normal(0.02),
                                                                      ("heads", None)),
                         (cfg.num_heads, (2 * cfg.window - 1) ** len(shape)))
      bias = jnp.take(table, jnp.asarray(rel), axis=1)             # [H, T, K]
    key_valid = None
    if mask is not None:
      if isinstance(mask, M.KeyPadding):
        key_valid = jnp.take(jnp.asarray(mask.kv_valid), jnp.asarray(keys), axis=1)  # [B, T, K]
      elif mask.static:
        valid = valid & np.asarray(mask.allowed(np.arange(t)[:, None], keys), bool)
      else:
        raise ValueError(f"neighborhood attention takes no {type(mask).__name__} mask (only static "
                         "masks and KeyPadding)")
    if self.capturing():  # analysis: the [B, H, T, T] matrix (one group per query), sown and applied
      p = neighborhood_probs(q, k, keys, valid, bias, key_valid)[:, :, :, None, :]  # [B, T, H, 1, K]
      y = self.attend_captured(scatter_groups(p, np.arange(t)[:, None], keys, t), v)
    else:
      y = neighborhood_attention(q, k, v, keys, valid, bias, key_valid)
    return self.project_out(y, d_model)
