"""kernels_pallas.block_sparse_flash in interpret mode against an independent dense oracle.

The oracle (`_oracle`) is softmax attention written out here from the definition: scores
for every (query, key) pair, the mask's `dense()` boolean (and the selected blocks
expanded to positions) applied, fully masked rows zero; its gradients by autodiff.
Shapes span >= 3 blocks of 16 each way, with padding (T = 40, 56) and GQA ratios 1, 2, 4.
Tolerances (fp32): forward |err| <= 1e-5 + 1e-5 |ref|, gradients <= 5e-5 + 5e-5 |ref|.
Interpret mode is slow to compile: each case jit-compiles forward + backward once, with
XLA's backend optimisation off (it runs in milliseconds either way).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import masks as M
from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.softmax.api import resolve_impl
from attnlab.attention.ops.softmax.pallas import pallas_unsupported_reason
from kernels_pallas import runtime
from kernels_pallas.block_sparse_flash import block_sparse_flash_attention, build_block_metadata, kernel_work

BLOCK = 16
FWD_TOL = dict(atol=1e-5, rtol=1e-5)
GRAD_TOL = dict(atol=5e-5, rtol=5e-5)
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _qkv(tq, tk, hq, hkv, d, seed=0, batch=1):
  """Random fp32 q, k, v and an output cotangent (numpy-generated: no eager XLA compiles)."""
  rng = np.random.default_rng(seed)
  shapes = ((batch, tq, hq, d), (batch, tk, hkv, d), (batch, tk, hkv, d), (batch, tq, hq, d))
  return tuple(jnp.asarray(rng.standard_normal(shape, np.float32)) for shape in shapes)


def _oracle(q, k, v, allowed):
  """Dense masked softmax attention. allowed: bool [B|1, Hq|1, Tq, Tk]."""
  g = q.shape[2] // k.shape[2]
  kf, vf = jnp.repeat(k, g, axis=2), jnp.repeat(v, g, axis=2)
  hi = jax.lax.Precision.HIGHEST  # fp32 matmuls also on GPU (XLA:GPU would use TF32)
  s = jnp.einsum("bqhd,bkhd->bhqk", q, kf, precision=hi) / np.sqrt(q.shape[-1])
  s = jnp.where(allowed, s, -jnp.inf)
  m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
  e = jnp.where(allowed, jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0)), 0.0)
  w = e / jnp.maximum(jnp.sum(e, axis=-1, keepdims=True), 1e-30)  # all-masked row: w = 0
  return jnp.einsum("bhqk,bkhd->bqhd", w, vf, precision=hi)


def _selected_dense(block_indices, tq, tk):
  """bool [Bs, Hs, Tq, Tk]: key k is allowed for query q iff k's block is in q's block's list."""
  bi = np.asarray(block_indices)
  out = np.zeros(bi.shape[:2] + (tq, tk), bool)
  for b, h, i in np.ndindex(*bi.shape[:3]):
    for j in bi[b, h, i]:
      if j >= 0:
        out[b, h, i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = True
  return out


def _fwd_bwd(fn, q, k, v, ct, options=None):
  """(output, (dq, dk, dv)) of fn at (q, k, v) with output cotangent ct, jitted once."""

  def both(q, k, v, ct):
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(ct)

  return jax.jit(both).lower(q, k, v, ct).compile(options)(q, k, v, ct)


def _dense_allowed(masks, tq, tk, q_offset=0, selected=None):
  """bool [B|1, Hq|1, Tq, Tk]: every mask's `dense()` (attnlab's lowering to a boolean
  array, the masks' definition) and-ed, with the selected blocks expanded to positions."""
  allowed = jnp.ones((1, 1, tq, tk), bool)
  for m in masks:
    allowed = allowed & m.dense(tq, tk, q_offset)[:, None]
  if selected is not None:
    allowed = allowed & _selected_dense(selected, tq, tk)
  return allowed


def _oracle_fwd_bwd(q, k, v, ct, masks, q_offset=0, selected=None):
  """The oracle's output and gradients, one jitted program (mask lowering inside)."""
  tq, tk = q.shape[1], k.shape[1]
  return _fwd_bwd(lambda q, k, v: _oracle(q, k, v, _dense_allowed(masks, tq, tk, q_offset, selected)), q, k, v, ct)


def _oracle_out(q, k, v, masks, q_offset=0):
  return jax.jit(lambda q, k, v: _oracle(q, k, v, _dense_allowed(masks, q.shape[1], k.shape[1], q_offset)))(q, k, v)


def _assert_close(got, want, tol, what):
  got, want = np.asarray(got), np.asarray(want)
  err = float(np.max(np.abs(got - want)))
  bound = tol["atol"] + tol["rtol"] * float(np.max(np.abs(want)))
  assert err <= bound, f"{what}: max |err| {err:.3g} > {bound:.3g}"


def _segments():
  ids = jnp.asarray([[0] * 24 + [1] * 32], jnp.int32)
  return M.SegmentIds(ids), dict(q_segment_ids=ids)


def _padding_and_selection():
  valid = jnp.asarray([[True] * 45 + [False] * 19])
  return M.KeyPadding(valid), dict(kv_valid=valid, block_indices=_SEL)


_SEL = np.array([[[[0, -1], [0, 0], [2, 0], [1, 3]],   # head 0: a -1, a repeated id, unsorted ids
                  [[0, -1], [1, 2], [0, 1], [3, -1]],
                  [[-1, -1], [0, 1], [2, -1], [0, 2]],  # an empty list: zeros
                  [[0, -1], [1, 0], [1, 2], [2, 3]]]], np.int32)  # [B=1, Hq=4, nq=4, K=2]

# name: (static mask, Tq, Tk, Hq, Hkv, D, q_offset, data-dependent part)
CASES = {
    # causal queries at absolute positions 16..55 over 56 keys; Tq=40, Tk=56 both padded; GQA 1
    "causal_qoffset_pad_gqa1": (M.Causal(), 40, 56, 2, 2, 16, 16, None),
    # causal sliding window and packed segments, T=56 (padded), GQA 4
    "window_segments_gqa4": (M.Causal() & M.SlidingWindow(19), 56, 56, 4, 1, 16, 0, _segments),
    # not causal: key padding and per-head selected key blocks (MoBA-style), D=32, GQA 2
    "selected_keypad_gqa2": (None, 64, 64, 4, 2, 32, 0, _padding_and_selection),
}


def _check_case(name, *, interpret=True, dtype=jnp.float32, fwd_tol=FWD_TOL, grad_tol=GRAD_TOL, backend="triton"):
  """Runs CASES[name] through the kernel (backend "triton" or "tpu") and the oracle (fp32,
  on the same rounded inputs)."""
  mask, tq, tk, hq, hkv, d, q_offset, dynamic = CASES[name]
  q, k, v, ct = (x.astype(dtype) for x in _qkv(tq, tk, hq, hkv, d))
  static, kwargs, masks = mask, {}, [] if mask is None else [mask]
  if dynamic is not None:
    dyn_mask, kwargs = dynamic()
    masks.append(dyn_mask)
  meta = build_block_metadata(static, tq, tk, BLOCK, BLOCK, q_offset)
  assert min(meta.nq, meta.nk) >= 2 and max(meta.nq, meta.nk) >= 3
  kernel = functools.partial(block_sparse_flash_attention, meta=meta, interpret=interpret, backend=backend,
                             **kwargs)
  out, grads = _fwd_bwd(lambda q, k, v: kernel(q, k, v), q, k, v, ct, FAST_COMPILE if interpret else None)
  f32 = lambda x: x.astype(jnp.float32)
  want_out, want_grads = _oracle_fwd_bwd(f32(q), f32(k), f32(v), f32(ct), masks, q_offset,
                                         kwargs.get("block_indices"))
  _assert_close(f32(out), want_out, fwd_tol, f"{name} output")
  for label, g, w in zip(("dq", "dk", "dv"), grads, want_grads):
    _assert_close(f32(g), w, grad_tol, f"{name} {label}")


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_match_the_dense_oracle(name):
  _check_case(name)


# The compiled Triton kernel (GPU only; scripts/gpu_kernel_check.sh runs it). Its fp32 dots
# and the oracle's run at IEEE precision, in other orders than on CPU, hence a bound looser
# than in interpret mode. bf16 inputs are compared with the fp32 oracle on the same rounded inputs
# (P and dS are rounded to bf16 before their matmuls, as in FlashAttention-2).
COMPILED_TOL = {"float32": dict(atol=1e-3, rtol=1e-3), "bfloat16": dict(atol=3e-2, rtol=3e-2)}


@pytest.mark.skipif(jax.default_backend() != "gpu",
                    reason="the compiled (Triton) kernel needs a GPU; interpret mode covers it on CPU above")
@pytest.mark.parametrize("dtype", list(COMPILED_TOL))
@pytest.mark.parametrize("name", list(CASES))
def test_compiled_kernel_on_gpu(name, dtype):
  tol = COMPILED_TOL[dtype]
  _check_case(name, interpret=False, dtype=jnp.dtype(dtype), fwd_tol=tol, grad_tol=tol)


def test_kernels_lower_to_triton_without_a_gpu():
  """The compiled GPU path is checked on CPU as far as it goes here: forward and backward
  lower for platform "cuda" to Triton custom calls (the Pallas -> Triton IR lowering runs
  in Python; only the PTX compile needs the GPU), bf16 with segments and key padding and
  fp32 with per-head selected blocks, at Triton-legal sizes (D=64, blocks 64/32)."""
  tq, hq, hkv, d = 200, 4, 2, 64
  for dtype, kwargs, mask in (
      (jnp.bfloat16, dict(q_segment_ids=np.zeros((1, tq), np.int32), kv_valid=np.ones((1, tq), bool)),
       M.Causal() & M.SlidingWindow(70)),
      (jnp.float32, dict(block_indices=np.zeros((1, hq, 4, 2), np.int32)), M.Causal())):
    meta = build_block_metadata(mask, tq, tq, 64, 32 if dtype == jnp.bfloat16 else 64)
    q, kv = jax.ShapeDtypeStruct((1, tq, hq, d), dtype), jax.ShapeDtypeStruct((1, tq, hkv, d), dtype)
    fn = functools.partial(block_sparse_flash_attention, meta=meta, interpret=False, **kwargs)

    def both(q, k, v):
      out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v), q, k, v)
      return out, vjp(out)

    text = jax.jit(both).trace(q, kv, kv).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("__gpu$xla.gpu.triton") == 3  # forward, dq, dk/dv kernels
  # What Triton cannot take is refused before lowering, with the reason:
  with pytest.raises(ValueError, match="head_dim a power of two"):
    block_sparse_flash_attention(*_qkv(32, 32, 2, 2, 24)[:3], build_block_metadata(None, 32, 32, 16, 16),
                                 interpret=False)


