"""Shared pieces of the sparse family: gathers and masked softmax.

Used by the content-routed ops (routed.py, block_select.py) and the static gather
(static.py). Layout q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops.common import default_scale


def heads_first(x):
  """[B, T, H, D] -> fp32 [B, H, T, D]."""
  return jnp.swapaxes(x.astype(jnp.float32), 1, 2)


def masked_softmax(s, ok):
  """Softmax of scores s [..., n] over entries where ok; rows with none allowed give zeros.

  Returns (p [..., n], lse [...]) with lse = -inf on empty rows. Gradient-safe (no NaN).
  """
  s = jnp.where(ok, s, -jnp.inf)
  m = jnp.max(s, axis=-1, keepdims=True)
  m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0.0))
  e = jnp.exp(s - m)
  l = jnp.sum(e, axis=-1, keepdims=True)
  empty = l == 0.0
  p = e / jnp.where(empty, 1.0, l)
  lse = jnp.where(empty, -jnp.inf, m + jnp.log(jnp.where(empty, 1.0, l)))[..., 0]
  return p, lse


def gather_rows(x, idx, length=None):
  """x [B, H, T, D], idx int [B, H, ...] -> x[b, h, idx] as [B, H, ..., D].

  With `length`, x is first zero-padded to `length` rows so indices of padding positions
  (in [T, length)) read zeros."""
  if length is not None and length > x.shape[2]:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, length - x.shape[2]), (0, 0)))
  flat = idx.reshape(idx.shape[0], idx.shape[1], -1, 1)
  out = jnp.take_along_axis(x, flat, axis=2)
  return out.reshape(*idx.shape, x.shape[-1])


def dense_masked_attention(q, k, v, ok, scale=None):
  """softmax(q k^T * scale, where ok) v with dense ok [B, H, Tq, Tk]; empty rows -> 0."""
  d = q.shape[-1]
  s = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * default_scale(d, scale)
  p, _ = masked_softmax(s, ok)
  return jnp.einsum("bhqk,bkhd->bqhd", p, v.astype(jnp.float32)).astype(q.dtype)
