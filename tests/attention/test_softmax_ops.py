"""softmax_attention implementations against an independent oracle, forward and gradients.

The oracle (`oracle`, `DEFINITIONS`) builds each case's mask from its definition in numpy
(causal j <= i, window i - left <= j <= i + right, ...) and its ALiBi bias from Press et
al. (2022), importing neither `masks` nor the ops; both the reference and the blocked
(xla) implementations are compared with it. The xla implementation runs with small
tiles (8 x 16): at T = 37 that is 5 query tiles by 3 key tiles, the last ones partial,
with EMPTY/FULL/PARTIAL tiles among them.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import masks as M
from attnlab.attention.ops import dispatch
from attnlab.attention.ops.softmax import resolve_impl
from attnlab.attention.ops import softmax_attention, softmax_attention_reference
from attnlab.attention.ops.common import mask_flatten
from attnlab.attention.ops.softmax.blocked import choose_block, plan_tiles, softmax_attention_blocked
from attnlab.attention.ops.softmax.cudnn import cudnn_unsupported_reason, softmax_attention_cudnn, translate_mask
from attnlab.attention.positional import AlibiBias

B, T, D = 2, 37, 8
BLOCKS = dict(block_q=8, block_k=16)
TOL = dict(atol=2e-5, rtol=2e-5)

_SEG = np.array([[0] * 10 + [1] * 20 + [2] * 7, [5] * 37])
_PAD = np.arange(T)[None] < np.array([[30], [6]])
_HOLES = np.ones((B, T), bool)
_HOLES[:, 4:20] = False


def _bias_full(hq, tq, tk):
  return jax.random.normal(jax.random.key(7), (B, hq, tq, tk))


# name -> (mask, bias(hq, tq, tk) or None, hq, hkv, tq, tk, q_offset)
CASES = {
    "none": (None, None, 4, 4, T, T, 0),
    "causal": (M.Causal(), None, 4, 4, T, T, 0),
    "window_left": (M.SlidingWindow(5), None, 4, 4, T, T, 0),
    "window_left_right": (M.SlidingWindow(4, 9), None, 4, 4, T, T, 0),
    "chunked": (M.Chunked(8), None, 4, 4, T, T, 0),
    "prefix_lm": (M.PrefixLM(11), None, 4, 4, T, T, 0),
    "prefix_lm_per_example": (M.PrefixLM(jnp.array([3, 20])), None, 4, 4, T, T, 0),
    "segment_ids_causal": (M.SegmentIds(jnp.asarray(_SEG)) & M.Causal(), None, 4, 4, T, T, 0),
    "key_padding": (M.KeyPadding(jnp.asarray(_PAD)), None, 4, 4, T, T, 0),
    "sink_or_window": ((M.SlidingWindow(6) | M.Sinks(3)) & M.Causal(), None, 4, 4, T, T, 0),
    "gqa_causal": (M.Causal(), None, 4, 2, T, T, 0),
    "mqa_window": (M.SlidingWindow(7), None, 4, 1, T, T, 0),
    "cross": (None, None, 4, 2, 13, T, 0),
    "cross_key_padding": (M.KeyPadding(jnp.asarray(_PAD)), None, 4, 4, 13, T, 0),
    "q_offset_causal": (M.Causal(), None, 4, 2, 9, T, 28),
    "q_offset_window": (M.SlidingWindow(10), None, 4, 4, 9, T, 25),
    "alibi_causal": (M.Causal(), lambda h, tq, tk: AlibiBias(h), 4, 4, T, T, 0),
    "alibi_gqa_window": (M.SlidingWindow(9), lambda h, tq, tk: AlibiBias(h), 4, 2, T, T, 0),
    "array_bias_full": (M.Causal(), _bias_full, 4, 4, T, T, 0),
    "array_bias_gqa": (M.Chunked(8), _bias_full, 4, 2, T, T, 0),
    "array_bias_broadcast": (M.PrefixLM(9), lambda h, tq, tk: jax.random.normal(jax.random.key(3), (h, 1, tk)), 4, 4, T, T, 0),
    "empty_rows": (M.SlidingWindow(2) & M.KeyPadding(jnp.asarray(_HOLES)), None, 4, 2, T, T, 0),
    "sink_window_padding_gqa": ((M.SlidingWindow(4) | M.Sinks(2)) & M.Causal() & M.KeyPadding(jnp.asarray(_PAD)),
                                None, 4, 2, T, T, 0),
}


# name -> (allowed(b, i, j) with absolute query positions i [Tq, 1] and keys j [1, Tk] ->
# bool broadcastable to [B, Tq, Tk], whether the bias is ALiBi): the cases' masks from
# their definitions.
_b = np.arange(B)[:, None, None]
DEFINITIONS = {
    "none": (lambda b, i, j: np.ones_like(i + j, bool), False),
    "causal": (lambda b, i, j: j <= i, False),
    "window_left": (lambda b, i, j: (i - 5 <= j) & (j <= i), False),
    "window_left_right": (lambda b, i, j: (i - 4 <= j) & (j <= i + 9), False),
    "chunked": (lambda b, i, j: i // 8 == j // 8, False),
    "prefix_lm": (lambda b, i, j: (j <= i) | (j < 11), False),
    "prefix_lm_per_example": (lambda b, i, j: (j <= i) | (j < np.array([3, 20])[b]), False),
    "segment_ids_causal": (lambda b, i, j: (_SEG[b, i] == _SEG[b, j]) & (j <= i), False),
    "key_padding": (lambda b, i, j: _PAD[b, j], False),
    "sink_or_window": (lambda b, i, j: ((i - 6 <= j) | (j < 3)) & (j <= i), False),
    "gqa_causal": (lambda b, i, j: j <= i, False),
    "mqa_window": (lambda b, i, j: (i - 7 <= j) & (j <= i), False),
    "cross": (lambda b, i, j: np.ones_like(i + j, bool), False),
    "cross_key_padding": (lambda b, i, j: _PAD[b, j] & (i >= 0), False),
    "q_offset_causal": (lambda b, i, j: j <= i, False),
    "q_offset_window": (lambda b, i, j: (i - 10 <= j) & (j <= i), False),
    "alibi_causal": (lambda b, i, j: j <= i, True),
    "alibi_gqa_window": (lambda b, i, j: (i - 9 <= j) & (j <= i), True),
    "array_bias_full": (lambda b, i, j: j <= i, False),
    "array_bias_gqa": (lambda b, i, j: i // 8 == j // 8, False),
    "array_bias_broadcast": (lambda b, i, j: (j <= i) | (j < 9), False),
    "empty_rows": (lambda b, i, j: (i - 2 <= j) & (j <= i) & _HOLES[b, j], False),
    "sink_window_padding_gqa": (lambda b, i, j: ((i - 4 <= j) | (j < 2)) & (j <= i) & _PAD[b, j], False),
}
assert set(DEFINITIONS) == set(CASES)


def oracle(q, k, v, allowed, bias=None, alibi=False, q_offset=0):
  """softmax(q k^T / sqrt(D) + bias) v over `allowed` (bool [B|1, Tq, Tk]), written out:
  query head h reads kv head h // (Hq / Hkv); ALiBi adds -2^(-8 (h + 1) / H) |i - j|
  (Press et al., 2022, Sec. 3; H a power of two); a row with no allowed key is 0."""
  hq, hkv = q.shape[2], k.shape[2]
  k, v = (jnp.take(a, np.arange(hq) // (hq // hkv), axis=2) for a in (k, v))
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if alibi:
    i, j = q_offset + np.arange(q.shape[1]), np.arange(k.shape[1])
    slopes = 2.0 ** (-8.0 * np.arange(1, hq + 1) / hq)
    s = s - slopes[:, None, None] * np.abs(i[:, None] - j[None, :])
  elif bias is not None:
    s = s + bias
  allowed = np.broadcast_to(np.asarray(allowed)[:, None], s.shape)
  row = allowed.any(-1, keepdims=True)
  m = jnp.where(row, jnp.max(jnp.where(allowed, s, -np.inf), -1, keepdims=True, initial=-np.inf), 0.0)
  p = jnp.exp(jnp.where(allowed, s - jax.lax.stop_gradient(m), -np.inf))  # masked: exactly 0
  w = p / jnp.where(row, p.sum(-1, keepdims=True), 1.0)
  return jnp.einsum("bhqk,bkhd->bqhd", w, v)


def oracle_allowed(name, tq, tk, q_offset):
  """The case's mask from its definition: bool [B|1, tq, tk]."""
  fn = DEFINITIONS[name][0]
  i, j = q_offset + np.arange(tq)[None, :, None], np.arange(tk)[None, None, :]
  return np.asarray(fn(_b, i, j))


