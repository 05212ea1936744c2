"""Blocked ("flash") softmax attention in pure JAX: the `impl="xla"` path.

Online softmax over key tiles (Milakov & Gimelshein, 2018, "Online normalizer
calculation for softmax"; Dao et al., 2022, FlashAttention) with a recomputing blocked
backward (Dao, 2023, FlashAttention-2, Algorithm 2). Memory is O(T * block): no array
spans the whole [Tq, Tk] score matrix, forward or backward.

Layout inside: heads-first and GQA-grouped. q [B, Tq, Hq, D] becomes
`[B, Hkv, Tq * G, D]` (G = Hq / Hkv, rows ordered (t, g)) so each kv head's G query
heads share one matmul against its keys and K/V are never repeated.

Work skipping: with a static mask and a static `q_offset`, the mask's `block_map`
(splash-attention style) lists the tiles; EMPTY tiles are never visited and FULL tiles
skip all mask arithmetic (they run in a separate, unmasked pass; the online softmax is
order independent). A traced `q_offset` (decode) or a data-dependent mask makes tiles
PARTIAL, where `mask.allowed` is evaluated on the tile's positions only.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.ops.common import check_qkv, default_scale, mask_flatten, unbroadcast

# Tile edge targets (in sequence positions). On CPU the per-tile work is a batched
# [B * Hkv] x [bq * G, D] x [D, bk] matmul pair: 256 x 256 tiles (x 8 heads) run the
# matmuls near peak while a score tile (2 MiB) stays cache-resident; measured on a 2-core
# CPU at T=2048, 512 x 512 tiles were ~1.2x slower forward and ~1.6x backward. With
# fewer than 4 (batch x query head) slices a tile is too small, so the target doubles.
DEFAULT_BLOCK_Q = 256
DEFAULT_BLOCK_K = 256


def default_blocks(batch: int, q_heads: int) -> tuple[int, int]:
  """(block_q, block_k) targets for this batch and head count."""
  scale = 2 if batch * q_heads < 4 else 1
  return DEFAULT_BLOCK_Q * scale, DEFAULT_BLOCK_K * scale


def choose_block(length: int, target: int) -> int:
  """Tile edge for a sequence of `length`: at most ~`target`, a multiple of 8, and
  splitting `length` into equal tiles so padding is under 8 positions per tile."""
  if length <= 8:
    return length
  n_tiles = -(-length // target)
  per_tile = -(-length // n_tiles)
  return -(-per_tile // 8) * 8


@dataclasses.dataclass(frozen=True)
class TilePlan:
  """Static tile lists. `full`/`partial`: int32 [n, 2] (q tile, k tile) index pairs."""
  block_q: int
  block_k: int
  nq: int
  nk: int
  full: np.ndarray
  partial: np.ndarray


def plan_tiles(mask, tq: int, tk: int, block_q: int, block_k: int, q_offset) -> TilePlan:
  """Which tiles to visit and which need mask arithmetic.

  Static `q_offset` (python int): the mask's block_map empties and fills tiles. Traced
  `q_offset`: every tile is PARTIAL. Tiles holding key padding are PARTIAL too (the
  padded keys are masked there).
  """
  nq, nk = -(-tq // block_q), -(-tk // block_k)
  if mask is None:
    states = np.full((nq, nk), M.FULL, np.int8)
  elif isinstance(q_offset, (int, np.integer)):
    states = np.asarray(mask.block_map(tq, tk, block_q, block_k, int(q_offset)))
  else:
    states = np.full((nq, nk), M.PARTIAL, np.int8)
  states = states.copy()
  if tk % block_k:
    states[:, -1] = np.minimum(states[:, -1], M.PARTIAL)
  pairs = lambda s: np.argwhere(states == s).astype(np.int32).reshape(-1, 2)
  return TilePlan(block_q, block_k, nq, nk, pairs(M.FULL), pairs(M.PARTIAL))


# ---- tile helpers ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Static:
  """Everything static about one call (closed over by the custom_vjp)."""
  plan: TilePlan
  groups: int  # G = Hq / Hkv
  tq: int
  tk: int
  mask_rebuild: Callable[[tuple], Any] | None
  bias_fn: Callable | None  # callable bias (evaluated per tile)
  bias_full_dims: tuple[bool, bool] | None  # array bias: (q dim is Tq, k dim is Tk)


def _rows(x, i, rows):
  """x [B, H, R, ...]: rows [i * rows, (i + 1) * rows) along axis 2."""
  return jax.lax.dynamic_slice_in_dim(x, i * rows, rows, axis=2)


def _group_rows(t, groups):
  """[..., H=Hkv*G, tq, X] -> [..., Hkv, tq * G, X] with rows ordered (t, g)."""
  *lead, h, tq, x = t.shape
  t = t.reshape(*lead, h // groups, groups, tq, x)
  return jnp.swapaxes(t, -3, -2).reshape(*lead, h // groups, tq * groups, x)


def _ungroup_rows(t, groups):
  """Inverse of `_group_rows`: [..., Hkv, tq * G, X] -> [..., Hkv * G, tq, X]."""
  *lead, hkv, r, x = t.shape
  t = t.reshape(*lead, hkv, r // groups, groups, x)
  return jnp.swapaxes(t, -3, -2).reshape(*lead, hkv * groups, r // groups, x)


def _tile_positions(st: _Static, i, j, q_offset):
  """Absolute positions of tile (i, j): q_pos [bq], k_pos [bk]."""
  bq, bk = st.plan.block_q, st.plan.block_k
  q_pos = i * bq + jnp.arange(bq) + q_offset
  k_pos = j * bk + jnp.arange(bk)
  return q_pos, k_pos


def _tile_bias(st: _Static, bias, i, j, q_offset):
  """Additive score bias for tile (i, j) as [B|1, Hkv|1, bq * G, bk], or None."""
  bq, bk, g = st.plan.block_q, st.plan.block_k, st.groups
  if st.bias_fn is not None:
    q_pos, k_pos = _tile_positions(st, i, j, q_offset)
    b = jnp.asarray(st.bias_fn(q_pos, k_pos), jnp.float32)  # [1|B, H, bq, bk]
  elif bias is not None:
    q_full, k_full = st.bias_full_dims
    b = bias
    if q_full:
      b = jax.lax.dynamic_slice_in_dim(b, i * bq, bq, axis=2)
    if k_full:
      b = jax.lax.dynamic_slice_in_dim(b, j * bk, bk, axis=3)
    b = jnp.broadcast_to(b, (*b.shape[:2], bq, bk))
  else:
    return None
  if b.shape[1] == 1:  # shared over heads: only the row grouping is needed
    return jnp.repeat(b, g, axis=2) if g > 1 else b
  return _group_rows(b, g)


def _tile_allowed(st: _Static, mask_leaves, i, j, q_offset):
  """Bool [B|1, 1, bq * G, bk]: mask (if any) and key validity for tile (i, j)."""
  g = st.groups
  q_pos, k_pos = _tile_positions(st, i, j, q_offset)
  ok = (k_pos < st.tk)[None, :]
  if st.mask_rebuild is not None:
    mask = st.mask_rebuild(mask_leaves)
    ok = ok & jnp.asarray(mask.allowed(q_pos[:, None], k_pos[None, :]))
  ok = ok.reshape((-1,) + ok.shape[-2:])[:, None]  # [B|1, 1, bq|1, bk]
  return jnp.repeat(ok, g, axis=2) if g > 1 and ok.shape[2] > 1 else ok


def _scores(st, q, k, bias, mask_leaves, i, j, q_offset, masked, transposed=False):
  """Scaled scores of tile (i, j), masked entries -inf: [B, Hkv, bq * G, bk], or its
  transpose [B, Hkv, bk, bq * G] when `transposed` (computed as k q^T directly)."""
  q_i, k_j = _rows(q, i, st.plan.block_q * st.groups), _rows(k, j, st.plan.block_k)
  if transposed:
    s = jnp.einsum("bhkd,bhqd->bhkq", k_j, q_i, preferred_element_type=jnp.float32)
  else:
    s = jnp.einsum("bhqd,bhkd->bhqk", q_i, k_j, preferred_element_type=jnp.float32)
  tr = (lambda x: jnp.swapaxes(x, -1, -2)) if transposed else (lambda x: x)
  b = _tile_bias(st, bias, i, j, q_offset)
  if b is not None:
    s = s + tr(b)
  if masked:
    s = jnp.where(tr(_tile_allowed(st, mask_leaves, i, j, q_offset)), s, -jnp.inf)
  return s


# ---- forward -----------------------------------------------------------------------


def _forward(st: _Static, q, k, v, bias, q_offset, mask_leaves):
  """Online-softmax pass over the planned tiles. Returns o [B, Hkv, Rq, Dv], lse [B, Hkv, Rq].

  q is pre-scaled; rows with no allowed key get o = 0 and lse = +inf.
  """
  b, hkv, rq, _ = q.shape
  dv = v.shape[-1]
  rows = st.plan.block_q * st.groups
  bk = st.plan.block_k

  def step(masked):
    def body(carry, ij):
      o, m, l = carry
      i, j = ij[0], ij[1]
      s = _scores(st, q, k, bias, mask_leaves, i, j, q_offset, masked)
      m_old, l_old, o_old = _rows(m, i, rows), _rows(l, i, rows), _rows(o, i, rows)
      m_new = jnp.maximum(m_old, s.max(-1))
      m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # fully masked so far: exp(-inf) = 0
      p = jnp.exp(s - m_safe[..., None])
      alpha = jnp.exp(m_old - m_safe)
      l_new = alpha * l_old + p.sum(-1)
      pv = jnp.einsum("bhqk,bhkd->bhqd", p, _rows(v, j, bk), preferred_element_type=jnp.float32)
      o_new = alpha[..., None] * o_old + pv
      o = jax.lax.dynamic_update_slice_in_dim(o, o_new, i * rows, axis=2)
      m = jax.lax.dynamic_update_slice_in_dim(m, m_new, i * rows, axis=2)
      l = jax.lax.dynamic_update_slice_in_dim(l, l_new, i * rows, axis=2)
      return (o, m, l), None
    return body

  carry = (jnp.zeros((b, hkv, rq, dv), jnp.float32), jnp.full((b, hkv, rq), -jnp.inf, jnp.float32),
           jnp.zeros((b, hkv, rq), jnp.float32))
  for masked, tiles in ((False, st.plan.full), (True, st.plan.partial)):
    if len(tiles):
      carry, _ = jax.lax.scan(step(masked), carry, jnp.asarray(tiles))
  o, m, l = carry
  empty = l == 0.0
  o = o / jnp.where(empty, 1.0, l)[..., None]
  lse = jnp.where(empty, jnp.inf, m + jnp.log(jnp.where(empty, 1.0, l)))
  return o, lse


# ---- backward ----------------------------------------------------------------------


def _backward(st: _Static, q, k, v, bias, q_offset, mask_leaves, o, lse, do):
  """FlashAttention-2 backward over the same tiles, recomputing each score tile.

  Returns dq (w.r.t. the pre-scaled q), dk, dv and dbias (None without an array bias).
  """
  rows = st.plan.block_q * st.groups
  bq, bk = st.plan.block_q, st.plan.block_k
  delta = jnp.sum(do * o, axis=-1)  # [B, Hkv, Rq]: rowsum(dO * O)

  # Everything is computed in the transposed [bk, rows] orientation: XLA:CPU's dots are
  # fast when the lhs contracts its minor dim, and this makes 4 of the 5 dots that form.
  def step(masked):
    def body(carry, ij):
      dq, dk, dv, dbias = carry
      i, j = ij[0], ij[1]
      s_t = _scores(st, q, k, bias, mask_leaves, i, j, q_offset, masked, transposed=True)
      p_t = jnp.exp(s_t - _rows(lse, i, rows)[:, :, None, :])  # lse = +inf on empty rows -> 0
      do_i, q_i = _rows(do, i, rows), _rows(q, i, rows)
      k_j, v_j = _rows(k, j, bk), _rows(v, j, bk)
      dv_j = jnp.einsum("bhkq,bhqd->bhkd", p_t, do_i, preferred_element_type=jnp.float32)
      dp_t = jnp.einsum("bhkd,bhqd->bhkq", v_j, do_i, preferred_element_type=jnp.float32)
      ds_t = p_t * (dp_t - _rows(delta, i, rows)[:, :, None, :])
      dk_j = jnp.einsum("bhkq,bhqd->bhkd", ds_t, q_i, preferred_element_type=jnp.float32)
      ds = jnp.swapaxes(ds_t, -1, -2)
      dq_i = jnp.einsum("bhqk,bhkd->bhqd", ds, k_j, preferred_element_type=jnp.float32)
      dq = jax.lax.dynamic_update_slice_in_dim(dq, _rows(dq, i, rows) + dq_i, i * rows, axis=2)
      dk = jax.lax.dynamic_update_slice_in_dim(dk, _rows(dk, j, bk) + dk_j, j * bk, axis=2)
      dv = jax.lax.dynamic_update_slice_in_dim(dv, _rows(dv, j, bk) + dv_j, j * bk, axis=2)
      if dbias is not None:
        dbias = _add_dbias(st, dbias, _ungroup_rows(ds, st.groups), i, j)
      return (dq, dk, dv, dbias), None
    return body

  dbias0 = None if bias is None else jnp.zeros(bias.shape, jnp.float32)
  carry = (jnp.zeros(q.shape, jnp.float32), jnp.zeros(k.shape, jnp.float32),
           jnp.zeros(v.shape, jnp.float32), dbias0)
  for masked, tiles in ((False, st.plan.full), (True, st.plan.partial)):
    if len(tiles):
      carry, _ = jax.lax.scan(step(masked), carry, jnp.asarray(tiles))
  return carry


def _add_dbias(st: _Static, dbias, ds, i, j):
  """Accumulates a tile's ds [B, Hq, bq, bk] into dbias [Bb, Hb, Tqb, Tkb] (broadcast dims summed)."""
  bq, bk = st.plan.block_q, st.plan.block_k
  q_full, k_full = st.bias_full_dims
  t = unbroadcast(ds, (dbias.shape[0], dbias.shape[1], bq if q_full else 1, bk if k_full else 1))
  starts = (0, 0, i * bq if q_full else 0, j * bk if k_full else 0)
  cur = jax.lax.dynamic_slice(dbias, starts, t.shape)
  return jax.lax.dynamic_update_slice(dbias, cur + t, starts)


