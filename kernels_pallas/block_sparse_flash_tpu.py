"""The block-sparse flash kernels for TPU (Mosaic): the same algorithm as the Triton kernels
of `block_sparse_flash`, with the block lists as scalar-prefetch operands.

On TPU a kernel cannot loop over a data-dependent list of HBM blocks by itself: the
pipeline must know each step's blocks. So the list becomes the last grid axis
(`PrefetchScalarGridSpec`): step t of query block i fetches key block row_idx[i, t]
(the index maps read the prefetched lists), and the FULL/PARTIAL code of that tile picks
which deduplicated partial-mask block is fetched beside it. Steps past a row's count
repeat the last block index (no new DMA) and skip all compute (`pl.when`), so compute is
proportional to the non-empty tiles, as in splash attention (the grid's extent is the
longest list). Accumulators live in VMEM scratch across the reduction axis: m, l and the
fp32 output for the forward, dq for the dq kernel; the dk/dv kernel walks the flattened
(query head of the group, query block) list of its key block.

Tested under `pltpu.force_tpu_interpret_mode()` on CPU. Not yet run on a TPU: real Mosaic
wants blocks that are multiples of 128 (lanes) and the row statistics laid out over lanes
and sublanes, and SMEM bounds the prefetched tables (nq * nk int32 for tile codes).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from kernels_pallas.block_sparse_flash import _Cfg, _dot


def _sel(flag, x):
  return x if flag else 0


def _mask(cfg: _Cfg, s, kind, pm_ref, dyn):
  """s with disallowed entries -inf: `dyn` everywhere, the fetched partial block if kind >= 0."""
  if dyn is not None:
    s = jnp.where(dyn, s, -jnp.inf)
  return lax.cond(kind >= 0, lambda t: jnp.where(pm_ref[...] != 0, t, -jnp.inf), lambda t: t, s)


def _dyn_refs(cfg: _Cfg, refs):
  """The data-dependent allowed block [bq, bk] (None without segments or key padding) from
  the optional refs (q ids [bq, 1], kv ids and validity [1, bk]: they broadcast without a
  transpose), and the remaining refs."""
  refs = list(refs)
  ok = None
  if cfg.segments:
    q_seg, k_seg = refs.pop(0)[...], refs.pop(0)[...]
    ok = q_seg == k_seg
  if cfg.kv_valid:
    valid = jnp.broadcast_to(refs.pop(0)[...] != 0, (cfg.block_q, cfg.block_k))
    ok = valid if ok is None else ok & valid
  return ok, refs


def _fwd_kernel(cfg: _Cfg, row_idx, row_cnt, kind_tab, q_ref, k_ref, v_ref, pm_ref, *refs):
  """Grid (b, h, i, t): step t of query block i's key-block list."""
  b, h, i, t = (pl.program_id(a) for a in range(4))
  bs, hs = _sel(cfg.sel_b, b), _sel(cfg.sel_h, h)
  dyn, (o_ref, lse_ref, m_sc, l_sc, acc_sc) = _dyn_refs(cfg, refs)

  @pl.when(t == 0)
  def _init():
    m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, jnp.float32)
    l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

  @pl.when(t < row_cnt[bs, hs, i])
  def _step():
    j = row_idx[bs, hs, i, t]
    s = _dot(q_ref[...], k_ref[...]) * cfg.scale
    s = _mask(cfg, s, kind_tab[i, j], pm_ref, dyn)
    m = m_sc[...]  # [bq, 1]
    m_new = jnp.maximum(m, s.max(axis=-1, keepdims=True))
    m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    p = jnp.exp(s - m_safe)
    alpha = jnp.exp(m - m_safe)
    v = v_ref[...]
    acc_sc[...] = alpha * acc_sc[...] + _dot(p.astype(v.dtype), v, (1, 0))
    l_sc[...] = alpha * l_sc[...] + p.sum(axis=-1, keepdims=True)
    m_sc[...] = m_new

  @pl.when(t == pl.num_programs(3) - 1)
  def _finish():
    l = l_sc[...]
    empty = l == 0.0
    l_safe = jnp.where(empty, 1.0, l)
    o_ref[...] = (acc_sc[...] / l_safe).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, jnp.inf, m_sc[...] + jnp.log(l_safe))


