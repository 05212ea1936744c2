"""2-simplicial (trilinear) attention: each query attends over pairs of keys.

Clift, Doryn, Murfet & Wallbridge, 2019, "Logic and the 2-Simplicial Transformer" (ICLR
2020), and Roy et al., 2025, "Fast and Simplex: 2-Simplicial Attention in Triton"
(arXiv:2507.02119), Eq. (3)-(5):

  a_ijk = softmax_{(j,k)} ( sum_d q_id k_jd k'_kd / sqrt(D) ),   o_i = sum_{j,k} a_ijk (v_j ⊙ v'_k)

over the allowed pairs (both keys valid and, causal, j, k <= i). Full pairs (Roy et al.'s
sliding windows w1 x w2 are not applied), so compute is O(T^3 D) per head: for short
sequences. Queries run in chunks of `q_chunk` under `jax.checkpoint`, so forward and
backward hold one [q_chunk, S, S] logit block per head at a time (memory O(T^2)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def two_simplicial_attention(q, k1, k2, v1, v2, *, key_valid=None, causal: bool = True, q_offset=0,
                             q_chunk: int = 16):
  """q [B, Tq, H, D]; k1, k2 [B, S, H, D]; v1, v2 [B, S, H, Dv] -> o [B, Tq, H, Dv] (fp32).

  key_valid: bool [B, S] or None (every key valid); causal: query i (absolute position
  q_offset + i, q_offset may be traced) sees pairs with j, k <= its position. A query with
  no allowed pair outputs zeros. q_chunk: queries per block (memory knob only)."""
  if q_chunk < 1:
    raise ValueError(f"two_simplicial_attention: q_chunk must be >= 1, got {q_chunk}")
  b, tq, h, d = q.shape
  s = k1.shape[1]
  f32 = lambda a: a.astype(jnp.float32)  # noqa: E731
  k1, k2, v1, v2 = f32(k1), f32(k2), f32(v1), f32(v2)
  valid = jnp.ones((b, s), bool) if key_valid is None else jnp.asarray(key_valid, bool)
  pair_valid = valid[:, :, None] & valid[:, None, :]  # [B, S, S]
  c = min(q_chunk, tq)
  n = -(-tq // c)
  qp = jnp.pad(f32(q) * d ** -0.5, ((0, 0), (0, n * c - tq), (0, 0), (0, 0)))
  qp = qp.reshape(b, n, c, h, d).transpose(1, 0, 2, 3, 4)  # [n, B, c, H, D]

  @jax.checkpoint
  def block(args):
    qc, start = args
    logits = jnp.einsum("bihd,bjhd,bkhd->bhijk", qc, k1, k2)  # [B, H, c, S, S]
    allowed = jnp.broadcast_to(pair_valid[:, None, None], logits.shape)
    if causal:
      pos = q_offset + start + jnp.arange(c)  # absolute query positions
      keys = jnp.arange(s)
      seen = keys[None, :] <= pos[:, None]  # [c, S]
      allowed = allowed & (seen[:, :, None] & seen[:, None, :])[None, None]
    logits = jnp.where(allowed, logits, -jnp.inf)
    m = jnp.max(logits, axis=(-2, -1), keepdims=True)
    p = jnp.where(allowed, jnp.exp(logits - jnp.where(jnp.isfinite(m), m, 0.0)), 0.0)
    denom = jnp.sum(p, axis=(-2, -1), keepdims=True)
    w = p / jnp.where(denom > 0, denom, 1.0)
    # sum_jk w_ijk v1_j v2_k = sum_j v1_j (sum_k w_ijk v2_k): no [c, S, S, Dv] tensor.
    return jnp.einsum("bhijd,bjhd->bihd", jnp.einsum("bhijk,bkhd->bhijd", w, v2), v1)

  out = jax.lax.map(block, (qp, jnp.arange(n) * c))  # [n, B, c, H, Dv]
  return out.transpose(1, 0, 2, 3, 4).reshape(b, n * c, h, -1)[:, :tq]


__all__ = ["two_simplicial_attention"]
