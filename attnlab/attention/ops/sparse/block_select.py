"""Score-selected sparse softmax attention: MoBA block selection and exact top-k keys.

  moba:     Lu et al., 2025, "MoBA: Mixture of Block Attention for Long-Context LLMs".
  topk:     exact per-query top-k attention (e.g. Gupta et al., 2021, "Memory-efficient
            Transformers via Top-k Attention"), with a running top-k over key blocks.

As in ops/sparse/routed.py: a discrete selection (never differentiated) and attention given the
selection; each `*_reference` materialises the dense mask the selection implies (the
oracle). Layout q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.common import check_equal_heads, default_scale, mask_flatten
from attnlab.attention.ops.sparse.common import dense_masked_attention, gather_rows, heads_first, masked_softmax

MOBA, TOPK = "sparse.moba", "sparse.topk"  # dispatch families


# ---- MoBA ---------------------------------------------------------------------------------


def _block_means(k, block_size):
  """Mean-pooled keys per block: k [B, Tk, H, D] -> [B, H, nb, D] (a partial last block
  averages its valid keys only)."""
  b, tk, h, d = k.shape
  nb = -(-tk // block_size)
  kp = jnp.pad(k.astype(jnp.float32), ((0, 0), (0, nb * block_size - tk), (0, 0), (0, 0)))
  sums = kp.reshape(b, nb, block_size, h, d).sum(axis=2)
  counts = jnp.minimum(block_size, tk - jnp.arange(nb) * block_size).astype(jnp.float32)
  return jnp.swapaxes(sums / counts[None, :, None, None], 1, 2)


def moba_gate(q, k, *, block_size, top_k, q_offset=0):
  """MoBA's routing (Lu et al., 2025, eq. 5-6): gate score s_ij = q_i . mean(K[block j]);
  the query's own block is always selected, future blocks never; top_k blocks in all.

  q [B, Tq, H, D], k [B, Tk, H, D] -> (block ids int32 [B, H, Tq, kk], valid bool
  [B, H, Tq, kk]) with kk = min(top_k, nb); an id is invalid when fewer than kk blocks are
  eligible. Gate scores for one query are [nb]: callers tile over queries.
  """
  nb = -(-k.shape[1] // block_size)
  kk = min(top_k, nb)
  means = _block_means(k, block_size)  # [B, H, nb, D]
  g = jnp.einsum("bqhd,bhnd->bhqn", q.astype(jnp.float32), means)
  own = ((jnp.arange(q.shape[1]) + q_offset) // block_size)[:, None]  # [Tq, 1]
  blk = jnp.arange(nb)[None, :]
  g = jnp.where(blk == own, jnp.inf, jnp.where(blk > own, -jnp.inf, g))
  vals, ids = jax.lax.top_k(g, kk)
  return jax.lax.stop_gradient(ids.astype(jnp.int32)), vals > -jnp.inf


def moba_attention(q, k, v, *, block_size, top_k, q_offset=0, scale=None, q_chunk=128, impl="auto"):
  """MoBA through the dispatch table (family "sparse.moba"): "xla" (`moba_attention_xla`,
  query tiles of q_chunk) or "reference" (the dense mask; q_chunk does not apply)."""
  return D.dispatch(MOBA, impl, q, k, v, block_size=block_size, top_k=top_k, q_offset=q_offset, scale=scale,
                    q_chunk=q_chunk)


def moba_attention_xla(q, k, v, *, block_size, top_k, q_offset=0, scale=None, q_chunk=128):
  """Causal MoBA (see `_moba_attention`); jit-cached on the static hyperparameters so eager
  calls (e.g. decode steps outside jit) reuse one compiled program; q_offset may be traced."""
  return _moba_jit(q, k, v, jnp.asarray(q_offset, jnp.int32), block_size=block_size, top_k=top_k,
                   scale=scale, q_chunk=q_chunk)


def _moba_attention(q, k, v, q_offset, *, block_size, top_k, scale=None, q_chunk=128):
  """Causal MoBA: each query attends (causally) to the keys of its own block and of the
  top_k - 1 best-gated past blocks (Lu et al., 2025, Sec. 2.2-2.3). No gradient flows
  through the gate (a discrete selection), as in the paper.

  Queries are processed in tiles of `q_chunk` (`block_gather_attention`), so memory is
  O(q_chunk * (Tk / block_size + top_k * block_size) * D) per tile plus O(T * D); gate
  compute is O(T^2 / block_size), attention O(T * top_k * block_size).
  q_offset: absolute position of query 0 (the cache index in decode steps; may be traced).
  q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv].
  """
  check_equal_heads(q, k, v, "moba_attention")
  nb = -(-k.shape[1] // block_size)
  means = _block_means(k, block_size)  # [B, H, nb, D]

  def select(qt, q_pos):  # qt [B, H, qc, D] (no gradient), q_pos [qc]
    g = jnp.einsum("bhqd,bhnd->bhqn", qt, means)
    own = (q_pos // block_size)[:, None]
    blk = jnp.arange(nb)[None, :]
    g = jnp.where(blk == own, jnp.inf, jnp.where(blk > own, -jnp.inf, g))
    vals, ids = jax.lax.top_k(jax.lax.stop_gradient(g), min(top_k, nb))  # [B, H, qc, kk]
    return ids, vals > -jnp.inf

  return block_gather_attention(q, k, v, select, block_size=block_size, q_offset=q_offset, scale=scale,
                                q_chunk=q_chunk)


def block_gather_attention(q, k, v, select, *, block_size, q_offset=0, scale=None, q_chunk=128):
  """Causal attention of each query over the key blocks `select` picks for it.

  select(qt [B, H, qc, D] (gradient stopped), q_pos int [qc] absolute) -> (ids int
  [B, H, qc, kk] key-block indices, ok bool [B, H, qc, kk]: the slot is used), per query;
  or (ids [B, H, kk], ok [B, H, kk]) shared by the whole query tile (then the blocks are
  gathered once per tile, not once per query: the form for selections made per query
  block, with q_chunk = the query block). A query attends to the keys j <= its position of
  its used blocks (no block twice). Queries run in tiles of `q_chunk` (lax.map,
  rematerialised in the backward): memory O(q_chunk * kk * block_size * D) per tile plus
  O(T * D), compute O(T * kk * block_size * D).
  q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv].
  """
  b, tq, tk, h, d = check_equal_heads(q, k, v, "block_gather_attention")
  scale = default_scale(d, scale)
  nb = -(-tk // block_size)
  qc = min(q_chunk, tq)
  nq = -(-tq // qc)
  kf = jnp.pad(heads_first(k), ((0, 0), (0, 0), (0, nb * block_size - tk), (0, 0)))
  vf = jnp.pad(heads_first(v), ((0, 0), (0, 0), (0, nb * block_size - tk), (0, 0)))
  kb = kf.reshape(b, h, nb, block_size, d)
  vb = vf.reshape(b, h, nb, block_size, -1)
  qf = jnp.pad(heads_first(q), ((0, 0), (0, 0), (0, nq * qc - tq), (0, 0)))
  qf = jnp.moveaxis(qf.reshape(b, h, nq, qc, d), 2, 0)  # [nq, B, H, qc, D]

  @jax.checkpoint
  def tile(args):
    qt, i = args  # qt [B, H, qc, D]
    q_pos = i * qc + jnp.arange(qc) + q_offset  # [qc]
    ids, used = select(jax.lax.stop_gradient(qt), q_pos)  # [B, H, qc, kk] or [B, H, kk]
    ids = jax.lax.stop_gradient(ids)
    if ids.ndim == 3:  # one selection for the tile: gather [B, H, kk, bs, X] once
      take = lambda x: jnp.take_along_axis(x, ids[..., None, None], axis=2)  # noqa: E731
      ks, vs = take(kb), take(vb)
      k_pos = (ids[..., None] * block_size + jnp.arange(block_size)).reshape(b, h, 1, -1)  # [B, H, 1, kk*bs]
      ok = jnp.repeat(used, block_size, axis=-1)[:, :, None] & (k_pos <= q_pos[:, None]) & (k_pos < tk)
      s = jnp.einsum("bhqd,bhmd->bhqm", qt, ks.reshape(b, h, -1, d)) * scale
      p, _ = masked_softmax(s, ok)
      return jnp.einsum("bhqm,bhmd->bhqd", p, vs.reshape(b, h, -1, vs.shape[-1]))
    take = lambda x: jnp.take_along_axis(  # noqa: E731  x [B, H, nb, bs, X] -> [B, H, qc, kk, bs, X]
        x[:, :, None], ids[..., None, None], axis=3)
    ks, vs = take(kb), take(vb)
    k_pos = ids[..., None] * block_size + jnp.arange(block_size)  # [B, H, qc, kk, bs]
    ok = used[..., None] & (k_pos <= q_pos[:, None, None]) & (k_pos < tk)
    s = jnp.einsum("bhqd,bhqnkd->bhqnk", qt, ks) * scale
    p, _ = masked_softmax(s.reshape(*s.shape[:3], -1), ok.reshape(*ok.shape[:3], -1))
    return jnp.einsum("bhqm,bhqmd->bhqd", p, vs.reshape(*vs.shape[:3], -1, vs.shape[-1]))

  o = jax.lax.map(tile, (qf, jnp.arange(nq)))  # [nq, B, H, qc, Dv]
  o = jnp.moveaxis(o, 0, 2).reshape(b, h, nq * qc, -1)[:, :, :tq]
  return jnp.swapaxes(o, 1, 2).astype(q.dtype)


_moba_jit = jax.jit(_moba_attention, static_argnames=("block_size", "top_k", "scale", "q_chunk"))


def moba_mask(q, k, *, block_size, top_k, q_offset=0):
  """Dense [B, H, Tq, Tk] mask MoBA implies: key j allowed for query i iff j's block is
  among i's selected blocks and j <= i (absolute positions)."""
  ids, valid = moba_gate(q, k, block_size=block_size, top_k=top_k, q_offset=q_offset)
  tq, tk = q.shape[1], k.shape[1]
  blk = jnp.arange(tk) // block_size
  sel = jnp.any((ids[..., None] == blk) & valid[..., None], axis=-2)  # [B, H, Tq, Tk]
  return sel & (jnp.arange(tk)[None, :] <= (jnp.arange(tq) + q_offset)[:, None])


