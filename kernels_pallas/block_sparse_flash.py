"""Block-sparse flash attention in Pallas: forward, dq and dk/dv kernels under one custom_vjp.

Algorithm: FlashAttention-2 (Dao, 2023, "FlashAttention-2: Faster Attention with Better
Parallelism and Work Partitioning"): the forward pass keeps a running max m, a running
normaliser l and an fp32 output accumulator per query row while it walks the key blocks
(online softmax, Milakov & Gimelshein, 2018) and stores the logsumexp
lse = m + log l; the backward pass recomputes each score tile from q, k and lse
(P = exp(S - lse)), with delta = rowsum(dO * O):

    dV_j += P^T dO_i        dP = dO_i V_j^T        dS = P * (dP - delta_i)
    dQ_i += scale * dS K_j  dK_j += scale * dS^T Q_i

Sparsity (splash-attention style): only non-empty tiles are visited. `BlockSparseMeta`
(`block_sparse_meta.py`), built on the host from a static mask's `block_map`, lists per query block the key blocks
that are not EMPTY (the forward and dq kernels loop over that list) and per key block the
query blocks (the dk/dv kernel loops over that list), so the work is proportional to
the number of non-empty tiles (`kernel_work` counts it). A tile is FULL (no mask
arithmetic: `lax.cond` skips it) or PARTIAL: its boolean block is one of the deduplicated
`partial_masks` (causal has one distinct diagonal block, a sliding window a few).
Sequence padding (lengths not a multiple of the block) is folded into those blocks.
Data-dependent masks enter as per-position arrays applied inside every visited tile:
segment ids (q [B, Tq], kv [B, Tk]: equal ids attend) and key validity (kv_valid [B, Tk]).
Block routing (MoBA, top-k block selection) enters as `block_indices`
[B|1, Hq|1, nq, K]: per (batch, head, query block) the selected key blocks, intersected
with the static mask; the row and column lists are then built on the device.

GQA by index mapping: query head h reads key/value head h // G through the BlockSpec
index map (k and v are never repeated); the dk/dv kernel of kv head g sums its G query
heads in-kernel.

Backend: GPU through Pallas's Triton backend (`pallas.triton.CompilerParams(num_warps,
num_stages)`), chosen over Mosaic GPU because (1) it compiles for Ampere and Hopper alike
(Mosaic GPU targets Hopper/Blackwell with warpgroup, TMA and barrier programming),
(2) its kernel body is plain ref loads, `lax.dot_general` and `lax.fori_loop` over the
block list, which is exactly what `interpret=True` executes on CPU, so the code tested
here is the code compiled there, and (3) jax 0.11 only deprecates the Triton backend (the
GPU machine's 0.11.2 still lowers it, with a DeprecationWarning); a Mosaic GPU port is
the migration path once it is removed. On GPU the loop over a query block's key-block
list runs inside the kernel (no scalar prefetch on GPU). TPU: `block_sparse_flash_tpu`
runs the same algorithm with the lists as scalar-prefetch operands of the grid
(`backend="tpu"`), tested under `pltpu.force_tpu_interpret_mode()`, not yet on a TPU.
Triton needs power-of-two block sizes and head dims (`unsupported_reason` checks them);
interpret mode does not.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl

from kernels_pallas import runtime
from kernels_pallas.block_sparse_meta import (  # noqa: F401  (DEFAULT_BLOCK, kernel_work: re-exported)
    DEFAULT_BLOCK, EMPTY_TILE, FULL_TILE, BlockSparseMeta, _next_pow2, _select_lists, build_block_metadata,
    kernel_work)


# ---- kernels ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Cfg:
  """Everything static about one call."""
  block_q: int
  block_k: int
  scale: float
  groups: int  # G = Hq / Hkv
  sel_b: bool  # lists vary over batch
  sel_h: bool  # lists vary over query head
  segments: bool
  kv_valid: bool
  interpret: bool
  num_warps: int
  num_stages: int


def _dot(a, b, contract=(1, 1)):
  """a @ b contracting a's dim contract[0] with b's dim contract[1], fp32 accumulation.

  fp32 operands get Precision.HIGHEST (Triton's IEEE input precision; DEFAULT would be
  TF32 there), so an fp32 call is fp32 on GPU too; bf16/fp16 use the tensor cores as is."""
  precision = lax.Precision.HIGHEST if a.dtype == jnp.float32 else None
  return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())), precision=precision,
                         preferred_element_type=jnp.float32)


def _mask_tile(cfg: _Cfg, s, kind, pm_ref, dyn):
  """Scores s [bq, bk] with disallowed entries -inf: the data-dependent mask `dyn` (bool or
  None) everywhere, the tile's partial block only when kind >= 0 (FULL tiles skip it)."""
  if dyn is not None:
    s = jnp.where(dyn, s, -jnp.inf)
  return lax.cond(kind >= 0, lambda t: jnp.where(pm_ref[jnp.maximum(kind, 0)] != 0, t, -jnp.inf),
                  lambda t: t, s)


