"""Nystromformer attention (Xiong et al., 2021, "Nystromformer: A Nystrom-Based Algorithm
for Approximating Self-Attention"): efficient form, materialised reference and the value
skip convolution.

Layout: q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv]; computed in
fp32, returned in q's dtype. Non-causal (the landmarks mix information across all keys).
Dispatch family "lowrank.nystrom".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.common import check_equal_heads, default_scale

FAMILY = "lowrank.nystrom"


def segment_means(x, num_landmarks):
  """Landmarks as means of `num_landmarks` equal consecutive segments (Xiong et al., 2021,
  Sec. 3.2). x [B, T, H, D] (T divisible by num_landmarks) -> [B, m, H, D]."""
  b, t, h, d = x.shape
  if t % num_landmarks:
    raise ValueError(f"sequence length {t} must be divisible by num_landmarks={num_landmarks}")
  return x.astype(jnp.float32).reshape(b, num_landmarks, t // num_landmarks, h, d).mean(axis=2)


def iterative_pinv(a, iterations=6):
  """Iterative Moore-Penrose pseudo-inverse (Xiong et al., 2021, eq. 16, after Razavi et al.):

    Z_0 = A^T / (||A||_1 ||A||_inf),
    Z_{j+1} = 1/4 Z_j (13 I - A Z_j (15 I - A Z_j (7 I - A Z_j))).

  The norms are taken per matrix (the official code takes one max over the whole batch,
  coupling examples; per matrix is the paper's formula). a [..., m, m] -> [..., m, m].
  """
  m = a.shape[-1]
  eye = jnp.eye(m, dtype=a.dtype)
  norm1 = jnp.max(jnp.sum(jnp.abs(a), axis=-2), axis=-1)  # max column sum
  norminf = jnp.max(jnp.sum(jnp.abs(a), axis=-1), axis=-1)  # max row sum
  z = jnp.swapaxes(a, -1, -2) / (norm1 * norminf)[..., None, None]
  for _ in range(iterations):
    az = a @ z
    z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
  return z


def nystrom_attention(q, k, v, *, num_landmarks, pinv_iterations=6, scale=None, impl="auto"):
  """Nystrom attention through the dispatch table (family "lowrank.nystrom"): "xla"
  (`nystrom_attention_xla`, right to left, no [Tq, Tk] array) or "reference"
  (`nystrom_reference`, the materialised matrix). Same shapes."""
  return D.dispatch(FAMILY, impl, q, k, v, num_landmarks=num_landmarks, pinv_iterations=pinv_iterations,
                    scale=scale)


def nystrom_attention_xla(q, k, v, *, num_landmarks, pinv_iterations=6, scale=None):
  """Nystrom attention (Xiong et al., 2021, eq. 14-15):

    out = softmax(Q K~^T) pinv(softmax(Q~ K~^T)) (softmax(Q~ K^T) V)

  with segment-mean landmarks Q~, K~ [m, D] and scores scaled by `scale`. Computed right
  to left so no [Tq, Tk] array exists: memory O((Tq + Tk) * m).
  q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv].
  """
  d = check_equal_heads(q, k, v, "nystrom_attention")[-1]
  scale = default_scale(d, scale)
  qf, kf, vf = q.astype(jnp.float32) * scale, k.astype(jnp.float32), v.astype(jnp.float32)
  ql, kl = segment_means(qf, num_landmarks), segment_means(kf, num_landmarks)
  k1 = jax.nn.softmax(jnp.einsum("bqhd,bmhd->bhqm", qf, kl), axis=-1)  # [B, H, Tq, m]
  k2 = jax.nn.softmax(jnp.einsum("bnhd,bmhd->bhnm", ql, kl), axis=-1)  # [B, H, m, m]
  k3 = jax.nn.softmax(jnp.einsum("bmhd,bkhd->bhmk", ql, kf), axis=-1)  # [B, H, m, Tk]
  k3v = jnp.einsum("bhmk,bkhd->bhmd", k3, vf)
  out = jnp.einsum("bhqm,bhmd->bqhd", k1, iterative_pinv(k2, pinv_iterations) @ k3v)
  return out.astype(q.dtype)


def nystrom_reference(q, k, v, *, num_landmarks, pinv_iterations=6, scale=None):
  """Materialised Nystrom attention: the [Tq, Tk] matrix S^ = F~ pinv(A~) B~ (eq. 14), then S^ V."""
  d = check_equal_heads(q, k, v, "nystrom_reference")[-1]
  scale = default_scale(d, scale)
  qf, kf = q.astype(jnp.float32) * scale, k.astype(jnp.float32)
  ql, kl = segment_means(qf, num_landmarks), segment_means(kf, num_landmarks)
  f = jax.nn.softmax(jnp.einsum("bqhd,bmhd->bhqm", qf, kl), axis=-1)
  a = jax.nn.softmax(jnp.einsum("bnhd,bmhd->bhnm", ql, kl), axis=-1)
  bt = jax.nn.softmax(jnp.einsum("bmhd,bkhd->bhmk", ql, kf), axis=-1)
  s_hat = f @ iterative_pinv(a, pinv_iterations) @ bt  # [B, H, Tq, Tk]
  return jnp.einsum("bhqk,bkhd->bqhd", s_hat, v.astype(jnp.float32)).astype(q.dtype)


def depthwise_conv_seq(v, kernel):
  """Per-head depthwise convolution along the sequence ("same" zero padding), the
  Nystromformer skip connection on values (official code: Conv2d(H, H, (ks, 1), groups=H)).

  v [B, T, H, D], kernel [ks, H] (ks odd) -> [B, T, H, D]: out[t] = sum_j kernel[j] v[t + j - ks // 2].
  """
  ks, h = kernel.shape
  b, t, _, d = v.shape
  x = jnp.transpose(v.astype(jnp.float32), (0, 3, 1, 2)).reshape(b * d, t, h)  # NWC
  out = jax.lax.conv_general_dilated(
      x, kernel.astype(jnp.float32)[:, None, :], window_strides=(1,), padding=[(ks // 2, ks // 2)],
      dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=h)
  return jnp.transpose(out.reshape(b, d, t, h), (0, 2, 3, 1)).astype(v.dtype)


__all__ = ["segment_means", "iterative_pinv", "nystrom_attention", "nystrom_attention_xla", "nystrom_reference",
           "depthwise_conv_seq"]
