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


# ---- analytic block maps (issue 10, part 5) ---------------------------------------------
# The oracle: each primitive's predicate written again from its definition in numpy, the
# tile states by brute force over every (query, key) pair of the tile (`_tile_states`).

_ORACLE = {
    "full": lambda q, k: np.ones(np.broadcast_shapes(q.shape, k.shape), bool),
    "causal": lambda q, k: k <= q,
    "window": lambda q, k, left, right: (k >= q - left) & (k <= q + right),
    "chunked": lambda q, k, c: q // c == k // c,
    "sinks": lambda q, k, s: (k < s) & (q >= 0),
    "prefix": lambda q, k, p: (k <= q) | (k < p),
}


def _draw_primitive(rng, kinds):
  """(Mask, numpy predicate) of a random primitive of one of `kinds`."""
  kind = kinds[rng.integers(len(kinds))]
  args = {"full": (), "causal": (), "window": (int(rng.integers(0, 12)), int(rng.integers(0, 12))),
          "chunked": (int(rng.integers(1, 20)),), "sinks": (int(rng.integers(0, 9)),),
          "prefix": (int(rng.integers(0, 30)),)}[kind]
  mask = {"full": M.Full, "causal": M.Causal, "window": M.SlidingWindow, "chunked": M.Chunked,
          "sinks": M.Sinks, "prefix": M.PrefixLM}[kind](*args)
  return mask, (lambda q, k: _ORACLE[kind](q, k, *args))


def _draw_tree(rng, kinds, depth):
  """A random &/| combination of primitives with its numpy predicate."""
  if depth == 0 or rng.random() < 0.3:
    return _draw_primitive(rng, kinds)
  (ma, fa), (mb, fb) = _draw_tree(rng, kinds, depth - 1), _draw_tree(rng, kinds, depth - 1)
  if rng.random() < 0.5:
    return ma & mb, (lambda q, k: fa(q, k) & fb(q, k))
  return ma | mb, (lambda q, k: fa(q, k) | fb(q, k))


def _draw_grid(rng):
  """(q_len, kv_len, block_q, block_k, q_offset): several tiles, lengths not multiples of
  the tiles (padding), a query offset as in a prefill after a cache."""
  return (int(rng.integers(1, 70)), int(rng.integers(1, 70)), int(rng.integers(1, 17)),
          int(rng.integers(1, 17)), int(rng.integers(0, 40)))


def _brute_states(pred, tq, tk, bq, bk, q_offset):
  q = np.arange(tq)[:, None] + q_offset
  k = np.arange(tk)[None, :]
  return _tile_states(np.broadcast_to(pred(q, k), (tq, tk))[None], tq, tk, bq, bk)


def _unsafe(bm, truth):
  """Tiles where a block map is wrong in the unsafe direction: EMPTY where some pair is
  allowed (the kernel would skip it), FULL where some pair is masked (it would not mask)."""
  return ((bm == M.EMPTY) & (truth != M.EMPTY)) | ((bm == M.FULL) & (truth != M.FULL))


@pytest.mark.parametrize("kind", list(_ORACLE))
def test_primitive_analytic_block_map_equals_brute_force(kind, monkeypatch):
  """Every static primitive's analytic map (no per-row evaluation: the brute-force path is
  made to raise) equals the brute-force tile states over a seeded grid of shapes."""
  monkeypatch.setattr(M, "_static_block_map", _raise_brute_force)
  rng = np.random.default_rng(list(_ORACLE).index(kind))
  for _ in range(40):
    mask, pred = _draw_primitive(rng, [kind])
    grid = _draw_grid(rng)
    np.testing.assert_array_equal(mask.block_map(*grid), _brute_states(pred, *grid), err_msg=f"{mask} {grid}")


def test_box_combinations_are_exact(monkeypatch):
  """&/| of window-like masks (causal, window, sinks, prefix, full: unions of boxes in
  (q, k, k - q)) have exact analytic maps, e.g. sink_window's (window | sinks) & causal."""
  monkeypatch.setattr(M, "_static_block_map", _raise_brute_force)
  rng = np.random.default_rng(1)
  for _ in range(150):
    mask, pred = _draw_tree(rng, ["full", "causal", "window", "sinks", "prefix"], depth=3)
    grid = _draw_grid(rng)
    np.testing.assert_array_equal(mask.block_map(*grid), _brute_states(pred, *grid), err_msg=f"{mask} {grid}")