def moba_attention_reference(q, k, v, *, block_size, top_k, q_offset=0, scale=None):
  """Materialised MoBA (dense mask from `moba_mask`)."""
  ok = moba_mask(q, k, block_size=block_size, top_k=top_k, q_offset=q_offset)
  return dense_masked_attention(q, k, v, ok, scale)


# ---- exact top-k attention ------------------------------------------------------------------


def _allowed_tile(mask, q_pos, k_pos, tk):
  """Bool [B|1, 1, Tq, bk]: key validity, and the Mask (if any), for absolute positions."""
  ok = (k_pos < tk)[None, :]
  if mask is not None:
    ok = ok & jnp.asarray(mask.allowed(q_pos[:, None], k_pos[None, :]))
  ok = ok.reshape((-1,) + ok.shape[-2:])
  return ok[:, None]


def topk_select(q, k, *, top_k, mask=None, q_offset=0, scale=None, block_k=256):
  """Running exact top-k over key blocks (see `_topk_select`). With no mask or an
  array-free (hashable) mask it runs through a cached jit, so eager calls such as decode
  steps reuse one compiled scan; q_offset may be traced."""
  leaves = mask_flatten(mask)[0] if mask is not None else ()
  try:
    hash(mask)
  except TypeError:
    leaves = (None,)  # unhashable mask: cannot be a static jit argument
  if not leaves:
    return _topk_select_jit(q, k, jnp.asarray(q_offset, jnp.int32), top_k=top_k, mask=mask, scale=scale,
                            block_k=block_k)
  return _topk_select(q, k, q_offset, top_k=top_k, mask=mask, scale=scale, block_k=block_k)


