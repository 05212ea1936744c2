"""Blocked ("flash") attention in pure JAX: the `impl="xla"` path of softmax attention
and of the weightings in weightings.py (sink softmax, Cog's signed softmax, sigmoid).

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

The weighting (how a score tile becomes weights, forward and backward) is a static
strategy object (weightings.py); every weighting runs over the same tile lists, so each
skips the same EMPTY tiles and the same mask arithmetic. `blocked_attention` also takes
several maps (q_c, k_c) over one v with coefficients a_c, output (sum_c a_c W_c) v, in
one pass (differential attention, differential.py); talking heads (talking_heads.py)
reuses the tile plan and tile helpers with its own passes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import masks as M
from attnlab.attention.ops.common import check_qkv, default_scale, mask_flatten, unbroadcast
from attnlab.attention.ops.softmax.weightings import SOFTMAX

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
  weighting: Any  # a weightings.* strategy
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


def _online_update(wt, s, v_j, o_old, m_old, l_old):
  """One tile of the online softmax (or, unnormalised, of the plain sum): new (o, m, l)."""
  if not wt.normalised:
    pv = jnp.einsum("bhqk,bhkd->bhqd", wt.weights(s, None), v_j, preferred_element_type=jnp.float32)
    return o_old + pv, m_old, l_old
  a = wt.exponent(s)
  m_new = jnp.maximum(m_old, a.max(-1))
  m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # fully masked so far: exp(-inf) = 0
  p = jnp.exp(a - m_safe[..., None])
  alpha = jnp.exp(m_old - m_safe)
  l_new = alpha * l_old + p.sum(-1)
  pv = jnp.einsum("bhqk,bhkd->bhqd", wt.numerator(s, p), v_j, preferred_element_type=jnp.float32)
  return alpha[..., None] * o_old + pv, m_new, l_new


def _forward(st: _Static, qs, ks, v, bias, row_logit, q_offset, mask_leaves):
  """One pass over the planned tiles for each map c (scores qs[c] ks[c]^T, shared v).
  Returns per-map tuples os ([B, Hkv, Rq, Dv] each) and lses ([B, Hkv, Rq] each).

  Normalised weightings: online softmax over the weighting's exponent, started at
  (m, l) = (row_logit, 1) when a per-row extra logit [1, Hkv, Rq] is given (it joins the
  normaliser, not the output); rows with no allowed key (and no extra logit) get o = 0
  and lse = +inf. Unnormalised weightings: o = sum of the tiles' w v, lse = 0. q is pre-scaled.
  """
  b, hkv, rq, _ = qs[0].shape
  rows = st.plan.block_q * st.groups

  def step(masked):
    def body(carry, ij):
      i, j = ij[0], ij[1]
      v_j = _rows(v, j, st.plan.block_k)
      new = []
      for q, k, acc in zip(qs, ks, carry):
        s = _scores(st, q, k, bias, mask_leaves, i, j, q_offset, masked)
        upd = _online_update(st.weighting, s, v_j, *(_rows(x, i, rows) for x in acc))
        new.append(tuple(jax.lax.dynamic_update_slice_in_dim(x, u, i * rows, axis=2) for x, u in zip(acc, upd)))
      return tuple(new), None
    return body

  if row_logit is None:
    m0, l0 = jnp.full((b, hkv, rq), -jnp.inf, jnp.float32), jnp.zeros((b, hkv, rq), jnp.float32)
  else:  # the extra logit as the online softmax's first term: m = logit, l = exp(0) = 1
    m0, l0 = jnp.broadcast_to(row_logit, (b, hkv, rq)), jnp.ones((b, hkv, rq), jnp.float32)
  carry = ((jnp.zeros((b, hkv, rq, v.shape[-1]), jnp.float32), m0, l0),) * len(qs)
  for masked, tiles in ((False, st.plan.full), (True, st.plan.partial)):
    if len(tiles):
      carry, _ = jax.lax.scan(step(masked), carry, jnp.asarray(tiles))
  return tuple(zip(*(_finalize(st.weighting, *acc) for acc in carry)))


def _finalize(wt, o, m, l):
  """(o, lse) of one map from its accumulators."""
  if not wt.normalised:
    return o, jnp.zeros_like(l)
  empty = l == 0.0
  o = o / jnp.where(empty, 1.0, l)[..., None]
  return o, jnp.where(empty, jnp.inf, m + jnp.log(jnp.where(empty, 1.0, l)))


def _combine(os, coef):
  """o = sum_c coef[c] os[c] (coef [n, Bc, Hkv, Rq]); os[0] alone when coef is None."""
  if coef is None:
    return os[0]
  return sum(c[..., None] * o for c, o in zip(coef, os))


# ---- backward ----------------------------------------------------------------------


def _backward(st: _Static, qs, ks, v, bias, coef, q_offset, mask_leaves, os, lses, do):
  """FlashAttention-2 backward over the same tiles, recomputing each map's score tile and
  its weights from the saved row statistic (the weighting's `weights` / `dscores`).

  With maps c of weights P_c and coefficients a_c the output is (sum_c a_c P_c) v, so
  dv = (sum_c a_c P_c)^T dO, dP_c = a_c dO v^T and delta_c = a_c dO . o_c (one dv and one
  dO v^T matmul per tile whatever the number of maps). Returns dqs (w.r.t. the pre-scaled
  qs), dks, dv and dbias (None without an array bias).
  """
  wt = st.weighting
  rows = st.plan.block_q * st.groups
  bk = st.plan.block_k
  ones = (None,) * len(qs) if coef is None else coef
  deltas = [jnp.sum(do * o, axis=-1) for o in os]  # [B, Hkv, Rq]
  deltas = [dl if a is None else a * dl for dl, a in zip(deltas, ones)]
  row = lambda x, i: None if x is None else _rows(x, i, rows)[:, :, None, :]  # noqa: E731

  # Everything is computed in the transposed [bk, rows] orientation: XLA:CPU's dots are
  # fast when the lhs contracts its minor dim, and this makes 4 of the 5 dots that form.
  def step(masked):
    def body(carry, ij):
      dqs, dks, dv, dbias = carry
      i, j = ij[0], ij[1]
      do_i, v_j = _rows(do, i, rows), _rows(v, j, bk)
      s_ts = [_scores(st, q, k, bias, mask_leaves, i, j, q_offset, masked, transposed=True) for q, k in zip(qs, ks)]
      p_ts = [wt.weights(s_t, row(lse, i)) for s_t, lse in zip(s_ts, lses)]  # lse = +inf on empty rows -> 0
      w_t = p_ts[0] if coef is None else sum(row(a, i) * p_t for a, p_t in zip(coef, p_ts))
      dv_j = jnp.einsum("bhkq,bhqd->bhkd", w_t, do_i, preferred_element_type=jnp.float32)
      dp_t = jnp.einsum("bhkd,bhqd->bhkq", v_j, do_i, preferred_element_type=jnp.float32)
      dv = jax.lax.dynamic_update_slice_in_dim(dv, _rows(dv, j, bk) + dv_j, j * bk, axis=2)
      new_dqs, new_dks = [], []
      for c, (q, k) in enumerate(zip(qs, ks)):
        dp_c = dp_t if ones[c] is None else row(ones[c], i) * dp_t
        ds_t = wt.dscores(s_ts[c], p_ts[c], dp_c, row(deltas[c], i))
        dk_j = jnp.einsum("bhkq,bhqd->bhkd", ds_t, _rows(q, i, rows), preferred_element_type=jnp.float32)
        ds = jnp.swapaxes(ds_t, -1, -2)
        dq_i = jnp.einsum("bhqk,bhkd->bhqd", ds, _rows(k, j, bk), preferred_element_type=jnp.float32)
        new_dqs.append(jax.lax.dynamic_update_slice_in_dim(dqs[c], _rows(dqs[c], i, rows) + dq_i, i * rows, axis=2))
        new_dks.append(jax.lax.dynamic_update_slice_in_dim(dks[c], _rows(dks[c], j, bk) + dk_j, j * bk, axis=2))
        if dbias is not None:
          dbias = _add_dbias(st, dbias, _ungroup_rows(ds, st.groups), i, j)
      return (tuple(new_dqs), tuple(new_dks), dv, dbias), None
    return body

  dbias0 = None if bias is None else jnp.zeros(bias.shape, jnp.float32)
  carry = (tuple(jnp.zeros(q.shape, jnp.float32) for q in qs), tuple(jnp.zeros(k.shape, jnp.float32) for k in ks),
           jnp.zeros(v.shape, jnp.float32), dbias0)
  for masked, tiles in ((False, st.plan.full), (True, st.plan.partial)):
    if len(tiles):
      carry, _ = jax.lax.scan(step(masked), carry, jnp.asarray(tiles))
  return carry, deltas


def _add_dbias(st: _Static, dbias, ds, i, j):
  """Accumulates a tile's ds [B, Hq, bq, bk] into dbias [Bb, Hb, Tqb, Tkb] (broadcast dims summed)."""
  bq, bk = st.plan.block_q, st.plan.block_k
  q_full, k_full = st.bias_full_dims
  t = unbroadcast(ds, (dbias.shape[0], dbias.shape[1], bq if q_full else 1, bk if k_full else 1))
  starts = (0, 0, i * bq if q_full else 0, j * bk if k_full else 0)
  cur = jax.lax.dynamic_slice(dbias, starts, t.shape)
  return jax.lax.dynamic_update_slice(dbias, cur + t, starts)


def _make_core(st: _Static):
  """custom_vjp core on grouped, padded, pre-scaled operands (tuples of maps qs, ks)."""

  @jax.custom_vjp
  def core(qs, ks, v, bias, row_logit, coef, q_offset, mask_leaves):
    return _combine(_forward(st, qs, ks, v, bias, row_logit, q_offset, mask_leaves)[0], coef)

  def fwd(qs, ks, v, bias, row_logit, coef, q_offset, mask_leaves):
    os, lses = _forward(st, qs, ks, v, bias, row_logit, q_offset, mask_leaves)
    return _combine(os, coef), (qs, ks, v, bias, row_logit, coef, q_offset, mask_leaves, os, lses)

  def bwd(res, do):
    qs, ks, v, bias, row_logit, coef, q_offset, mask_leaves, os, lses = res
    (dqs, dks, dv, dbias), deltas = _backward(st, qs, ks, v, bias, coef, q_offset, mask_leaves, os, lses, do)
    d_logit = d_coef = None
    if row_logit is not None:
      # The extra logit's weight is exp(logit - lse); like any softmax column with no
      # value, d logit = -w_extra * delta (delta = dO . o, per map).
      d_row = -sum(jnp.exp(row_logit - lse) * dl for lse, dl in zip(lses, deltas))
      d_logit = unbroadcast(d_row, row_logit.shape)
    if coef is not None:  # o = sum_c coef_c o_c
      d_coef = unbroadcast(jnp.stack([jnp.sum(do * o, axis=-1) for o in os]), coef.shape)
    return dqs, dks, dv, dbias, d_logit, d_coef, None, None

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
  return blocked_attention(q, k, v, SOFTMAX, mask=mask, bias=bias, scale=scale, q_offset=q_offset,
                           block_q=block_q, block_k=block_k)


def blocked_attention(q, k, v, weighting, *, row_logit=None, coefs=None, mask=None, bias=None, scale=None,
                      q_offset=0, block_q: int | None = None, block_k: int | None = None):
  """Blocked attention with the score -> weight map `weighting` (a weightings.* object).

  Arguments and shapes as in `softmax_attention_blocked`, and:
  row_logit: None or [Hq], an extra per-head logit in every row's normaliser with no
    value (the sink softmax; normalised weightings only), differentiable.
  q, k as tuples (q_1..q_n), (k_1..k_n) of equal shapes with coefs (a_1..a_n), each a
    scalar or [Hq] (differentiable): the output is (sum_c a_c W_c) v with W_c the weights
    of q_c k_c^T (differential attention: n = 2, a = (1, -lambda)). The maps share the
    tiles, v, mask and bias; one pass computes all of them.
  """
  qs, ks = (q, k) if isinstance(q, (tuple, list)) else ((q,), (k,))
  if len(qs) != len(ks) or (len(qs) > 1) != (coefs is not None) or (coefs is not None and len(coefs) != len(qs)):
    raise ValueError("several maps need tuples q, k and coefs of one length")
  for qc, kc in zip(qs, ks):
    bsz, tq, tk, hq, hkv, d = check_qkv(qc, kc, v)
  g = hq // hkv
  scale = default_scale(d, scale)
  target_q, target_k = default_blocks(bsz, hq)
  bq = block_q or choose_block(tq, target_q)
  bk = block_k or choose_block(tk, target_k)
  plan = plan_tiles(mask, tq, tk, bq, bk, q_offset)
  tq_pad, tk_pad = plan.nq * bq, plan.nk * bk

  # Heads-first, grouped layout: q -> [B, Hkv, Tq_pad * G, D]; k, v -> [B, Hkv, Tk_pad, D].
  def prep_q(x):
    x = (x.astype(jnp.float32) * scale).reshape(bsz, tq, hkv, g, d)
    x = jnp.pad(x, ((0, 0), (0, tq_pad - tq), (0, 0), (0, 0), (0, 0)))
    return x.transpose(0, 2, 1, 3, 4).reshape(bsz, hkv, tq_pad * g, d)
  pad_kv = lambda x: jnp.pad(x.astype(jnp.float32).transpose(0, 2, 1, 3),  # noqa: E731
                             ((0, 0), (0, 0), (0, tk_pad - tk), (0, 0)))
  # A per-head value (scalar or [Hq]) on the grouped rows: [1, Hkv, Tq_pad * G], rows (t, g).
  head_rows = lambda x: jnp.broadcast_to(jnp.broadcast_to(jnp.asarray(x, jnp.float32), (hq,)).reshape(  # noqa: E731
      1, hkv, 1, g), (1, hkv, tq_pad, g)).reshape(1, hkv, tq_pad * g)

  bias_fn, bias_arr, full_dims = None, None, None
  if callable(bias):
    bias_fn = bias
  elif bias is not None:
    bias_arr, full_dims = _prepare_bias(jnp.asarray(bias), bsz, hq, tq, tk, tq_pad, tk_pad)

  rows_logit = None
  if row_logit is not None:
    if not weighting.normalised:
      raise ValueError("row_logit needs a normalised weighting")
    rows_logit = head_rows(row_logit)
  coef = None if coefs is None else jnp.stack([head_rows(a) for a in coefs])  # [n, 1, Hkv, Rq]

  leaves, rebuild = (None, None) if mask is None else mask_flatten(mask)
  st = _Static(plan, weighting, g, tq, tk, rebuild, bias_fn, full_dims)
  q_off = q_offset if isinstance(q_offset, (int, np.integer)) else jnp.asarray(q_offset, jnp.int32)
  out = _make_core(st)(tuple(map(prep_q, qs)), tuple(map(pad_kv, ks)), pad_kv(v), bias_arr, rows_logit, coef,
                       q_off, leaves)  # [B, Hkv, Tq_pad * G, Dv]
  out = out.reshape(bsz, hkv, tq_pad, g, -1)[:, :, :tq].transpose(0, 2, 1, 3, 4)
  out = out.reshape(bsz, tq, hq, -1).astype(qs[0].dtype)
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
