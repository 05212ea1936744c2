"""Composable attention masks.

A mask is a predicate over (query position, key position) pairs, combined with `&` and
`|`. Every mask lowers two ways, as splash attention's masks do:

* `dense(q_len, kv_len)`: a boolean array `[B or 1, q_len, kv_len]` (True = may attend),
  for the reference implementation and for tests;
* `block_map(q_len, kv_len, block_q, block_k)`: a static numpy array `[nq, nk]` with
  EMPTY / PARTIAL / FULL per tile, for blocked implementations and kernels, so they can
  skip empty tiles and skip mask arithmetic on full ones. Static maps are computed from
  the tile bounds alone (O(nq * nk), no [T, T] array): causal, window, sinks, prefix and
  full masks are unions of `Box`es (`mask_tiles.py`), exact under `&` and `|`; `Chunked` has its own rule;
  other combinations take min (`&`) / max (`|`) of their sides' states, which is safe
  (it may say PARTIAL where a tile is EMPTY or FULL, never the reverse).

Positions are absolute: query i of a call sits at `q_offset + i` (a decode step's
query sits at the cache index), key j at j. Masks that depend on data (segment ids,
key padding) are "dynamic": their tiles are PARTIAL unless a static mask they are
and-ed with empties them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from attnlab.attention.mask_tiles import (EMPTY, FULL, MAX_BOXES, PARTIAL, Box, Tiles,  # noqa: F401
                                         boxes_tile_states, prune_boxes, states_from_bounds)


class Mask:
  """Base class. Subclasses implement `_allowed(q_pos, k_pos)` on broadcastable arrays."""

  static: bool = True  # depends on positions only (block maps computable at trace time)

  def _allowed(self, q_pos, k_pos):
    """q_pos [..., Tq, 1], k_pos [..., 1, Tk] (numpy or jax) -> bool, broadcastable."""
    raise NotImplementedError(type(self).__name__ + " must define _allowed")

  def allowed(self, q_pos, k_pos):
    """Public predicate: bool array, broadcast of q_pos [..., Tq, 1] and k_pos [..., 1, Tk]."""
    return self._allowed(q_pos, k_pos)

  def dense(self, q_len: int, kv_len: int, q_offset: Any = 0):
    """Boolean mask `[B or 1, q_len, kv_len]`; `q_offset` may be a traced scalar."""
    q_pos = (jnp.arange(q_len) + q_offset)[:, None]
    k_pos = jnp.arange(kv_len)[None, :]
    out = jnp.asarray(self._allowed(q_pos, k_pos))
    out = jnp.broadcast_to(out, jnp.broadcast_shapes(out.shape, (q_len, kv_len)))
    return out if out.ndim == 3 else out[None]

  def block_map(self, q_len: int, kv_len: int, block_q: int, block_k: int, q_offset: int = 0) -> np.ndarray:
    """Static tile states `[ceil(q_len/bq), ceil(kv_len/bk)]` in {EMPTY, PARTIAL, FULL}.

    Padding positions past the end count as masked (a tile that only has padding
    beyond its valid part still reports the state of its valid part). Computed from the
    tile bounds by the mask's analytic rule (`_tile_states`, O(nq * nk) work, no
    [T, T] array); a static mask without one is evaluated per block row (`_static_block_map`).
    """
    tiles = Tiles(q_len, kv_len, block_q, block_k, q_offset)
    if not self.static:
      return np.full(tiles.shape, PARTIAL, np.int8)
    states = self._tile_states(tiles)
    return _static_block_map(self, q_len, kv_len, block_q, block_k, q_offset) if states is None else states

  def _boxes(self):
    """This mask as a union of `Box`es (exact), or None when it is not one."""
    return None

  def _tile_states(self, tiles: "Tiles"):
    """int8 [nq, nk] tile states from the tile bounds, or None (no analytic rule).

    Default: exact from `_boxes` when the mask has them."""
    boxes = self._boxes()
    return None if boxes is None else boxes_tile_states(boxes, tiles)

  def __and__(self, other: "Mask") -> "Mask":
    return And(self, other)

  def __or__(self, other: "Mask") -> "Mask":
    return Or(self, other)


def _static_block_map(mask: Mask, q_len, kv_len, block_q, block_k, q_offset) -> np.ndarray:
  """Evaluates a static mask with numpy one block-row at a time and reduces per tile."""
  nq, nk = -(-q_len // block_q), -(-kv_len // block_k)
  out = np.empty((nq, nk), np.int8)
  k_pos = np.arange(nk * block_k)[None, :]
  k_valid = (k_pos < kv_len)
  for i in range(nq):
    q_pos = np.arange(i * block_q, (i + 1) * block_q)[:, None]
    q_valid = q_pos < q_len
    allowed = np.broadcast_to(np.asarray(mask._allowed(q_pos + q_offset, k_pos)), (block_q, nk * block_k))
    valid = q_valid & k_valid
    tiles_any = (allowed & valid).reshape(block_q, nk, block_k).any(axis=(0, 2))
    tiles_all = (allowed | ~valid).reshape(block_q, nk, block_k).all(axis=(0, 2))
    out[i] = np.where(tiles_all & tiles_any, FULL, np.where(tiles_any, PARTIAL, EMPTY))
  return out


def _child_states(mask: Mask, tiles: Tiles) -> np.ndarray:
  """A sub-mask's tile states for a combination: its analytic rule, else (a dynamic mask)
  all PARTIAL, else (a static mask with no rule) the per-row evaluation."""
  if not mask.static:
    return np.full(tiles.shape, PARTIAL, np.int8)
  states = mask._tile_states(tiles)
  if states is None:
    states = _static_block_map(mask, tiles.q_len, tiles.kv_len, tiles.block_q, tiles.block_k, tiles.q_offset)
  return states


@dataclasses.dataclass(frozen=True)
class _Combination(Mask):
  """Two masks combined pair by pair (`And`, `Or`): static when both sides are; tile states
  exact for box masks, else `_combine` of the two sides' states."""
  a: Mask
  b: Mask
  _combine = None  # np.minimum (And) or np.maximum (Or)

  @property
  def static(self):  # type: ignore[override]
    return self.a.static and self.b.static

  def block_map(self, q_len, kv_len, block_q, block_k, q_offset=0):
    """See `Mask.block_map`. Static: `_tile_states`. With a dynamic side: the min / max rule."""
    if self.static:
      return Mask.block_map(self, q_len, kv_len, block_q, block_k, q_offset)
    return self._tile_states(Tiles(q_len, kv_len, block_q, block_k, q_offset))

  def _tile_states(self, tiles):
    exact = Mask._tile_states(self, tiles)
    if exact is not None:
      return exact
    return type(self)._combine(_child_states(self.a, tiles), _child_states(self.b, tiles))


