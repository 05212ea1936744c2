"""Magnitude-Aware Linear Attention (MALA; Fan et al., 2025, "Rectifying Magnitude Neglect
in Linear Attention", ICCV 2025, arXiv:2507.00698).

Plain linear attention o_i = phi(q_i) S / phi(q_i) z is invariant to the scale of phi(q_i)
(the paper's Eq. 4: the query magnitude cancels). MALA replaces the division by a scaling
factor beta and an offset gamma that make the weights sum to one *additively*:

    a_ij  = scale * phi(q_i) . phi(k_j) / N_i            (scores; N_i = number of keys i sees)
    Z_i   = sum_j a_ij
    beta_i = 1 + 1 / Z_i,     gamma_i = Z_i / N_i
    o_i   = sum_j (beta_i a_ij - gamma_i) v_j = beta_i sum_j a_ij v_j - gamma_i sum_j v_j

so sum_j (beta_i a_ij - gamma_i) = Z_i + 1 - Z_i = 1, and scaling phi(q_i) by s > 1
sharpens the weights (the paper's MALA equation defining beta and gamma, Sec. 3; the
normalisation of the scores by `scale / N` and the eps in 1 / (Z + eps) follow the
official code, qhfan/MALA `AddLinearAttention`: z = q @ mean(k) * scale, res = q @ kv *
(1 + 1 / (z + 1e-6)) - z * mean(v)).

Non-causal (the paper's setting): N_i = N, sums over all keys. Causal (ours): sums over
j <= i and N_i = the number of (valid) keys j <= i; the weights still sum to one per
query, so the math carries over unchanged.

Layout: qf, kf [B, T, H, Dk] are the *features* phi(q), phi(k) (positive; the module uses
elu + 1 as the official code); v [B, T, H, Dv]; key_valid bool [B, T] or None (invalid
keys contribute nothing and are not counted in N). Output [B, T, H, Dv].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.linear.common import check_form, pad_time, scan_chunks, to_chunks

FAMILY = "linear.mala"
EPS = 1e-6


def _prep(qf, kf, v, key_valid, scale):
  f32 = jnp.float32
  qf, kf, v = (a.astype(f32) for a in (qf, kf, v))
  b, t = kf.shape[:2]
  valid = jnp.ones((b, t), f32) if key_valid is None else key_valid.astype(f32)
  kf = kf * valid[:, :, None, None]
  v = v * valid[:, :, None, None]
  qf = qf * (qf.shape[-1] ** -0.5 if scale is None else scale)
  return qf, kf, v, valid


def _combine(num, den, vsum, count):
  """o = (1 + 1/(Z + eps)) num / N - (Z / N) vsum with Z = den / N.

  num [..., Dv] = sum_j (q.k_j) v_j, den [...] = sum_j q.k_j, vsum [..., Dv], count [...]."""
  n = jnp.maximum(count, 1.0)
  z = den / n
  return (1.0 + 1.0 / (z + EPS))[..., None] * num / n[..., None] - (z / n)[..., None] * vsum


def mala_parallel(qf, kf, v, *, causal: bool, key_valid=None, scale=None):
  """Materialised MALA: the [T, T] weights beta_i a_ij - gamma_i, masked, times v.

  Shapes as the module docstring. Returns [B, T, H, Dv]. O(T^2): the oracle.
  """
  qf, kf, v, valid = _prep(qf, kf, v, key_valid, scale)
  t = qf.shape[1]
  allowed = valid[:, None, :] > 0  # [B, Ti, Tj]
  if causal:
    allowed = allowed & (jnp.arange(t)[:, None] >= jnp.arange(t)[None, :])
  allowed = allowed[:, None]  # [B, 1, Ti, Tj]
  n = jnp.maximum(jnp.sum(allowed, -1).astype(jnp.float32), 1.0)  # [B, 1, Ti]
  a = jnp.where(allowed, jnp.einsum("bihd,bjhd->bhij", qf, kf), 0.0) / n[..., None]
  z = jnp.sum(a, -1)
  w = (1.0 + 1.0 / (z + EPS))[..., None] * a - jnp.where(allowed, (z / n)[..., None], 0.0)
  return jnp.einsum("bhij,bjhv->bihv", w, v)


def mala_global(qf, kf, v, *, key_valid=None, scale=None):
  """Non-causal MALA in O(T): global sums S = sum_j phi(k_j) v_j^T, z, sum v, N.

  Shapes as the module docstring. Returns [B, T, H, Dv].
  """
  qf, kf, v, valid = _prep(qf, kf, v, key_valid, scale)
  s = jnp.einsum("bjhd,bjhv->bhdv", kf, v)
  num = jnp.einsum("bihd,bhdv->bihv", qf, s)
  den = jnp.einsum("bihd,bhd->bih", qf, jnp.sum(kf, 1))
  vsum = jnp.sum(v, 1)[:, None]  # [B, 1, H, Dv]
  count = jnp.sum(valid, 1)[:, None, None]  # [B, 1, 1]
  return _combine(num, den, vsum, jnp.broadcast_to(count, den.shape))


def init_state(batch, heads, dk, dv):
  """Zero causal state: (S [B, H, Dk, Dv], z [B, H, Dk], vsum [B, H, Dv], count [B])."""
  f32 = jnp.float32
  return (jnp.zeros((batch, heads, dk, dv), f32), jnp.zeros((batch, heads, dk), f32),
          jnp.zeros((batch, heads, dv), f32), jnp.zeros((batch,), f32))


def mala_chunked(qf, kf, v, *, key_valid=None, scale=None, initial_state=None,
                 chunk_size: int = 64, checkpoint: bool = True):
  """Causal MALA, chunked: intra-chunk [C, C] scores, state (S, z, vsum, count) through
  `lax.scan`; O(T) memory. Returns (o [B, T, H, Dv], final state)."""
  qf, kf, v, valid = _prep(qf, kf, v, key_valid, scale)
  b, t, h, dk = qf.shape
  st0 = init_state(b, h, dk, v.shape[-1]) if initial_state is None else initial_state
  xs = tuple(to_chunks(pad_time(a, chunk_size), chunk_size) for a in (qf, kf, v, valid))
  tri = jnp.tril(jnp.ones((chunk_size, chunk_size), bool))

  def body(st, inp):
    s, z, vs, cnt = st
    qc, kc, vc, valc = inp
    a = jnp.where(tri, jnp.einsum("bihd,bjhd->bhij", qc, kc), 0.0)
    num = jnp.einsum("bihd,bhdv->bihv", qc, s) + jnp.einsum("bhij,bjhv->bihv", a, vc)
    den = jnp.einsum("bihd,bhd->bih", qc, z) + jnp.moveaxis(jnp.sum(a, -1), 1, 2)
    vsum = vs[:, None] + jnp.cumsum(vc, 1)
    count = cnt[:, None] + jnp.cumsum(valc, 1)  # [B, C]
    o = _combine(num, den, vsum, jnp.broadcast_to(count[..., None], den.shape))
    st = (s + jnp.einsum("bjhd,bjhv->bhdv", kc, vc), z + jnp.sum(kc, 1), vs + jnp.sum(vc, 1),
          cnt + jnp.sum(valc, 1))
    return st, o

  return scan_chunks(body, st0, xs, t, checkpoint)


def mala_recurrent(qf, kf, v, *, key_valid=None, scale=None, initial_state=None):
  """Causal MALA token by token (the decode form). Returns (o [B, T, H, Dv], final state)."""
  qf, kf, v, valid = _prep(qf, kf, v, key_valid, scale)
  b, _, h, dk = qf.shape
  st0 = init_state(b, h, dk, v.shape[-1]) if initial_state is None else initial_state

  def step(st, inp):
    s, z, vs, cnt = st
    qt, kt, vt, valt = inp
    s = s + kt[..., :, None] * vt[..., None, :]
    z, vs, cnt = z + kt, vs + vt, cnt + valt
    num = jnp.einsum("bhd,bhdv->bhv", qt, s)
    den = jnp.einsum("bhd,bhd->bh", qt, z)
    o = _combine(num, den, vs, jnp.broadcast_to(cnt[:, None], den.shape))
    return (s, z, vs, cnt), o

  st, o = jax.lax.scan(step, st0, tuple(jnp.moveaxis(a, 1, 0) for a in (qf, kf, v, valid)))
  return jnp.moveaxis(o, 0, 1), st


def mala_attention(qf, kf, v, *, causal: bool, form: str = "chunked", key_valid=None, scale=None,
                   chunk_size: int = 64, impl: str = "auto"):
  """MALA through the dispatch table (family "linear.mala"): impl "xla" runs `form`
  (`mala_attention_xla`), "reference" the materialised `mala_parallel`.
  Shapes as the module docstring. Returns o [B, T, H, Dv].
  """
  return D.dispatch(FAMILY, impl, qf, kf, v, causal=causal, form=form, key_valid=key_valid, scale=scale,
                    chunk_size=chunk_size)


def mala_attention_xla(qf, kf, v, *, causal: bool, form: str = "chunked", key_valid=None, scale=None,
                       chunk_size: int = 64):
  """MALA's forms: causal "chunked" | "parallel" | "recurrent"; non-causal "chunked" (the
  O(T) global-sum form) | "parallel" ("recurrent" has no non-causal meaning and raises).
  Returns o [B, T, H, Dv].
  """
  check_form(form, causal)
  if form == "parallel":
    return mala_parallel(qf, kf, v, causal=causal, key_valid=key_valid, scale=scale)
  if not causal:
    return mala_global(qf, kf, v, key_valid=key_valid, scale=scale)
  if form == "chunked":
    return mala_chunked(qf, kf, v, key_valid=key_valid, scale=scale, chunk_size=chunk_size)[0]
  return mala_recurrent(qf, kf, v, key_valid=key_valid, scale=scale)[0]
