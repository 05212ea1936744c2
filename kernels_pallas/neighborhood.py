"""Neighborhood attention (NATTEN) through the block-sparse flash kernel, from its key table.

Neighborhood attention (Hassani et al. 2023, NAT; Hassani & Shi 2022, DiNAT) lets query t
attend a fixed set of keys: 1-D or 2-D windows, dilated, causal or border-shifted. Its
definition lives with the variant (`attnlab.attention.variants.neighborhood.
neighborhood_layout` -> keys int [T, K], valid bool [T, K]: query t attends keys[t, m] where
valid[t, m]); this module takes that table as given, so the kernel computes exactly the
variant's pattern without re-deriving NATTEN's rules.

`KeyTableMask(keys, valid)` is a static mask in the protocol `build_block_metadata` reads:
`block_map` marks every tile that holds an allowed (query, key) pair PARTIAL (O(T * K)
host work, from the pairs, no [T, T] array; the metadata builder then promotes all-true
tiles to FULL), and `allowed(q_pos, k_pos)` looks the pairs up in the sorted pair codes
q * T + k. A query block of a 1-D window touches about w d / block_k + 1 key blocks; of a
2-D w x w window over a row-major grid, one or two key blocks per window row (about w to 2w,
more when the window's columns are dilated across block edges), so the kernel's work is
O(T * (w d + block)) in 1-D and O(T * w * block) in 2-D, not O(T^2) (`kernel_work` counts it).

The kernel takes no additive bias: the variant's relative position bias (rel_pos_bias=True)
is not supported here; key padding enters as the kernel's kv_valid.
"""

from __future__ import annotations

import numpy as np

from kernels_pallas import block_sparse_flash as K

_EMPTY, _PARTIAL = 0, 1  # block_map states (attnlab.attention.masks EMPTY/PARTIAL)


class KeyTableMask:
  """Static mask from a gathered-key table: keys int [T, K], valid bool [T, K] (query t
  attends keys[t, m] where valid[t, m]); self-attention over T positions."""

  static = True

  def __init__(self, keys, valid=None):
    keys = np.asarray(keys, np.int64)
    valid = np.ones(keys.shape, bool) if valid is None else np.asarray(valid, bool)
    if keys.ndim != 2 or valid.shape != keys.shape:
      raise ValueError(f"keys and valid must be [T, K] of one shape, got {keys.shape} and {valid.shape}")
    self.length = keys.shape[0]
    if keys.size and (keys.min() < 0 or keys.max() >= self.length):
      raise ValueError(f"keys must lie in [0, {self.length}), got [{keys.min()}, {keys.max()}]")
    rows = np.broadcast_to(np.arange(self.length)[:, None], keys.shape)
    self.codes = np.unique(rows[valid] * self.length + keys[valid])  # sorted (query, key) pair codes

  def allowed(self, q_pos, k_pos):
    """bool, the broadcast of q_pos [..., Tq, 1] and k_pos [..., 1, Tk] (numpy positions)."""
    q_pos, k_pos = np.asarray(q_pos, np.int64), np.asarray(k_pos, np.int64)
    t = self.length
    inside = (q_pos >= 0) & (q_pos < t) & (k_pos >= 0) & (k_pos < t)
    x = np.where(inside, q_pos * t + k_pos, -1)
    if not self.codes.size:
      return np.zeros(x.shape, bool)
    hit = self.codes[np.minimum(np.searchsorted(self.codes, x), self.codes.size - 1)] == x
    return hit & inside

  def block_map(self, q_len: int, kv_len: int, block_q: int, block_k: int, q_offset: int = 0) -> np.ndarray:
    """int8 [nq, nk]: PARTIAL where a tile holds an allowed pair, else EMPTY."""
    if (q_len, kv_len, q_offset) != (self.length, self.length, 0):
      raise ValueError(f"the key table is for self-attention over {self.length} positions at q_offset 0, got "
                       f"q_len={q_len}, kv_len={kv_len}, q_offset={q_offset}")
    states = np.full((-(-q_len // block_q), -(-kv_len // block_k)), _EMPTY, np.int8)
    states[(self.codes // self.length) // block_q, (self.codes % self.length) // block_k] = _PARTIAL
    return states


def neighborhood_block_metadata(keys, valid, block_q: int, block_k: int) -> K.BlockSparseMeta:
  """The block-sparse layout of the key table (see `KeyTableMask`) for tiles block_q x block_k."""
  mask = KeyTableMask(keys, valid)
  return K.build_block_metadata(mask, mask.length, mask.length, block_q, block_k,
                                chunk=max(1, 2 ** 20 // (block_q * block_k)))


def neighborhood_flash_attention(q, k, v, keys, valid=None, *, block_q: int = 64, block_k: int = 64, meta=None,
                                 scale: float | None = None, kv_valid=None, **kernel_kwargs):
  """Softmax attention of each query over its key-table neighbours, by the block-sparse kernel.

  q [B, T, Hq, D], k [B, T, Hkv, D], v [B, T, Hkv, Dv]; keys int [T, K], valid bool [T, K]
  (or None: all); kv_valid bool [B|1, T] (key padding). Returns [B, T, Hq, Dv] equal to
  softmax over {keys[t, m] : valid[t, m]} (a row without any allowed key is zero). meta: a
  prebuilt `neighborhood_block_metadata` (reuse it across layers of one shape); scale
  defaults to D ** -0.5; kernel_kwargs go to `block_sparse_flash_attention` (interpret,
  backend, num_warps, ...). Differentiable in q, k, v.
  """
  if meta is None:
    meta = neighborhood_block_metadata(keys, valid, block_q, block_k)
  return K.block_sparse_flash_attention(q, k, v, meta, scale=scale, kv_valid=kv_valid, **kernel_kwargs)


__all__ = ["KeyTableMask", "neighborhood_block_metadata", "neighborhood_flash_attention"]
