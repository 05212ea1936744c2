"""Content-routed sparse softmax attention: pure functions (efficient XLA forms + references).

Each mechanism is split into a *routing decision* (cluster ids, hash buckets, selected
blocks, selected keys; discrete, never differentiated) and an *attention given the
decision*. The efficient forms use sort / gather / chunk and never build a [Tq, Tk]
array; each `*_reference` builds the dense boolean mask the same decision implies and
runs masked softmax over the full score matrix (the oracle for small shapes).

  routing:  Roy et al., 2021, "Efficient Content-Based Sparse Attention with Routing
            Transformers" (online k-means; each centroid takes its own top-w nearest
            queries and keys, which attend to each other).
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
from attnlab.attention.ops.sparse.common import gather_rows, heads_first, masked_softmax

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
#
# Roy et al., 2021 (TACL), Sec. 4.1, and the official code (google-research
# routing_transformer/utils.py: `cluster_items`, `gather_cluster_attention_items`,
# `scatter_cluster_items`): queries and keys are unit-normalised; every centroid takes its
# own top-w nearest queries and its own top-w nearest keys (balanced clusters, w of each per
# centroid); the w queries of centroid c attend to the w keys of centroid c; outputs are
# scattered back and a query taken by several centroids gets the mean of its outputs.


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


def routing_window(length, num_clusters, window):
  """Members each centroid takes from a sequence of `length`: `window`, or with window=0
  ceil(length / num_clusters) (so that C * w covers the sequence), at most `length`."""
  w = window if window else -(-length // num_clusters)
  return max(1, min(int(w), int(length)))


def routing_select(x, centroids, window):
  """The balanced routing decision (Roy et al., 2021, Sec. 4.1; official
  `gather_cluster_attention_items`): each centroid takes its own top-w vectors by cosine
  similarity, w = routing_window(T, C, window). A position may be taken by several
  centroids or by none. Discrete: no gradient flows through it.

  x [B, T, H, D], centroids [H, C, D] -> int32 positions [B, H, C, w] (distinct per centroid).
  Cost O(T * C * D) for the similarities plus a top-w over T per centroid.
  """
  w = routing_window(x.shape[1], centroids.shape[1], window)
  xn = normalize(jax.lax.stop_gradient(x))
  sim = jnp.einsum("bthd,hcd->bhct", xn, jax.lax.stop_gradient(centroids).astype(jnp.float32))
  return jax.lax.top_k(sim, w)[1].astype(jnp.int32)


def _check_routing(q, k, v, q_index, k_index, causal):
  """Shapes of a routing call; (B, Tq, Tk, H, D). Raises on mismatched heads, indices or a
  causal call with Tq != Tk."""
  b, tq, tk, h, d = check_equal_heads(q, k, v, "routing_attention")
  if causal and tq != tk:
    raise ValueError(f"causal routing attention needs Tq == Tk, got {tq} and {tk}")
  if q_index.ndim != 4 or k_index.ndim != 4 or q_index.shape[:3] != (b, h, k_index.shape[2]) \
      or k_index.shape[:2] != (b, h):
    raise ValueError(f"routing indices must be [B={b}, H={h}, C, w] for queries and keys with the same C, "
                     f"got {q_index.shape} and {k_index.shape}")
  return b, tq, tk, h, d


def routing_attention(q, k, v, q_index, k_index, *, causal=False, scale=None, impl="auto"):
  """Routing attention given the decision, through the dispatch table (family
  "sparse.routing"): "xla" (`routing_attention_xla`, gathered windows) or "reference"
  (`routing_attention_reference`, dense per-centroid masks). Same shapes and result."""
  return D.dispatch(ROUTING, impl, q, k, v, q_index, k_index, causal=causal, scale=scale)


def routing_attention_xla(q, k, v, q_index, k_index, *, causal=False, scale=None):
  """Balanced routing attention (Routing Transformer, Roy et al., 2021, Sec. 4.1).

  Centroid c's queries q_index[..., c, :] attend to its keys k_index[..., c, :] (causal:
  only keys at positions <= the query's, compared by position; the official code masks
  the lower triangle of the position-sorted slots, the same thing when queries and keys
  are shared, and a leak of future keys when they are not). Outputs are
  scattered back to their positions; a query taken by several centroids gets the mean of
  its outputs over the centroids in which it saw at least one key (the official
  `scatter_cluster_items` averages: sum / (count + 1e-2); there every row sees a key); a
  query taken by none, or seeing no key, outputs zeros. Compute O(C * wq * wk), memory
  O(C * wq * wk + T): no [Tq, Tk] array.

  q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv]; q_index int [B, H, C, wq], k_index
  int [B, H, C, wk] (from `routing_select`) -> [B, Tq, H, Dv].
  """
  b, tq, tk, h, d = _check_routing(q, k, v, q_index, k_index, causal)
  scale = default_scale(d, scale)
  qs = gather_rows(heads_first(q), q_index)  # [B, H, C, wq, D]
  ks = gather_rows(heads_first(k), k_index)  # [B, H, C, wk, D]
  vs = gather_rows(heads_first(v), k_index)
  ok = (k_index[..., None, :] <= q_index[..., :, None]) if causal else True
  s = jnp.einsum("bhcqd,bhckd->bhcqk", qs, ks) * scale
  p, lse = masked_softmax(s, ok)
  o = jnp.einsum("bhcqk,bhckd->bhcqd", p, vs)
  seen = jnp.isfinite(lse).astype(jnp.float32)  # [B, H, C, wq]: the query saw a key here
  bi = jnp.arange(b)[:, None, None, None]
  hi = jnp.arange(h)[None, :, None, None]
  total = jnp.zeros((b, h, tq, o.shape[-1]), jnp.float32).at[bi, hi, q_index].add(o * seen[..., None])
  count = jnp.zeros((b, h, tq), jnp.float32).at[bi, hi, q_index].add(seen)
  y = total / jnp.maximum(count, 1.0)[..., None]
  return jnp.swapaxes(y, 1, 2).astype(q.dtype)


def routing_mask(q_index, k_index, tq, tk, *, causal=False):
  """The dense per-centroid masks [B, H, C, Tq, Tk] the decision implies: query i meets key
  j in centroid c iff i is among c's queries and j among c's keys (and j <= i if causal)."""
  in_q = jnp.any(q_index[..., :, None] == jnp.arange(tq), axis=-2)  # [B, H, C, Tq]
  in_k = jnp.any(k_index[..., :, None] == jnp.arange(tk), axis=-2)  # [B, H, C, Tk]
  ok = in_q[..., :, None] & in_k[..., None, :]
  if causal:
    ok = ok & (jnp.arange(tk)[None, :] <= jnp.arange(tq)[:, None])
  return ok


def routing_attention_reference(q, k, v, q_index, k_index, *, causal=False, scale=None):
  """Materialised form of `routing_attention_xla`: one dense masked softmax per centroid
  over the full score matrix (`routing_mask`), then the mean over the centroids in which
  each query saw a key (zeros where none). Same arguments and result."""
  _, tq, tk, _, d = _check_routing(q, k, v, q_index, k_index, causal)
  ok = routing_mask(q_index, k_index, tq, tk, causal=causal)
  s = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * default_scale(d, scale)
  p, lse = masked_softmax(s[:, :, None], ok)  # [B, H, C, Tq, Tk]
  o = jnp.einsum("bhcqk,bkhd->bhcqd", p, v.astype(jnp.float32))
  seen = jnp.isfinite(lse).astype(jnp.float32)  # [B, H, C, Tq]
  y = jnp.einsum("bhcq,bhcqd->bqhd", seen, o) / jnp.maximum(seen.sum(2), 1.0).transpose(0, 2, 1)[..., None]
  return y.astype(q.dtype)


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
           "routing_attention_xla", "routing_mask", "routing_select", "routing_window", "lsh_rotations", "lsh_hash", "lsh_attention",
           "lsh_attention_reference", "lsh_attention_xla", "lsh_masks", "masked_softmax", "normalize"]