def test_combinations_are_never_unsafe(monkeypatch):
  """With chunked masks in the tree the min/max rule applies (And = min, Or = max): it may
  say PARTIAL where the truth is EMPTY or FULL, never EMPTY or FULL wrongly."""
  monkeypatch.setattr(M, "_static_block_map", _raise_brute_force)
  rng = np.random.default_rng(2)
  inexact = tiles = 0
  for _ in range(150):
    mask, pred = _draw_tree(rng, list(_ORACLE), depth=3)
    grid = _draw_grid(rng)
    bm, truth = mask.block_map(*grid), _brute_states(pred, *grid)
    assert not _unsafe(bm, truth).any(), (mask, grid, bm, truth)
    inexact, tiles = inexact + int((bm != truth).sum()), tiles + bm.size
  print(f"combinations: {inexact} of {tiles} tiles PARTIAL where the truth is EMPTY/FULL")


def test_canary_unsafe_combination_rule_is_caught():
  """The safety check bites: combining an And's sides with max (an unsafe rule) reports
  FULL/EMPTY tiles the brute force contradicts."""
  a, b = M.SlidingWindow(3, 0), M.Causal() & M.SlidingWindow(0, 0)
  grid = (37, 37, 8, 8, 0)
  wrong = np.maximum(a.block_map(*grid), (M.Chunked(16) | b).block_map(*grid))
  truth = _brute_states(lambda q, k: (k >= q - 3) & (k <= q) & ((q // 16 == k // 16) | (k == q)), *grid)
  assert _unsafe(wrong, truth).any()


def _raise_brute_force(*args, **kwargs):
  raise AssertionError("the per-row (T x T) block-map path was used")


class _EveryOther(M.Mask):
  """A static mask with no analytic rule (only a predicate): block maps evaluate it per row."""

  def _allowed(self, q_pos, k_pos):
    return (k_pos % 2) == (q_pos % 2)


def test_canary_mask_without_rule_takes_the_brute_force_path(monkeypatch):
  """The guard of the test below bites: a mask with no analytic rule (alone or inside an
  And) reaches `_static_block_map`, which the monkeypatch turns into an error."""
  monkeypatch.setattr(M, "_static_block_map", _raise_brute_force)
  for mask in (_EveryOther(), _EveryOther() & M.Causal()):
    with pytest.raises(AssertionError, match="per-row"):
      mask.block_map(64, 64, 8, 8)


@pytest.mark.parametrize("name", ["causal", "sink_window", "chunk_causal", "prefix", "chunk_or_window"])
def test_million_token_block_map_is_analytic(name, monkeypatch):
  """T = 1,000,000 with 512 x 512 tiles (1954^2 tiles; the per-row path would evaluate
  1e12 pairs): the map builds in well under a second of CPU time, its peak host memory
  (tracemalloc) stays under 50 MB, and the brute-force path is never entered."""
  import time
  import tracemalloc
  mask = {"causal": M.Causal(), "sink_window": (M.SlidingWindow(4095) | M.Sinks(4)) & M.Causal(),
          "chunk_causal": M.Chunked(2048) & M.Causal(), "prefix": M.PrefixLM(100_000),
          "chunk_or_window": M.Chunked(1024) | M.SlidingWindow(100, 100)}[name]
  monkeypatch.setattr(M, "_static_block_map", _raise_brute_force)
  tracemalloc.start()
  t0 = time.process_time()
  bm = mask.block_map(1_000_000, 1_000_000, 512, 512)
  seconds = time.process_time() - t0
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  print(f"{name}: {bm.shape} block map in {seconds:.3f} s CPU, peak {peak / 2**20:.1f} MiB")
  assert bm.shape == (1954, 1954)
  assert seconds < 1.0 and peak < 50 * 2**20, (seconds, peak)
  if name == "sink_window":  # spot check: the diagonal, the sink column, an empty far tile
    assert bm[1000, 1000] == M.PARTIAL and bm[1000, 0] == M.PARTIAL and bm[1000, 500] == M.EMPTY