def _qkv(hq, hkv, tq, tk, seed=0):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (B, tq, hq, D)), jax.random.normal(kk, (B, tk, hkv, D)),
          jax.random.normal(kv, (B, tk, hkv, D)))


def _out_and_grads(fn, q, k, v, **kw):
  """One jit: the output and d(sum(out * w))/d(q, k, v) for a non-uniform cotangent w."""
  def run(q, k, v):
    out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, **kw), q, k, v)
    w = jnp.broadcast_to(jnp.cos(jnp.arange(out.shape[-1], dtype=out.dtype)), out.shape)
    return out, vjp(w)
  return jax.jit(run)(q, k, v)


def _case(name):
  """(q, k, v, the op's keyword arguments, the oracle as fn(q, k, v)) of a case."""
  mask, make_bias, hq, hkv, tq, tk, q_offset = CASES[name]
  q, k, v = _qkv(hq, hkv, tq, tk)
  bias = None if make_bias is None else make_bias(hq, tq, tk)
  alibi = DEFINITIONS[name][1]
  allowed = oracle_allowed(name, tq, tk, q_offset)

  def ref(q, k, v, allowed=allowed):
    return oracle(q, k, v, allowed, bias=None if alibi else bias, alibi=alibi, q_offset=q_offset)
  return q, k, v, dict(mask=mask, bias=bias, q_offset=q_offset), ref


