"""GATv2 scoring as attention (Brody, Alon & Yahav, 2022, "How Attentive are Graph Attention
Networks?", ICLR 2022, Eq. 7), on a sequence: each query i scores every key j by

    e_ij = a_h^T LeakyReLU(q_i + k_j)         (q = x W_q, k = x W_k: the paper's W [x_i || x_j])

per head h, then softmax over the allowed j (+ an optional positional bias) and sum_j w_ij v_j.
The score is not a dot product, so no matmul form exists: the [Tq, Tk, D] pre-activation
is built per query tile (`q_chunk` queries at a time, `lax.map` with the tile body
rematerialised in the backward pass), keeping memory O(q_chunk * Tk * D) per step and
O(T * D) overall; compute is O(Tq * Tk * D).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops.common import repeat_kv
from attnlab.attention.ops.softmax.reference import dense_bias, masked_softmax


def gatv2_weights(q, k, a, *, mask=None, bias=None, q_offset=0, negative_slope: float = 0.2):
  """The materialised GATv2 weights softmax_j(a_h^T LeakyReLU(q_i + k_j) + bias_ij) over
  the allowed j, fp32 [B, H, Tq, Tk]. q [B, Tq, H, D], k [B, Tk, H, D] (heads already
  equal), a [H, D]; query i at absolute position q_offset + i."""
  tq, tk = q.shape[1], k.shape[1]
  pre = jax.nn.leaky_relu(q[:, :, None] + k[:, None], negative_slope)  # [B, Tq, Tk, H, D]
  s = jnp.einsum("bqkhd,hd->bhqk", pre, a)
  pos_bias = dense_bias(bias, tq, tk, q_offset)
  if pos_bias is not None:
    s = s + jnp.asarray(pos_bias, jnp.float32)
  allowed = None if mask is None else mask.dense(tq, tk, q_offset)[:, None]
  return masked_softmax(s, allowed)


def _tile(q, k, v, a, mask, bias, q_offset, negative_slope):
  """One query tile: q [B, C, H, D], k/v [B, Tk, H, D], a [H, D] -> [B, C, H, Dv]."""
  w = gatv2_weights(q, k, a, mask=mask, bias=bias, q_offset=q_offset, negative_slope=negative_slope)
  return jnp.einsum("bhqk,bkhd->bqhd", w, v)


def gatv2_attention(q, k, v, a, *, mask=None, bias=None, q_offset=0, negative_slope: float = 0.2,
                    q_chunk: int = 64):
  """GATv2 attention (module docstring). q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D] (Hq a
  multiple of Hkv), a [Hq, D]; mask: a `masks.Mask` or None; bias: an array or callable
  positional bias (`dense_bias`). Returns [B, Tq, Hq, Dv] in q's dtype; rows with no
  allowed key are zeros."""
  if q_chunk < 1:
    raise ValueError(f"gatv2_attention: q_chunk must be >= 1, got {q_chunk}")
  if jnp.shape(a) != (q.shape[2], q.shape[3]):
    raise ValueError(f"gatv2_attention: a must be [heads, head_dim] = {q.shape[2:]}, got {jnp.shape(a)}")
  f32 = jnp.float32
  h = q.shape[2]
  qf, kf, vf, af = q.astype(f32), repeat_kv(k.astype(f32), h), repeat_kv(v.astype(f32), h), a.astype(f32)
  b, tq = q.shape[:2]
  c = min(q_chunk, tq)
  n = -(-tq // c)
  qp = jnp.pad(qf, ((0, 0), (0, n * c - tq), (0, 0), (0, 0))).reshape(b, n, c, h, -1)

  @jax.checkpoint
  def body(inp):
    i, qt = inp
    return _tile(qt, kf, vf, af, mask, bias, q_offset + i * c, negative_slope)

  out = jax.lax.map(body, (jnp.arange(n), jnp.moveaxis(qp, 1, 0)))  # [N, B, C, H, Dv]
  return jnp.moveaxis(out, 0, 1).reshape(b, n * c, h, -1)[:, :tq].astype(q.dtype)


__all__ = ["gatv2_attention", "gatv2_weights"]