def _dyn_allowed(cfg: _Cfg, q_seg, k_seg, k_valid):
  """Data-dependent allowed [bq, bk] from per-position arrays (None when there are none)."""
  ok = None
  if cfg.segments:
    ok = q_seg[:, None] == k_seg[None, :]
  if cfg.kv_valid:
    kv = jnp.broadcast_to(k_valid[None, :] != 0, (cfg.block_q, cfg.block_k))
    ok = kv if ok is None else ok & kv
  return ok


def _split_refs(cfg: _Cfg, refs, n_fixed: int):
  """(fixed refs, q_seg, k_seg, k_valid, outputs) from a kernel's flat ref list."""
  fixed, rest = refs[:n_fixed], list(refs[n_fixed:])
  q_seg = k_seg = k_val = None
  if cfg.segments:
    q_seg, k_seg = rest.pop(0), rest.pop(0)
  if cfg.kv_valid:
    k_val = rest.pop(0)
  return fixed, q_seg, k_seg, k_val, rest


def _fwd_kernel(cfg: _Cfg, *refs):
  """Grid (b, h, i): online softmax of query block i over its key-block list."""
  (row_idx, row_cnt, kind_ref, pm_ref, q_ref, k_ref, v_ref), qs_ref, ks_ref, kv_ref, (o_ref, lse_ref) = (
      _split_refs(cfg, refs, 7))
  bq, bk = cfg.block_q, cfg.block_k
  q = q_ref[...]
  q_seg = qs_ref[...] if cfg.segments else None

  def body(t, carry):
    acc, m, l = carry
    j = row_idx[t]
    kj = pl.ds(j * bk, bk)
    s = _dot(q, k_ref[kj, :]) * cfg.scale
    dyn = _dyn_allowed(cfg, q_seg, ks_ref[kj] if cfg.segments else None, kv_ref[kj] if cfg.kv_valid else None)
    s = _mask_tile(cfg, s, kind_ref[j], pm_ref, dyn)
    m_new = jnp.maximum(m, s.max(axis=-1))
    m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # rows fully masked so far: exp(-inf) = 0
    p = jnp.exp(s - m_safe[:, None])
    alpha = jnp.exp(m - m_safe)
    v = v_ref[kj, :]
    acc = alpha[:, None] * acc + _dot(p.astype(v.dtype), v, (1, 0))
    return acc, m_new, alpha * l + p.sum(axis=-1)

  init = (jnp.zeros((bq, v_ref.shape[-1]), jnp.float32), jnp.full((bq,), -jnp.inf, jnp.float32),
          jnp.zeros((bq,), jnp.float32))
  acc, m, l = lax.fori_loop(0, row_cnt[0], body, init)
  empty = l == 0.0
  l_safe = jnp.where(empty, 1.0, l)
  o_ref[...] = (acc / l_safe[:, None]).astype(o_ref.dtype)
  lse_ref[...] = jnp.where(empty, jnp.inf, m + jnp.log(l_safe))  # +inf: no allowed key, P = 0


