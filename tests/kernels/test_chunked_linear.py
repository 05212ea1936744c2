"""kernels_pallas.chunked_linear in interpret mode against an independent recurrent oracle.

The oracle (`_oracle`) is the recurrence written out here, token by token (a scan), from the
definition: S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t, query head h
reading kv head h // (H / Hkv); its gradients by autodiff. It imports nothing from the
module. Grid: decay off / per head [H] / per token [B, T, H] / per-token diagonal gates
[B, T, H, Dk], initial state on and off, GQA (H = 2, Hkv = 1) and not, T = 40 with chunk 16
(3 chunks, the last padded), Dk = 8 and Dv = 12 (both padded to 16 in the kernel). Checked:
output, final state and the gradients of q, k, v, log_decay and the initial state under a
random cotangent of both outputs; the TPU form on the diagonal-gate case.
Tolerances (fp32): max |err| <= TOL * (1 + max |ref|) with TOL 2e-5 for the forward and
the final state, 5e-5 for gradients. A canary shows the check bites: the kernel with the
state carry dropped, or with the decay off by one step, fails it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.linear import gla_attention, linear_attention
from kernels_pallas import chunked_linear as CL
from kernels_pallas import chunked_linear_kernels as CK
from kernels_pallas import runtime

B, T, H, DK, DV, CHUNK, SCALE = 1, 40, 2, 8, 12, 16, 0.5
FWD_TOL, GRAD_TOL = 2e-5, 5e-5
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _inputs(gate, hkv, init, seed=0, shape=(B, T, H, DK, DV), dtype=jnp.float32):
  """q, k, v (in dtype), log_decay (or None), initial state (or None), cotangents of o and the state."""
  rng = np.random.default_rng(seed)
  b, t, h, dk, dv = shape
  a = lambda *shape: jnp.asarray(rng.standard_normal(shape, np.float32))  # noqa: E731
  q, k, v = (x.astype(dtype) for x in (a(b, t, h, dk), a(b, t, hkv, dk), a(b, t, hkv, dv)))
  log_decay = {"none": None,
               "head": jnp.asarray(-np.linspace(0.05, 0.7, h), jnp.float32),
               "token": jnp.asarray(-rng.uniform(0.0, 1.0, (b, t, h)), jnp.float32),
               "diag": jnp.asarray(-rng.exponential(0.8, (b, t, h, dk)), jnp.float32)}[gate]
  s0 = a(b, h, dk, dv) if init else None
  return q, k, v, log_decay, s0, a(b, t, h, dv), a(b, h, dk, dv)


def _oracle(q, k, v, log_decay, s0):
  """The recurrence, one token at a time through `lax.scan` (fp32, HIGHEST precision)."""
  hi = jax.lax.Precision.HIGHEST
  q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
  (b, t, h, dk), dv = q.shape, v.shape[-1]
  groups = h // k.shape[2]
  if log_decay is None:
    log_decay = jnp.zeros((h,), jnp.float32)
  g = jnp.broadcast_to(log_decay if log_decay.ndim == 4 else  # [B, T, H, Dk], or one scalar per (t, h)
                       (log_decay[None, None] if log_decay.ndim == 1 else log_decay)[..., None], (b, t, h, dk))
  s_init = jnp.zeros((b, h, dk, dv), jnp.float32) if s0 is None else s0

  def step(s, xs):
    qt, kt, vt, gt = xs  # [B, H|Hkv, D]
    kt, vt = jnp.repeat(kt, groups, axis=1), jnp.repeat(vt, groups, axis=1)
    s = jnp.exp(gt)[..., None] * s + kt[..., :, None] * vt[..., None, :]
    return s, SCALE * jnp.einsum("bhd,bhde->bhe", qt, s, precision=hi)

  s, o = jax.lax.scan(step, s_init, tuple(jnp.moveaxis(x, 1, 0) for x in (q, k, v, g)))
  return jnp.moveaxis(o, 0, 1), s


def _kernel(chunk=CHUNK, interpret=True, backend="triton"):
  return lambda q, k, v, log_decay, s0: CL.chunked_linear_attention(
      q, k, v, log_decay=log_decay, scale=SCALE, initial_state=s0, chunk_size=chunk, interpret=interpret,
      backend=backend)


def _values_and_grads(fn, q, k, v, log_decay, s0, do, ds, options=FAST_COMPILE):
  """((o, final state), grads of <o, do> + <state, ds> w.r.t. q, k, v[, log_decay][, s0]), jitted once."""
  wrt = {"q": q, "k": k, "v": v}
  if log_decay is not None:
    wrt["log_decay"] = log_decay
  if s0 is not None:
    wrt["s0"] = s0

  def both(wrt, do, ds):
    call = lambda w: fn(w["q"], w["k"], w["v"], w.get("log_decay"), w.get("s0"))  # noqa: E731
    (o, s), vjp = jax.vjp(call, wrt)
    return (o, s), vjp((do.astype(o.dtype), ds))[0]

  return jax.jit(both).lower(wrt, do, ds).compile(options)(wrt, do, ds)


def _mismatches(gate, hkv, init, fn=None, fwd_tol=FWD_TOL, grad_tol=GRAD_TOL, options=FAST_COMPILE, **shape):
  """Names of the quantities where the kernel and the oracle differ beyond tolerance
  (max |err| > tol * (1 + max |ref|)); the oracle runs on the same (rounded) inputs."""
  q, k, v, log_decay, s0, do, ds = _inputs(gate, hkv, init, **shape)
  got = _values_and_grads(fn or _kernel(), q, k, v, log_decay, s0, do, ds, options)
  want = _values_and_grads(_oracle, q, k, v, log_decay, s0, do, ds, options)
  pairs = {"o": (got[0][0], want[0][0], fwd_tol), "final_state": (got[0][1], want[0][1], fwd_tol)}
  pairs.update({f"d{name}": (got[1][name], want[1][name], grad_tol) for name in want[1]})
  bad = []
  for name, (x, y, tol) in pairs.items():
    assert x.shape == y.shape, (name, x.shape, y.shape)
    x, y = x.astype(jnp.float32), y.astype(jnp.float32)
    if not float(jnp.max(jnp.abs(x - y))) <= tol * (1.0 + float(jnp.max(jnp.abs(y)))):
      bad.append(name)
  return bad


@pytest.mark.parametrize("gate,hkv,init", [("none", 1, False), ("head", 2, True), ("token", 1, False),
                                           ("token", 2, True), ("diag", 1, True), ("diag", 2, False)])
def test_kernel_matches_the_recurrent_oracle(gate, hkv, init):
  assert _mismatches(gate, hkv, init) == []


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="TPU interpret mode simulates the TPU on the CPU backend")
def test_tpu_kernels_match_the_recurrent_oracle():
  """backend="tpu" (the sequential passes on the grid, VMEM state; the parallel kernels are
  shared with Triton) under `pltpu.force_tpu_interpret_mode()`: the same check, diagonal
  gates, GQA 2:1, an initial state."""
  assert _mismatches("diag", 1, True, fn=_kernel(backend="tpu")) == []


@pytest.mark.parametrize("bug", ["carry_dropped", "decay_off_by_one"])
def test_canary_a_broken_kernel_fails_the_same_check(monkeypatch, bug):
  """The check above catches a kernel without the inter-chunk state, and one whose decay
  is shifted by one step (an exclusive instead of an inclusive cumulative sum)."""
  if bug == "carry_dropped":
    states_pass = CK.states_pass
    monkeypatch.setattr(CK, "states_pass", lambda *a: (jnp.zeros_like(states_pass(*a)[0]), states_pass(*a)[1]))
  else:
    local_cumsum = CL._local_cumsum
    monkeypatch.setattr(CL, "_local_cumsum", lambda g, c: local_cumsum(g, c) - g)
  assert "o" in _mismatches("token", 1, True)


def test_dispatch_reaches_the_kernel_and_says_why_not_on_cpu():
  """impl="pallas" for "linear" (with the normaliser and per-head decay) and "linear.gla"
  equals the reference in interpret mode; without it a CPU names the backend, "auto"
  takes xla, and forms the kernel does not implement are named."""
  q, k, v, _, s0, _, _ = _inputs("none", 1, True)
  q, k = jax.nn.elu(q) + 1, jax.nn.elu(k) + 1
  decay = jnp.asarray([-0.1, -0.4], jnp.float32)
  g = jnp.asarray(-np.random.default_rng(1).uniform(0, 1, (B, T, H, DK)), jnp.float32)
  kv2 = lambda x: jnp.repeat(x, 2, axis=2)  # noqa: E731  (GLA takes H kv heads)
  if jax.default_backend() == "cpu":
    with pytest.raises(ValueError, match="linear impl='pallas' cannot run these arguments: pallas kernels need a GPU"):
      linear_attention(q, k, v, impl="pallas")
    assert D.resolve("linear", "auto", q, k, v) == "xla"
    assert D.resolve("linear.gla", "auto", q, kv2(k), kv2(v), g) == "xla"
  with runtime.interpret_mode():
    kw = dict(log_decay=decay, normalize=True, chunk_size=CHUNK)
    np.testing.assert_allclose(linear_attention(q, k, v, impl="pallas", **kw),
                               linear_attention(q, k, v, impl="reference", **kw), atol=2e-5, rtol=2e-5)
    got = gla_attention(q, kv2(k), kv2(v), g, initial_state=s0, chunk_size=CHUNK, impl="pallas")
    want = gla_attention(q, kv2(k), kv2(v), g, initial_state=s0, impl="reference")
    for x, y in zip(got, want):
      np.testing.assert_allclose(x, y, atol=2e-5, rtol=2e-5)
    for form, causal, why in (("recurrent", True, "is the chunked form"), ("chunked", False, "is causal")):
      with pytest.raises(ValueError, match=why):
        linear_attention(q, k, v, form=form, causal=causal, impl="pallas")
    assert D.resolve("linear", "auto", q, k, v, form="recurrent") == "xla"
    assert D.resolve("linear", "auto", q, k, v) == "pallas"


# The compiled Triton kernel (GPU only; scripts/gpu_kernel_check.sh runs it): T = 300 (the
# last 64-chunk padded) and T = 8192, D = 64, GQA 4:2. Its dots and the oracle's run in other
# orders than on CPU, hence looser bounds; bf16 inputs are compared with the fp32 oracle on
# the same rounded inputs (the kernel rounds decayed q, k and the state to bf16 before its
# matmuls, as fla does).
COMPILED_TOL = {"float32": (1e-3, 2e-3), "bfloat16": (3e-2, 5e-2)}  # (forward and state, gradients)


@pytest.mark.skipif(jax.default_backend() != "gpu",
                    reason="the compiled (Triton) kernel needs a GPU; interpret mode covers it on CPU above")
@pytest.mark.parametrize("dtype", list(COMPILED_TOL))
@pytest.mark.parametrize("gate,t", [("none", 300), ("head", 300), ("token", 300), ("diag", 300), ("token", 8192),
                                    ("diag", 8192)])
def test_compiled_kernel_on_gpu(gate, t, dtype):
  fwd_tol, grad_tol = COMPILED_TOL[dtype]
  assert _mismatches(gate, 2, True, fn=_kernel(64, interpret=False), fwd_tol=fwd_tol, grad_tol=grad_tol,
                     options=None, shape=(1, t, 4, 64, 64), dtype=jnp.dtype(dtype)) == []


def test_kernels_lower_to_triton_without_a_gpu():
  """The compiled path is checked on CPU as far as it goes here: forward and backward lower
  for platform "cuda" to five Triton custom calls (states, output; states again, state
  gradients, q/k/v gradients) at T = 300 (padding), D = 64, GQA, bf16 diagonal gates and
  fp32 per-token decay; what Triton cannot take is refused with the reason."""
  for dtype, decay in ((jnp.bfloat16, (1, 300, 4, 64)), (jnp.float32, (1, 300, 4))):
    q, kv = jax.ShapeDtypeStruct((1, 300, 4, 64), dtype), jax.ShapeDtypeStruct((1, 300, 2, 64), dtype)
    g, s0 = jax.ShapeDtypeStruct(decay, jnp.float32), jax.ShapeDtypeStruct((1, 4, 64, 64), jnp.float32)

    def both(q, k, v, g, s0):
      fn = lambda *a: CL.chunked_linear_attention(*a[:3], log_decay=a[3], initial_state=a[4], interpret=False)  # noqa: E731
      out, vjp = jax.vjp(fn, q, k, v, g, s0)
      return out, vjp(out)

    text = jax.jit(both).trace(q, kv, kv, g, s0).lower(lowering_platforms=("cuda",)).as_text()
    assert text.count("__gpu$xla.gpu.triton") == 5
  q = jnp.zeros((1, 32, 2, 16))
  with pytest.raises(ValueError, match="chunk_size a power of two"):
    CL.chunked_linear_attention(q, q, q, chunk_size=24, interpret=False)
  with pytest.raises(ValueError, match="head dims <= 128"):
    CL.chunked_linear_attention(q, q, jnp.zeros((1, 32, 2, 256)), interpret=False)
