"""Low-rank / compressed softmax attention: pure functions (efficient forms + references).

  linformer:     Wang et al., 2020, "Linformer: Self-Attention with Linear Complexity".
  nystromformer: Xiong et al., 2021, "Nystromformer: A Nystrom-Based Algorithm for
                 Approximating Self-Attention".

Layout: q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv]; computed in
fp32, returned in q's dtype. Both are non-causal (they mix information across all keys).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops.common import check_qkv, default_scale


# ---- Linformer --------------------------------------------------------------------------


def linformer_attention(q, k, v, e, f, *, scale=None):
  """Linformer (Wang et al., 2020, eq. 7): softmax(Q (E K)^T * scale) (F V).

  e, f [k_proj, Tk]: length projections (already sliced to Tk). Memory O(Tq * k_proj).
  q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv].
  """
  _, tq, tk, hq, hkv, d = check_qkv(q, k, v)
  if hq != hkv:
    raise ValueError(f"linformer_attention needs equal query and key/value heads, got {hq} and {hkv}")
  if e.shape[1] != tk or f.shape[1] != tk or e.shape != f.shape:
    raise ValueError(f"E and F must be [k_proj, Tk={tk}], got {e.shape} and {f.shape}")
  kp = jnp.einsum("pt,bthd->bphd", e.astype(jnp.float32), k.astype(jnp.float32))  # [B, k_proj, H, D]
  vp = jnp.einsum("pt,bthd->bphd", f.astype(jnp.float32), v.astype(jnp.float32))
  s = jnp.einsum("bqhd,bphd->bhqp", q.astype(jnp.float32), kp) * default_scale(d, scale)
  return jnp.einsum("bhqp,bphd->bqhd", jax.nn.softmax(s, axis=-1), vp).astype(q.dtype)


def linformer_reference(q, k, v, e, f, *, scale=None):
  """The [Tq, Tk] matrix Linformer implies, materialised:
  out = P F V with P = softmax(Q K^T E^T * scale), written as (P F) V, i.e. attention
  weights over the original keys A = P F [B, H, Tq, Tk] (rows need not sum to 1)."""
  d = q.shape[-1]
  qk = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))  # [B, H, Tq, Tk]
  s = jnp.einsum("bhqk,pk->bhqp", qk, e.astype(jnp.float32)) * default_scale(d, scale)
  a = jnp.einsum("bhqp,pk->bhqk", jax.nn.softmax(s, axis=-1), f.astype(jnp.float32))
  return jnp.einsum("bhqk,bkhd->bqhd", a, v.astype(jnp.float32)).astype(q.dtype)


# ---- Nystromformer ---------------------------------------------------------------------------


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


def nystrom_attention(q, k, v, *, num_landmarks, pinv_iterations=6, scale=None):
  """Nystrom attention (Xiong et al., 2021, eq. 14-15):

    out = softmax(Q K~^T) pinv(softmax(Q~ K~^T)) (softmax(Q~ K^T) V)

  with segment-mean landmarks Q~, K~ [m, D] and scores scaled by `scale`. Computed right
  to left so no [Tq, Tk] array exists: memory O((Tq + Tk) * m).
  q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv].
  """
  _, _, _, hq, hkv, d = check_qkv(q, k, v)
  if hq != hkv:
    raise ValueError(f"nystrom_attention needs equal query and key/value heads, got {hq} and {hkv}")
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
  d = q.shape[-1]
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


__all__ = ["linformer_attention", "linformer_reference", "segment_means", "iterative_pinv",
           "nystrom_attention", "nystrom_reference", "depthwise_conv_seq"]
