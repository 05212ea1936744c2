"""Talking-heads attention: learned mixing across heads before and after the softmax.

Shazeer et al., 2020, "Talking-Heads Attention" (arXiv:2003.02436), Sec. 4 / Alg. 1:

    J = einsum(Q, K)      logits per "key" head        [B, Hk, Tq, Tk]
    L = einsum(J, P_l)    mix heads: Hk -> H           (P_l [Hk, H])
    W = softmax(L)        per softmax head h (masked)
    U = einsum(W, P_w)    mix heads: H -> Hv           (P_w [H, Hv])
    O = einsum(U, V)                                   [B, Tq, Hv, Dv]

A positional bias (ALiBi, [.., H, ..]) is added to the mixed logits L; masking is
applied to L (mixing may otherwise leak masked logits). Masked weights are exactly 0, so
the post-softmax mixing keeps them 0.
"""

from __future__ import annotations

import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.softmax.common import DEFAULT_BLOCK_Q, attention_scores, dense_allowed
from attnlab.attention.ops.softmax.reference import dense_bias, masked_softmax

FAMILY = "softmax.talking_heads"


def talking_heads_attention_reference(q, k, v, logits_mix, weights_mix, *, mask=None, bias=None,
                                      scale=None, q_offset=0, return_weights=False):
  """Talking-heads attention materialised in fp32.

  q [B, Tq, Hk, D], k [B, Tk, Hkv, D] (Hk % Hkv == 0), v [B, Tk, Hv, Dv];
  logits_mix [Hk, H], weights_mix [H, Hv]; bias broadcastable to [B, H, Tq, Tk] (or a
  callable). Returns [B, Tq, Hv, Dv] in q's dtype (and the mixed weights U
  [B, Hv, Tq, Tk] if return_weights). Fully masked rows output zeros.
  """
  tq, tk = q.shape[1], k.shape[1]
  if logits_mix.shape[0] != q.shape[2] or weights_mix.shape[1] != v.shape[2] \
      or logits_mix.shape[1] != weights_mix.shape[0]:
    raise ValueError(f"mixing shapes {logits_mix.shape}, {weights_mix.shape} do not fit q heads "
                     f"{q.shape[2]} and v heads {v.shape[2]}")
  j = attention_scores(q, k, scale=scale)  # [B, Hk, Tq, Tk]
  logits = jnp.einsum("bkqt,kh->bhqt", j, logits_mix.astype(jnp.float32))
  pos_bias = dense_bias(bias, tq, tk, q_offset)
  if pos_bias is not None:
    logits = logits + jnp.asarray(pos_bias).astype(jnp.float32)
  allowed = dense_allowed(mask, tq, tk, q_offset)
  w = masked_softmax(logits, allowed)
  u = jnp.einsum("bhqt,hv->bvqt", w, weights_mix.astype(jnp.float32))
  out = jnp.einsum("bvqt,btvd->bqvd", u, v.astype(jnp.float32)).astype(q.dtype)
  return (out, u) if return_weights else out


def talking_heads_attention(q, k, v, logits_mix, weights_mix, *, mask=None, bias=None, scale=None,
                            q_offset=0, impl="auto", block_q=DEFAULT_BLOCK_Q):
  """Talking-heads attention through the dispatch table (family "softmax.talking_heads"):
  impl "reference" or "xla"/"auto" (query tiles, one [B, H, block_q, Tk] tile live at a
  time). Shapes as in the reference."""
  return D.dispatch(FAMILY, impl, q, k, v, logits_mix, weights_mix, mask=mask, bias=bias, scale=scale,
                    q_offset=q_offset, block_q=block_q)