def _check_against_reference(fns, name):
  """Each fn(q, k, v, **kw) in `fns` equals the oracle, forward and d(q, k, v)."""
  q, k, v, kw, ref = _case(name)
  want, g_want = _out_and_grads(lambda q, k, v: ref(q, k, v), q, k, v)
  for fn in fns:
    got, g_got = _out_and_grads(fn, q, k, v, **kw)
    np.testing.assert_allclose(got, want, **TOL, err_msg=f"{name}: forward")
    for n, a, b in zip("qkv", g_got, g_want):
      np.testing.assert_allclose(a, b, **TOL, err_msg=f"{name}: d{n}")


def _blocked(q, k, v, **kw):
  return softmax_attention_blocked(q, k, v, **BLOCKS, **kw)


@pytest.mark.parametrize("name", list(CASES))
def test_xla_matches_reference(name):
  """The blocked op (tiles 8 x 16) and the reference both equal the oracle."""
  _check_against_reference((_blocked, softmax_attention_reference), name)


@pytest.mark.parametrize("name,wrong", [("window_left", lambda b, i, j: (i - 6 <= j) & (j <= i)),
                                        ("key_padding", lambda b, i, j: np.ones_like(b + i + j, bool)),
                                        ("alibi_causal", None)])
def test_oracle_bites(name, wrong):
  """Canaries: the oracle of a window one key wider, of the padded case without its
  padding, and of ALiBi without the bias reject the blocked op's output."""
  q, k, v, kw, ref = _case(name)
  _, _, hq, hkv, tq, tk, q_offset = CASES[name]
  got = jax.jit(lambda q, k, v: _blocked(q, k, v, **kw))(q, k, v)
  if wrong is None:
    bad = oracle(q, k, v, oracle_allowed(name, tq, tk, q_offset))
  else:
    bad = ref(q, k, v, allowed=np.asarray(wrong(_b, q_offset + np.arange(tq)[None, :, None], np.arange(tk)[None, None])))
  ok, off = float(jnp.max(jnp.abs(got - ref(q, k, v)))), float(jnp.max(jnp.abs(got - bad)))
  print(f"{name}: |blocked - oracle| {ok:.1e}, |blocked - wrong oracle| {off:.1e}")
  assert ok < TOL["atol"] * 10 and off > 1e-2, (ok, off)


@pytest.mark.parametrize("name", ["causal", "gqa_causal", "q_offset_window", "alibi_causal", "array_bias_full"])
def test_dispatch_impls_match_reference(name):
  """Through the public dispatch (default tiles for xla)."""
  _check_against_reference([functools.partial(softmax_attention, impl=impl) for impl in ("reference", "xla")], name)