def test_canary_a_dropped_nonempty_block_fails_the_comparison():
  """The comparison above bites: drop key block 0 from query block 2's list (a FULL,
  non-empty tile of the causal mask) and the output no longer matches."""
  tq = 48
  q, k, v, _ = _qkv(tq, tq, 2, 2, 16)
  meta = build_block_metadata(M.Causal(), tq, tq, BLOCK, BLOCK)
  assert list(meta.row_idx[2, :meta.row_cnt[2]]) == [0, 1, 2]
  row_idx, row_cnt = meta.row_idx.copy(), meta.row_cnt.copy()
  row_idx[2, :2], row_cnt[2] = [1, 2], 2
  broken = dataclasses.replace(meta, row_idx=row_idx, row_cnt=row_cnt)
  out = jax.jit(lambda q, k, v: block_sparse_flash_attention(q, k, v, broken, interpret=True)).lower(
      q, k, v).compile(FAST_COMPILE)(q, k, v)
  want = _oracle_out(q, k, v, [M.Causal()])
  with pytest.raises(AssertionError, match="max"):
    _assert_close(out, want, FWD_TOL, "dropped block")
  _assert_close(out[:, :32], want[:, :32], FWD_TOL, "untouched query blocks")  # only block 2 changed


def test_empty_tiles_are_never_read():
  """Keys 32..63 are never visible to causal queries 0..31: with NaN there, a kernel that
  touched those tiles (even masked) would output NaN; this one matches the oracle."""
  tq, tk = 32, 64
  q, k, v, _ = _qkv(tq, tk, 2, 1, 16)
  poison = np.arange(tk)[None, :, None, None] >= 32
  k_bad, v_bad = (jnp.asarray(np.where(poison, np.nan, x)) for x in (k, v))
  meta = build_block_metadata(M.Causal(), tq, tk, BLOCK, BLOCK)
  assert int(meta.row_cnt.sum()) == 3  # of nq * nk = 8 tiles
  out = jax.jit(lambda q, k, v: block_sparse_flash_attention(q, k, v, meta, interpret=True)).lower(
      q, k_bad, v_bad).compile(FAST_COMPILE)(q, k_bad, v_bad)
  assert np.all(np.isfinite(np.asarray(out)))
  # Canary: a computation that reads every tile, masking after the fact (the reference), is poisoned.
  dense = jax.jit(lambda q, k, v: D.dispatch("softmax", "reference", q, k, v, mask=M.Causal()))(q, k_bad, v_bad)
  assert not np.all(np.isfinite(np.asarray(dense)))
  k_ok, v_ok = (jnp.asarray(np.asarray(x)[:, :32]) for x in (k, v))
  _assert_close(out, _oracle_out(q, k_ok, v_ok, [M.Causal()]), FWD_TOL, "poisoned")


