"""Scalable-Softmax (SSMax) attention: logits scaled by s * log(n).

Nakanishi, 2025, "Scalable-Softmax Is Superior for Attention" (arXiv:2501.19399), Eq. (3):

    SSMax(z)_i = n^(s z_i) / sum_j n^(s z_j) = softmax((s log n) z)_i,
    a_i = softmax((s log n) q_i K^T / sqrt(d))

with n the number of keys the query sees (causal: position + 1) and s a learned scalar
per head; the paper's "with bias" variant uses (s log n + b). Because the factor is a
per-(query, head) scalar, SSMax attention is softmax attention with the *query* scaled by
s log n: the efficient path reuses `softmax_attention` (and whatever blocked / kernel
implementations it dispatches to). A positional bias (ALiBi) is added after the scaling.
Its dispatch family "softmax.scalable" has the reference below and one implementation per
fast softmax implementation (`scalable_softmax_via`).
"""

from __future__ import annotations

import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.softmax.api import softmax_attention
from attnlab.attention.ops.softmax.common import attention_scores, dense_allowed, weighted_values
from attnlab.attention.ops.softmax.reference import dense_bias, masked_softmax

FAMILY = "softmax.scalable"


def visible_keys(mask, tq: int, tk: int, q_offset=0):
  """n: how many keys each query may see, int32 [B|1, Tq].

  No mask: Tk. Exactly `masks.Causal()`: min(position + 1, Tk) in closed form (no [Tq, Tk]
  array). Any other mask: counted from its dense form.
  """
  if mask is None:
    return jnp.full((1, tq), tk, jnp.int32)
  if isinstance(mask, M.Causal):
    pos = jnp.arange(tq) + q_offset
    return jnp.clip(pos + 1, 0, tk).astype(jnp.int32)[None]
  return jnp.sum(mask.dense(tq, tk, q_offset), axis=-1).astype(jnp.int32)


def ssmax_factor(s, n, b=None):
  """s log(n) (+ b): s [H], n int [B|1, Tq] -> [B|1, Tq, H] fp32 (log of n < 1 taken as 0)."""
  logn = jnp.log(jnp.maximum(n, 1).astype(jnp.float32))[..., None]
  f = jnp.asarray(s, jnp.float32) * logn
  return f if b is None else f + jnp.asarray(b, jnp.float32)


def scalable_softmax_attention_reference(q, k, v, s, *, b=None, mask=None, bias=None, scale=None,
                                         q_offset=0, return_weights=False):
  """softmax((s_h log n_i + b_h) q_i k_j^T * scale + bias_ij) v, materialised in fp32.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv], s (and b) [Hq]. n_i counts the
  keys query i may see under `mask`. Fully masked rows output zeros. Returns
  [B, Tq, Hq, Dv] in q's dtype (and the weights [B, Hq, Tq, Tk] if return_weights).
  """
  tq, tk = q.shape[1], k.shape[1]
  z = attention_scores(q, k, scale=scale)  # [B, H, Tq, Tk]
  f = ssmax_factor(s, visible_keys(mask, tq, tk, q_offset), b)  # [B|1, Tq, H]
  logits = z * jnp.swapaxes(f, 1, 2)[..., None]
  pos_bias = dense_bias(bias, tq, tk, q_offset)
  if pos_bias is not None:
    logits = logits + jnp.asarray(pos_bias).astype(jnp.float32)
  allowed = dense_allowed(mask, tq, tk, q_offset)
  w = masked_softmax(logits, allowed)
  out = weighted_values(w, v, q.dtype)
  return (out, w) if return_weights else out


def scalable_softmax_via(softmax_impl: str):
  """The SSMax implementation that runs `softmax_attention(impl=softmax_impl)` on queries
  scaled by s log n (+ b). Same arguments as `scalable_softmax_attention_reference`."""

  def run(q, k, v, s, *, b=None, mask=None, bias=None, scale=None, q_offset=0):
    f = ssmax_factor(s, visible_keys(mask, q.shape[1], k.shape[1], q_offset), b)  # [B|1, Tq, H]
    q_scaled = (q.astype(jnp.float32) * f[..., None]).astype(q.dtype)
    return softmax_attention(q_scaled, k, v, mask=mask, bias=bias, scale=scale, impl=softmax_impl,
                             q_offset=q_offset)

  return run


def scalable_softmax_attention(q, k, v, s, *, b=None, mask=None, bias=None, scale=None, q_offset=0,
                               impl="auto"):
  """SSMax attention through the dispatch table (family "softmax.scalable"): "reference"
  materialises the SSMax map; "xla" / "cudnn" are softmax attention of that impl on queries
  scaled by s log n (+ b); "auto" prefers cudnn, then xla. Shapes as in the reference.
  """
  if jnp.shape(s) != (q.shape[2],):
    raise ValueError(f"s must be [num_q_heads] = [{q.shape[2]}], got {jnp.shape(s)}")
  return D.dispatch(FAMILY, impl, q, k, v, s, b=b, mask=mask, bias=bias, scale=scale, q_offset=q_offset)
