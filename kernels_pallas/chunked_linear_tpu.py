"""The chunked linear attention kernels for TPU (Mosaic): the sequential passes on the grid.

A TPU kernel sees one block per grid step, so the two passes that walk the chunks in order
(`chunked_linear_kernels.states_pass`, `dstates_pass`: a `fori_loop` over the whole
sequence inside one Triton program) become a (b, h, n) grid whose chunk axis is
"arbitrary" (sequential), the carried [Dk, Dv] state in VMEM scratch: step n stores the
state entering chunk n and updates it; the reverse pass walks n = N - 1 .. 0 through its
index maps. The parallel kernels (output, grads) are the Triton module's kernel bodies
as they are (per-chunk blocks, no in-kernel transposes), launched with TPU compiler params.

Tested under `pltpu.force_tpu_interpret_mode()` on CPU, not yet on a TPU: real Mosaic
wants the last two block dims in multiples of (8, 128) or whole (the transposed gate block
[Dg, C] and C = 64 chunks are not), so a TPU port lays Gt out per chunk and uses C = 128.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels_pallas import chunked_linear_kernels as K

F32 = jnp.float32


def _carry_step(cfg: K.Cfg, to_end: bool, x_ref, y_ref, g_ref, gt_ref, init_ref, per_chunk_ref, last_ref, sc):
  """Grid (b, h, n), n sequential: the carry (VMEM scratch, from init at n = 0) is stored for
  this chunk, then advanced by `carry_update`; the last step writes it to last."""
  n, c = pl.program_id(2), cfg.chunk

  @pl.when(n == 0)
  def _init():
    sc[...] = init_ref[...].astype(F32)

  s = sc[...]
  per_chunk_ref[...] = s
  s = K.carry_update(cfg, s, x_ref[...], y_ref[...], g_ref[...], g_ref[pl.ds(c - 1, 1), :],
                     gt_ref[:, pl.ds(c - 1, 1)], to_end)
  sc[...] = s

  @pl.when(n == pl.num_programs(2) - 1)
  def _finish():
    last_ref[...] = s


def _states_kernel(cfg: K.Cfg, *refs):
  """Step n: stores S_n, then S_{n+1} = e^{G_last} S_n + (k e^{G_last - G})^T v; the final state."""
  _carry_step(cfg, True, *refs)


def _dstates_kernel(cfg: K.Cfg, *refs):
  """Step n (chunk N - 1 - n): stores dL/dS leaving the chunk, then dS = e^{G_last} dS + (q e^G)^T do;
  the last step writes dL/d initial state."""
  _carry_step(cfg, False, *refs)


def _reversed(spec: pl.BlockSpec, n_chunks: int) -> pl.BlockSpec:
  return pl.BlockSpec(spec.block_shape, lambda b, h, n: spec.index_map(b, h, n_chunks - 1 - n))


def _per_head(x):
  """[B, H, Dk, Dv] block of (b, h), the same at every chunk step."""
  return pl.BlockSpec((None, None) + x.shape[2:], lambda b, h, n: (b, h, 0, 0))


def states_pass(cfg: K.Cfg, k, v, g, gt, s0):
  """As `chunked_linear_kernels.states_pass`: (states [B, H, N, Dk, Dv], final [B, H, Dk, Dv]), fp32."""
  b, h = g.shape[:2]
  states = jax.ShapeDtypeStruct((b, h, cfg.n_chunks) + s0.shape[2:], F32)
  final = jax.ShapeDtypeStruct(s0.shape, F32)
  specs = [K._chunk_spec(cfg, k, kv=True), K._chunk_spec(cfg, v, kv=True), K._chunk_spec(cfg, g),
           K._chunk_spec(cfg, gt, transposed=True), _per_head(s0)]
  return K.call(cfg, _states_kernel, (b, h, cfg.n_chunks), specs, [K._state_spec(states, True), _per_head(final)],
                [states, final], k, v, g, gt, s0, sequential=True, scratch=[pltpu.VMEM(s0.shape[2:], F32)])


def dstates_pass(cfg: K.Cfg, q, do, g, gt, ds_final):
  """As `chunked_linear_kernels.dstates_pass`: (dstates [B, H, N, Dk, Dv], dL/d initial state), fp32."""
  b, h = q.shape[:2]
  n = cfg.n_chunks
  dstates = jax.ShapeDtypeStruct((b, h, n) + ds_final.shape[2:], F32)
  ds0 = jax.ShapeDtypeStruct(ds_final.shape, F32)
  specs = [_reversed(K._chunk_spec(cfg, q), n), _reversed(K._chunk_spec(cfg, do), n),
           _reversed(K._chunk_spec(cfg, g), n), _reversed(K._chunk_spec(cfg, gt, transposed=True), n),
           _per_head(ds_final)]
  return K.call(cfg, _dstates_kernel, (b, h, n), specs, [_reversed(K._state_spec(dstates, True), n),
                                                         _per_head(ds0)],
                [dstates, ds0], q, do, g, gt, ds_final, sequential=True,
                scratch=[pltpu.VMEM(ds_final.shape[2:], F32)])


__all__ = ["dstates_pass", "states_pass"]