def _work(mask, nblocks):
  t = nblocks * BLOCK
  return kernel_work(build_block_metadata(mask, t, t, BLOCK, BLOCK))


def _grows_linearly(mask):
  """Doubling T (4 -> 8 blocks) at most ~doubles the visited tiles (a quadratic pattern quadruples)."""
  small, large = _work(mask, 4)["fwd"], _work(mask, 8)["fwd"]
  return large <= 2.5 * small


def test_work_is_the_nonempty_tiles():
  for nq in (3, 4, 8):
    work = _work(M.Causal(), nq)
    assert work["fwd"] == work["dq"] == work["dkdv"] == nq * (nq + 1) // 2
  window = M.Causal() & M.SlidingWindow(BLOCK - 1)
  assert _work(window, 4)["fwd"] == 7 and _work(window, 8)["fwd"] == 15  # two tiles per query block
  assert _grows_linearly(window)
  assert not _grows_linearly(None)  # canary: dense attention (16 -> 64 tiles) fails the check
  assert not _grows_linearly(M.Causal())  # 10 -> 36
  assert _work(None, 4)["fwd"] == _work(None, 4)["dense"] == 16
  # Selected blocks: at most K per query block, duplicates and -1 dropped, causal-empty tiles dropped.
  meta = build_block_metadata(M.Causal(), 64, 64, BLOCK, BLOCK)
  assert kernel_work(meta, _SEL)["fwd"] == (6 + 5 + 5 + 7) / 4


