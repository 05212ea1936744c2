"""Differential attention: the difference of two softmax maps over shared values.

Ye et al., 2024, "Differential Transformer" (arXiv:2410.05258), Eq. (1):

    DiffAttn(X) = (softmax(Q1 K1^T / sqrt(d)) - lambda * softmax(Q2 K2^T / sqrt(d))) V

The reference materialises A1 - lambda * A2. Dispatch family "softmax.differential":
  "xla"    one blocked pass over the tiles (blocked.blocked_attention with two maps and
           coefficients (1, -lambda)): masked tiles skipped; the forward keeps o1 and o2
           (two A V products), the backward forms A1 - lambda A2 per tile, so it costs one
           dV and one dO V^T product, not two (fwd+bwd ~8/7 of one softmax call of this width,
           where two separate softmax calls cost ~10/7).
  "cudnn"  two calls of `softmax_attention(impl="cudnn")` combined as o1 - lambda * o2
           (`differential_via`; the map is linear in the two weight matrices).
"""

from __future__ import annotations

import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.softmax.api import softmax_attention
from attnlab.attention.ops.softmax.blocked import blocked_attention
from attnlab.attention.ops.softmax.reference import softmax_attention_reference
from attnlab.attention.ops.softmax.weightings import SOFTMAX

FAMILY = "softmax.differential"


def _lam(lam, hq: int):
  """lambda as fp32 broadcastable to [B, Hq, 1, 1] (scalar or [Hq])."""
  lam = jnp.asarray(lam, jnp.float32)
  if lam.ndim == 0:
    return lam
  if lam.shape != (hq,):
    raise ValueError(f"lambda must be a scalar or [num_q_heads] = [{hq}], got {lam.shape}")
  return lam[None, :, None, None]


def differential_attention_reference(q1, q2, k1, k2, v, lam, *, mask=None, bias=None, scale=None,
                                     q_offset=0, return_weights=False):
  """(A1 - lambda A2) v with A_i = softmax(q_i k_i^T * scale + bias, masked), in fp32.

  q1, q2 [B, Tq, Hq, D]; k1, k2 [B, Tk, Hkv, D]; v [B, Tk, Hkv, Dv]; lam a scalar or [Hq].
  Returns [B, Tq, Hq, Dv] in q1's dtype (and the map A1 - lambda A2 [B, Hq, Tq, Tk] if
  return_weights). Fully masked rows output zeros.
  """
  hq = q1.shape[2]
  _, a1 = softmax_attention_reference(q1, k1, v, mask=mask, bias=bias, scale=scale, q_offset=q_offset,
                                      return_weights=True)
  _, a2 = softmax_attention_reference(q2, k2, v, mask=mask, bias=bias, scale=scale, q_offset=q_offset,
                                      return_weights=True)
  lam = _lam(lam, hq)
  w = a1 - lam * a2
  vf = jnp.repeat(v.astype(jnp.float32), hq // v.shape[2], axis=2)
  out = jnp.einsum("bhqk,bkhd->bqhd", w, vf).astype(q1.dtype)
  return (out, w) if return_weights else out


def differential_attention_blocked(q1, q2, k1, k2, v, lam, *, mask=None, bias=None, scale=None, q_offset=0,
                                   block_q=None, block_k=None):
  """The "xla" implementation: both softmax maps in one blocked pass (masked tiles
  skipped), differentiable in q1, q2, k1, k2, v, lam (and an array bias). Arguments and
  shapes as in `differential_attention_reference`."""
  _lam(lam, q1.shape[2])  # validates the shape
  lam = jnp.asarray(lam, jnp.float32)
  return blocked_attention((q1, q2), (k1, k2), v, SOFTMAX, coefs=(1.0, -lam), mask=mask, bias=bias, scale=scale,
                           q_offset=q_offset, block_q=block_q, block_k=block_k)


def differential_via(softmax_impl: str):
  """The implementation softmax_attention(q1, k1, v) - lambda * softmax_attention(q2, k2, v)
  with softmax impl `softmax_impl`. Same arguments as `differential_attention_reference`."""

  def run(q1, q2, k1, k2, v, lam, *, mask=None, bias=None, scale=None, q_offset=0):
    kw = dict(mask=mask, bias=bias, scale=scale, impl=softmax_impl, q_offset=q_offset)
    o1 = softmax_attention(q1, k1, v, **kw).astype(jnp.float32)
    o2 = softmax_attention(q2, k2, v, **kw).astype(jnp.float32)
    lam = _lam(lam, q1.shape[2])
    lam = lam if lam.ndim == 0 else lam[:, :, 0].swapaxes(1, 2)[..., None]  # [1, 1, Hq, 1]
    return (o1 - lam * o2).astype(q1.dtype)

  return run


def differential_attention(q1, q2, k1, k2, v, lam, *, mask=None, bias=None, scale=None, q_offset=0,
                           impl="auto"):
  """softmax_attention(q1, k1, v) - lambda * softmax_attention(q2, k2, v), dispatched
  (family "softmax.differential"): "reference" materialises the difference map; "xla" runs
  both maps in one blocked pass; "cudnn" runs two cudnn softmax calls; "auto" prefers
  cudnn, then xla.
  Shapes as in the reference.
  """
  return D.dispatch(FAMILY, impl, q1, q2, k1, k2, v, lam, mask=mask, bias=bias, scale=scale,
                    q_offset=q_offset)