def _dq_kernel(cfg: _Cfg, *refs):
  """Grid (b, h, i): dq of query block i, recomputing P from lse over its key-block list."""
  (row_idx, row_cnt, kind_ref, pm_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref), qs_ref, ks_ref, kv_ref, (
      dq_ref,) = _split_refs(cfg, refs, 10)
  bk = cfg.block_k
  q, do = q_ref[...], do_ref[...]
  lse, delta = lse_ref[...], delta_ref[...]
  q_seg = qs_ref[...] if cfg.segments else None

  def body(t, dq):
    j = row_idx[t]
    kj = pl.ds(j * bk, bk)
    k = k_ref[kj, :]
    s = _dot(q, k) * cfg.scale
    dyn = _dyn_allowed(cfg, q_seg, ks_ref[kj] if cfg.segments else None, kv_ref[kj] if cfg.kv_valid else None)
    s = _mask_tile(cfg, s, kind_ref[j], pm_ref, dyn)
    p = jnp.exp(s - lse[:, None])
    dp = _dot(do, v_ref[kj, :])
    ds = p * (dp - delta[:, None])
    return dq + _dot(ds.astype(k.dtype), k, (1, 0))

  dq = lax.fori_loop(0, row_cnt[0], body, jnp.zeros(q.shape, jnp.float32))
  dq_ref[...] = (dq * cfg.scale).astype(dq_ref.dtype)


