"""Token-grid helpers shared by the 2-D attention variants (neighborhood, Swin, HaloNet, MaxViT, BiFormer).

Tokens of an image live in row-major order on a grid of axis sizes `shape` ((L,) for a
1-D sequence, (H, W) for an image). The helpers here turn that into static index arrays
(numpy, built at trace time) for the groups each design attends within, and one op,
`group_attention`, that gathers the queries and keys of every group and runs softmax
attention inside it: no [T, T] array is ever built, compute and memory are
O(T * keys per query). The analysis hook alone (`GridAttentionModule.grouped`,
`group_weights`, `scatter_groups`) scatters the grouped weights into the dense [B, H, T, T]
matrix they apply, O(T^2) memory, small inputs only.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from attnlab.attention.variants.base import AttentionConfig, AttentionModule

NEG_INF = -1e30


def resolve_grid(grid: tuple, length: int) -> tuple[int, ...]:
  """The axis sizes for a sequence of `length` tokens: (length,) for grid=(), else (H, W)
  with -1 entries inferred (both -1: a square); one-line ValueError if they do not fit."""
  if not grid:
    return (length,)
  h, w = grid
  if h == -1 and w == -1:
    h = w = math.isqrt(length)
  elif h == -1:
    h = length // w
  elif w == -1:
    w = length // h
  if h * w != length:
    raise ValueError(f"grid {tuple(grid)} does not fit a sequence of {length} tokens (needs H * W = T)")
  return (h, w)


@dataclasses.dataclass(frozen=True)
class GridConfig(AttentionConfig):
  """Base of the 2-D variants' hyperparameters. grid: () for 1-D over the sequence, (H, W)
  for a row-major 2-D grid (an entry -1 is inferred from T; (-1, -1) is a square)."""
  grid: tuple = ()

  def __post_init__(self):
    super().__post_init__()
    object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
    if len(self.grid) not in (0, 2) or any(g == 0 or g < -1 for g in self.grid):
      raise ValueError(f"grid must be () or (H, W) with positive sizes or -1, got {self.grid!r}")


def clipped_sizes(shape: tuple[int, ...], size: int, what: str) -> tuple[int, ...]:
  """Per axis: `size`, or the whole axis when it is at most `size` long (Swin's rule);
  one-line ValueError naming `what` when a longer axis is not a multiple of `size`."""
  out = []
  for n in shape:
    if n > size and n % size:
      raise ValueError(f"{what}: axis length {n} is not a multiple of {size}")
    out.append(min(n, size))
  return tuple(out)


def to_windows(x, shape, wins):
  """x [B, T, ...] (T row-major over shape) -> [B, nW, prod(wins), ...]: non-overlapping
  windows of size `wins` (row-major over the windows, row-major inside each). A numpy x
  stays numpy (static masks built at trace time), a jax array stays jax."""
  b, rest = x.shape[0], x.shape[2:]
  if len(shape) == 1:
    return x.reshape(b, shape[0] // wins[0], wins[0], *rest)
  (h, w), (mh, mw) = shape, wins
  x = x.reshape(b, h // mh, mh, w // mw, mw, *rest)
  x = (np if isinstance(x, np.ndarray) else jnp).moveaxis(x, 3, 2)  # [B, h/mh, w/mw, mh, mw, ...]
  return x.reshape(b, (h // mh) * (w // mw), mh * mw, *rest)


def from_windows(x, shape, wins):
  """Inverse of `to_windows`: [B, nW, prod(wins), ...] -> [B, T, ...]."""
  b, rest = x.shape[0], x.shape[3:]
  if len(shape) == 1:
    return x.reshape(b, shape[0], *rest)
  (h, w), (mh, mw) = shape, wins
  x = x.reshape(b, h // mh, w // mw, mh, mw, *rest)
  x = jnp.moveaxis(x, 2, 3)
  return x.reshape(b, h * w, *rest)


def relative_index(wins) -> np.ndarray:
  """int [K, K] (K = prod(wins)): flattened index of (key - query) offsets, for tokens in
  row-major order on a grid of size `wins`, into a table of prod(2 m - 1) entries."""
  return relative_index_between(wins, wins)


def relative_index_between(q_wins, k_wins, k_origin=None) -> np.ndarray:
  """int [Kq, Kk]: flattened (key - query) offset index into a table of prod(mq + mk - 1)
  entries, for queries on a grid of size q_wins at the origin and keys on a grid of size
  k_wins whose corner sits at k_origin (default 0; HaloNet's keys start at -halo)."""
  k_origin = np.zeros(len(q_wins), np.int64) if k_origin is None else np.asarray(k_origin)
  qc = _coords(q_wins)
  kc = _coords(k_wins) + k_origin
  low = k_origin - (np.asarray(q_wins) - 1)                        # the most negative offset per axis
  rel = kc[None, :, :] - qc[:, None, :] - low                      # [Kq, Kk, ndim], >= 0
  index = np.zeros(rel.shape[:2], np.int64)
  for a, (mq, mk) in enumerate(zip(q_wins, k_wins)):
    index = index * (mq + mk - 1) + rel[..., a]
  return index


def _coords(shape) -> np.ndarray:
  """int [prod(shape), ndim]: row-major coordinates of a grid."""
  return np.stack(np.meshgrid(*[np.arange(m) for m in shape], indexing="ij"), -1).reshape(-1, len(shape))


def window_index(shape, wins) -> np.ndarray:
  """int [nW, K]: the flat token indices of each non-overlapping window of size `wins`
  (row-major windows, row-major inside), for axis sizes `shape` (multiples of wins)."""
  ids = np.arange(int(np.prod(shape)))
  if len(shape) == 1:
    return ids.reshape(shape[0] // wins[0], wins[0])
  (h, w), (mh, mw) = shape, wins
  ids = np.moveaxis(ids.reshape(h // mh, mh, w // mw, mw), 2, 1)  # numpy: static under jit
  return ids.reshape((h // mh) * (w // mw), mh * mw)


def dilated_index(shape, groups) -> np.ndarray:
  """int [nG, K] (K = prod(groups)): MaxViT's grid partition. Axis n splits as groups[a]
  positions spaced n // groups[a] apart: group r holds the tokens whose coordinates
  are = r (mod n // groups[a]) per axis, its members row-major in their grid position."""
  strides = [n // g for n, g in zip(shape, groups)]
  coords = _coords(shape)
  residue = np.zeros(len(coords), np.int64)
  member = np.zeros(len(coords), np.int64)
  for a, (g, s) in enumerate(zip(groups, strides)):
    residue = residue * s + coords[:, a] % s
    member = member * g + coords[:, a] // s
  out = np.zeros((int(np.prod(strides)), int(np.prod(groups))), np.int64)
  out[residue, member] = np.arange(len(coords))
  return out


def depthwise_same(x, shape, kernel, bias=None):
  """A depthwise convolution of x [B, T, C] over its token grid `shape` with 'same' zero
  padding as lax's SAME ((k-1)//2 before, k//2 after per axis): kernel [k]*nd + [C]
  (shared) or [B] + [k]*nd + [C] (per example); bias [C]. Written as a sum of k^nd
  shifted slices (XLA's grouped convolution is far slower on CPU at these sizes).
  -> [B, T, C]."""
  b, t, c = x.shape
  nd = len(shape)
  size = kernel.shape[-2]
  per_example = kernel.ndim == nd + 2
  img = jnp.pad(x.reshape(b, *shape, c), [(0, 0)] + [((size - 1) // 2, size // 2)] * nd + [(0, 0)])
  out = jnp.zeros((b, *shape, c), x.dtype) if bias is None else jnp.broadcast_to(bias.astype(x.dtype), (b, *shape, c))
  for off in np.ndindex(*(size,) * nd):
    w = kernel[(slice(None),) + off] if per_example else kernel[off]   # [B, C] or [C]
    w = w.reshape((b,) + (1,) * nd + (c,)) if per_example else w
    out = out + img[(slice(None),) + tuple(slice(o, o + n) for o, n in zip(off, shape))] * w
  return out.reshape(b, t, c)


def inverse_index(index: np.ndarray) -> np.ndarray:
  """int [T]: for `index` [G, K] that lists every token once, the position of token t in
  index.ravel() (so take(out.reshape(B, G*K, ...), inverse) puts rows back in order)."""
  flat = np.asarray(index).ravel()
  if not np.array_equal(np.sort(flat), np.arange(flat.size)):
    raise ValueError("the groups must partition the tokens")
  return np.argsort(flat)


def _gather_keys(x, k_index):
  """x [B, S, ...] at k_index int [G, Kk] (shared) or [B, G, Kk] (per example) -> [B, G, Kk, ...]."""
  if np.ndim(k_index) == 3:
    return x[jnp.arange(x.shape[0])[:, None, None], k_index]
  return jnp.take(x, jnp.asarray(k_index), axis=1)


def group_probs(q, k, q_index, k_index, allowed=None, bias=None):
  """The softmax weights inside groups (arguments as `group_attention`): [B, G, H, Kq, Kk] fp32.
  A query with no allowed key gets all-zero weights."""
  scale = q.shape[-1] ** -0.5
  qg = jnp.take(q, jnp.asarray(q_index), axis=1)                   # [B, G, Kq, H, D]
  kg = _gather_keys(k, k_index)                                    # [B, G, Kk, H, D]
  s = jnp.einsum("bgqhd,bgkhd->bghqk", qg.astype(jnp.float32) * scale, kg.astype(jnp.float32))
  if bias is not None:
    bias = jnp.asarray(bias, jnp.float32)
    s = s + (bias[None, None] if bias.ndim == 3 else bias[None])
  if allowed is None:
    p = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    return p / jnp.sum(p, axis=-1, keepdims=True)
  allowed = jnp.asarray(allowed)
  allowed = allowed.reshape(allowed.shape[:-2] + (1,) + allowed.shape[-2:])  # a heads axis
  s = jnp.where(allowed, s, NEG_INF)
  p = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True)) * allowed
  return p / jnp.maximum(jnp.sum(p, axis=-1, keepdims=True), 1e-30)


def group_attention(q, k, v, q_index, k_index, allowed=None, bias=None):
  """Softmax attention inside groups: q [B, T, H, D], k/v [B, S, H, D] -> [B, T, H, D].

  q_index int [G, Kq] partitions the T queries into groups; k_index int [G, Kk] or
  [B, G, Kk] (per example, e.g. routed) names each group's keys. allowed bool [G, Kq|1, Kk]
  or [B, G, Kq|1, Kk] masks keys (False = not attended); bias
  [H, Kq, Kk] or [G, H, Kq, Kk] is added to the scaled scores. Scores are
  [B, G, H, Kq, Kk]: O(T * Kk), no [T, T] array. A query with no allowed key returns 0.
  """
  b = q.shape[0]
  p = group_probs(q, k, q_index, k_index, allowed, bias)
  vg = _gather_keys(v, k_index)
  y = jnp.einsum("bghqk,bgkhd->bgqhd", p, vg.astype(jnp.float32)).astype(q.dtype)
  y = y.reshape(b, -1, *y.shape[3:])                               # [B, G*Kq, H, D]
  return jnp.take(y, jnp.asarray(inverse_index(q_index)), axis=1)


def scatter_groups(p, q_index, k_index, num_keys: int):
  """Grouped weights p [B, G, H, Kq, Kk] -> the dense matrix [B, H, T, num_keys] they apply
  (analysis only: O(T * num_keys) memory). Row q_index[g, a], column k_index[g, c] (int
  [G, Kk] or [B, G, Kk]) receives p[:, g, :, a, c]; repeated keys add up and a column index
  >= num_keys (a padding slot) is dropped. q_index must list every query once."""
  b, g, h, kq, kk = p.shape
  t = int(np.asarray(q_index).size)
  rows = jnp.broadcast_to(jnp.asarray(q_index)[None, :, :, None], (b, g, kq, kk))
  cols = jnp.broadcast_to(jnp.asarray(k_index).reshape(-1 if np.ndim(k_index) == 3 else 1, g, 1, kk),
                          (b, g, kq, kk))
  bidx = jnp.broadcast_to(jnp.arange(b)[:, None, None, None], (b, g, kq, kk))
  vals = jnp.moveaxis(p, 2, -1)                                    # [B, G, Kq, Kk, H]
  w = jnp.zeros((b, t, num_keys, h), jnp.float32).at[bidx, rows, cols].add(vals, mode="drop")
  return jnp.moveaxis(w, -1, 1)


def group_weights(q, k, q_index, k_index, num_keys: int, allowed=None, bias=None):
  """The dense [B, H, T, num_keys] fp32 matrix `group_attention` applies to v (arguments as
  there; keys at index >= num_keys, padding slots, are dropped). Analysis only."""
  return scatter_groups(group_probs(q, k, q_index, k_index, allowed, bias), q_index, k_index, num_keys)


class GridAttentionModule(AttentionModule):
  """Base of the 2-D variants here (halo, maxvit, biformer, hilo, twins, inline; channel for
  check_call): the shared preamble."""

  def grid_qkv(self, x, context, mask, decode):
    """Checks the call (declared pattern, no extra mask), resolves cfg.grid for x [B, T, d]
    and projects: -> (shape, q, k, v) with q, k, v [B, T, heads, head_dim]."""
    self.check_call(context, mask, decode)
    shape = self.grid_shape(x)
    hd = self.head_dim_for(x.shape[-1])
    q, k, v = (self.project_heads(x, self.cfg.num_heads, hd, name) for name in ("query", "key", "value"))
    return shape, q, k, v

  def check_call(self, context, mask, decode) -> None:
    """ValueError unless the call is a declared pattern without an extra mask."""
    self.check_pattern(context, decode)
    if mask is not None:
      raise ValueError(f"variant {self.variant!r} takes no extra mask (set model.key_padding=False)")

  def grid_shape(self, x) -> tuple[int, ...]:
    """The axis sizes of cfg.grid for x [B, T, d] (`resolve_grid`)."""
    return resolve_grid(self.cfg.grid, x.shape[1])

  def rel_bias(self, index: np.ndarray, size: int):
    """A learned relative-position bias table [heads, size] (param "rel_pos_bias"), read at
    the static int `index` [...]: -> [heads, ...]."""
    table = self.param("rel_pos_bias", nn.with_logical_partitioning(nn.initializers.normal(0.02), ("heads", None)),
                       (self.cfg.num_heads, size))
    return jnp.take(table, jnp.asarray(index), axis=1)

  def grouped(self, q, k, v, q_index, k_index, allowed=None, bias=None):
    """`group_attention` (arguments as there; v's first T rows are the tokens, later rows
    padding slots). In an analysis call (`capturing`) the dense matrix over the T tokens
    (`group_weights`) is sown and applied instead (`attend_captured`): the same output."""
    if self.capturing():
      t = q.shape[1]
      return self.attend_captured(group_weights(q, k, q_index, k_index, t, allowed, bias), v[:, :t])
    return group_attention(q, k, v, q_index, k_index, allowed, bias)