@dataclasses.dataclass(frozen=True)
class And(_Combination):
  """Both masks allow the pair. Tile states: exact for box masks (`_boxes`), else the min of
  the two sides' states, which is safe: EMPTY if either side is, FULL only if both are, the
  other side's state where one is FULL; two PARTIAL sides give PARTIAL even where their
  intersection is empty."""
  _combine = np.minimum

  def _allowed(self, q_pos, k_pos):
    return self.a._allowed(q_pos, k_pos) & self.b._allowed(q_pos, k_pos)

  def _boxes(self):
    a, b = self.a._boxes(), self.b._boxes()
    if a is None or b is None or len(a) * len(b) > MAX_BOXES:
      return None
    return prune_boxes([x & y for x in a for y in b])


@dataclasses.dataclass(frozen=True)
class Or(_Combination):
  """Either mask allows the pair. Tile states: exact for box masks, else the max of the two
  sides' states, which is safe: FULL if either side is, EMPTY only if both are; two PARTIAL
  sides give PARTIAL even where their union covers the tile."""
  _combine = np.maximum

  def _allowed(self, q_pos, k_pos):
    return self.a._allowed(q_pos, k_pos) | self.b._allowed(q_pos, k_pos)

  def _boxes(self):
    a, b = self.a._boxes(), self.b._boxes()
    return None if a is None or b is None or len(a) + len(b) > MAX_BOXES else prune_boxes(a + b)


@dataclasses.dataclass(frozen=True)
class Full(Mask):
  """Every pair allowed (the identity of `&`)."""

  def _allowed(self, q_pos, k_pos):
    return (q_pos >= 0) | (k_pos >= 0)

  def _boxes(self):
    return [Box()]  # key positions are >= 0, so (q >= 0) | (k >= 0) holds on every tile


@dataclasses.dataclass(frozen=True)
class Causal(Mask):
  """Key position <= query position."""

  def _allowed(self, q_pos, k_pos):
    return k_pos <= q_pos

  def _boxes(self):
    return [Box(d_hi=0)]


@dataclasses.dataclass(frozen=True)
class SlidingWindow(Mask):
  """Keys within `left` positions before and `right` after the query (inclusive).

  `SlidingWindow(left=w - 1, right=0)` is a causal window of w tokens including itself.
  """
  left: int
  right: int = 0

  def __post_init__(self):
    if self.left < 0 or self.right < 0:
      raise ValueError(f"window extents must be >= 0, got left={self.left}, right={self.right}")

  def _allowed(self, q_pos, k_pos):
    return (k_pos >= q_pos - self.left) & (k_pos <= q_pos + self.right)

  def _boxes(self):
    return [Box(d_lo=-int(self.left), d_hi=int(self.right))]


