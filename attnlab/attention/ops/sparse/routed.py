"""Content-routed sparse softmax attention: pure functions (efficient XLA forms + references).

Each mechanism is split into a *routing decision* (cluster ids, hash buckets, selected
blocks, selected keys; discrete, never differentiated) and an *attention given the
decision*. The efficient forms use sort / gather / chunk and never build a [Tq, Tk]
array; each `*_reference` builds the dense boolean mask the same decision implies and
runs masked softmax over the full score matrix (the oracle for small shapes).

  routing:  Roy et al., 2021, "Efficient Content-Based Sparse Attention with Routing
            Transformers" (online k-means; sort by cluster and chunk into equal windows).
  lsh:      Kitaev et al., 2020, "Reformer: The Efficient Transformer" (shared-QK LSH
            with random rotations, sorted chunks attending to themselves and the
            previous chunk, rounds combined by their logsumexp).
  (moba and topk, which select blocks / keys by score, are in ops/sparse/block_select.py.)

Layout: q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] (equal q/kv heads) -> [B, Tq, H, Dv],
computed in fp32, returned in q's dtype. A query row with no allowed key outputs zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.common import check_equal_heads, default_scale
from attnlab.attention.ops.sparse.common import dense_masked_attention, gather_rows, heads_first, masked_softmax

_SELF_SCORE = -1e5  # Reformer's score for attending to oneself (used only if nothing else is allowed)
_BIG = jnp.iinfo(jnp.int32).max  # sort key for padding: after every real cluster / bucket
ROUTING, LSH = "sparse.routing", "sparse.lsh"  # dispatch families


# ---- shared helpers -----------------------------------------------------------------


def _sort_pad(keys, length_pad):
  """Stable argsort of int keys [..., T] after padding to `length_pad` with _BIG
  (ties keep position order, padding sorts last). Returns perm [..., length_pad]."""
  pad = length_pad - keys.shape[-1]
  keys = jnp.pad(keys.astype(jnp.int32), [(0, 0)] * (keys.ndim - 1) + [(0, pad)], constant_values=_BIG)
  return jnp.argsort(keys, axis=-1, stable=True)


def _inverse_perm(perm):
  """perm [..., n] -> its inverse permutation [..., n]."""
  return jnp.argsort(perm, axis=-1)


# ---- Routing Transformer ---------------------------------------------------------------


def kmeans_assign(x, centroids):
  """Nearest centroid by cosine similarity (Roy et al., 2021, Sec. 4.1: routing on
  unit-normalised vectors). x [B, T, H, D], centroids [H, C, D] -> int32 [B, T, H]."""
  xn = normalize(x)
  return jnp.argmax(jnp.einsum("bthd,hcd->bthc", xn, centroids.astype(jnp.float32)), axis=-1).astype(jnp.int32)


def normalize(x, eps=1e-6):
  """x / ||x|| over the last axis (fp32)."""
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def kmeans_ema_update(centroids, vectors, assignments, decay):
  """One online k-means step (Roy et al., 2021, Sec. 4.1, eq. 8):
  mu_c <- decay * mu_c + (1 - decay) * mean{ x_hat : x assigned to c }, then renormalised.

  The paper's sum over assigned queries and keys is taken as a mean (the official code
  does the same) so the step size does not scale with batch * length; a cluster with no
  member this step keeps its centroid. centroids [H, C, D]; vectors: list of [B, T, H, D];
  assignments: matching list of int [B, T, H]. Returns new centroids [H, C, D] (no gradient).
  """
  c = centroids.shape[1]
  sums = jnp.zeros(centroids.shape, jnp.float32)
  counts = jnp.zeros(centroids.shape[:2], jnp.float32)
  for x, a in zip(vectors, assignments):
    onehot = jax.nn.one_hot(a, c, dtype=jnp.float32)  # [B, T, H, C]
    sums = sums + jnp.einsum("bthc,bthd->hcd", onehot, normalize(x))
    counts = counts + onehot.sum(axis=(0, 1))
  mean = sums / jnp.maximum(counts, 1.0)[..., None]
  new = jnp.where(counts[..., None] > 0, decay * centroids + (1.0 - decay) * mean, centroids)
  return jax.lax.stop_gradient(normalize(new))


def _routing_windows(tq, tk, window):
  """(number of windows n, query window wq, key window wk): queries are chunked into
  windows of `window`; keys into the same number of (equal) windows."""
  n = -(-tq // window)
  return n, window, -(-tk // n)


def routing_attention(q, k, v, q_clusters, k_clusters, *, window, causal=False, scale=None, impl="auto"):
  """Routing attention through the dispatch table (family "sparse.routing"): "xla"
  (`routing_attention_xla`, sorted windows) or "reference" (the dense mask). Same shapes."""
  return D.dispatch(ROUTING, impl, q, k, v, q_clusters, k_clusters, window=window, causal=causal, scale=scale)


def routing_attention_xla(q, k, v, q_clusters, k_clusters, *, window, causal=False, scale=None):
  """Balanced cluster attention (Routing Transformer): queries sorted by (cluster, position)
  and cut into windows of `window`; keys sorted the same way and cut into the same number
  of windows; the i-th query window attends to the i-th key window (causal: only keys at
  positions <= the query's). Memory O(T * window).

  q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv]; q_clusters int [B, Tq, H],
  k_clusters int [B, Tk, H] -> [B, Tq, H, Dv].
  """
  b, tq, tk, h, d = check_equal_heads(q, k, v, "routing_attention")
  if causal and tq != tk:
    raise ValueError(f"causal routing attention needs Tq == Tk, got {tq} and {tk}")
  scale = default_scale(d, scale)
  n, wq, wk = _routing_windows(tq, tk, window)
  perm_q = _sort_pad(jnp.swapaxes(q_clusters, 1, 2), n * wq)  # [B, H, n*wq] original positions
  perm_k = _sort_pad(jnp.swapaxes(k_clusters, 1, 2), n * wk)
  qs = gather_rows(heads_first(q), perm_q, n * wq).reshape(b, h, n, wq, d)
  ks = gather_rows(heads_first(k), perm_k, n * wk).reshape(b, h, n, wk, d)
  vs = gather_rows(heads_first(v), perm_k, n * wk).reshape(b, h, n, wk, -1)
  q_pos = perm_q.reshape(b, h, n, wq, 1)
  k_pos = perm_k.reshape(b, h, n, 1, wk)
  ok = k_pos < tk
  if causal:
    ok = ok & (k_pos <= q_pos)
  s = jnp.einsum("bhnqd,bhnkd->bhnqk", qs, ks) * scale
  p, _ = masked_softmax(s, ok)
  o = jnp.einsum("bhnqk,bhnkd->bhnqd", p, vs).reshape(b, h, n * wq, -1)
  o = jnp.take_along_axis(o, _inverse_perm(perm_q)[..., None], axis=2)[:, :, :tq]
  return jnp.swapaxes(o, 1, 2).astype(q.dtype)


def routing_mask(q_clusters, k_clusters, *, window, causal=False):
  """The dense [B, H, Tq, Tk] bool mask `routing_attention` implies, computed from ranks:
  query i and key j meet iff rank_q(i) // wq == rank_k(j) // wk, where rank is the index in
  the stable sort by cluster id."""
  tq, tk = q_clusters.shape[1], k_clusters.shape[1]
  n, wq, wk = _routing_windows(tq, tk, window)
  rank_q = _inverse_perm(jnp.argsort(jnp.swapaxes(q_clusters, 1, 2), axis=-1, stable=True))
  rank_k = _inverse_perm(jnp.argsort(jnp.swapaxes(k_clusters, 1, 2), axis=-1, stable=True))
  ok = (rank_q // wq)[..., :, None] == (rank_k // wk)[..., None, :]
  if causal:
    ok = ok & (jnp.arange(tk)[None, :] <= jnp.arange(tq)[:, None])
  return ok


def routing_attention_reference(q, k, v, q_clusters, k_clusters, *, window, causal=False, scale=None):
  """Materialised form of `routing_attention_xla` (dense mask from `routing_mask`)."""
  ok = routing_mask(q_clusters, k_clusters, window=window, causal=causal)
  return dense_masked_attention(q, k, v, ok, scale)


# ---- Reformer LSH attention --------------------------------------------------------------


def lsh_rotations(seed, num_heads, num_hashes, head_dim, num_buckets):
  """Fixed random rotations [H, R, D, num_buckets // 2] from `seed` (Kitaev et al., 2020,
  Sec. 2: h(x) = argmax([xR; -xR]) with R a random Gaussian matrix)."""
  if num_buckets % 2:
    raise ValueError(f"num_buckets must be even, got {num_buckets}")
  return jax.random.normal(jax.random.key(seed), (num_heads, num_hashes, head_dim, num_buckets // 2), jnp.float32)


def lsh_hash(x, rotations):
  """Angular LSH buckets: x [B, T, H, D], rotations [H, R, D, nb/2] -> int32 [B, H, R, T]."""
  r = jnp.einsum("bthd,hrdk->bhrtk", x.astype(jnp.float32), rotations)
  return jnp.argmax(jnp.concatenate([r, -r], axis=-1), axis=-1).astype(jnp.int32)


def lsh_attention(qk, v, buckets, *, chunk_size, causal=False, scale=None, impl="auto"):
  """LSH attention through the dispatch table (family "sparse.lsh"): "xla"
  (`lsh_attention_xla`, sorted chunks) or "reference" (dense per-round masks). Same shapes."""
  return D.dispatch(LSH, impl, qk, v, buckets, chunk_size=chunk_size, causal=causal, scale=scale)


def lsh_attention_xla(qk, v, buckets, *, chunk_size, causal=False, scale=None):
  """Reformer shared-QK LSH attention given the buckets.

  For each hash round r: positions are sorted by (bucket, position) and cut into chunks
  of `chunk_size`; each chunk attends to itself and the previous chunk (chunk 0 to the
  last one, as trax's `look_adjacent` does). Keys are the length-normalised queries
  (shared QK, Sec. 2). A query scores itself at -1e5, so it attends to itself only when
  nothing else is allowed (Sec. 2, "Shared-QK attention"). Rounds are combined with weights
  softmax_r(lse_r) (eq. 6; duplicated pairs are not de-duplicated, as in trax).
  Memory O(R * T * chunk_size).

  qk [B, T, H, D], v [B, T, H, Dv], buckets int [B, H, R, T] -> [B, T, H, Dv].
  """
  b, t, h, d = qk.shape
  r = buckets.shape[2]
  scale = default_scale(d, scale)
  c = chunk_size
  nc = -(-t // c)
  perm = _sort_pad(buckets, nc * c)  # [B, H, R, nc*c]
  qf = heads_first(qk)
  kf = normalize(qf)
  vf = heads_first(v)
  perm_flat = perm.reshape(b, h, r * nc * c)
  sq = gather_rows(qf, perm_flat, nc * c).reshape(b, h, r, nc, c, d)
  sk = gather_rows(kf, perm_flat, nc * c).reshape(b, h, r, nc, c, d)
  sv = gather_rows(vf, perm_flat, nc * c).reshape(b, h, r, nc, c, -1)
  pos = perm.reshape(b, h, r, nc, c)
  if nc > 1:  # keys of chunk i: chunk i and chunk i - 1 (cyclically)
    prev = lambda x: jnp.roll(x, 1, axis=3)  # noqa: E731
    sk = jnp.concatenate([sk, prev(sk)], axis=4)
    sv = jnp.concatenate([sv, prev(sv)], axis=4)
    k_pos = jnp.concatenate([pos, prev(pos)], axis=4)
  else:
    k_pos = pos
  q_pos, k_pos = pos[..., :, None], k_pos[..., None, :]
  s = jnp.einsum("bhrnqd,bhrnkd->bhrnqk", sq, sk) * scale
  s = jnp.where(q_pos == k_pos, _SELF_SCORE, s)
  ok = (k_pos < t) | (q_pos == k_pos)  # padding keys are seen by no one but themselves
  if causal:
    ok = ok & (k_pos <= q_pos)
  p, lse = masked_softmax(s, ok)  # lse [B, H, R, nc, c]
  o = jnp.einsum("bhrnqk,bhrnkd->bhrnqd", p, sv).reshape(b, h, r, nc * c, -1)
  inv = _inverse_perm(perm)
  o = jnp.take_along_axis(o, inv[..., None], axis=3)[:, :, :, :t]  # [B, H, R, T, Dv]
  lse = jnp.take_along_axis(lse.reshape(b, h, r, nc * c), inv, axis=3)[..., :t]  # [B, H, R, T]
  w = jax.nn.softmax(lse, axis=2)  # eq. 6: round weights exp(lse_r - logsumexp_r lse_r)
  out = jnp.sum(w[..., None] * o, axis=2)  # [B, H, T, Dv]
  return jnp.swapaxes(out, 1, 2).astype(qk.dtype)


def lsh_masks(buckets, *, chunk_size, causal=False):
  """Dense per-round masks [B, H, R, T, T] `lsh_attention` implies: query i sees key j in
  round r iff chunk_r(j) is chunk_r(i) or the one before it (cyclically), where chunk is
  rank // chunk_size in the stable sort by bucket."""
  t = buckets.shape[-1]
  nc = -(-t // chunk_size)
  rank = _inverse_perm(jnp.argsort(buckets, axis=-1, stable=True))
  ch = rank // chunk_size
  ci, cj = ch[..., :, None], ch[..., None, :]
  ok = (ci == cj) | ((ci - 1) % nc == cj)
  if causal:
    ok = ok & (jnp.arange(t)[None, :] <= jnp.arange(t)[:, None])
  return ok


def lsh_attention_reference(qk, v, buckets, *, chunk_size, causal=False, scale=None):
  """Materialised form of `lsh_attention_xla`: one dense masked softmax per round, combined
  by the rounds' logsumexp."""
  d = qk.shape[-1]
  t = qk.shape[1]
  q = qk.astype(jnp.float32)
  k = normalize(q)
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * default_scale(d, scale)
  s = jnp.where(jnp.eye(t, dtype=bool), _SELF_SCORE, s)
  ok = lsh_masks(buckets, chunk_size=chunk_size, causal=causal)  # [B, H, R, T, T]
  p, lse = masked_softmax(s[:, :, None], ok)
  o = jnp.einsum("bhrqk,bkhd->bhrqd", p, v.astype(jnp.float32))
  w = jax.nn.softmax(lse, axis=2)
  return jnp.einsum("bhrq,bhrqd->bqhd", w, o).astype(qk.dtype)


__all__ = ["kmeans_assign", "kmeans_ema_update", "routing_attention", "routing_attention_reference",
           "routing_attention_xla", "routing_mask", "lsh_rotations", "lsh_hash", "lsh_attention",
           "lsh_attention_reference", "lsh_attention_xla", "lsh_masks", "masked_softmax", "normalize"]
