"""FlexPrefill's query-aware block selection (Lai et al., 2025, "FlexPrefill: A Context-Aware
Sparse Attention Mechanism for Efficient Long-Sequence Inference", Sec. 3, Alg. "query-aware
index search"), training-free.

Per head, a block-level attention estimate from pooled queries and keys,

    a_hat[i, :] = softmax_j( mean(Q[block i]) . mean(K[block j]) * scale ),  j <= i (causal),

then each query block keeps the fewest key blocks, highest estimate first, whose estimated
mass reaches gamma (cumulative-attention / top-p selection); the diagonal block is always
kept (its queries' own keys) and at most max_blocks are kept. Attention is then exact
softmax over the kept blocks (`block_select.block_gather_attention`).

Departure: FlexPrefill also has a "vertical-slash" pattern, chosen per head when the
pooled estimate and the true attention of the last query block diverge (a JS-divergence
test); only the query-aware pattern is here, for every head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops.common import default_scale
from attnlab.attention.ops.sparse.block_select import _block_means, block_gather_attention
from attnlab.attention.ops.sparse.common import dense_masked_attention


def flexprefill_blocks(q, k, *, block_size, gamma, max_blocks, scale=None):
  """Selected key blocks per query block. q [B, T, H, D], k [B, T, H, D] (causal self,
  query 0 at position 0) -> (ids int [B, H, nq, kk], used bool [B, H, nq, kk], estimate
  [B, H, nq, nb] fp32: the pooled block attention a_hat), kk = min(max_blocks, nb). Slots
  are in decreasing estimate, the diagonal first. No gradient."""
  q, k = jax.lax.stop_gradient(q), jax.lax.stop_gradient(k)
  scale = default_scale(q.shape[-1], scale)
  qm, km = _block_means(q, block_size), _block_means(k, block_size)  # [B, H, nq|nb, D]
  nq, nb = qm.shape[2], km.shape[2]
  causal = jnp.arange(nb)[None, :] <= jnp.arange(nq)[:, None]  # [nq, nb]
  est = jax.nn.softmax(jnp.where(causal, jnp.einsum("bhqd,bhkd->bhqk", qm, km) * scale, -jnp.inf), -1)
  diag = jnp.arange(nb)[None, :] == jnp.arange(nq)[:, None]
  rank = jnp.where(diag, 2.0, jnp.where(causal, est, -1.0))  # diagonal first, future blocks last
  kk = min(max_blocks, nb)
  order = jnp.argsort(-rank, axis=-1)[..., :kk]  # [B, H, nq, kk]
  mass = jnp.take_along_axis(est, order, axis=-1)
  before = jnp.cumsum(mass, axis=-1) - mass  # estimated mass of the blocks ranked before
  used = (before < gamma) & jnp.take_along_axis(jnp.broadcast_to(causal, est.shape), order, axis=-1)
  return order.astype(jnp.int32), used, est


def flexprefill_attention(q, k, v, *, block_size, gamma, max_blocks, scale=None, q_chunk=None):
  """Causal attention over the FlexPrefill-selected blocks (see the module docstring): query
  tiles are the query blocks, each gathering its selected key blocks once.
  q [B, T, H, D], k [B, T, H, D], v [B, T, H, Dv] -> [B, T, H, Dv]. (q_chunk: unused, the
  tile is the query block.)"""
  del q_chunk
  ids, used, _ = flexprefill_blocks(q, k, block_size=block_size, gamma=gamma, max_blocks=max_blocks, scale=scale)

  def select(qt, q_pos):  # the tile is one query block: its selection [B, H, kk]
    qb = q_pos[0] // block_size
    return ids[:, :, qb], used[:, :, qb]

  return block_gather_attention(q, k, v, select, block_size=block_size, scale=scale, q_chunk=block_size)


def flexprefill_attention_reference(q, k, v, *, block_size, gamma, max_blocks, scale=None, q_chunk=None):
  """The materialised form (analysis): the dense [B, H, T, T] mask the selection implies
  (key j kept for query i iff j's block is among i's block's used slots and j <= i)."""
  del q_chunk
  ids, used, _ = flexprefill_blocks(q, k, block_size=block_size, gamma=gamma, max_blocks=max_blocks, scale=scale)
  t = q.shape[1]
  qb, kb = jnp.arange(t) // block_size, jnp.arange(t) // block_size
  sel = jnp.any((ids[..., None] == kb) & used[..., None], axis=-2)  # [B, H, nq, T]
  ok = sel[:, :, qb] & (jnp.arange(t)[None, :] <= jnp.arange(t)[:, None])
  return dense_masked_attention(q, k, v, ok, scale)


__all__ = ["flexprefill_attention", "flexprefill_attention_reference", "flexprefill_blocks"]