def test_xla_bias_gradient():
  """The array-bias cotangent (full and broadcast shapes) matches the oracle's."""
  q, k, v = _qkv(4, 2, T, T)
  causal = oracle_allowed("causal", T, T, 0)
  for shape in ((B, 4, T, T), (4, 1, T), (1, 1, T, 1)):
    bias = jax.random.normal(jax.random.key(5), shape)
    f = lambda fn: jax.jit(jax.grad(lambda b: jnp.sum(fn(q, k, v, mask=M.Causal(), bias=b) ** 2)))(bias)
    np.testing.assert_allclose(f(_blocked), f(lambda q, k, v, mask, bias: oracle(q, k, v, causal, bias=bias)),
                               **TOL, err_msg=str(shape))


def test_xla_traced_q_offset_decode():
  """A decode step: one query, q_offset traced (the cache index); masks evaluated per tile."""
  q, k, v = _qkv(4, 2, 1, T)
  seg = jnp.asarray(_SEG)
  for mask in (M.Causal(), M.SlidingWindow(6), M.SegmentIds(seg, seg) & M.Causal()):
    run = lambda fn: jax.jit(jax.vmap(lambda i: fn(q, k, v, mask=mask, bias=AlibiBias(4), q_offset=i)))
    offsets = jnp.array([0, 17, T - 1], jnp.int32)
    got = run(lambda *a, **kw: softmax_attention_blocked(*a, **BLOCKS, **kw))(offsets)
    np.testing.assert_allclose(got, run(softmax_attention_reference)(offsets), **TOL)


def test_xla_under_vmap():
  q, k, v = _qkv(4, 4, T, T)
  f = lambda q, k, v: softmax_attention_blocked(q[None], k[None], v[None], mask=M.Causal(), **BLOCKS)[0]
  want = jax.jit(lambda q, k, v: softmax_attention_reference(q, k, v, mask=M.Causal()))(q, k, v)
  np.testing.assert_allclose(jax.jit(jax.vmap(f))(q, k, v), want, **TOL)


def test_bf16_inputs_compute_in_fp32():
  q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(4, 4, T, T))
  got = softmax_attention(q, k, v, mask=M.Causal(), impl="xla")
  assert got.dtype == jnp.bfloat16
  want = softmax_attention_reference(q, k, v, mask=M.Causal())
  np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=2e-2)


# ---- tile planning: skipping is real ----------------------------------------------


def test_plan_skips_empty_tiles_and_unmasks_full_ones():
  n = 8
  causal = plan_tiles(M.Causal(), 64 * n, 64 * n, 64, 64, 0)
  assert len(causal.full) == n * (n - 1) // 2 and len(causal.partial) == n  # diagonal only
  assert all(i > j for i, j in causal.full) and all(i == j for i, j in causal.partial)
  window = plan_tiles(M.SlidingWindow(63), 64 * n, 64 * n, 64, 64, 0)
  assert len(window.full) == 0 and len(window.partial) == 2 * n - 1  # two diagonals
  # key padding in the last column makes those tiles partial; q padding does not.
  padded = plan_tiles(None, 100, 100, 64, 64, 0)
  assert sorted(map(tuple, padded.partial)) == [(0, 1), (1, 1)]
  # traced offset: nothing is skipped, everything masked
  dyn = plan_tiles(M.Causal(), 8, 128, 8, 64, jnp.int32(3))
  assert len(dyn.full) == 0 and len(dyn.partial) == 2
  # dynamic and-ed with static: the static part still empties tiles
  seg = M.SegmentIds(jnp.zeros((1, 256), jnp.int32)) & M.Causal()
  assert len(plan_tiles(seg, 256, 256, 64, 64, 0).partial) == 10


