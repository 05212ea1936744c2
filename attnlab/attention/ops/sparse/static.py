"""Static sparse softmax attention as gathers: the math behind the `sparse`/`local` variants.

A static sparse pattern is a predicate `allowed(q_pos, k_pos)` per head. The efficient
form (`gather_sparse_attention`) never evaluates it on the whole [Tq, Tk] grid: queries
are split into blocks of `block_q` consecutive positions and, for every (head, query
block), a *key table* lists the key positions that block may need (`kv_pos_fn`). Keys
and values are gathered at those positions and a dense softmax runs over the gathered
slots only; the predicate trims the slots inside the tile. Cost is O(Tq * K) for K
slots per query block (the pattern's nonzeros plus in-tile waste), and memory is bounded
by one chunk of `query_chunk` queries at a time: a `lax.map` over chunks with a
rematerialised body, so neither the forward nor the backward holds more than
[chunk, K] scores (plus O(T * D) for q, k, v and their gradients).

Contract for key tables: every key the predicate allows must appear in the query's
block's table, and no position may appear twice in one row (a duplicate would be
counted twice by the softmax). Slots with a position outside [0, Tk) are unused.

`sparse_attention_reference` is the materialised form of the same predicate (the full
[H, Tq, Tk] mask). `sparse_attention(..., impl=)` dispatches between the two (family
"sparse": "xla" = the gathers, "reference" = the materialised mask, which needs `allowed`).

Patterns used by the variants (pure, numpy, trace-time): `bigbird_random_blocks`
(BigBird's seeded random key blocks, Zaheer et al., 2020, Sec. 2 / App. D).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.common import check_qkv, default_scale, repeat_kv
from attnlab.attention.ops.sparse.common import masked_softmax

FAMILY = "sparse"

# allowed(q_pos [1|H, n, bq, 1], k_pos [1|H, n, 1, K]) -> bool broadcastable to [H, n, bq, K].
Predicate = Callable[..., jax.Array]
# kv_pos_fn(q_block_ids int [n]) -> int [1|H, n, K] key positions (out of range = unused).
KeyTable = Callable[[jax.Array], jax.Array]
# bias(q_pos, k_pos) -> float broadcastable to [H, n, bq, K] (same shapes as Predicate).
PositionBias = Callable[..., jax.Array]


def _masked_softmax_av(s, allow, vg):
  """softmax over the last axis of s restricted to `allow`; rows with nothing allowed
  give 0 (as the softmax reference does). s, allow [..., q, K]; vg [..., K, Dv]."""
  return jnp.einsum("...qk,...kd->...qd", masked_softmax(s, allow)[0], vg)


def mask_on_gathered(mask, q_pos, k_pos):
  """Evaluates an extra `masks.Mask` on gathered key positions.

  q_pos int [n, bq]; k_pos int [H, n, K] -> bool [B|1, H, n, bq, K]. Each (head, query
  block) row is evaluated on its own keys only (vmapped), so data-dependent masks
  (KeyPadding, SegmentIds) work and nothing of size [Tq, Tk] is built.
  """

  def one(qp, kp):  # qp [bq], kp [K] -> [B|1, bq, K]
    out = jnp.asarray(mask.allowed(qp[:, None], kp[None, :]))
    out = jnp.broadcast_to(out, out.shape[:-2] + (qp.shape[0], kp.shape[0]))
    return out if out.ndim == 3 else out[None]

  per_block = jax.vmap(one, in_axes=(0, 0))  # over n
  per_head = jax.vmap(per_block, in_axes=(None, 0))  # over H
  return jnp.moveaxis(per_head(q_pos, k_pos), 2, 0)  # [H, n, B, bq, K] -> [B, H, n, bq, K]


def gather_sparse_attention(q, k, v, kv_pos_fn: KeyTable, *, block_q: int,
                            allowed: Predicate | None = None, mask=None,
                            bias: PositionBias | None = None, scale: float | None = None,
                            q_offset=0, q_positions=None, query_chunk: int = 256,
                            max_chunk_scores: int = 1 << 17):
  """Sparse softmax attention over per-(head, query-block) gathered keys.

  q [B, Tq, H, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] -> [B, Tq, H, Dv] (q's dtype,
  computed in fp32).
  kv_pos_fn(q_block_ids int [n]) -> int [1|H, n, K]: the key positions query block i
    (queries i*block_q .. i*block_q + block_q - 1) may attend to; positions outside
    [0, Tk) are unused slots; no duplicates within a row (see module docstring).
  allowed: the exact pattern, `allowed(q_pos [1, n, bq, 1], k_pos [H|1, n, 1, K])`.
  mask: optional extra `masks.Mask` (and-ed; data-dependent masks supported).
  bias: optional `bias(q_pos, k_pos)` score bias with the same shapes (e.g. ALiBi).
  q_offset: absolute position of query 0 (int or traced, for decode); q_positions:
    int [Tq] absolute positions instead (non-contiguous query rows, e.g. global tokens).
  query_chunk: at most this many queries per step of the rematerialised loop, and
    fewer when a chunk would exceed `max_chunk_scores` scores per head (long key tables,
    e.g. strided shards whose length grows with T), so per-step memory stays bounded.
  """
  bsz, tq, tk, h, _, d = check_qkv(q, k, v)
  scale = default_scale(d, scale)
  kh = jnp.moveaxis(repeat_kv(k, h), 2, 1).astype(jnp.float32)  # [B, H, Tk, D]
  vh = jnp.moveaxis(repeat_kv(v, h), 2, 1).astype(jnp.float32)
  nq = -(-tq // block_q)
  num_keys = jax.eval_shape(kv_pos_fn, jax.ShapeDtypeStruct((1,), jnp.int32)).shape[-1]
  per = max(1, min(nq, query_chunk // block_q, max_chunk_scores // (block_q * num_keys)))
  nc = -(-nq // per)
  tq_pad = nc * per * block_q
  if q_positions is None:
    q_positions = q_offset + jnp.arange(tq_pad)
  else:
    q_positions = jnp.pad(jnp.asarray(q_positions), (0, tq_pad - tq), constant_values=-1)
  qh = jnp.moveaxis(q, 2, 1).astype(jnp.float32) * scale  # [B, H, Tq, D]
  qh = jnp.pad(qh, ((0, 0), (0, 0), (0, tq_pad - tq), (0, 0)))
  qh = jnp.moveaxis(qh.reshape(bsz, h, nc, per, block_q, d), 2, 0)  # [nc, B, H, per, bq, D]
  qpos = q_positions.reshape(nc, per, block_q)
  heads = jnp.arange(h)[:, None, None]

  def body(args):
    qc, qp, c = args  # [B, H, per, bq, D], [per, bq], scalar chunk id
    kpos = kv_pos_fn(c * per + jnp.arange(per))
    kpos = jnp.broadcast_to(kpos, (h,) + kpos.shape[1:])  # [H, per, K]
    in_range = (kpos >= 0) & (kpos < tk)
    idx = jnp.clip(kpos, 0, tk - 1)
    kg, vg = kh[:, heads, idx], vh[:, heads, idx]  # [B, H, per, K, D]
    s = jnp.einsum("bhnqd,bhnkd->bhnqk", qc, kg)
    qp4, kp4 = qp[None, :, :, None], idx[:, :, None, :]
    allow = in_range[:, :, None, :] & (qp4 >= 0)
    if allowed is not None:
      allow = allow & allowed(qp4, kp4)
    allow = allow[None]
    if mask is not None:
      allow = allow & mask_on_gathered(mask, qp, idx)
    if bias is not None:
      s = s + jnp.asarray(bias(qp4, kp4), jnp.float32)[None]
    return _masked_softmax_av(s, allow, vg)  # [B, H, per, bq, Dv]

  if nc == 1:
    out = body((qh[0], qpos[0], 0))[None]
  else:
    # Rematerialised loop over query chunks: the backward recomputes each chunk's
    # gathers/scores instead of storing them, so memory is one chunk's worth.
    out = jax.lax.map(jax.checkpoint(body), (qh, qpos, jnp.arange(nc)))
  dv = out.shape[-1]
  out = jnp.moveaxis(out, 0, 2).reshape(bsz, h, tq_pad, dv)[:, :, :tq]
  return jnp.moveaxis(out, 1, 2).astype(q.dtype)


def sparse_attention(q, k, v, kv_pos_fn: KeyTable, *, block_q: int, allowed: Predicate | None = None,
                     mask=None, bias: PositionBias | None = None, scale: float | None = None, q_offset=0,
                     q_positions=None, query_chunk: int = 256, max_chunk_scores: int = 1 << 17,
                     impl: str = "auto"):
  """Static sparse attention through the dispatch table (family "sparse").

  Arguments as `gather_sparse_attention`. impl "xla" (or "auto"): the gathers; "reference":
  `sparse_attention_reference` on the exact predicate `allowed` (required; the key table
  and the tiling arguments do not apply to it).
  """
  return D.dispatch(FAMILY, impl, q, k, v, kv_pos_fn, block_q=block_q, allowed=allowed, mask=mask, bias=bias,
                    scale=scale, q_offset=q_offset, q_positions=q_positions, query_chunk=query_chunk,
                    max_chunk_scores=max_chunk_scores)


def sparse_attention_reference(q, k, v, allowed: Predicate, *, mask=None,
                               bias: PositionBias | None = None, scale: float | None = None,
                               q_offset=0, q_positions=None, return_weights=False):
  """The materialised form: softmax over the full [H, Tq, Tk] mask `allowed` implies.

  q [B, Tq, H, D], k/v [B, Tk, Hkv, D] -> [B, Tq, H, Dv] (and the weights [B, H, Tq, Tk],
  zero off the pattern, if return_weights); `allowed`, `bias` as in
  `gather_sparse_attention` (called with q_pos [1, 1, Tq, 1], k_pos [1, 1, 1, Tk]); query i
  sits at q_offset + i, or at q_positions[i] (int [Tq]) when given.
  Quadratic memory: for tests, debugging and analysis only.
  """
  _, tq, tk, h, _, d = check_qkv(q, k, v)
  scale = default_scale(d, scale)
  kf, vf = repeat_kv(k, h).astype(jnp.float32), repeat_kv(v, h).astype(jnp.float32)
  s = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), kf) * scale
  q_abs = q_offset + jnp.arange(tq) if q_positions is None else jnp.asarray(q_positions)
  qp = q_abs[None, None, :, None]
  kp = jnp.arange(tk)[None, None, None, :]
  allow = jnp.broadcast_to(allowed(qp, kp)[:, 0], (h, tq, tk))[None]  # [1, H, Tq, Tk]
  if mask is not None:
    extra = jnp.asarray(mask.allowed(q_abs[:, None], jnp.arange(tk)[None, :]))
    extra = jnp.broadcast_to(extra, extra.shape[:-2] + (tq, tk))
    allow = allow & (extra if extra.ndim == 3 else extra[None])[:, None]
  if bias is not None:
    s = s + jnp.asarray(bias(qp, kp), jnp.float32)[:, 0][None]
  if return_weights:
    w = masked_softmax(s, allow)[0]
    return jnp.einsum("bhqk,bkhd->bqhd", w, vf).astype(q.dtype), w
  out = _masked_softmax_av(s, allow, jnp.moveaxis(vf, 2, 1))  # [B, H, Tq, Dv]
  return jnp.moveaxis(out, 1, 2).astype(q.dtype)


# ---- pattern helpers ------------------------------------------------------------------


def _mix64(x):
  """splitmix64 finaliser (Steele et al., 2014) on uint64 numpy arrays."""
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def block_hash(seed: int, head, q_block, k_block) -> np.ndarray:
  """Deterministic pseudo-random uint64 per (seed, head, query block, key block).

  Counter-based (no state), so a block's random choice does not depend on the sequence
  length: decode and the full pass see the same random blocks.
  """
  with np.errstate(over="ignore"):
    x = _mix64(np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15))
    for part in (head, q_block, k_block):
      x = _mix64(x ^ (np.asarray(part).astype(np.uint64) + np.uint64(0x632BE59BD9B4E019)))
  return x


def bigbird_random_blocks(seed: int, num_heads: int, num_q_blocks: int, num_k_blocks: int,
                          num_random: int, window: int, num_global: int,
                          causal: bool) -> np.ndarray:
  """BigBird's random key blocks: int [num_heads, num_q_blocks, num_random], -1 = none.

  For query block i of head h, the candidates are the key blocks j that neither the
  window (|i - j| <= window; causal: 0 <= i - j <= window) nor the global blocks
  (j < num_global) already cover, and j < i when causal. Among them the `num_random`
  with the smallest `block_hash(seed, h, i, j)` are chosen: sampling without
  replacement, reproducible from `seed`, and independent of the sequence length for
  causal patterns. Global query blocks (i < num_global) see everything and get none.
  """
  hh, qi, kj = np.meshgrid(np.arange(num_heads), np.arange(num_q_blocks), np.arange(num_k_blocks),
                           indexing="ij")
  dist = qi - kj
  ok = (kj >= num_global) & (qi >= num_global)
  ok &= (dist > window) if causal else (np.abs(dist) > window)
  score = np.where(ok, block_hash(seed, hh, qi, kj), np.iinfo(np.uint64).max)
  order = np.argsort(score, axis=-1, kind="stable")[..., :num_random]
  chosen = np.take_along_axis(ok, order, axis=-1)
  out = np.where(chosen, order, -1).astype(np.int32)
  if out.shape[-1] < num_random:
    out = np.pad(out, ((0, 0), (0, 0), (0, num_random - out.shape[-1])), constant_values=-1)
  return out
