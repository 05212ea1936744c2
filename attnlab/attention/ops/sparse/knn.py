"""kNN attention with a mean context key (issue 18's "knn").

Each query i softmaxes over (a) its top_k highest-scoring allowed keys (kNN attention,
Wang et al., 2022, "KVT: k-NN Attention for Boosting Vision Transformers", ECCV 2022;
the selection is `block_select.topk_select`, the running top-k of the `topk` variant) and
(b) one extra "context" key/value pair: the mean of the keys and of the values query i is
allowed to see (causal: the prefix j <= i; non-causal: all; invalid padded keys excluded),
so that every query keeps a summary of the keys it did not select. With top_k >= the
number of keys this is dense softmax attention over [tokens; mean].

Scores: s_ij = scale q_i . k_j for the kept keys and scale q_i . kbar_i for the context
key, one softmax over both. No gradient flows through the selection (the kept scores are
recomputed from gathered keys, as `topk_attention_xla`); the mean key and value get the
ordinary gradients. Memory O(T (top_k + block_k) D); compute O(T^2) (every score is
computed once by the selection) plus O(T D) for the prefix means.
"""

from __future__ import annotations

import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops.common import check_equal_heads, default_scale
from attnlab.attention.ops.sparse.block_select import topk_select
from attnlab.attention.ops.sparse.common import gather_rows, heads_first, masked_softmax


def mean_context(k, v, *, causal, key_valid=None, q_len, q_offset=0):
  """The mean key and value each query sees. k [B, Tk, H, D], v [B, Tk, H, Dv];
  key_valid [B, Tk] bool or None; query i sits at absolute position q_offset + i (causal).

  Returns (kbar [B, Tq, H, D], vbar [B, Tq, H, Dv], has_any [B, Tq] bool: at least one key
  was visible; where not, kbar = vbar = 0)."""
  b, tk = k.shape[:2]
  w = jnp.ones((b, tk), jnp.float32) if key_valid is None else key_valid.astype(jnp.float32)
  wk = k.astype(jnp.float32) * w[:, :, None, None]
  wv = v.astype(jnp.float32) * w[:, :, None, None]
  if causal:
    pos = jnp.clip(q_offset + jnp.arange(q_len), 0, tk - 1)
    ks, vs, n = (jnp.cumsum(a, 1)[:, pos] for a in (wk, wv, w))
  else:
    ks, vs, n = (jnp.broadcast_to(jnp.sum(a, 1, keepdims=True), (b, q_len, *a.shape[2:]))
                 for a in (wk, wv, w))
  denom = jnp.maximum(n, 1.0)[:, :, None, None]
  return ks / denom, vs / denom, n > 0


def knn_mean_attention(q, k, v, *, top_k, causal, key_valid=None, q_offset=0, scale=None, block_k=256):
  """kNN attention plus the mean context key (module docstring).

  q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv]; key_valid [B, Tk] bool or None;
  causal: query i sees keys j <= q_offset + i. Returns [B, Tq, H, Dv] (q's dtype)."""
  b, tq, tk, h, d = check_equal_heads(q, k, v, "knn_mean_attention")
  scale = default_scale(d, scale)
  mask = M.combine(M.Causal() if causal else None,
                   None if key_valid is None else M.KeyPadding(key_valid))
  ids, valid = topk_select(q, k, top_k=top_k, mask=mask, q_offset=q_offset, scale=scale, block_k=block_k)
  kbar, vbar, has_any = mean_context(k, v, causal=causal, key_valid=key_valid, q_len=tq, q_offset=q_offset)
  qh = heads_first(q).astype(jnp.float32)  # [B, H, Tq, D]
  ks = gather_rows(heads_first(k), ids).astype(jnp.float32)  # [B, H, Tq, kk, D]
  vs = gather_rows(heads_first(v), ids).astype(jnp.float32)
  s_knn = jnp.einsum("bhqd,bhqkd->bhqk", qh, ks) * scale
  s_mean = jnp.einsum("bhqd,bqhd->bhq", qh, kbar)[..., None] * scale
  s = jnp.concatenate([s_knn, s_mean], -1)
  ok = jnp.concatenate([valid, jnp.broadcast_to(has_any[:, None, :, None], (b, h, tq, 1))], -1)
  p, _ = masked_softmax(s, ok)
  o = (jnp.einsum("bhqk,bhqkd->bhqd", p[..., :-1], vs)
       + p[..., -1:] * jnp.swapaxes(vbar, 1, 2))
  return jnp.swapaxes(o, 1, 2).astype(q.dtype)


__all__ = ["knn_mean_attention", "mean_context"]
