"""The four Pallas kernels of chunked linear attention (see `chunked_linear` for the math).

All arrays are heads-first and padded: q [B, H, Tp, Dk] (already scaled), k [B, Hkv, Tp, Dk],
v [B, Hkv, Tp, Dv], G [B, H, Tp, Dg] the chunk-local cumulative log decay (Dg = 1 for a
scalar decay per step, Dk for GLA's diagonal gates; zeros without decay), Gt = G with its
last two axes swapped [B, H, Dg, Tp] (so a kernel can read G as a row or as a column
without transposing in-kernel). Tp = N * C (C = chunk). Query head h reads kv head h // G.

  states_pass   grid (B, H), sequential over chunks: S_n entering each chunk (fp32), final S
  output        grid (B, H, N), parallel: o = (q * e^G) S_n + intra-chunk part
  dstates_pass  grid (B, H), chunks in reverse: dS_{n+1} leaving each chunk, dS_0
  grads         grid (B, H, N), parallel: dq, dk, dv per query head (fp32)

Intra-chunk part. Scalar decay (or none): A = (q k^T) * D with D_ij = exp(G_i - G_j) for
j <= i (else 0), a masked [C, C] matmul (Lightning Attention-2, Qin et al. 2024, Alg. 1;
RetNet's chunkwise form, Sun et al. 2023, eq. 7). Diagonal gates: exp(G_id - G_jd) does not
factor into a matmul without exponents of either sign (q e^G times k e^-G overflows for
strong gates), so the kernel walks the chunk's keys j and builds column j of A from the
[C, Dk] factor exp(G_i - G_j) masked to i >= j, every exponent <= 0 (the exact pairwise
form of GLA's diagonal sub-blocks, Yang et al. 2024, sec. 4.2), at O(C^2 Dk) elementwise
work per chunk.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels_pallas.block_sparse_flash import _compiler_params, _dot

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Cfg:
  """Everything static about one call. gate: "none" | "scalar" | "diag"; groups = H / Hkv;
  dtype: the matmul operand dtype (the inputs'; fp32 accumulation); backend: "triton" | "tpu"."""
  chunk: int
  n_chunks: int
  gate: str
  groups: int
  dtype: str
  interpret: bool
  num_warps: int
  num_stages: int
  backend: str = "triton"


def _lo(cfg: Cfg, x):
  return x.astype(cfg.dtype)


def _rows(c):
  return lax.broadcasted_iota(jnp.int32, (c, 1), 0)


def _decay_matrix(cfg: Cfg, g_col, g_row):
  """D [C, C]: exp(G_i - G_j) for j <= i, else 0 (1 on and below the diagonal without decay).
  The exponent is masked before exp: above the diagonal it is >= 0 and may overflow."""
  c = cfg.chunk
  causal = lax.broadcasted_iota(jnp.int32, (c, c), 0) >= lax.broadcasted_iota(jnp.int32, (c, c), 1)
  if cfg.gate == "none":
    return causal.astype(F32)
  return jnp.where(causal, jnp.exp(jnp.where(causal, g_col - g_row, 0.0)), 0.0)


def _pair_decay(g, gj, j):
  """[C, Dk]: exp(G_i - G_j) per channel for rows i >= j, else 0 (exponents <= 0)."""
  ok = _rows(g.shape[0]) >= j
  return jnp.where(ok, jnp.exp(jnp.where(ok, g - gj, 0.0)), 0.0)


# ---- forward ------------------------------------------------------------------------------


def carry_update(cfg: Cfg, s, x, y, g, g_last_row, g_last_col, to_end: bool):
  """One chunk of a carried recurrence: s' = diag(e^{G_last}) s + (x w)^T y, with
  w = e^{G_last - G} (to_end: the states, x = k, y = v, walked forward) or w = e^G (the
  state gradient dS_n = e^{G_last} dS_{n+1} + (q e^G)^T do: x = q, y = do, in reverse).
  s [Dk, Dv] fp32; x [C, Dk]; y [C, Dv]; g [C, Dg]; g_last_row [1, Dg]; g_last_col [Dg, 1]."""
  x = x.astype(F32)
  if cfg.gate == "none":
    return s + _dot(_lo(cfg, x), _lo(cfg, y), (0, 0))
  x = x * (jnp.exp(g_last_row - g) if to_end else jnp.exp(g))
  return jnp.exp(g_last_col) * s + _dot(_lo(cfg, x), _lo(cfg, y), (0, 0))


def _carry(cfg: Cfg, to_end: bool, x_ref, y_ref, g_ref, gt_ref, init_ref, per_chunk_ref, last_ref):
  """Grid (b, h): `carry_update` over the chunks (forward if to_end, else in reverse),
  storing the carry entering each step in per_chunk[n] and the last one in last."""
  c, n_chunks = cfg.chunk, cfg.n_chunks

  def body(i, s):
    n = i if to_end else n_chunks - 1 - i
    per_chunk_ref[n] = s
    rows, last = pl.ds(n * c, c), n * c + c - 1
    return carry_update(cfg, s, x_ref[rows, :], y_ref[rows, :], g_ref[rows, :], g_ref[pl.ds(last, 1), :],
                        gt_ref[:, pl.ds(last, 1)], to_end)

  last_ref[...] = lax.fori_loop(0, n_chunks, body, init_ref[...].astype(F32))


def _states_kernel(cfg: Cfg, k_ref, v_ref, g_ref, gt_ref, s0_ref, states_ref, final_ref):
  """Grid (b, h): states[n] = S_n entering chunk n, S_{n+1} = e^{G_last} S_n + (k e^{G_last - G})^T v; final S."""
  _carry(cfg, True, k_ref, v_ref, g_ref, gt_ref, s0_ref, states_ref, final_ref)


def _output_kernel(cfg: Cfg, q_ref, k_ref, v_ref, g_ref, gt_ref, s_ref, o_ref):
  """Grid (b, h, n): o = (q * e^G) S_n (inter-chunk) + A v (intra-chunk, causal)."""
  q = q_ref[...].astype(F32)
  g = g_ref[...]
  qd = q if cfg.gate == "none" else q * jnp.exp(g)
  o = _dot(_lo(cfg, qd), _lo(cfg, s_ref[...]), (1, 0))
  if cfg.gate != "diag":
    a = _dot(q_ref[...], k_ref[...]) * _decay_matrix(cfg, g, gt_ref[...])
    o = o + _dot(_lo(cfg, a), v_ref[...], (1, 0))
  else:
    def key(j, o):  # column j of A times row j of v
      e = _pair_decay(g, g_ref[pl.ds(j, 1), :], j)
      a_col = jnp.sum(q * k_ref[pl.ds(j, 1), :].astype(F32) * e, axis=1, keepdims=True)  # [C, 1]
      return o + a_col * v_ref[pl.ds(j, 1), :].astype(F32)

    o = lax.fori_loop(0, cfg.chunk, key, o)
  o_ref[...] = o.astype(o_ref.dtype)


# ---- backward -------------------------------------------------------------------------------


def _dstates_kernel(cfg: Cfg, q_ref, do_ref, g_ref, gt_ref, dsT_ref, dstates_ref, ds0_ref):
  """Grid (b, h), chunks in reverse: dstates[n] = dL/dS_{n+1} (the state leaving chunk n),
  dS_n = e^{G_last} dS_{n+1} + (q e^G)^T do; ds0 = dL/d initial state."""
  _carry(cfg, False, q_ref, do_ref, g_ref, gt_ref, dsT_ref, dstates_ref, ds0_ref)


def _grads_kernel(cfg: Cfg, q_ref, k_ref, v_ref, g_ref, gt_ref, do_ref, s_ref, ds_ref, dq_ref, dk_ref, dv_ref):
  """Grid (b, h, n): with S = S_n, dS = dL/dS_{n+1}, r_j = e^{G_last - G_j}:
    dq = (do S^T) e^G + [dA k]     dk = (v dS^T) r + [dA^T q]     dv = (k r) dS + [A^T do]
  where dA = (do v^T) masked and decayed like A, [.] the intra-chunk terms."""
  c = cfg.chunk
  q, k, do = q_ref[...].astype(F32), k_ref[...].astype(F32), do_ref[...]
  g = g_ref[...]
  if cfg.gate == "none":
    q_dec, k_dec = jnp.ones_like(q[:, :1]), jnp.ones_like(k[:, :1])
  else:
    q_dec, k_dec = jnp.exp(g), jnp.exp(g_ref[pl.ds(c - 1, 1), :] - g)
  ds = _lo(cfg, ds_ref[...])
  dq = _dot(do, _lo(cfg, s_ref[...])) * q_dec
  dk = _dot(v_ref[...], ds) * k_dec
  dv = _dot(_lo(cfg, k * k_dec), ds, (1, 0))
  if cfg.gate != "diag":
    d = _decay_matrix(cfg, g, gt_ref[...])
    a = _dot(q_ref[...], k_ref[...]) * d
    da = _dot(do, v_ref[...]) * d
    dq = dq + _dot(_lo(cfg, da), k_ref[...], (1, 0))
    dk = dk + _dot(_lo(cfg, da), q_ref[...], (0, 0))
    dv = dv + _dot(_lo(cfg, a), do, (0, 0))
  else:
    rows, dof = _rows(c), do.astype(F32)

    def key(j, carry):  # key j: column j of A and dA; rows j of dk and dv
      dq, dk, dv = carry
      kj = k_ref[pl.ds(j, 1), :].astype(F32)
      e = _pair_decay(g, g_ref[pl.ds(j, 1), :], j)
      a_col = jnp.sum(q * kj * e, axis=1, keepdims=True)  # [C, 1], 0 above the diagonal
      da_col = jnp.sum(dof * v_ref[pl.ds(j, 1), :].astype(F32), axis=1, keepdims=True)  # e masks it below
      dq = dq + da_col * kj * e
      dk = jnp.where(rows == j, dk + jnp.sum(da_col * q * e, axis=0, keepdims=True), dk)
      dv = jnp.where(rows == j, dv + jnp.sum(a_col * dof, axis=0, keepdims=True), dv)
      return dq, dk, dv

    dq, dk, dv = lax.fori_loop(0, c, key, (dq, dk, dv))
  dq_ref[...], dk_ref[...], dv_ref[...] = dq, dk, dv


# ---- pallas_call wrappers --------------------------------------------------------------------


def call(cfg: Cfg, kernel, grid, in_specs, out_specs, out_shape, *args, sequential=False, scratch=()):
  """One pallas_call of `kernel` for cfg.backend: Triton (GPU; interpret=True on CPU) or TPU
  (Mosaic; under `pltpu.force_tpu_interpret_mode()` on CPU). sequential: the last grid axis
  carries state (TPU "arbitrary"); scratch: TPU VMEM scratch shapes."""
  name = "chunked_linear" + kernel.__name__.removesuffix("_kernel")
  if cfg.backend != "tpu":
    return pl.pallas_call(functools.partial(kernel, cfg), out_shape=out_shape, grid=grid, in_specs=in_specs,
                          out_specs=out_specs, interpret=cfg.interpret, compiler_params=_compiler_params(cfg),
                          name=name)(*args)
  from jax.experimental.pallas import tpu as pltpu  # noqa: PLC0415  (TPU only)
  semantics = ("parallel",) * (len(grid) - 1) + ("arbitrary" if sequential else "parallel",)
  fn = functools.partial(pl.pallas_call, functools.partial(kernel, cfg), out_shape=out_shape, grid=grid,
                         in_specs=in_specs, out_specs=out_specs, scratch_shapes=list(scratch), name=name,
                         compiler_params=pltpu.CompilerParams(dimension_semantics=semantics))
  if cfg.interpret:  # pallas_call reads the interpret context when it is built
    with pltpu.force_tpu_interpret_mode():
      return fn()(*args)
  return fn()(*args)


def _chunk_spec(cfg: Cfg, x, kv=False, transposed=False):
  """BlockSpec of chunk n of x [B, H|Hkv, Tp, D] (or of Gt [B, H, Dg, Tp]) on a (b, h, n) grid."""
  c, g = cfg.chunk, cfg.groups
  if transposed:
    return pl.BlockSpec((None, None, x.shape[2], c), lambda b, h, n: (b, h, 0, n))
  return pl.BlockSpec((None, None, c, x.shape[-1]), lambda b, h, n: (b, h // g if kv else h, n, 0))


def _state_spec(s, per_chunk):
  if per_chunk:  # states [B, H, N, Dk, Dv], chunk n's on a (b, h, n) grid
    return pl.BlockSpec((None, None, None) + s.shape[3:], lambda b, h, n: (b, h, n, 0, 0))
  return pl.BlockSpec((None, None) + s.shape[2:], lambda b, h: (b, h) + (0,) * (s.ndim - 2))


def states_pass(cfg: Cfg, k, v, g, gt, s0):
  """-> (states [B, H, N, Dk, Dv] fp32: S entering each chunk, final state [B, H, Dk, Dv] fp32)."""
  b, h = g.shape[:2]
  dk, dv = k.shape[-1], v.shape[-1]
  kv = lambda x: pl.BlockSpec((None, None) + x.shape[2:], lambda b_, h_: (b_, h_ // cfg.groups, 0, 0))
  whole = lambda x: pl.BlockSpec((None, None) + x.shape[2:], lambda b_, h_: (b_, h_, 0, 0))
  states = jax.ShapeDtypeStruct((b, h, cfg.n_chunks, dk, dv), F32)
  final = jax.ShapeDtypeStruct((b, h, dk, dv), F32)
  return call(cfg, _states_kernel, (b, h), [kv(k), kv(v), whole(g), whole(gt), whole(s0)],
               [_state_spec(states, False), whole(final)], [states, final], k, v, g, gt, s0)


def output(cfg: Cfg, q, k, v, g, gt, states):
  """-> o [B, H, Tp, Dv] in q's dtype."""
  b, h, tp, _ = q.shape
  specs = [_chunk_spec(cfg, q), _chunk_spec(cfg, k, kv=True), _chunk_spec(cfg, v, kv=True), _chunk_spec(cfg, g),
           _chunk_spec(cfg, gt, transposed=True), _state_spec(states, True)]
  o = jax.ShapeDtypeStruct((b, h, tp, v.shape[-1]), q.dtype)
  return call(cfg, _output_kernel, (b, h, cfg.n_chunks), specs, _chunk_spec(cfg, o), o, q, k, v, g, gt, states)


def dstates_pass(cfg: Cfg, q, do, g, gt, ds_final):
  """-> (dstates [B, H, N, Dk, Dv]: dL/dS leaving each chunk, dL/d initial state [B, H, Dk, Dv]), fp32."""
  b, h = q.shape[:2]
  whole = lambda x: pl.BlockSpec((None, None) + x.shape[2:], lambda b_, h_: (b_, h_, 0, 0))
  dstates = jax.ShapeDtypeStruct((b, h, cfg.n_chunks) + ds_final.shape[2:], F32)
  ds0 = jax.ShapeDtypeStruct(ds_final.shape, F32)
  return call(cfg, _dstates_kernel, (b, h), [whole(q), whole(do), whole(g), whole(gt), whole(ds_final)],
               [_state_spec(dstates, False), whole(ds0)], [dstates, ds0], q, do, g, gt, ds_final)


def grads(cfg: Cfg, q, k, v, g, gt, do, states, dstates):
  """-> dq, dk, dv per query head: [B, H, Tp, Dk], [B, H, Tp, Dk], [B, H, Tp, Dv], fp32."""
  b, h, tp, dk = q.shape
  specs = [_chunk_spec(cfg, q), _chunk_spec(cfg, k, kv=True), _chunk_spec(cfg, v, kv=True), _chunk_spec(cfg, g),
           _chunk_spec(cfg, gt, transposed=True), _chunk_spec(cfg, do), _state_spec(states, True),
           _state_spec(dstates, True)]
  shapes = [jax.ShapeDtypeStruct((b, h, tp, d), F32) for d in (dk, dk, v.shape[-1])]
  return call(cfg, _grads_kernel, (b, h, cfg.n_chunks), specs, [_chunk_spec(cfg, s) for s in shapes], shapes,
               q, k, v, g, gt, do, states, dstates)


__all__ = ["Cfg", "dstates_pass", "grads", "output", "states_pass"]
