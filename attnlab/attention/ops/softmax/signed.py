"""Signed-exponent ("SignExp") softmax attention: Cog attention's weight map.

Lv et al., 2024, "More Expressive Attention with Negative Weights" (arXiv:2411.07176),
Sec. 3 / official code (trestad/CogAttn, Cogformer/attention.py):

    p = q k^T / sqrt(d),    w_ij = sign(p_ij) * exp(|p_ij|) / sum_j' exp(|p_ij'|)

i.e. the softmax of |p| carries the magnitudes and sign(p) the sign, so weights lie in
(-1, 1) with sum_j |w_ij| = 1. Masked keys are excluded from the normaliser (and get
weight 0). A positional bias, if any, is added to p before the sign/abs split.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.softmax.blocked import blocked_attention
from attnlab.attention.ops.softmax.common import attention_scores, dense_allowed, weighted_values
from attnlab.attention.ops.softmax.weightings import SIGNED

FAMILY = "softmax.signed"


def signed_softmax_weights(s, allowed=None):
  """sign(s) * softmax(|s|) over the last axis; s [..., Tk] fp32, allowed bool broadcastable
  (None = all). Fully masked rows get all-zero weights."""
  a = jnp.abs(s)
  if allowed is None:
    return jnp.sign(s) * jax.nn.softmax(a, axis=-1)
  row_any = jnp.any(allowed, axis=-1, keepdims=True)
  a = jnp.where(allowed, a, -jnp.inf)
  a = jnp.where(row_any, a, 0.0)  # keeps fully masked rows finite (their weights are zeroed)
  return jnp.sign(s) * jax.nn.softmax(a, axis=-1) * (allowed & row_any)


def signed_softmax_attention_reference(q, k, v, *, mask=None, bias=None, scale=None, q_offset=0,
                                       return_weights=False):
  """Cog attention materialised in fp32: (sign(p) * softmax(|p|)) v.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv]; mask a masks.Mask (query i at
  absolute position q_offset + i); bias as in softmax_attention_reference. Returns
  [B, Tq, Hq, Dv] in q's dtype (and the weights [B, Hq, Tq, Tk] if return_weights).
  """
  s = attention_scores(q, k, bias=bias, scale=scale, q_offset=q_offset)
  w = signed_softmax_weights(s, dense_allowed(mask, q.shape[1], k.shape[1], q_offset))
  out = weighted_values(w, v, q.dtype)
  return (out, w) if return_weights else out


def signed_softmax_attention_blocked(q, k, v, *, mask=None, bias=None, scale=None, q_offset=0,
                                     block_q=None, block_k=None):
  """The "xla" implementation: blocked.blocked_attention with the `Signed` weighting
  (online softmax over |p|, sign(p) in the numerator), skipping masked tiles, O(T * block)
  memory. Shapes as in `signed_softmax_attention_reference`."""
  return blocked_attention(q, k, v, SIGNED, mask=mask, bias=bias, scale=scale, q_offset=q_offset,
                           block_q=block_q, block_k=block_k)


def signed_softmax_attention(q, k, v, *, mask=None, bias=None, scale=None, q_offset=0, impl="auto",
                             block_q=None, block_k=None):
  """Cog attention through the dispatch table (family "softmax.signed"): impl "reference"
  (materialised) or "xla"/"auto" (blocked, masked tiles skipped; block_q / block_k: its
  tiles, None = the blocked default). Shapes as in `signed_softmax_attention_reference`."""
  return D.dispatch(FAMILY, impl, q, k, v, mask=mask, bias=bias, scale=scale, q_offset=q_offset,
                    block_q=block_q, block_k=block_k)
