"""Softmax with a learned per-head sink logit ("off-by-one" / quiet attention).

Miller, 2023, "Attention Is Off By One" proposes softmax_1(x)_i = exp(x_i) / (1 + sum_j exp(x_j));
gpt-oss (OpenAI, 2025) learns the extra logit per head ("attention sinks"):

    w_ij = exp(s_ij) / (exp(sink_h) + sum_j' exp(s_ij'))

i.e. a softmax over [s_i1 .. s_iTk, sink_h] with the sink column dropped, so a head can
put weight on "nothing" (row sums < 1). sink_h = 0 is Miller's softmax_1. A fully
masked row puts all its mass on the sink (all-zero weights).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.softmax.blocked import blocked_attention
from attnlab.attention.ops.softmax.common import attention_scores, dense_allowed, weighted_values
from attnlab.attention.ops.softmax.weightings import SOFTMAX

FAMILY = "softmax.sink"


def sink_softmax_weights(s, sink, allowed=None):
  """s [B, H, Tq, Tk] fp32, sink [H] -> weights [B, H, Tq, Tk], stable (max-subtracted)."""
  sink = jnp.asarray(sink, jnp.float32)[None, :, None, None]  # [1, H, 1, 1]
  if allowed is not None:
    s = jnp.where(allowed, s, -jnp.inf)
  # The shift m is finite (sink is) and the weights do not depend on it: stop_gradient, as in
  # jax.nn.softmax, so no gradient flows through the max of -inf-masked rows.
  m = jax.lax.stop_gradient(jnp.maximum(jnp.max(s, axis=-1, keepdims=True), sink))
  e = jnp.exp(s - m)  # exp(-inf) = 0 for masked keys
  return e / (jnp.exp(sink - m) + jnp.sum(e, axis=-1, keepdims=True))


def sink_softmax_attention_reference(q, k, v, sink, *, mask=None, bias=None, scale=None, q_offset=0,
                                     return_weights=False):
  """Softmax over [scores, sink_h] without the sink column, times v, materialised in fp32.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv], sink [Hq] (logits).
  Returns [B, Tq, Hq, Dv] in q's dtype (and the weights [B, Hq, Tq, Tk] if return_weights).
  """
  s = attention_scores(q, k, bias=bias, scale=scale, q_offset=q_offset)
  w = sink_softmax_weights(s, sink, dense_allowed(mask, q.shape[1], k.shape[1], q_offset))
  out = weighted_values(w, v, q.dtype)
  return (out, w) if return_weights else out


def sink_softmax_attention_blocked(q, k, v, sink, *, mask=None, bias=None, scale=None, q_offset=0,
                                   block_q=None, block_k=None):
  """The "xla" implementation: blocked softmax whose online normaliser starts at the sink
  ((m, l) = (sink_h, 1)), skipping masked tiles; differentiable in sink. Shapes as in the reference."""
  return blocked_attention(q, k, v, SOFTMAX, row_logit=sink, mask=mask, bias=bias, scale=scale,
                           q_offset=q_offset, block_q=block_q, block_k=block_k)


def sink_softmax_attention(q, k, v, sink, *, mask=None, bias=None, scale=None, q_offset=0, impl="auto",
                           block_q=None, block_k=None):
  """Sink softmax attention through the dispatch table (family "softmax.sink"): impl
  "reference" or "xla"/"auto" (blocked, masked tiles skipped; block_q / block_k: its
  tiles, None = the blocked default). sink [Hq]; shapes as in the reference."""
  if jnp.shape(sink) != (q.shape[2],):
    raise ValueError(f"sink must be [num_q_heads] = [{q.shape[2]}], got {jnp.shape(sink)}")
  return D.dispatch(FAMILY, impl, q, k, v, sink, mask=mask, bias=bias, scale=scale, q_offset=q_offset,
                    block_q=block_q, block_k=block_k)
