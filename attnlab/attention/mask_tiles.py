"""Tile geometry for the analytic block maps of `attnlab.attention.masks`.

`Tiles` holds a block map's tile grid and each tile's valid position bounds; `Box` is the
set of (query, key) pairs with q, k and k - q in closed ranges, the shape that causal,
window, sink, prefix and full masks are unions of. A union of boxes gets exact tile
states from the bounds alone (`boxes_tile_states`, O(nq * nk) per box, no [T, T] array).
"""

from __future__ import annotations

import dataclasses

import numpy as np

EMPTY, PARTIAL, FULL = 0, 1, 2

_INF = 1 << 40  # an unbounded side of a Box (positions are far below it; sums cannot overflow int64)


@dataclasses.dataclass(frozen=True)
class Tiles:
  """The tile grid of a block map and each tile's valid position bounds (inclusive).

  Query tile i covers positions q_offset + i*bq .. q_offset + min((i+1)*bq, q_len) - 1,
  key tile j covers j*bk .. min((j+1)*bk, kv_len) - 1 (the padding past the end is not
  part of a tile). Bounds are int64 `q_lo, q_hi` [nq, 1] and `k_lo, k_hi` [1, nk], so a
  rule combining them broadcasts to [nq, nk] and never touches single positions.
  """
  q_len: int
  kv_len: int
  block_q: int
  block_k: int
  q_offset: int = 0

  @property
  def shape(self):
    return -(-self.q_len // self.block_q), -(-self.kv_len // self.block_k)

  def _bounds(self, n, block, length, offset):
    lo = np.arange(n, dtype=np.int64) * block
    return lo + offset, np.minimum(lo + block, length) - 1 + offset

  @property
  def q_bounds(self):
    lo, hi = self._bounds(self.shape[0], self.block_q, self.q_len, int(self.q_offset))
    return lo[:, None], hi[:, None]

  @property
  def k_bounds(self):
    lo, hi = self._bounds(self.shape[1], self.block_k, self.kv_len, 0)
    return lo[None, :], hi[None, :]


@dataclasses.dataclass(frozen=True)
class Box:
  """The pairs with q in [q_lo, q_hi], k in [k_lo, k_hi] and k - q in [d_lo, d_hi]
  (inclusive; +-_INF = unbounded). Causal is Box(d_hi=0), a window Box(d_lo=-left,
  d_hi=right), sinks Box(k_hi=s-1, q_lo=0). Boxes are closed under intersection, so an
  `&` of box masks is a box and an `|` a union of boxes: their block maps are exact."""
  d_lo: int = -_INF
  d_hi: int = _INF
  k_lo: int = -_INF
  k_hi: int = _INF
  q_lo: int = -_INF
  q_hi: int = _INF

  def __and__(self, other: "Box") -> "Box":
    return Box(max(self.d_lo, other.d_lo), min(self.d_hi, other.d_hi), max(self.k_lo, other.k_lo),
               min(self.k_hi, other.k_hi), max(self.q_lo, other.q_lo), min(self.q_hi, other.q_hi))

  def complement(self) -> list["Box"]:
    """Boxes whose union is the pairs outside this box (one per bounded side)."""
    out = []
    for lo, hi in (("d_lo", "d_hi"), ("k_lo", "k_hi"), ("q_lo", "q_hi")):
      if getattr(self, lo) > -_INF:
        out.append(dataclasses.replace(Box(), **{hi: getattr(self, lo) - 1}))
      if getattr(self, hi) < _INF:
        out.append(dataclasses.replace(Box(), **{lo: getattr(self, hi) + 1}))
    return out

  def is_empty(self) -> bool:
    return self.d_lo > self.d_hi or self.k_lo > self.k_hi or self.q_lo > self.q_hi

  def within(self, other: "Box") -> bool:
    """Each of this box's ranges lies inside `other`'s (so the box is a subset)."""
    return (other.d_lo <= self.d_lo and self.d_hi <= other.d_hi and other.k_lo <= self.k_lo
            and self.k_hi <= other.k_hi and other.q_lo <= self.q_lo and self.q_hi <= other.q_hi)

  def meets(self, tiles: Tiles):
    """bool [nq, nk]: some valid pair of the tile is in the box. Exact: with q and k
    clipped to the box's ranges, the differences k - q fill [k_lo - q_hi, k_hi - q_lo]."""
    (qa, qb), (ka, kb) = tiles.q_bounds, tiles.k_bounds
    q1, q2 = np.maximum(qa, self.q_lo), np.minimum(qb, self.q_hi)
    k1, k2 = np.maximum(ka, self.k_lo), np.minimum(kb, self.k_hi)
    if self.d_lo > self.d_hi:
      return np.zeros(tiles.shape, bool)
    return (q1 <= q2) & (k1 <= k2) & (k1 <= q2 + self.d_hi) & (k2 >= q1 + self.d_lo)

  def covers(self, tiles: Tiles):
    """bool [nq, nk]: every valid pair of the tile is in the box."""
    (qa, qb), (ka, kb) = tiles.q_bounds, tiles.k_bounds
    return ((qa >= self.q_lo) & (qb <= self.q_hi) & (ka >= self.k_lo) & (kb <= self.k_hi)
            & (ka >= qb + self.d_lo) & (kb <= qa + self.d_hi))


MAX_BOXES = 64  # larger unions (or their complements) fall back to the min/max rule


def prune_boxes(boxes: list[Box]) -> list[Box]:
  """The same union without empty boxes, duplicates and boxes inside another box."""
  out: list[Box] = []
  for box in sorted({b for b in boxes if not b.is_empty()}, key=lambda b: dataclasses.astuple(b)):
    if not any(box.within(o) for o in out):
      out = [o for o in out if not o.within(box)] + [box]
  return out


def boxes_tile_states(boxes: list[Box], tiles: Tiles) -> np.ndarray | None:
  """Exact tile states of the union of `boxes`: a tile is non-empty when it meets a box
  and FULL when it meets no box of the complement (the intersection over boxes of their
  complements, expanded into a union of boxes). None when that expansion exceeds MAX_BOXES."""
  meets = np.zeros(tiles.shape, bool)
  full = np.zeros(tiles.shape, bool)
  for box in boxes:
    meets |= box.meets(tiles)
    full |= box.covers(tiles)
  outside = [Box()]  # pairs in no box: the intersection of the complements
  for box in boxes:
    outside = prune_boxes([a & b for a in outside for b in box.complement()])
    if len(outside) > MAX_BOXES:
      return None
  if not full.all():
    any_outside = np.zeros(tiles.shape, bool)
    for box in outside:
      any_outside |= box.meets(tiles)
    full |= ~any_outside
  return states_from_bounds(meets, full)


def states_from_bounds(meets, full) -> np.ndarray:
  """int8 tile states from bool [nq, nk] `meets` (some pair allowed) and `full` (every
  pair allowed), without a wider temporary."""
  out = meets.astype(np.int8)  # EMPTY 0 / PARTIAL 1
  out[full & meets] = FULL
  return out