def _make_core(st: _Static):
  """custom_vjp core on grouped, padded, pre-scaled operands."""

  @jax.custom_vjp
  def core(q, k, v, bias, q_offset, mask_leaves):
    return _forward(st, q, k, v, bias, q_offset, mask_leaves)[0]

  def fwd(q, k, v, bias, q_offset, mask_leaves):
    o, lse = _forward(st, q, k, v, bias, q_offset, mask_leaves)
    return o, (q, k, v, bias, q_offset, mask_leaves, o, lse)

  def bwd(res, do):
    q, k, v, bias, q_offset, mask_leaves, o, lse = res
    dq, dk, dv, dbias = _backward(st, q, k, v, bias, q_offset, mask_leaves, o, lse, do)
    return dq, dk, dv, dbias, None, None

  core.defvjp(fwd, bwd)
  return core


# ---- public ------------------------------------------------------------------------


def softmax_attention_blocked(q, k, v, *, mask=None, bias=None, scale=None, q_offset=0,
                              block_q: int | None = None, block_k: int | None = None):
  """Blocked softmax attention, equal to `softmax_attention_reference` up to rounding.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] -> [B, Tq, Hq, Dv] (q's dtype;
  computed in fp32). mask: `masks.Mask` or None; bias: None, an array broadcastable to
  [B, Hq, Tq, Tk], or a callable `bias(q_pos [tq], k_pos [tk]) -> [1|B, H, tq, tk]`
  evaluated per tile (treated as a constant: put learned biases in an array).
  q_offset: absolute position of query 0 (int, or a traced scalar in decode steps).
  block_q / block_k: tile edges (default: `choose_block` of `default_blocks`).
  Differentiable in q, k, v and an array bias with O(T * block) memory.
  """
  bsz, tq, tk, hq, hkv, d = check_qkv(q, k, v)
  g = hq // hkv
  scale = default_scale(d, scale)
  target_q, target_k = default_blocks(bsz, hq)
  bq = block_q or choose_block(tq, target_q)
  bk = block_k or choose_block(tk, target_k)
  plan = plan_tiles(mask, tq, tk, bq, bk, q_offset)
  tq_pad, tk_pad = plan.nq * bq, plan.nk * bk

  # Heads-first, grouped layout: q -> [B, Hkv, Tq_pad * G, D]; k, v -> [B, Hkv, Tk_pad, D].
  qf = (q.astype(jnp.float32) * scale).reshape(bsz, tq, hkv, g, d)
  qf = jnp.pad(qf, ((0, 0), (0, tq_pad - tq), (0, 0), (0, 0), (0, 0)))
  qf = qf.transpose(0, 2, 1, 3, 4).reshape(bsz, hkv, tq_pad * g, d)
  pad_kv = lambda x: jnp.pad(x.astype(jnp.float32).transpose(0, 2, 1, 3),
                             ((0, 0), (0, 0), (0, tk_pad - tk), (0, 0)))
  kf, vf = pad_kv(k), pad_kv(v)

  bias_fn, bias_arr, full_dims = None, None, None
  if callable(bias):
    bias_fn = bias
  elif bias is not None:
    bias_arr, full_dims = _prepare_bias(jnp.asarray(bias), bsz, hq, tq, tk, tq_pad, tk_pad)

  leaves, rebuild = (None, None) if mask is None else mask_flatten(mask)
  st = _Static(plan, g, tq, tk, rebuild, bias_fn, full_dims)
  q_off = q_offset if isinstance(q_offset, (int, np.integer)) else jnp.asarray(q_offset, jnp.int32)
  out = _make_core(st)(qf, kf, vf, bias_arr, q_off, leaves)  # [B, Hkv, Tq_pad * G, Dv]
  out = out.reshape(bsz, hkv, tq_pad, g, -1)[:, :, :tq].transpose(0, 2, 1, 3, 4)
  out = out.reshape(bsz, tq, hq, -1).astype(q.dtype)
  return out


def _prepare_bias(bias, bsz, hq, tq, tk, tq_pad, tk_pad):
  """Array bias -> fp32 [Bb, Hb, Tqb, Tkb] (each dim 1 or full; T dims zero-padded) and
  which T dims are full. Gradients flow back through the reshape/pad to the caller's array."""
  if bias.ndim > 4:
    raise ValueError(f"bias must be broadcastable to [B, H, Tq, Tk], got shape {bias.shape}")
  b4 = bias.reshape((1,) * (4 - bias.ndim) + bias.shape).astype(jnp.float32)
  if any(a not in (1, b) for a, b in zip(b4.shape, (bsz, hq, tq, tk))):
    raise ValueError(f"bias shape {bias.shape} is not broadcastable to {(bsz, hq, tq, tk)}")
  q_full, k_full = b4.shape[2] > 1, b4.shape[3] > 1  # else broadcast along that dim
  b4 = jnp.pad(b4, ((0, 0), (0, 0), (0, (tq_pad - tq) if q_full else 0), (0, (tk_pad - tk) if k_full else 0)))
  return b4, (q_full, k_full)