def test_choose_block():
  assert choose_block(5, 512) == 5 and choose_block(37, 512) == 40
  for t in (513, 1000, 2048, 4097, 12345):
    b = choose_block(t, 512)
    assert b % 8 == 0 and b <= 512 + 8 and -(-t // b) * b - t < 8 * -(-t // b)


def test_mask_flatten_roundtrip():
  mask = (M.SlidingWindow(4) | M.Sinks(2)) & M.SegmentIds(jnp.asarray(_SEG)) & M.PrefixLM(jnp.array([1, 2]))
  leaves, rebuild = mask_flatten(mask)
  assert len(leaves) == 2
  again = rebuild(tuple(x + 0 for x in leaves))
  np.testing.assert_array_equal(again.dense(T, T), mask.dense(T, T))


def test_blocked_memory_is_linear_in_length():
  """Compiled fwd+bwd temp memory of a causal sliding window grows ~linearly (<6x for 4x T).

  The reference (dense) grows 16x."""
  def temp_bytes(t, fn):
    x = jax.ShapeDtypeStruct((1, t, 4, 64), jnp.float32)
    g = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v, mask=M.SlidingWindow(128) & M.Causal())), (0, 1, 2))
    return jax.jit(g).lower(x, x, x).compile().memory_analysis().temp_size_in_bytes
  short, long = temp_bytes(1024, softmax_attention_blocked), temp_bytes(4096, softmax_attention_blocked)
  assert long < 6 * short, (short, long)
  assert long < temp_bytes(4096, softmax_attention_reference) / 8


# ---- dispatch and errors -----------------------------------------------------------


def test_unknown_impl_lists_valid_ones():
  q, k, v = _qkv(4, 4, 8, 8)
  with pytest.raises(ValueError, match="valid: reference, xla, pallas, cudnn, auto"):
    softmax_attention(q, k, v, impl="flash")


def test_pallas_is_a_clear_error():
  q, k, v = _qkv(4, 4, 8, 8)
  # One line naming why: no kernel registered, or (since kernels_pallas registers one) no GPU here.
  with pytest.raises(ValueError, match="no Pallas kernel is registered for family 'softmax'|pallas kernels need a GPU"):
    softmax_attention(q, k, v, impl="pallas")


def test_auto_falls_back_to_xla_and_logs_once(caplog):
  q, k, v = _qkv(4, 4, 8, 8)
  if cudnn_unsupported_reason(q, k, v, mask=M.Causal()) is None:
    pytest.skip("cudnn can run fp32 here; nothing to fall back from")
  dispatch._LOGGED.clear()
  with caplog.at_level(logging.INFO, logger=dispatch.__name__):
    for _ in range(3):
      assert resolve_impl(q, k, v, mask=M.Causal()) == "xla"
      softmax_attention(q, k, v, mask=M.Causal())
  assert sum("chose 'xla'" in r.getMessage() for r in caplog.records) == 1


def test_cudnn_rejections_are_one_line_value_errors():
  q, k, v = _qkv(4, 4, 8, 8)
  for kw in (dict(mask=M.Chunked(4)), dict(mask=M.Causal(), bias=AlibiBias(4)), dict(q_offset=3), {}):
    with pytest.raises(ValueError) as e:
      softmax_attention(q, k, v, impl="cudnn", **kw)
    assert "\n" not in str(e.value)
  assert isinstance(translate_mask(M.SegmentIds(jnp.zeros((1, 8), jnp.int32))), str)
  assert isinstance(translate_mask(M.SlidingWindow(3, 2)), str)
  assert translate_mask(M.SlidingWindow(3, 2) & M.Causal()).left == 3


def test_xla_rejects_bad_bias_shape():
  q, k, v = _qkv(4, 4, 8, 8)
  with pytest.raises(ValueError, match="not broadcastable"):
    softmax_attention(q, k, v, bias=jnp.zeros((3, 8, 8)), impl="xla")


@pytest.mark.parametrize("mask", [None, M.Causal(), M.SlidingWindow(5),
                                  M.Causal() & M.KeyPadding(jnp.arange(64)[None] < jnp.array([[50], [3]]))],
                         ids=["none", "causal", "window", "causal_padding"])
def test_cudnn_matches_reference(mask):
  q, k, v = (x.astype(jnp.bfloat16) for x in _qkv(4, 2, 64, 64))
  reason = cudnn_unsupported_reason(q, k, v, mask=mask)
  if reason is not None:
    print(f"skipping cudnn: {reason}")
    pytest.skip(reason)
  got = softmax_attention_cudnn(q, k, v, mask=mask).astype(jnp.float32)
  want = softmax_attention_reference(q, k, v, mask=mask).astype(jnp.float32)
  np.testing.assert_allclose(got, want, atol=3e-2)
