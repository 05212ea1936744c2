"""Host-side metadata of the block-sparse flash kernels: which tiles each kernel visits.

`build_block_metadata` turns a static mask's `block_map` (EMPTY / PARTIAL / FULL per tile)
into per-query-block lists of the non-empty key blocks (the forward and dq kernels walk
them) and per-key-block lists of query blocks (the dk/dv kernel), with each tile's kind:
FULL, EMPTY or an index into the deduplicated PARTIAL boolean blocks. `_select_lists`
builds the same lists on the device from per-(batch, head, query block) selected key
blocks (MoBA, top-k routing); `kernel_work` counts the tiles visited.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

EMPTY_TILE, FULL_TILE = -2, -1  # tile_kind codes; >= 0 indexes partial_masks
_EMPTY, _PARTIAL, _FULL = 0, 1, 2  # block_map states (attnlab.attention.masks EMPTY/PARTIAL/FULL)
DEFAULT_BLOCK = 128


def _next_pow2(n: int) -> int:
  return 1 << max(0, int(n) - 1).bit_length()


# ---- host-side metadata -------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class BlockSparseMeta:
  """Static block-sparse layout of one attention call (numpy, built on the host).

  tq, tk: sequence lengths; block_q, block_k: tile edges; nq, nk: tile counts.
  row_idx int32 [nq, L], row_cnt int32 [nq]: per query block, its non-empty key blocks
    (first row_cnt[i] entries, ascending; the rest is padding).
  col_idx int32 [nk, Lc], col_cnt int32 [nk]: per key block, its query blocks.
  tile_kind int32 [nq, nk]: EMPTY_TILE, FULL_TILE or an index into partial_masks.
  partial_masks int8 [P, block_q, block_k] (P >= 1): distinct allowed-blocks of the
    PARTIAL tiles (padding positions are 0).
  """
  tq: int
  tk: int
  block_q: int
  block_k: int
  nq: int
  nk: int
  row_idx: np.ndarray
  row_cnt: np.ndarray
  col_idx: np.ndarray
  col_cnt: np.ndarray
  tile_kind: np.ndarray
  partial_masks: np.ndarray


def _lists(nonempty: np.ndarray):
  """bool [n, m] -> (idx int32 [n, L] with L a power of two, cnt int32 [n]): the True columns per row."""
  cnt = nonempty.sum(axis=1).astype(np.int32)
  width = _next_pow2(max(1, int(cnt.max(initial=0))))
  idx = np.zeros((nonempty.shape[0], width), np.int32)
  for r in range(nonempty.shape[0]):
    cols = np.flatnonzero(nonempty[r])
    idx[r, :len(cols)] = cols
  return idx, cnt


def build_block_metadata(static_mask, tq: int, tk: int, block_q: int, block_k: int,
                         q_offset: int = 0, *, chunk: int = 2048) -> BlockSparseMeta:
  """The block-sparse layout of `static_mask` over a [tq, tk] score matrix.

  static_mask: None (all pairs allowed) or an object with
    `block_map(tq, tk, block_q, block_k, q_offset) -> int [nq, nk]` in {0 EMPTY, 1 PARTIAL,
    2 FULL} and `allowed(q_pos [..., bq, 1], k_pos [..., 1, bk]) -> bool` on numpy
    positions (attnlab's static masks are). Query i sits at absolute position q_offset + i.
  Tiles that hold padding (beyond tq or tk) are PARTIAL; each PARTIAL tile's allowed
  block is evaluated (in chunks of `chunk` tiles) and deduplicated. A PARTIAL tile whose
  block turns out all-False is dropped (EMPTY), an all-True one is FULL.
  """
  nq, nk = -(-tq // block_q), -(-tk // block_k)
  if static_mask is None:
    states = np.full((nq, nk), _FULL, np.int8)
  else:
    states = np.array(static_mask.block_map(tq, tk, block_q, block_k, int(q_offset)), np.int8)
    if states.shape != (nq, nk):
      raise ValueError(f"block_map returned shape {states.shape}, expected {(nq, nk)}")
  if tk % block_k:
    states[:, -1] = np.minimum(states[:, -1], _PARTIAL)
  if tq % block_q:
    states[-1, :] = np.minimum(states[-1, :], _PARTIAL)
  kind = np.where(states == _FULL, FULL_TILE, EMPTY_TILE).astype(np.int32)
  coords = np.argwhere(states == _PARTIAL)
  distinct: dict[bytes, int] = {}
  blocks = []
  for start in range(0, len(coords), chunk):
    ij = coords[start:start + chunk]
    q_rel = ij[:, 0, None] * block_q + np.arange(block_q)[None]  # [n, bq]
    k_rel = ij[:, 1, None] * block_k + np.arange(block_k)[None]  # [n, bk]
    valid = (q_rel < tq)[:, :, None] & (k_rel < tk)[:, None, :]
    if static_mask is None:
      ok = valid
    else:
      ok = np.asarray(static_mask.allowed((q_rel + q_offset)[:, :, None], k_rel[:, None, :]), bool)
      ok = np.broadcast_to(ok, valid.shape) & valid
    for (i, j), blk in zip(ij, ok):
      if not blk.any():
        continue
      if blk.all():
        kind[i, j] = FULL_TILE
        continue
      key = np.packbits(blk).tobytes()
      if key not in distinct:
        distinct[key] = len(blocks)
        blocks.append(blk.astype(np.int8))
      kind[i, j] = distinct[key]
  partial = np.stack(blocks) if blocks else np.ones((1, block_q, block_k), np.int8)
  nonempty = kind != EMPTY_TILE
  row_idx, row_cnt = _lists(nonempty)
  col_idx, col_cnt = _lists(nonempty.T)
  return BlockSparseMeta(tq, tk, block_q, block_k, nq, nk, row_idx, row_cnt, col_idx, col_cnt, kind, partial)


def kernel_work(meta: BlockSparseMeta, block_indices=None) -> dict[str, int]:
  """Tiles each kernel visits per (batch, query head): the loop trip counts it is launched with.

  fwd (= dq): sum over query blocks of their list lengths; dkdv: sum over key blocks
  (the same tiles, walked by columns). With `block_indices`, the selected lists' lengths
  averaged over (batch, head) instead.
  """
  if block_indices is None:
    n = int(meta.row_cnt.sum())
    return {"fwd": n, "dq": n, "dkdv": int(meta.col_cnt.sum()), "dense": meta.nq * meta.nk}
  _, row_cnt, _, col_cnt = jax.jit(functools.partial(_select_lists, meta))(jnp.asarray(block_indices))
  n = float(jnp.mean(jnp.sum(row_cnt, axis=(-2, -1))))
  m = float(jnp.mean(jnp.sum(col_cnt, axis=(-2, -1))))
  return {"fwd": n, "dq": n, "dkdv": m, "dense": meta.nq * meta.nk}


def _select_lists(meta: BlockSparseMeta, block_indices):
  """Device-side lists from selected key blocks block_indices int [Bs, Hs, nq, K] (-1 = none).

  Keeps ids in [0, nk) whose tile is not EMPTY under the static mask, drops duplicates,
  and returns (row_idx [Bs, Hs, nq, L], row_cnt [Bs, Hs, nq, 1], col_idx [Bs, Hs, nk, Lc],
  col_cnt [Bs, Hs, nk, 1]) with L = next power of two >= K and Lc >= nq.
  """
  nq, nk = meta.nq, meta.nk
  ids = block_indices.astype(jnp.int32)
  if ids.ndim != 4 or ids.shape[2] != nq:
    raise ValueError(f"block_indices must be [B|1, Hq|1, nq={nq}, K], got shape {ids.shape}")
  width = _next_pow2(ids.shape[-1])
  ids = jnp.pad(ids, ((0, 0), (0, 0), (0, 0), (0, width - ids.shape[-1])), constant_values=-1)
  kind = jnp.asarray(meta.tile_kind)[jnp.arange(nq)[:, None], jnp.clip(ids, 0, nk - 1)]
  ok = (ids >= 0) & (ids < nk) & (kind != EMPTY_TILE)
  ids = jnp.sort(jnp.where(ok, ids, nk), axis=-1)
  dup = jnp.concatenate([jnp.zeros_like(ids[..., :1], bool), ids[..., 1:] == ids[..., :-1]], axis=-1)
  ids = jnp.sort(jnp.where(dup, nk, ids), axis=-1)
  row_cnt = jnp.sum(ids < nk, axis=-1, keepdims=True).astype(jnp.int32)
  row_idx = jnp.where(ids < nk, ids, 0)
  # Column lists: the selection as a [.., nq, nk] boolean, then the True rows per column.
  sel = jnp.zeros(ids.shape[:3] + (nk + 1,), bool)
  sel = jnp.put_along_axis(sel, ids, True, axis=-1, inplace=False)[..., :nk]
  sel_t = jnp.swapaxes(sel, -1, -2)  # [Bs, Hs, nk, nq]
  lc = _next_pow2(nq)
  rows_t = jnp.sort(jnp.where(sel_t, jnp.arange(nq), nq), axis=-1)
  rows_t = jnp.pad(rows_t, ((0, 0), (0, 0), (0, 0), (0, lc - nq)), constant_values=nq)
  col_cnt = jnp.sum(rows_t < nq, axis=-1, keepdims=True).astype(jnp.int32)
  col_idx = jnp.where(rows_t < nq, rows_t, 0)
  return row_idx, row_cnt, col_idx, col_cnt
