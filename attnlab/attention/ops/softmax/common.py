"""Shared pieces of the softmax family's row-wise ("score -> weight map") ops.

Ops such as sigmoid attention, Cog (signed) softmax, sink softmax and talking-heads
attention differ from softmax attention only in how a query's row of scores becomes
weights. Each has a materialised `*_reference` (fp32, the oracle) built from the
helpers here; `rowwise_reference` wraps it for the dispatch table. Their "xla"
implementations run blocked.py's tile lists (masked tiles skipped) with the op's
weighting (weightings.py; talking heads in talking_heads.py).
"""

from __future__ import annotations

import jax.numpy as jnp

from attnlab.attention.ops.common import check_qkv, default_scale, repeat_kv
from attnlab.attention.ops.softmax.reference import dense_bias


def attention_scores(q, k, *, bias=None, scale=None, q_offset=0):
  """s = q k^T * scale + bias in fp32.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D] (GQA: Hq % Hkv == 0); bias an array
  broadcastable to [B, Hq, Tq, Tk] or a callable (see reference.dense_bias).
  Returns s [B, Hq, Tq, Tk] (float32).
  """
  tq, tk, hq, d = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
  scale = default_scale(d, scale)
  kf = repeat_kv(k.astype(jnp.float32), hq)
  s = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), kf) * scale
  bias = dense_bias(bias, tq, tk, q_offset)
  if bias is not None:
    s = s + jnp.asarray(bias).astype(jnp.float32)
  return s


def dense_allowed(mask, tq: int, tk: int, q_offset=0):
  """The mask as bool [B|1, 1, Tq, Tk] (broadcasts over heads), or None for no mask."""
  if mask is None:
    return None
  return mask.dense(tq, tk, q_offset)[:, None]


def weighted_values(w, v, out_dtype):
  """w [B, Hq, Tq, Tk] (fp32), v [B, Tk, Hkv, Dv] -> [B, Tq, Hq, Dv] in out_dtype."""
  vf = repeat_kv(v.astype(jnp.float32), w.shape[1])
  return jnp.einsum("bhqk,bkhd->bqhd", w, vf).astype(out_dtype)


def rowwise_reference(reference_fn, *, check_shapes: bool = True):
  """The "reference" implementation of a row-wise op, for `ops.dispatch`.

  reference_fn(q, k, v, *extra, mask=, bias=, scale=, q_offset=, **params) is the op's
  materialised reference (extra: positional parameters such as sink logits or mixing
  matrices). The returned function takes the same arguments plus the blocked
  implementations' tile sizes block_q / block_k (ignored: the reference runs on all
  queries at once). check_shapes=False skips `check_qkv` (ops whose v heads differ from k
  heads check their own).
  """
  check = check_qkv if check_shapes else (lambda q, k, v: None)

  def reference(q, k, v, *extra, block_q=None, block_k=None, **kw):
    del block_q, block_k
    check(q, k, v)
    return reference_fn(q, k, v, *extra, **kw)

  return reference
