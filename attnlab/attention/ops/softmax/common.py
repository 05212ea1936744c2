"""Shared pieces of the softmax family's row-wise ("score -> weight map") ops.

Ops such as sigmoid attention, Cog (signed) softmax, sink softmax and talking-heads
attention differ from softmax attention only in how a query's row of scores becomes
weights. Each has a materialised `*_reference` (fp32, the oracle) built from the
helpers here, and an "xla" implementation that runs the same reference on blocks of
queries (`query_chunked`): `lax.map` over query tiles with `jax.checkpoint`, so
forward and backward hold one `[B, H, block_q, Tk]` tile at a time instead of the full
`[B, H, Tq, Tk]` matrix. (Still quadratic compute; the memory is O(T * block_q).)
`rowwise_impls` builds both implementations for the dispatch table.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from attnlab.attention.ops.common import check_qkv, default_scale, repeat_kv
from attnlab.attention.ops.softmax.reference import dense_bias

DEFAULT_BLOCK_Q = 256


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


def _slice_bias_rows(bias, tq: int, start, rows: int):
  """Cuts query rows [start, start + rows) out of an array bias broadcastable to [.., Tq, Tk]."""
  if bias is None or callable(bias):
    return bias
  bias = jnp.asarray(bias)
  if bias.ndim >= 2 and bias.shape[-2] == tq and tq > 1:
    return jax.lax.dynamic_slice_in_dim(bias, start, rows, axis=bias.ndim - 2)
  return bias


def query_chunked(row_fn, q, k, v, *, mask=None, bias=None, q_offset=0, block_q: int = DEFAULT_BLOCK_Q):
  """Runs `row_fn(q_blk, k, v, mask=, bias=, q_offset=) -> [B, bq, Hq, Dv]` on query tiles.

  Valid for any op whose output rows depend only on their own query (every row-wise
  weight map). q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv] -> [B, Tq, Hq, Dv].
  Each tile is rematerialised in the backward pass (jax.checkpoint), so at most one
  [B, Hq, block_q, Tk] score tile is live. Padded query rows are computed and dropped.
  """
  b, tq, hq, d = q.shape
  if tq <= block_q:
    return row_fn(q, k, v, mask=mask, bias=bias, q_offset=q_offset)
  nq = -(-tq // block_q)
  pad = nq * block_q - tq
  qp = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))) if pad else q
  if bias is not None and not callable(bias):
    bias = jnp.asarray(bias)
    if bias.ndim >= 2 and bias.shape[-2] == tq and tq > 1:
      widths = [(0, 0)] * bias.ndim
      widths[-2] = (0, pad)
      bias = jnp.pad(bias, widths)
  tq_pad = nq * block_q
  q_tiles = qp.reshape(b, nq, block_q, hq, d).swapaxes(0, 1)  # [nq, B, bq, Hq, D]

  @functools.partial(jax.checkpoint, prevent_cse=False)
  def tile(args):
    i, q_blk = args
    start = i * block_q
    blk_bias = _slice_bias_rows(bias, tq_pad, start, block_q)
    return row_fn(q_blk, k, v, mask=mask, bias=blk_bias, q_offset=q_offset + start)

  out = jax.lax.map(tile, (jnp.arange(nq), q_tiles))  # [nq, B, bq, Hq, Dv]
  out = out.swapaxes(0, 1).reshape(b, tq_pad, hq, out.shape[-1])
  return out[:, :tq]


def rowwise_impls(reference_fn, *, check_shapes: bool = True):
  """The (reference, xla) implementations of a row-wise op, for `ops.dispatch`.

  reference_fn(q, k, v, *extra, mask=, bias=, scale=, q_offset=, **params) is the op's
  materialised reference (extra: positional parameters such as sink logits or mixing
  matrices). Both returned functions take (q, k, v, *extra, mask=None, bias=None,
  scale=None, q_offset=0, block_q=DEFAULT_BLOCK_Q, **params): "reference" runs
  reference_fn on all queries at once (block_q, a tile size, does not apply to it);
  "xla" runs it on query tiles of block_q (`query_chunked`). Shapes as in `query_chunked`;
  check_shapes=False skips `check_qkv` (ops whose v heads differ from k heads check their own).
  """
  check = check_qkv if check_shapes else (lambda q, k, v: None)

  def reference(q, k, v, *extra, block_q=DEFAULT_BLOCK_Q, **kw):
    del block_q
    check(q, k, v)
    return reference_fn(q, k, v, *extra, **kw)

  def xla(q, k, v, *extra, mask=None, bias=None, q_offset=0, block_q=DEFAULT_BLOCK_Q, **params):
    check(q, k, v)
    row_fn = functools.partial(_row_fn, reference_fn, extra, params)
    return query_chunked(row_fn, q, k, v, mask=mask, bias=bias, q_offset=q_offset, block_q=block_q)

  return reference, xla


def _row_fn(reference_fn, extra, params, q, k, v, **kw):
  return reference_fn(q, k, v, *extra, **params, **kw)