def _dq_kernel(cfg: _Cfg, row_idx, row_cnt, kind_tab, q_ref, k_ref, v_ref, pm_ref, do_ref, lse_ref, delta_ref,
               *refs):
  """Grid (b, h, i, t): dq of query block i, accumulated over its key-block list."""
  b, h, i, t = (pl.program_id(a) for a in range(4))
  bs, hs = _sel(cfg.sel_b, b), _sel(cfg.sel_h, h)
  dyn, (dq_ref, dq_sc) = _dyn_refs(cfg, refs)

  @pl.when(t == 0)
  def _init():
    dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

  @pl.when(t < row_cnt[bs, hs, i])
  def _step():
    j = row_idx[bs, hs, i, t]
    k = k_ref[...]
    s = _dot(q_ref[...], k) * cfg.scale
    s = _mask(cfg, s, kind_tab[i, j], pm_ref, dyn)
    p = jnp.exp(s - lse_ref[...])  # lse, delta: [bq, 1]
    ds = p * (_dot(do_ref[...], v_ref[...]) - delta_ref[...])
    dq_sc[...] += _dot(ds.astype(k.dtype), k, (1, 0))

  @pl.when(t == pl.num_programs(3) - 1)
  def _finish():
    dq_ref[...] = (dq_sc[...] * cfg.scale).astype(dq_ref.dtype)


def _dkdv_kernel(cfg: _Cfg, lc: int, col_idx, col_cnt, kind_tab, q_ref, k_ref, v_ref, pm_ref, do_ref, lse_ref,
                 delta_ref, *refs):
  """Grid (b, hkv, j, t): t = g * Lc + s walks query head g of the group and the s-th query
  block of key block j's list."""
  b, hkv, j, t = (pl.program_id(a) for a in range(4))
  g, s_ = t // lc, t % lc
  bs, hs = _sel(cfg.sel_b, b), _sel(cfg.sel_h, hkv * cfg.groups + g)
  dyn, (dk_ref, dv_ref, dk_sc, dv_sc) = _dyn_refs(cfg, refs)

  @pl.when(t == 0)
  def _init():
    dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
    dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

  @pl.when(s_ < col_cnt[bs, hs, j])
  def _step():
    i = col_idx[bs, hs, j, s_]
    q, do, k, v = q_ref[...], do_ref[...], k_ref[...], v_ref[...]
    s = _dot(q, k) * cfg.scale
    s = _mask(cfg, s, kind_tab[i, j], pm_ref, dyn)
    p = jnp.exp(s - lse_ref[...])
    dv_sc[...] += _dot(p.astype(do.dtype), do, (0, 0))
    ds = p * (_dot(do, v) - delta_ref[...])
    dk_sc[...] += _dot(ds.astype(q.dtype), q, (0, 0))

  @pl.when(t == pl.num_programs(3) - 1)
  def _finish():
    dk_ref[...] = (dk_sc[...] * cfg.scale).astype(dk_ref.dtype)
    dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def _pallas(cfg: _Cfg, kernel, grid, in_specs, out_specs, out_shape, scratch, args):
  """One pallas_call with three scalar-prefetch operands (lists, counts, tile codes)."""
  spec = pltpu.PrefetchScalarGridSpec(num_scalar_prefetch=3, grid=grid, in_specs=in_specs, out_specs=out_specs,
                                      scratch_shapes=scratch)
  params = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))
  call = functools.partial(pl.pallas_call, kernel, grid_spec=spec, out_shape=out_shape, compiler_params=params,
                           name=getattr(kernel, "__name__", "kernel").strip("_"))
  if cfg.interpret:
    with pltpu.force_tpu_interpret_mode():
      return call()(*args)
  return call()(*args)