def _topk_select(q, k, q_offset, *, top_k, mask=None, scale=None, block_k=256):
  """Running exact top-k over key blocks (no gradient).

  Scans key tiles of `block_k`, merging each tile's scores [B, H, Tq, block_k] into the
  best kk = min(top_k, Tk) so far with lax.top_k, so no [Tq, Tk] array exists: memory
  O(Tq * (block_k + kk)), compute O(Tq * Tk * D) (quadratic).
  q [B, Tq, H, D], k [B, Tk, H, D] -> (ids int32 [B, H, Tq, kk], valid bool [B, H, Tq, kk]);
  invalid when fewer than kk keys are allowed.
  """
  b, tq, h, d = q.shape
  tk = k.shape[1]
  kk = min(top_k, tk)
  bk = min(block_k, tk)
  nk = -(-tk // bk)
  scale = default_scale(d, scale)
  qf = jax.lax.stop_gradient(heads_first(q)) * scale
  kf = jnp.pad(jax.lax.stop_gradient(heads_first(k)), ((0, 0), (0, 0), (0, nk * bk - tk), (0, 0)))
  kf = jnp.moveaxis(kf.reshape(b, h, nk, bk, d), 2, 0)
  q_pos = jnp.arange(tq) + q_offset

  def step(carry, xs):
    vals, ids = carry
    kt, j = xs
    k_pos = j * bk + jnp.arange(bk)
    s = jnp.einsum("bhqd,bhkd->bhqk", qf, kt)
    s = jnp.where(_allowed_tile(mask, q_pos, k_pos, tk), s, -jnp.inf)
    cand_v = jnp.concatenate([vals, s], axis=-1)
    cand_i = jnp.concatenate([ids, jnp.broadcast_to(k_pos.astype(jnp.int32), s.shape)], axis=-1)
    vals, pick = jax.lax.top_k(cand_v, kk)
    return (vals, jnp.take_along_axis(cand_i, pick, axis=-1)), None

  init = (jnp.full((b, h, tq, kk), -jnp.inf, jnp.float32), jnp.zeros((b, h, tq, kk), jnp.int32))
  (vals, ids), _ = jax.lax.scan(step, init, (kf, jnp.arange(nk)))
  return ids, vals > -jnp.inf


_topk_select_jit = jax.jit(_topk_select, static_argnames=("top_k", "mask", "scale", "block_k"))


def topk_attention(q, k, v, *, top_k, mask=None, q_offset=0, scale=None, block_k=256, impl="auto"):
  """Top-k attention through the dispatch table (family "sparse.topk"): "xla"
  (`topk_attention_xla`, key blocks of block_k) or "reference" (dense scores; block_k does
  not apply)."""
  return D.dispatch(TOPK, impl, q, k, v, top_k=top_k, mask=mask, q_offset=q_offset, scale=scale,
                    block_k=block_k)


def topk_attention_xla(q, k, v, *, top_k, mask=None, q_offset=0, scale=None, block_k=256):
  """Each query attends to its top_k highest-scoring allowed keys (softmax over those).

  Selection by `topk_select` (blockwise, no gradient); the kept scores are recomputed from
  gathered keys so gradients flow to q, k, v through the selected entries only (memory
  O(Tq * top_k * D)). mask: optional `masks.Mask` (and-ed in before selection; query i at
  absolute position q_offset + i). Causality is the caller's mask (masks.Causal()).
  q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv].
  """
  b, tq, tk, h, d = check_equal_heads(q, k, v, "topk_attention")
  scale = default_scale(d, scale)
  ids, valid = topk_select(q, k, top_k=top_k, mask=mask, q_offset=q_offset, scale=scale, block_k=block_k)
  ks = gather_rows(heads_first(k), ids)  # [B, H, Tq, kk, D]
  vs = gather_rows(heads_first(v), ids)
  s = jnp.einsum("bhqd,bhqkd->bhqk", heads_first(q), ks) * scale
  p, _ = masked_softmax(s, valid)
  o = jnp.einsum("bhqk,bhqkd->bhqd", p, vs)
  return jnp.swapaxes(o, 1, 2).astype(q.dtype)


def topk_attention_reference(q, k, v, *, top_k, mask=None, q_offset=0, scale=None):
  """Materialised top-k attention: dense scores, masked, keep entries >= the row's k-th
  largest allowed score."""
  b, tq, tk, h, d = check_equal_heads(q, k, v, "topk_attention_reference")
  s = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * default_scale(d, scale)
  ok = jnp.ones((1, 1, tq, tk), bool)
  if mask is not None:
    ok = ok & mask.dense(tq, tk, q_offset)[:, None]
  sm = jnp.where(ok, s, -jnp.inf)
  kth = jax.lax.top_k(sm, min(top_k, tk))[0][..., -1:]
  ok = ok & (sm >= kth)
  p, _ = masked_softmax(s, ok)
  return jnp.einsum("bhqk,bkhd->bqhd", p, v.astype(jnp.float32)).astype(q.dtype)



__all__ = ["block_gather_attention", "moba_gate", "moba_attention", "moba_attention_reference", "moba_attention_xla", "moba_mask",
           "topk_select", "topk_attention", "topk_attention_reference", "topk_attention_xla"]
