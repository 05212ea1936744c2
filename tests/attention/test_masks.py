"""Masks: dense lowering vs block maps, `&` / `|` algebra, static vs dynamic masks."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import masks as M

_SEG = jnp.asarray(np.repeat(np.array([[0, 1, 2, 3], [0, 0, 1, 1]]), [7, 9, 11, 10], axis=1))  # [2, 37]
_PAD = jnp.arange(37)[None] < jnp.array([[30], [5]])

STATIC = {
    "full": M.Full(),
    "causal": M.Causal(),
    "window": M.SlidingWindow(5),
    "window_lr": M.SlidingWindow(3, 6),
    "chunked": M.Chunked(8),
    "sinks": M.Sinks(3),
    "prefix": M.PrefixLM(11),
    "sink_window": (M.SlidingWindow(6) | M.Sinks(2)) & M.Causal(),
    "chunk_or_window": M.Chunked(16) | M.SlidingWindow(2, 2),
}
DYNAMIC = {
    "segments": M.SegmentIds(_SEG),
    "padding": M.KeyPadding(_PAD),
    "prefix_per_example": M.PrefixLM(jnp.array([4, 20])),
    "segments_causal": M.SegmentIds(_SEG) & M.Causal(),
    "padding_or_window": M.KeyPadding(_PAD) | M.SlidingWindow(2),
}


def _tile_states(dense, tq, tk, bq, bk):
  """Reference tile states from a dense [B|1, tq, tk] mask (padding counts as masked)."""
  nq, nk = -(-tq // bq), -(-tk // bk)
  d = np.zeros((dense.shape[0], nq * bq, nk * bk), bool)
  d[:, :tq, :tk] = dense
  valid = np.zeros((nq * bq, nk * bk), bool)
  valid[:tq, :tk] = True
  out = np.empty((nq, nk), np.int8)
  for i, j in itertools.product(range(nq), range(nk)):
    sl = np.s_[i * bq:(i + 1) * bq, j * bk:(j + 1) * bk]
    allowed, ok = d[(slice(None),) + sl] & valid[sl], valid[sl]
    if not allowed.any():
      out[i, j] = M.EMPTY
    elif (allowed == ok).all():
      out[i, j] = M.FULL
    else:
      out[i, j] = M.PARTIAL
  return out


@pytest.mark.parametrize("name", list(STATIC))
@pytest.mark.parametrize("tq,tk,bq,bk,q_offset", [(37, 37, 8, 8, 0), (37, 37, 16, 8, 0), (9, 37, 4, 16, 28), (64, 64, 16, 16, 0)])
def test_static_block_map_matches_dense(name, tq, tk, bq, bk, q_offset):
  mask = STATIC[name]
  assert mask.static
  dense = np.asarray(mask.dense(tq, tk, q_offset))
  np.testing.assert_array_equal(mask.block_map(tq, tk, bq, bk, q_offset), _tile_states(dense, tq, tk, bq, bk))


@pytest.mark.parametrize("name", list(DYNAMIC))
def test_dynamic_block_map_is_conservative(name):
  """A dynamic mask's block map never claims EMPTY or FULL where the data disagrees."""
  mask = DYNAMIC[name]
  assert not mask.static
  bm = mask.block_map(37, 37, 8, 8)
  truth = _tile_states(np.asarray(mask.dense(37, 37)), 37, 37, 8, 8)
  assert not ((bm == M.EMPTY) & (truth != M.EMPTY)).any()
  assert not ((bm == M.FULL) & (truth != M.FULL)).any()


def test_dynamic_and_static_keeps_static_empties():
  bm = (M.SegmentIds(_SEG) & M.Causal()).block_map(37, 37, 8, 8)
  causal = M.Causal().block_map(37, 37, 8, 8)
  np.testing.assert_array_equal(bm == M.EMPTY, causal == M.EMPTY)
  assert (bm[causal != M.EMPTY] == M.PARTIAL).all()


def test_dynamic_masks_alone_are_all_partial():
  for mask in (M.SegmentIds(_SEG), M.KeyPadding(_PAD)):
    assert (mask.block_map(37, 37, 8, 16) == M.PARTIAL).all()


@pytest.mark.parametrize("a,b", list(itertools.combinations(list(STATIC) + list(DYNAMIC), 2))[::3])
def test_and_or_algebra(a, b):
  ma, mb = {**STATIC, **DYNAMIC}[a], {**STATIC, **DYNAMIC}[b]
  da, db = np.asarray(ma.dense(37, 37)), np.asarray(mb.dense(37, 37))
  np.testing.assert_array_equal(np.asarray((ma & mb).dense(37, 37)), np.broadcast_arrays(da & db)[0])
  np.testing.assert_array_equal(np.asarray((ma | mb).dense(37, 37)), np.broadcast_arrays(da | db)[0])
  assert (ma & mb).static == (ma.static and mb.static) == (ma | mb).static


def test_full_is_identity_of_and():
  for mask in STATIC.values():
    np.testing.assert_array_equal((mask & M.Full()).dense(20, 20), mask.dense(20, 20))


def test_combine():
  assert M.combine(None, None) is None
  c = M.combine(M.Causal(), None, M.SlidingWindow(3))
  np.testing.assert_array_equal(c.dense(12, 12), (M.Causal() & M.SlidingWindow(3)).dense(12, 12))


def test_allowed_on_tiles_matches_dense():
  """`allowed` on a tile's positions equals the dense mask's slice (what blocked impls use)."""
  for mask in list(STATIC.values()) + list(DYNAMIC.values()):
    q_pos, k_pos = jnp.arange(8, 16)[:, None], jnp.arange(16, 32)[None, :]
    tile = jnp.broadcast_to(mask.allowed(q_pos, k_pos), mask.dense(37, 37).shape[:1] + (8, 16))
    np.testing.assert_array_equal(tile, mask.dense(37, 37)[:, 8:16, 16:32])


def test_dense_with_traced_offset():
  f = jax.jit(lambda off: M.Causal().dense(4, 37, off))
  np.testing.assert_array_equal(f(10), M.Causal().dense(4, 37, 10))
  np.testing.assert_array_equal(f(10)[0, 0], np.arange(37) <= 10)


def test_invalid_masks_raise():
  with pytest.raises(ValueError):
    M.SlidingWindow(-1)
  with pytest.raises(ValueError):
    M.Chunked(0)