def test_dispatch_reaches_the_kernel_in_interpret_mode():
  tq = 40
  q, k, v, _ = _qkv(tq, tq, 4, 2, 16, seed=1)
  ids = np.asarray([[0] * 18 + [1] * 22], np.int32)
  mask = M.Causal() & M.SegmentIds(ids)
  with runtime.interpret_mode():
    assert D.resolve("softmax", "pallas", q, k, v, mask=mask) == "pallas"
    out = jax.jit(lambda q, k, v: D.dispatch("softmax", "pallas", q, k, v, mask=mask, block_q=BLOCK,
                                             block_k=BLOCK)).lower(q, k, v).compile(FAST_COMPILE)(q, k, v)
  want = jax.jit(lambda q, k, v: D.dispatch("softmax", "reference", q, k, v, mask=mask))(q, k, v)
  _assert_close(out, want, FWD_TOL, "dispatch")


def test_auto_never_picks_pallas_on_cpu_and_reasons_are_named():
  q, k, v, _ = _qkv(16, 16, 2, 2, 16)
  with runtime.interpret_mode(False):
    if jax.default_backend() == "cpu":
      assert resolve_impl(q, k, v, mask=M.Causal()) != "pallas"
      with pytest.raises(ValueError, match="pallas kernels need a GPU backend"):
        D.resolve("softmax", "pallas", q, k, v)
  with runtime.interpret_mode():
    reason = lambda **kw: pallas_unsupported_reason(q, k, v, **kw)
    assert reason(mask=M.Causal()) is None
    bias = np.zeros((1, 1, 16, 16), np.float32)
    assert "no bias" in reason(bias=bias)
    assert "q_offset must be a python int" in reason(q_offset=jnp.asarray(3))
    assert "PrefixLM" in reason(mask=M.PrefixLM(np.asarray([3])))
    with pytest.raises(ValueError, match="no bias"):
      D.dispatch("softmax", "pallas", q, k, v, bias=bias)