@dataclasses.dataclass(frozen=True)
class Chunked(Mask):
  """Query and key in the same chunk of `chunk_size` positions (block-local attention)."""
  chunk_size: int

  def __post_init__(self):
    if self.chunk_size <= 0:
      raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")

  def _allowed(self, q_pos, k_pos):
    return (q_pos // self.chunk_size) == (k_pos // self.chunk_size)

  def _tile_states(self, tiles):
    """Chunk ids are contiguous over a tile's positions: the tile meets the chunk-diagonal
    when its query and key chunk ranges overlap, and is FULL when all four bounds share
    one chunk."""
    c = self.chunk_size
    (qa, qb), (ka, kb) = (b // c for b in tiles.q_bounds), (b // c for b in tiles.k_bounds)
    meets = (qa <= kb) & (ka <= qb)
    full = (qa == qb) & (ka == kb) & (qa == ka)
    return states_from_bounds(meets, full)


@dataclasses.dataclass(frozen=True)
class Sinks(Mask):
  """The first `num_sinks` keys are always visible (StreamingLLM attention sinks)."""
  num_sinks: int

  def _allowed(self, q_pos, k_pos):
    return (k_pos < self.num_sinks) & (q_pos >= 0)

  def _boxes(self):
    return [Box(k_hi=int(self.num_sinks) - 1, q_lo=0)]


@dataclasses.dataclass(frozen=True)
class PrefixLM(Mask):
  """Bidirectional over the first `prefix_len` positions, causal after (T5/UniLM prefix-LM).

  `prefix_len` is an int (static) or an int array `[B]` (one prefix per example).
  """
  prefix_len: Any

  @property
  def static(self):  # type: ignore[override]
    return isinstance(self.prefix_len, (int, np.integer))

  def _allowed(self, q_pos, k_pos):
    if self.static:
      return (k_pos <= q_pos) | (k_pos < self.prefix_len)
    prefix = jnp.asarray(self.prefix_len)[:, None, None]
    return (k_pos <= q_pos) | (k_pos < prefix)

  def _boxes(self):
    return [Box(d_hi=0), Box(k_hi=int(self.prefix_len) - 1)] if self.static else None


@dataclasses.dataclass(frozen=True, eq=False)
class SegmentIds(Mask):
  """Attend only within the same segment (packed sequences).

  q_segments: int `[B, Tq]`, kv_segments: int `[B, Tk]` (defaults to q_segments).
  Absolute positions index these arrays directly, so a decode step passes the whole
  sequence's segment ids.
  """
  q_segments: Any
  kv_segments: Any = None
  static = False

  def _allowed(self, q_pos, k_pos):
    kv = self.q_segments if self.kv_segments is None else self.kv_segments
    qs = jnp.take(jnp.asarray(self.q_segments), q_pos[..., 0], axis=1)  # [B, Tq]
    ks = jnp.take(jnp.asarray(kv), k_pos[..., 0, :], axis=1)  # [B, Tk]
    return qs[:, :, None] == ks[:, None, :]


@dataclasses.dataclass(frozen=True, eq=False)
class KeyPadding(Mask):
  """Keys with `kv_valid[b, j] == False` are masked. kv_valid: bool `[B, Tk]`."""
  kv_valid: Any
  static = False

  def _allowed(self, q_pos, k_pos):
    valid = jnp.take(jnp.asarray(self.kv_valid), k_pos[..., 0, :], axis=1)  # [B, Tk]
    return valid[:, None, :] & (q_pos[None] >= 0)


@dataclasses.dataclass(frozen=True, eq=False)
class AtPositions(Mask):
  """`mask` evaluated at given absolute positions: query i sits at q_positions[i], key j
  at k_positions[j]; a key slot with a negative position is masked (an empty slot).

  For attention over a gathered or reordered key set whose slots are not at 0..Tk-1,
  e.g. a decode step over a ring-buffer cache (`variants.base.CacheSlots`). mask: a Mask
  or None (then only the slot validity applies); q_positions int [Tq], k_positions int
  [Tk] (numpy or jax, possibly traced). The op must be called with q_offset=0 so that
  query i is passed as index i; out-of-range indices (tile padding) are masked.
  """
  mask: Mask | None
  q_positions: Any
  k_positions: Any
  static = False

  def _allowed(self, q_pos, k_pos):
    qp = jnp.take(jnp.asarray(self.q_positions), q_pos, mode="clip")
    kp = jnp.take(jnp.asarray(self.k_positions), k_pos, mode="fill", fill_value=-1)
    ok = (kp >= 0) & (qp >= 0)
    if self.mask is None:
      return ok
    return ok & self.mask._allowed(qp, jnp.maximum(kp, 0))


def combine(*masks: Mask | None) -> Mask | None:
  """And-combines the non-None masks; None when there are none."""
  present = [m for m in masks if m is not None]
  if not present:
    return None
  out = present[0]
  for m in present[1:]:
    out = out & m
  return out
