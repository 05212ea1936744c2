"""Chunked (causal) linear attention in Pallas, with scalar or diagonal decay, under one custom_vjp.

Recurrence (per batch and query head; row convention, state S [Dk, Dv]):

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t,        o_t = scale * q_t S_t

Katharopoulos et al. 2020 without decay; RetNet (Sun et al. 2023) and Lightning Attention
(Qin et al. 2024) with a per-head constant g; Mamba-2-style per-token scalar g; GLA
(Yang et al. 2024, "Gated Linear Attention Transformers with Hardware-Efficient
Training") with per-token diagonal gates g_t [Dk]. `log_decay` g <= 0 is given as None,
[H], [B, T, H] or [B, T, H, Dk].

Chunk-parallel form (GLA sec. 3.3 / fla's `ops/simple_gla/chunk.py`, `ops/gla/chunk.py`):
the sequence is cut into chunks of C; G is the cumulative log decay inside each chunk
(computed in XLA, `_local_cumsum`), G_last its value at the chunk's end.

  forward   states pass (sequential over chunks, fp32 carry): S_{n+1} = e^{G_last} S_n
              + (k e^{G_last - G})^T v, storing every S_n; then in parallel per chunk
              o = (q e^G) S_n + A v with A the causal [C, C] intra-chunk scores
  backward  the states pass again (S_n recomputed, not saved), a reverse pass for the state
              gradient dS_n = e^{G_last} dS_{n+1} + (q e^G)^T do, then per chunk dq, dk, dv;
              the gate gradient from the identity dL/dG~_t = q_t . dq_t - k_t . dk_t (G~ the
              global cumulative log decay: every q_t enters as q_t e^{G~_t}, every k_t as
              k_t e^{-G~_t}) plus the final state's S_T . dS_T, reverse-cumsummed over time
              (dg_t = sum_{s >= t} dG~_s); summed over channels for a scalar decay.

Every exponential is of a non-positive number (see `chunked_linear_kernels`), so any
decay strength is stable. Padding: T is padded to a multiple of C with zero q, k, v and
zero log decay (which leaves the state unchanged); Dk and Dv are padded with zeros to
powers of two >= 16 (Triton's block rule; zero channels contribute nothing). GQA: query
head h reads kv head h // (H / Hkv) through the index maps; dk, dv are summed over the
group in XLA. An initial state [B, H, Dk, Dv] (fp32) may be given; the final state is
returned (the decode form continues from it) and both are differentiable.

Backend: Triton (GPU) like `block_sparse_flash`, or `interpret=True` on CPU (tests); the
kernels themselves are in `chunked_linear_kernels`. backend="tpu": the TPU (Mosaic) form
(`chunked_linear_tpu`: the sequential passes on an "arbitrary" grid axis with a VMEM
state), tested under `pltpu.force_tpu_interpret_mode()`, not yet on a TPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels_pallas import chunked_linear_kernels as K
from kernels_pallas import runtime
from kernels_pallas.block_sparse_flash import _next_pow2

DEFAULT_CHUNK = 64
MAX_HEAD_DIM = 128  # the [Dk, Dv] fp32 state lives in registers


def _local_cumsum(g, chunk: int):
  """Cumulative sum of g [B, H, Tp, Dg] inside each chunk of `chunk` steps (inclusive)."""
  b, h, tp, dg = g.shape
  return jnp.cumsum(g.reshape(b, h, tp // chunk, chunk, dg), axis=3).reshape(g.shape)


def _gates(cfg: K.Cfg, g):
  big_g = _local_cumsum(g, cfg.chunk)
  return big_g, jnp.swapaxes(big_g, 2, 3)


def _passes(cfg: K.Cfg):
  """(states_pass, dstates_pass) of cfg.backend: in-kernel loops (Triton) or the grid (TPU)."""
  if cfg.backend == "tpu":
    from kernels_pallas import chunked_linear_tpu as tpu  # noqa: PLC0415  (imports pallas.tpu)
    return tpu.states_pass, tpu.dstates_pass
  return K.states_pass, K.dstates_pass


def _forward(cfg: K.Cfg, q, k, v, g, s0):
  big_g, gt = _gates(cfg, g)
  states, final = _passes(cfg)[0](cfg, k, v, big_g, gt, s0)
  return K.output(cfg, q, k, v, big_g, gt, states), final


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _core(cfg: K.Cfg, q, k, v, g, s0):
  """Heads-first padded q (scaled) [B, H, Tp, Dk], k [B, Hkv, Tp, Dk], v [B, Hkv, Tp, Dv],
  log decay g [B, H, Tp, Dg], s0 [B, H, Dk, Dv] fp32 -> (o [B, H, Tp, Dv], final state fp32)."""
  return _forward(cfg, q, k, v, g, s0)


def _core_fwd(cfg, q, k, v, g, s0):
  return _forward(cfg, q, k, v, g, s0), (q, k, v, g, s0)


def _core_bwd(cfg, res, cts):
  q, k, v, g, s0 = res
  do, ds_final = cts
  do = do.astype(q.dtype)
  big_g, gt = _gates(cfg, g)
  states_pass, dstates_pass = _passes(cfg)
  states, final = states_pass(cfg, k, v, big_g, gt, s0)  # recomputed, not saved
  dstates, ds0 = dstates_pass(cfg, q, do, big_g, gt, ds_final.astype(jnp.float32))
  dq, dk, dv = K.grads(cfg, q, k, v, big_g, gt, do, states, dstates)  # per query head, fp32
  b, hkv, tp = k.shape[:3]
  if cfg.gate == "none":
    dg = jnp.zeros_like(g)
  else:
    k_rep = jnp.repeat(k.astype(jnp.float32), cfg.groups, axis=1)
    dlog = q.astype(jnp.float32) * dq - k_rep * dk  # dL/dG~ (global cumulative log decay)
    end = jnp.sum(final * ds_final, axis=-1)[:, :, None, :]  # [B, H, 1, Dk]: the final state's e^{G~_T}
    if g.shape[-1] == 1:
      dlog, end = jnp.sum(dlog, axis=-1, keepdims=True), jnp.sum(end, axis=-1, keepdims=True)
    dg = (jnp.flip(jnp.cumsum(jnp.flip(dlog, 2), axis=2), 2) + end).astype(g.dtype)
  group_sum = lambda x: x.reshape(b, hkv, cfg.groups, tp, x.shape[-1]).sum(2)
  return (dq.astype(q.dtype), group_sum(dk).astype(k.dtype), group_sum(dv).astype(v.dtype), dg,
          ds0.astype(s0.dtype))


_core.defvjp(_core_fwd, _core_bwd)


def gate_kind(q_shape, log_decay_shape) -> str:
  """"none" | "scalar" | "diag" for log_decay of shape None | [H] or [B, T, H] | [B, T, H, Dk]
  (ValueError otherwise). q_shape: [B, T, H, Dk]."""
  b, t, h, dk = q_shape
  if log_decay_shape is None:
    return "none"
  shape = tuple(log_decay_shape)
  if shape in ((h,), (b, t, h)):
    return "scalar"
  if shape == (b, t, h, dk):
    return "diag"
  raise ValueError(f"log_decay must be [H], [B, T, H] or [B, T, H, Dk] = {(h,)}, {(b, t, h)} or {(b, t, h, dk)}; "
                   f"got {shape}")


def unsupported_reason(q, k, v, *, log_decay=None, chunk_size: int = DEFAULT_CHUNK,
                       interpret: bool = False) -> str | None:
  """None if `chunked_linear_attention` can run these arguments, else a one-line reason.
  Interpret mode takes any chunk size and head dim."""
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    return f"q, k, v must be [B, T, H, D], got shapes {q.shape}, {k.shape}, {v.shape}"
  if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3] or q.shape[-1] != k.shape[-1]:
    return f"causal linear attention needs q [B, T, H, Dk], k [B, T, Hkv, Dk], v [B, T, Hkv, Dv]; got " \
           f"{q.shape}, {k.shape}, {v.shape}"
  if q.shape[2] % k.shape[2]:
    return f"q heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]})"
  try:
    gate_kind(q.shape, None if log_decay is None else jnp.shape(log_decay))
  except ValueError as e:
    return str(e)
  if chunk_size < 1:
    return f"chunk_size must be positive, got {chunk_size}"
  if interpret:
    return None
  if q.dtype not in (jnp.bfloat16, jnp.float16, jnp.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
    return f"the pallas kernel needs one float dtype (bf16, f16, f32) for q, k, v (got {q.dtype}, {k.dtype}, {v.dtype})"
  if chunk_size < 16 or chunk_size & (chunk_size - 1) or chunk_size > 128:
    return f"the Triton kernel needs chunk_size a power of two in [16, 128] (got {chunk_size})"
  if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
    return f"the Triton kernel keeps the [Dk, Dv] state in registers: head dims <= {MAX_HEAD_DIM} " \
           f"(got Dk={q.shape[-1]}, Dv={v.shape[-1]})"
  return None


def chunked_linear_attention(q, k, v, *, log_decay=None, scale: float | None = None, initial_state=None,
                             chunk_size: int = DEFAULT_CHUNK, interpret: bool | None = None,
                             backend: str | None = None, num_warps: int | None = None, num_stages: int = 2):
  """Causal linear attention with optional decay, chunk-parallel in Pallas.

  q [B, T, H, Dk], k [B, T, Hkv, Dk], v [B, T, Hkv, Dv] (H % Hkv == 0; inputs already
  feature-mapped); log_decay None | [H] (RetNet, Lightning) | [B, T, H] (per-token scalar)
  | [B, T, H, Dk] (GLA gates), <= 0; scale defaults to Dk ** -0.5; initial_state
  [B, H, Dk, Dv] or None (zeros). Returns (o [B, T, H, Dv] in q's dtype, final_state
  [B, H, Dk, Dv] fp32) with o_t = scale * q_t S_t, S_t = diag(e^{g_t}) S_{t-1} + k_t^T v_t
  (see the module docstring). Differentiable in q, k, v, log_decay and initial_state.
  chunk_size: C (the last chunk zero-padded). interpret: None = `runtime.interpret_enabled()`.
  backend: "triton" (GPU) or "tpu" (Mosaic, `chunked_linear_tpu`; interpret mode runs it under
  `pltpu.force_tpu_interpret_mode()`); None = "tpu" on a TPU, else "triton".
  num_warps (default 4, 8 for states over 64 x 64), num_stages: Triton launch parameters.
  """
  interpret = runtime.interpret_enabled() if interpret is None else bool(interpret)
  backend = backend or ("tpu" if jax.default_backend() == "tpu" else "triton")
  if backend not in ("triton", "tpu"):
    raise ValueError(f"backend must be 'triton' or 'tpu', got {backend!r}")
  reason = unsupported_reason(q, k, v, log_decay=log_decay, chunk_size=chunk_size,
                              interpret=interpret or backend == "tpu")
  if reason:
    raise ValueError(reason)
  b, t, h, dk = q.shape
  hkv, dv = k.shape[2], v.shape[-1]
  gate = gate_kind(q.shape, None if log_decay is None else jnp.shape(log_decay))
  c = min(chunk_size, max(16, _next_pow2(t)))
  n = -(-t // c)
  tp, dkp, dvp = n * c, max(16, _next_pow2(dk)), max(16, _next_pow2(dv))
  scale = float(dk ** -0.5 if scale is None else scale)

  def heads_first(x, d_pad):  # [B, T, H, D] -> [B, H, Tp, D_pad], zero padded
    return jnp.pad(jnp.swapaxes(x, 1, 2), ((0, 0), (0, 0), (0, tp - t), (0, d_pad - x.shape[-1])))

  if gate == "none":
    g = jnp.zeros((b, h, tp, 1), jnp.float32)
  else:
    g = jnp.asarray(log_decay, jnp.float32)
    g = jnp.broadcast_to(g[None, None, :, None], (b, t, h, 1)) if g.ndim == 1 else g
    g = heads_first(g[..., None] if g.ndim == 3 else g, 1 if gate == "scalar" else dkp)
  if initial_state is None:
    s0 = jnp.zeros((b, h, dkp, dvp), jnp.float32)
  else:
    if initial_state.shape != (b, h, dk, dv):
      raise ValueError(f"initial_state must be [B, H, Dk, Dv] = {(b, h, dk, dv)}, got {initial_state.shape}")
    s0 = jnp.pad(initial_state.astype(jnp.float32), ((0, 0), (0, 0), (0, dkp - dk), (0, dvp - dv)))
  if num_warps is None:
    num_warps = 4 if dkp * dvp <= 64 * 64 else 8
  cfg = K.Cfg(c, n, gate, h // hkv, jnp.dtype(q.dtype).name, interpret, num_warps, num_stages, backend)
  qh = heads_first((q.astype(jnp.float32) * scale).astype(q.dtype), dkp)
  o, final = _core(cfg, qh, heads_first(k.astype(q.dtype), dkp), heads_first(v.astype(q.dtype), dvp), g, s0)
  return jnp.swapaxes(o[:, :, :t, :dv], 1, 2), final[:, :, :dk, :dv]


__all__ = ["DEFAULT_CHUNK", "chunked_linear_attention", "gate_kind", "unsupported_reason"]
