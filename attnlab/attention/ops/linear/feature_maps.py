"""Feature maps phi for linear attention: phi(q) . phi(k) replaces exp(q . k).

All act on the last axis of x [..., D] (usually [B, T, H, D]) and return [..., F]:

* `elu_plus_one`, `relu`, `identity`: Katharopoulos et al., 2020 (sec. 3.2, eq. 7).
* `favor_logits`, `favor_features`: Performer's positive orthogonal random features
  (FAVOR+, Choromanski et al., 2021).
* `taylor_exp`: Based's second-order Taylor map (Arora et al., 2024).
* `cosformer`: cosFormer's ReLU features with the cos re-weighting split into cos/sin
  halves (Qin et al., 2022).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def elu_plus_one(x):
  """phi(x) = elu(x) + 1 > 0. [..., D] -> [..., D]."""
  return jax.nn.elu(x) + 1.0


def relu(x):
  """phi(x) = max(x, 0). [..., D] -> [..., D]."""
  return jax.nn.relu(x)


def identity(x):
  """phi(x) = x (unnormalised linear attention). [..., D] -> [..., D]."""
  return x


SIMPLE_FEATURE_MAPS = {"elu+1": elu_plus_one, "relu": relu, "identity": identity}


# ---- FAVOR+ ---------------------------------------------------------------------------
def orthogonal_random_features(key, num_features: int, dim: int):
  """Performer's random projection W [num_features, dim] (FAVOR+, sec. 2.4 and App. B).

  Rows come in blocks of `dim` exactly orthogonal directions (QR of a Gaussian matrix),
  each row rescaled by an independent chi(dim)-distributed norm (the norm of a Gaussian
  vector), so every row is marginally N(0, I) and the estimator stays unbiased.
  The QR's columns are multiplied by sign(diag(R)) so that the orthogonal factor is
  Haar-distributed (Mezzadri, 2007, "How to generate random matrices from the classical
  compact groups", Sec. 5): without it LAPACK's Householder QR fixes the sign of each
  column's pivot entry (row r of W had mean ~ -0.7 e_r at dim 8, biasing the estimate).
  """
  n_blocks = -(-num_features // dim)
  kq, kn = jax.random.split(key)
  qmat, rmat = jnp.linalg.qr(jax.random.normal(kq, (n_blocks, dim, dim), jnp.float32))  # batched QR
  qmat = qmat * jnp.sign(jnp.diagonal(rmat, axis1=-2, axis2=-1))[:, None, :]  # Haar: fix column signs
  w = jnp.swapaxes(qmat, -1, -2).reshape(n_blocks * dim, dim)[:num_features]  # rows orthonormal per block
  norms = jnp.linalg.norm(jax.random.normal(kn, (num_features, dim), jnp.float32), axis=-1)
  return w * norms[:, None]


def favor_logits(x, w):
  """FAVOR+ exponents w_r . x' - |x'|^2 / 2 with x' = x D^(-1/4): [..., D] -> [..., M] fp32.

  phi(x) = exp(favor_logits(x, w)) / sqrt(M) is Performer's positive random feature map
  (FAVOR+, Lemma 1): E[phi(q) . phi(k)] = exp(q . k / sqrt(D))."""
  xs = x.astype(jnp.float32) * x.shape[-1] ** -0.25
  return jnp.einsum("...d,md->...m", xs, w) - 0.5 * jnp.sum(xs * xs, axis=-1, keepdims=True)


def favor_features(logits, shift):
  """exp(logits - shift) / sqrt(M): FAVOR+ features divided by exp(shift).

  logits [..., M] from `favor_logits`; shift broadcastable to [..., 1] (a stabiliser the
  caller chooses and accounts for: one value per query, or one per key set, so that it
  cancels in the normalised output; see the performer variant)."""
  return jnp.exp(logits - shift) / math.sqrt(logits.shape[-1])


# ---- Based: Taylor features ----------------------------------------------------------------
def taylor_exp(x):
  """Second-order Taylor features of exp(q . k / sqrt(D)) (Based, Arora et al., 2024, sec. 4).

  x [..., D] -> [..., 1 + D + D^2]: [1, x / D^(1/4), vec(x x^T) / (sqrt(2) sqrt(D))], so
  phi(q) . phi(k) = 1 + s + s^2 / 2 with s = q . k / sqrt(D) (always >= 1/2 > 0).
  """
  d = x.shape[-1]
  x = x.astype(jnp.float32)
  outer = (x[..., :, None] * x[..., None, :]).reshape(x.shape[:-1] + (d * d,))
  return jnp.concatenate(
      [jnp.ones(x.shape[:-1] + (1,), jnp.float32), x * d ** -0.25, outer / (math.sqrt(2.0) * math.sqrt(d))],
      axis=-1)


# ---- cosFormer --------------------------------------------------------------------------------
def cosformer(x, positions, max_len):
  """cosFormer features (Qin et al., 2022, eq. 9-11). x [B, T, H, D], positions int [B, T].

  -> [B, T, H, 2D]: [relu(x) cos(a_i), relu(x) sin(a_i)] with a_i = pi/2 * i / M, so
  phi(q_i) . phi(k_j) = relu(q_i) . relu(k_j) cos(pi/2 * (i - j) / M) by
  cos(a - b) = cos a cos b + sin a sin b.
  """
  ang = (jnp.pi / 2) * positions.astype(jnp.float32)[:, :, None, None] / max_len
  r = jax.nn.relu(x.astype(jnp.float32))
  return jnp.concatenate([r * jnp.cos(ang), r * jnp.sin(ang)], axis=-1)
