"""Reference softmax attention: fp32, materialises the scores. The oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops.common import check_qkv, default_scale, repeat_kv


def dense_bias(bias, tq: int, tk: int, q_offset=0):
  """Materialises a bias: an array broadcastable to [B, H, Tq, Tk], or a callable
  `bias(q_pos [tq], k_pos [tk]) -> [1|B, H, tq, tk]` (e.g. positional.AlibiBias)."""
  if bias is None or not callable(bias):
    return bias
  return bias(jnp.arange(tq) + q_offset, jnp.arange(tk))


def masked_softmax(logits, allowed=None):
  """softmax over the last axis of fp32 logits [..., Tk] restricted to `allowed` (bool,
  broadcastable; None = all). Fully masked rows get all-zero weights, not NaN."""
  if allowed is None:
    return jax.nn.softmax(logits, axis=-1)
  row_any = jnp.any(allowed, axis=-1, keepdims=True)
  logits = jnp.where(allowed & row_any, logits, jnp.where(row_any, -jnp.inf, 0.0))
  return jax.nn.softmax(logits, axis=-1) * row_any


def softmax_attention_reference(q, k, v, *, mask=None, bias=None, scale=None, q_offset=0,
                                return_weights=False):
  """softmax(q k^T * scale + bias, masked) v, computed the obvious way in fp32.

  q [B, Tq, Hq, D], k [B, Tk, Hkv, D], v [B, Tk, Hkv, Dv]; bias an array broadcastable
  to [B, Hq, Tq, Tk] or a callable (see `dense_bias`); mask a `masks.Mask` (query i at
  absolute position q_offset + i). Returns [B, Tq, Hq, Dv] in q's dtype (and the
  weights [B, Hq, Tq, Tk] if return_weights). A fully masked query row outputs zeros.
  """
  _, tq, tk, hq, _, d = check_qkv(q, k, v)
  scale = default_scale(d, scale)
  kf, vf = repeat_kv(k.astype(jnp.float32), hq), repeat_kv(v.astype(jnp.float32), hq)
  s = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), kf) * scale
  bias = dense_bias(bias, tq, tk, q_offset)
  if bias is not None:
    s = s + bias.astype(jnp.float32)
  w = masked_softmax(s, None if mask is None else mask.dense(tq, tk, q_offset)[:, None])
  out = jnp.einsum("bhqk,bkhd->bqhd", w, vf).astype(q.dtype)
  return (out, w) if return_weights else out