def _row_step(cfg: _Cfg):
  """Index-map helpers of the (b, h, i, t) kernels: the key block of step t (clamped to the
  last valid entry, so padding steps fetch nothing new) and its partial-mask block."""
  def j_of(b, h, i, t, idx, cnt):
    bs, hs = _sel(cfg.sel_b, b), _sel(cfg.sel_h, h)
    return idx[bs, hs, i, jnp.maximum(jnp.minimum(t, cnt[bs, hs, i] - 1), 0)]

  def pm_of(b, h, i, t, idx, cnt, kind):
    return (jnp.maximum(kind[i, j_of(b, h, i, t, idx, cnt)], 0), 0, 0)

  return j_of, pm_of


def _dyn_row_specs(cfg: _Cfg, j_of):
  specs = []
  kv_spec = pl.BlockSpec((None, 1, cfg.block_k), lambda b, h, i, t, idx, cnt, kind: (b, 0, j_of(b, h, i, t, idx, cnt)))
  if cfg.segments:
    specs += [pl.BlockSpec((None, cfg.block_q, 1), lambda b, h, i, t, *_: (b, i, 0)), kv_spec]
  if cfg.kv_valid:
    specs.append(kv_spec)
  return specs


def forward(cfg: _Cfg, lists, kind, pm, q, k, v, dyn):
  """q [B, Hq, Tq_pad, D], k/v [B, Hkv, Tk_pad, D|Dv] -> (o [B, Hq, Tq_pad, Dv], lse [B, Hq, Tq_pad])."""
  row_idx, row_cnt = lists[0], lists[1][..., 0]
  b, hq, tq_pad, d = q.shape
  dv, g, bq, bk = v.shape[-1], cfg.groups, cfg.block_q, cfg.block_k
  j_of, pm_of = _row_step(cfg)
  kv_spec = lambda dim: pl.BlockSpec((None, None, bk, dim),
                                     lambda b_, h, i, t, idx, cnt, kd: (b_, h // g, j_of(b_, h, i, t, idx, cnt), 0))
  in_specs = [pl.BlockSpec((None, None, bq, d), lambda b_, h, i, t, *_: (b_, h, i, 0)), kv_spec(d), kv_spec(dv),
              pl.BlockSpec((None, bq, bk), pm_of)] + _dyn_row_specs(cfg, j_of)
  out_specs = [pl.BlockSpec((None, None, bq, dv), lambda b_, h, i, t, *_: (b_, h, i, 0)),
               pl.BlockSpec((None, None, bq, 1), lambda b_, h, i, t, *_: (b_, h, i, 0))]
  out_shape = [jax.ShapeDtypeStruct((b, hq, tq_pad, dv), q.dtype),
               jax.ShapeDtypeStruct((b, hq, tq_pad, 1), jnp.float32)]
  scratch = [pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, 1), jnp.float32), pltpu.VMEM((bq, dv), jnp.float32)]
  grid = (b, hq, tq_pad // bq, row_idx.shape[-1])
  return _pallas(cfg, functools.partial(_fwd_kernel, cfg), grid, in_specs, out_specs, out_shape, scratch,
                 (row_idx, row_cnt, kind, q, k, v, pm, *_dyn_layout(cfg, dyn)))


def _dyn_layout(cfg: _Cfg, dyn):
  """The wrapper's per-position arrays ([B, Tq_pad] q ids, [B, Tk_pad] kv ids / validity) as
  [B, Tq_pad, 1] and [B, 1, Tk_pad], so their blocks are (bq, 1) and (1, bk)."""
  dyn = list(dyn)
  out = []
  if cfg.segments:
    out += [dyn.pop(0)[:, :, None], dyn.pop(0)[:, None, :]]
  if cfg.kv_valid:
    out.append(dyn.pop(0)[:, None, :])
  return out


def backward(cfg: _Cfg, lists, kind, pm, q, k, v, dyn, o, lse, do):
  """dq [B, Hq, Tq_pad, D], dk [B, Hkv, Tk_pad, D], dv [B, Hkv, Tk_pad, Dv] (lse [B, Hq, Tq_pad, 1])."""
  row_idx, row_cnt, col_idx, col_cnt = lists[0], lists[1][..., 0], lists[2], lists[3][..., 0]
  b, hq, tq_pad, d = q.shape
  hkv, tk_pad, dv = k.shape[1], k.shape[2], v.shape[-1]
  g, bq, bk = cfg.groups, cfg.block_q, cfg.block_k
  delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1, keepdims=True)  # [B, Hq, Tq_pad, 1]
  dyn = _dyn_layout(cfg, dyn)
  j_of, pm_of = _row_step(cfg)
  q_row = lambda dim: pl.BlockSpec((None, None, bq, dim), lambda b_, h, i, t, *_: (b_, h, i, 0))
  stat_row = pl.BlockSpec((None, None, bq, 1), lambda b_, h, i, t, *_: (b_, h, i, 0))
  kv_spec = lambda dim: pl.BlockSpec((None, None, bk, dim),
                                     lambda b_, h, i, t, idx, cnt, kd: (b_, h // g, j_of(b_, h, i, t, idx, cnt), 0))
  dq_specs = [q_row(d), kv_spec(d), kv_spec(dv), pl.BlockSpec((None, bq, bk), pm_of), q_row(dv), stat_row,
              stat_row] + _dyn_row_specs(cfg, j_of)
  dq = _pallas(cfg, functools.partial(_dq_kernel, cfg), (b, hq, tq_pad // bq, row_idx.shape[-1]), dq_specs,
               q_row(d), jax.ShapeDtypeStruct(q.shape, q.dtype), [pltpu.VMEM((bq, d), jnp.float32)],
               (row_idx, row_cnt, kind, q, k, v, pm, do, lse, delta, *dyn))

  lc = col_idx.shape[-1]

  def i_of(b_, hk, j, t, idx, cnt):
    gg, s_ = t // lc, t % lc
    bs, hs = _sel(cfg.sel_b, b_), _sel(cfg.sel_h, hk * g + gg)
    return idx[bs, hs, j, jnp.maximum(jnp.minimum(s_, cnt[bs, hs, j] - 1), 0)]

  q_col = lambda dim: pl.BlockSpec((None, None, bq, dim), lambda b_, hk, j, t, idx, cnt, kd: (
      b_, hk * g + t // lc, i_of(b_, hk, j, t, idx, cnt), 0))
  stat_col = pl.BlockSpec((None, None, bq, 1), lambda b_, hk, j, t, idx, cnt, kd: (
      b_, hk * g + t // lc, i_of(b_, hk, j, t, idx, cnt), 0))
  kv_col = lambda dim: pl.BlockSpec((None, None, bk, dim), lambda b_, hk, j, t, *_: (b_, hk, j, 0))
  pm_col = pl.BlockSpec((None, bq, bk), lambda b_, hk, j, t, idx, cnt, kd: (
      jnp.maximum(kd[i_of(b_, hk, j, t, idx, cnt), j], 0), 0, 0))
  dkdv_specs = [q_col(d), kv_col(d), kv_col(dv), pm_col, q_col(dv), stat_col, stat_col]
  if cfg.segments:
    dkdv_specs += [pl.BlockSpec((None, bq, 1), lambda b_, hk, j, t, idx, cnt, kd: (
        b_, i_of(b_, hk, j, t, idx, cnt), 0)), pl.BlockSpec((None, 1, bk), lambda b_, hk, j, t, *_: (b_, 0, j))]
  if cfg.kv_valid:
    dkdv_specs.append(pl.BlockSpec((None, 1, bk), lambda b_, hk, j, t, *_: (b_, 0, j)))
  dk, dv_ = _pallas(cfg, functools.partial(_dkdv_kernel, cfg, lc), (b, hkv, tk_pad // bk, g * lc), dkdv_specs,
                    [kv_col(d), kv_col(dv)],
                    [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
                    [pltpu.VMEM((bk, d), jnp.float32), pltpu.VMEM((bk, dv), jnp.float32)],
                    (col_idx, col_cnt, kind, q, k, v, pm, do, lse, delta, *dyn))
  return dq, dk, dv_