def _dkdv_kernel(cfg: _Cfg, *refs):
  """Grid (b, hkv, j): dk, dv of key block j over its query-block list, summed over the
  kv head's G query heads."""
  (col_idx, col_cnt, kind_t, pm_ref, q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref), qs_ref, ks_ref, kv_ref, (
      dk_ref, dv_ref) = _split_refs(cfg, refs, 10)
  bq = cfg.block_q
  k, v = k_ref[...], v_ref[...]
  k_seg = ks_ref[...] if cfg.segments else None
  k_val = kv_ref[...] if cfg.kv_valid else None

  def head(g, carry):  # the kv head's G query heads, one after another
    gs = g if cfg.sel_h else 0

    def body(t, carry):
      dk, dv = carry
      i = col_idx[gs, t]
      qi = pl.ds(i * bq, bq)
      q, do = q_ref[g, qi, :], do_ref[g, qi, :]
      s = _dot(q, k) * cfg.scale
      dyn = _dyn_allowed(cfg, qs_ref[qi] if cfg.segments else None, k_seg, k_val)
      s = _mask_tile(cfg, s, kind_t[i], pm_ref, dyn)
      p = jnp.exp(s - lse_ref[g, qi][:, None])
      dv = dv + _dot(p.astype(do.dtype), do, (0, 0))
      dp = _dot(do, v)
      ds = p * (dp - delta_ref[g, qi][:, None])
      return dk + _dot(ds.astype(q.dtype), q, (0, 0)), dv

    return lax.fori_loop(0, col_cnt[gs, 0], body, carry)

  dk, dv = lax.fori_loop(0, cfg.groups, head, (jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32)))
  dk_ref[...] = (dk * cfg.scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


# ---- pallas_call wrappers -------------------------------------------------------------


def _compiler_params(cfg: _Cfg):
  if cfg.interpret:
    return None
  from jax.experimental.pallas import triton as pltriton  # GPU only; imported lazily
  return pltriton.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def _call(cfg: _Cfg, kernel, grid, in_specs, out_specs, out_shape, args):
  return pl.pallas_call(functools.partial(kernel, cfg), out_shape=out_shape, grid=grid, in_specs=in_specs,
                        out_specs=out_specs, interpret=cfg.interpret, compiler_params=_compiler_params(cfg),
                        name=kernel.__name__.strip("_"))(*args)


def _sel(flag, x):
  return x if flag else 0


def _row_specs(cfg: _Cfg, lists, meta_arrays):
  """BlockSpecs of (row_idx, row_cnt, tile_kind, partial_masks) for a (b, h, i) grid."""
  row_idx, row_cnt = lists
  kind, _, pm = meta_arrays
  lsel = lambda b, h: (_sel(cfg.sel_b, b), _sel(cfg.sel_h, h))
  return [pl.BlockSpec((None, None, None, row_idx.shape[-1]), lambda b, h, i: (*lsel(b, h), i, 0)),
          pl.BlockSpec((None, None, None, 1), lambda b, h, i: (*lsel(b, h), i, 0)),
          pl.BlockSpec((None, kind.shape[-1]), lambda b, h, i: (i, 0)),
          pl.BlockSpec(pm.shape, lambda b, h, i: (0, 0, 0))]


def _dyn_specs_rows(cfg: _Cfg, tk_pad):
  specs = []
  if cfg.segments:
    specs += [pl.BlockSpec((None, cfg.block_q), lambda b, h, i: (b, i)),
              pl.BlockSpec((None, tk_pad), lambda b, h, i: (b, 0))]
  if cfg.kv_valid:
    specs.append(pl.BlockSpec((None, tk_pad), lambda b, h, i: (b, 0)))
  return specs


def _forward(cfg, lists, meta_arrays, q, k, v, dyn):
  """q [B, Hq, Tq_pad, D], k/v [B, Hkv, Tk_pad, D|Dv] -> o [B, Hq, Tq_pad, Dv], lse [B, Hq, Tq_pad] fp32."""
  b, hq, tq_pad, d = q.shape
  tk_pad, dv = k.shape[2], v.shape[-1]
  g, bq = cfg.groups, cfg.block_q
  in_specs = _row_specs(cfg, lists[:2], meta_arrays) + [
      pl.BlockSpec((None, None, bq, d), lambda b_, h, i: (b_, h, i, 0)),
      pl.BlockSpec((None, None, tk_pad, d), lambda b_, h, i: (b_, h // g, 0, 0)),
      pl.BlockSpec((None, None, tk_pad, dv), lambda b_, h, i: (b_, h // g, 0, 0))] + _dyn_specs_rows(cfg, tk_pad)
  out_specs = [pl.BlockSpec((None, None, bq, dv), lambda b_, h, i: (b_, h, i, 0)),
               pl.BlockSpec((None, None, bq), lambda b_, h, i: (b_, h, i))]
  out_shape = [jax.ShapeDtypeStruct((b, hq, tq_pad, dv), q.dtype), jax.ShapeDtypeStruct((b, hq, tq_pad), jnp.float32)]
  return _call(cfg, _fwd_kernel, (b, hq, tq_pad // bq), in_specs, out_specs, out_shape,
               (*lists[:2], meta_arrays[0], meta_arrays[2], q, k, v, *dyn))


def _backward(cfg, lists, meta_arrays, q, k, v, dyn, o, lse, do):
  """dq [B, Hq, Tq_pad, D], dk [B, Hkv, Tk_pad, D], dv [B, Hkv, Tk_pad, Dv] (input dtypes)."""
  b, hq, tq_pad, d = q.shape
  hkv, tk_pad, dv = k.shape[1], k.shape[2], v.shape[-1]
  g, bq, bk = cfg.groups, cfg.block_q, cfg.block_k
  delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1)  # [B, Hq, Tq_pad]
  kind, kind_t, pm = meta_arrays
  row = lambda shape: pl.BlockSpec(shape, lambda b_, h, i: (b_, h, i, 0))
  dq_specs = _row_specs(cfg, lists[:2], meta_arrays) + [
      row((None, None, bq, d)),
      pl.BlockSpec((None, None, tk_pad, d), lambda b_, h, i: (b_, h // g, 0, 0)),
      pl.BlockSpec((None, None, tk_pad, dv), lambda b_, h, i: (b_, h // g, 0, 0)),
      row((None, None, bq, dv)),
      pl.BlockSpec((None, None, bq), lambda b_, h, i: (b_, h, i)),
      pl.BlockSpec((None, None, bq), lambda b_, h, i: (b_, h, i))] + _dyn_specs_rows(cfg, tk_pad)
  dq = _call(cfg, _dq_kernel, (b, hq, tq_pad // bq), dq_specs, row((None, None, bq, d)),
             jax.ShapeDtypeStruct(q.shape, q.dtype), (*lists[:2], kind, pm, q, k, v, do, lse, delta, *dyn))

  col_idx, col_cnt = lists[2:]
  gs = g if cfg.sel_h else 1
  lsel = lambda b_, h: (_sel(cfg.sel_b, b_), _sel(cfg.sel_h, h))
  kv_block = lambda dim: pl.BlockSpec((None, None, bk, dim), lambda b_, h, j: (b_, h, j, 0))
  dkdv_specs = [
      pl.BlockSpec((None, gs, None, col_idx.shape[-1]), lambda b_, h, j: (*lsel(b_, h), j, 0)),
      pl.BlockSpec((None, gs, None, 1), lambda b_, h, j: (*lsel(b_, h), j, 0)),
      pl.BlockSpec((None, kind_t.shape[-1]), lambda b_, h, j: (j, 0)),
      pl.BlockSpec(pm.shape, lambda b_, h, j: (0, 0, 0)),
      pl.BlockSpec((None, g, tq_pad, d), lambda b_, h, j: (b_, h, 0, 0)),
      kv_block(d), kv_block(dv),
      pl.BlockSpec((None, g, tq_pad, dv), lambda b_, h, j: (b_, h, 0, 0)),
      pl.BlockSpec((None, g, tq_pad), lambda b_, h, j: (b_, h, 0)),
      pl.BlockSpec((None, g, tq_pad), lambda b_, h, j: (b_, h, 0))]
  if cfg.segments:
    dkdv_specs += [pl.BlockSpec((None, tq_pad), lambda b_, h, j: (b_, 0)),
                   pl.BlockSpec((None, bk), lambda b_, h, j: (b_, j))]
  if cfg.kv_valid:
    dkdv_specs.append(pl.BlockSpec((None, bk), lambda b_, h, j: (b_, j)))
  dk, dv_ = _call(cfg, _dkdv_kernel, (b, hkv, tk_pad // bk), dkdv_specs, [kv_block(d), kv_block(dv)],
                  [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
                  (col_idx, col_cnt, kind_t, pm, q, k, v, do, lse, delta, *dyn))
  return dq, dk, dv_


def _make_core(forward_fn, backward_fn):
  """custom_vjp over heads-first padded q, k, v (the lists and dynamic arrays are not
  differentiated). forward_fn(lists, q, k, v, dyn) -> (o, lse);
  backward_fn(lists, q, k, v, dyn, o, lse, do) -> (dq, dk, dv)."""

  @jax.custom_vjp
  def core(q, k, v, lists, dyn):
    return forward_fn(lists, q, k, v, dyn)[0]

  def fwd(q, k, v, lists, dyn):
    o, lse = forward_fn(lists, q, k, v, dyn)
    return o, (q, k, v, lists, dyn, o, lse)

  def bwd(res, do):
    q, k, v, lists, dyn, o, lse = res
    dq, dk, dv = backward_fn(lists, q, k, v, dyn, o, lse, do)
    return dq, dk, dv, None, None

  core.defvjp(fwd, bwd)
  return core


# ---- public -----------------------------------------------------------------------------


def unsupported_reason(q, k, v, *, block_q: int, block_k: int, interpret: bool) -> str | None:
  """None if the compiled (Triton) kernel can take these shapes, else why not. Interpret
  mode takes any head dim and block size."""
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    return f"q, k, v must be [B, T, H, D], got shapes {q.shape}, {k.shape}, {v.shape}"
  if q.shape[2] % k.shape[2]:
    return f"q heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]})"
  if interpret:
    return None
  if q.dtype not in (jnp.bfloat16, jnp.float16, jnp.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
    return f"the pallas kernel needs one float dtype (bf16, f16, f32) for q, k, v (got {q.dtype}, {k.dtype}, {v.dtype})"
  for name, dim in (("head_dim", q.shape[-1]), ("value head_dim", v.shape[-1]), ("block_q", block_q),
                    ("block_k", block_k)):
    if dim < 16 or dim & (dim - 1) or dim > 256:
      return f"the Triton kernel needs {name} a power of two in [16, 256] (got {dim})"
  return None


def block_sparse_flash_attention(q, k, v, meta: BlockSparseMeta, *, scale: float | None = None,
                                 q_segment_ids=None, kv_segment_ids=None, kv_valid=None, block_indices=None,
                                 interpret: bool | None = None, backend: str | None = None,
                                 num_warps: int | None = None, num_stages: int = 2):
  """Block-sparse softmax attention: softmax(q k^T * scale, masked) v over meta's tiles.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] (Hq % Hkv == 0) -> [B, Tq, Hq, Dv]
  in q's dtype (fp32 accumulation). meta: `build_block_metadata(static_mask, Tq, Tk, ...)`.
  Only meta's non-empty tiles are computed. Data-dependent masks, applied inside each
  visited tile: q_segment_ids [B|1, Tq] with kv_segment_ids [B|1, Tk] (default: the q
  ids; needs Tq == Tk), kv_valid bool [B|1, Tk]. block_indices int [B|1, Hq|1, nq, K]:
  selected key blocks per query block (-1 = unused; ids out of range, duplicates and tiles
  EMPTY in meta are dropped), which then replace meta's row lists. A query row with no
  allowed key outputs zeros. scale defaults to D ** -0.5. interpret: run the kernels as
  JAX ops (CPU tests); None = `runtime.interpret_enabled()`. backend: "triton" (GPU) or
  "tpu" (Mosaic, scalar-prefetch grid; `block_sparse_flash_tpu`; interpret mode runs it
  under `pltpu.force_tpu_interpret_mode()`); None = "tpu" on a TPU, else "triton".
  num_warps, num_stages: Triton
  launch parameters (GPU; num_warps defaults to 4, or 8 for tiles of more than 64 x 128). Differentiable in q, k, v (custom_vjp, FlashAttention-2 backward).
  """
  interpret = runtime.interpret_enabled() if interpret is None else interpret
  backend = backend or ("tpu" if jax.default_backend() == "tpu" else "triton")
  if backend not in ("triton", "tpu"):
    raise ValueError(f"backend must be 'triton' or 'tpu', got {backend!r}")
  bsz, tq, hq, d = q.shape
  tk, hkv = k.shape[1], k.shape[2]
  reason = unsupported_reason(q, k, v, block_q=meta.block_q, block_k=meta.block_k,
                              interpret=interpret or backend == "tpu")
  if reason:
    raise ValueError(reason)
  if (meta.tq, meta.tk) != (tq, tk):
    raise ValueError(f"metadata was built for (Tq, Tk) = {(meta.tq, meta.tk)}, got {(tq, tk)}")
  bq, bk = meta.block_q, meta.block_k
  tq_pad, tk_pad = meta.nq * bq, meta.nk * bk
  scale = float(d ** -0.5 if scale is None else scale)

  dyn = []
  if kv_segment_ids is not None and q_segment_ids is None:
    raise ValueError("kv_segment_ids given without q_segment_ids")
  if q_segment_ids is not None:
    if kv_segment_ids is None:
      if tq != tk:
        raise ValueError("kv_segment_ids are needed when Tq != Tk")
      kv_segment_ids = q_segment_ids
    qs = jnp.broadcast_to(jnp.asarray(q_segment_ids, jnp.int32), (bsz, tq))
    ks = jnp.broadcast_to(jnp.asarray(kv_segment_ids, jnp.int32), (bsz, tk))
    dyn += [jnp.pad(qs, ((0, 0), (0, tq_pad - tq))), jnp.pad(ks, ((0, 0), (0, tk_pad - tk)))]
  if kv_valid is not None:
    kvv = jnp.broadcast_to(jnp.asarray(kv_valid).astype(jnp.int32), (bsz, tk))
    dyn.append(jnp.pad(kvv, ((0, 0), (0, tk_pad - tk))))

  if block_indices is None:
    lists = (meta.row_idx[None, None], meta.row_cnt[None, None, :, None],
             meta.col_idx[None, None], meta.col_cnt[None, None, :, None])
    sel_b = sel_h = False
  else:
    block_indices = jnp.asarray(block_indices)
    if block_indices.ndim != 4 or block_indices.shape[0] not in (1, bsz) or block_indices.shape[1] not in (1, hq):
      raise ValueError(f"block_indices must be [B|1, Hq|1, nq, K], got shape {block_indices.shape}")
    lists = _select_lists(meta, block_indices)
    sel_b, sel_h = block_indices.shape[0] > 1, block_indices.shape[1] > 1
  lists = tuple(jnp.asarray(x, jnp.int32) for x in lists)

  if num_warps is None:
    num_warps = 4 if max(bq, bk) * max(d, v.shape[-1]) <= 64 * 128 else 8
  cfg = _Cfg(bq, bk, scale, hq // hkv, sel_b, sel_h, q_segment_ids is not None, kv_valid is not None,
             bool(interpret), num_warps, num_stages)
  pm = jnp.asarray(meta.partial_masks)
  if backend == "tpu":
    from kernels_pallas import block_sparse_flash_tpu as tpu  # noqa: PLC0415  (imports pallas.tpu)
    kind = jnp.asarray(meta.tile_kind)
    core = _make_core(lambda lists, *a: tpu.forward(cfg, lists, kind, pm, *a),
                      lambda lists, *a: tpu.backward(cfg, lists, kind, pm, *a))
  else:
    kind_rows = np.full((meta.nq, _next_pow2(meta.nk)), EMPTY_TILE, np.int32)  # for the (b, h, i) kernels
    kind_rows[:, :meta.nk] = meta.tile_kind
    kind_cols = np.full((meta.nk, _next_pow2(meta.nq)), EMPTY_TILE, np.int32)  # for the (b, hkv, j) kernel
    kind_cols[:, :meta.nq] = meta.tile_kind.T
    meta_arrays = (jnp.asarray(kind_rows), jnp.asarray(kind_cols), pm)
    core = _make_core(lambda lists, *a: _forward(cfg, lists, meta_arrays, *a),
                      lambda lists, *a: _backward(cfg, lists, meta_arrays, *a))

  heads_first = lambda x, t_pad: jnp.pad(jnp.swapaxes(x, 1, 2), ((0, 0), (0, 0), (0, t_pad - x.shape[1]), (0, 0)))
  qh, kh, vh = heads_first(q, tq_pad), heads_first(k, tk_pad), heads_first(v.astype(q.dtype), tk_pad)
  out = core(qh, kh.astype(q.dtype), vh, lists, tuple(dyn))
  return jnp.swapaxes(out[:, :, :tq], 1, 2)


__all__ = ["BlockSparseMeta", "DEFAULT_BLOCK", "EMPTY_TILE", "FULL_TILE", "block_sparse_flash_attention",
           "build_block_metadata", "kernel_work", "unsupported_reason"]
