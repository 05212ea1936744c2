"""The delta rule (DeltaNet; Schlag et al., 2021; Yang et al., 2024, "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length").

Recurrence (per head; row convention, state S_t [Dk, Dv], so S_t^T is the paper's S_t):

    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,     o_t = S_t^T (scale * q_t)

i.e. the paper's S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T transposed.
Writing u_t = beta_t (v_t - S_{t-1}^T k_t) ("pseudo-values"), S_t = S_0 + sum_{j<=t} k_j u_j^T
and, for a block of C tokens starting from state S_0 (Yang et al., 2024, Sec. 3 / WY
representation, the "UT transform"):

    L = I + tril(diag(beta) K K^T, -1)                      [C, C], unit lower triangular
    W = L^{-1} diag(beta) K,   U = L^{-1} diag(beta) V       (forward substitution)
    U' = U - W S_0                                           (the pseudo-values)
    O = Q S_0 + tril(Q K^T) U'                               (diagonal included)
    S_C = S_0 + K^T U'

Forms, all returning (o [B, T, H, Dv], final state [B, H, Dk, Dv]):

* `delta_rule_parallel`: the block formula over the whole sequence, i.e. the materialised
  [T, T] attention matrix tril(Q K^T) L^{-1} diag(beta) (O(T^2));
* `delta_rule_chunked`: the same formula per chunk, state passed with `lax.scan`
  (O(T) memory; the chunk body is `jax.checkpoint`ed);
* `delta_rule_recurrent`: token by token (the decode form).

Layout: q, k [B, T, H, Dk] (callers L2-normalise k; q is scaled by `scale`, default
Dk^-0.5 as in fla); v [B, T, H, Dv]; beta [B, T, H] in [0, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.linear.common import check_form, pad_time, scan_chunks, to_chunks

FAMILY = "linear.delta_rule"


def _prep(q, k, v, beta, scale, initial_state):
  f32 = jnp.float32
  q, k, v, beta = (a.astype(f32) for a in (q, k, v, beta))
  q = q * (q.shape[-1] ** -0.5 if scale is None else scale)
  b, _, h, dk = q.shape
  s0 = (jnp.zeros((b, h, dk, v.shape[-1]), f32) if initial_state is None
        else initial_state.astype(f32))
  return q, k, v, beta, s0


def solve_unit_lower(ell, rhs, base: int = 8):
  """x with ell @ x = rhs, for unit lower-triangular ell [..., n, n] and rhs [..., n, m].

  Block forward substitution in plain XLA ops: split ell = [[A, 0], [C, D]], solve A x1 = b1,
  then D x2 = b2 - C x1, down to blocks of `base` rows solved row by row. (Not
  lax.linalg.triangular_solve: on CPU that is a LAPACK custom call into scipy's OpenBLAS,
  which deadlocked a training run when XLA called it from several threads at once.)
  """
  n = ell.shape[-1]
  if n <= base:
    rows = []
    for i in range(n):
      r = rhs[..., i, :]
      if i:
        r = r - jnp.einsum("...j,...jm->...m", ell[..., i, :i], jnp.stack(rows, -2))
      rows.append(r)
    return jnp.stack(rows, -2)
  h = n // 2
  x1 = solve_unit_lower(ell[..., :h, :h], rhs[..., :h, :], base)
  x2 = solve_unit_lower(ell[..., h:, h:], rhs[..., h:, :] - ell[..., h:, :h] @ x1, base)
  return jnp.concatenate([x1, x2], -2)


def _block(s, q, k, v, beta):
  """One block of the WY/UT form. s [B, H, Dk, Dv]; q, k [B, C, H, Dk]; v [B, C, H, Dv];
  beta [B, C, H]. Returns (new state [B, H, Dk, Dv], o [B, C, H, Dv])."""
  c = q.shape[1]
  kk = jnp.einsum("bihd,bjhd->bhij", k, k)
  bt = jnp.moveaxis(beta, 1, 2)[..., None]  # [B, H, C, 1]
  lower = jnp.tril(jnp.ones((c, c), bool), -1)
  ell = jnp.eye(c, dtype=q.dtype) + jnp.where(lower, bt * kk, 0.0)
  kh, vh = jnp.moveaxis(k, 1, 2), jnp.moveaxis(v, 1, 2)  # [B, H, C, *]
  # Forward substitution with the unit lower-triangular L: [W | U] = L^{-1} diag(beta) [K | V].
  wu = solve_unit_lower(ell, bt * jnp.concatenate([kh, vh], -1))
  w, u = wu[..., :k.shape[-1]], wu[..., k.shape[-1]:]
  u = u - jnp.einsum("bhcd,bhdv->bhcv", w, s)  # pseudo-values U' = U - W S_0
  qk = jnp.where(jnp.tril(jnp.ones((c, c), bool)), jnp.einsum("bihd,bjhd->bhij", q, k), 0.0)
  o = jnp.einsum("bihd,bhdv->bihv", q, s) + jnp.einsum("bhij,bhjv->bihv", qk, u)
  s = s + jnp.einsum("bhcd,bhcv->bhdv", kh, u)
  return s, o


def delta_rule_parallel(q, k, v, beta, *, scale=None, initial_state=None):
  """The delta rule over the whole sequence as one WY block (materialises [T, T]).

  q, k [B, T, H, Dk]; v [B, T, H, Dv]; beta [B, T, H]; initial_state [B, H, Dk, Dv] or None.
  Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  q, k, v, beta, s0 = _prep(q, k, v, beta, scale, initial_state)
  s, o = _block(s0, q, k, v, beta)
  return o, s


def delta_rule_chunked(q, k, v, beta, *, scale=None, initial_state=None, chunk_size: int = 64,
                       checkpoint: bool = True):
  """Chunked delta rule (WY representation per chunk, state through `lax.scan`); O(T) memory.

  Shapes as `delta_rule_parallel`; T is padded to a multiple of chunk_size with beta = 0
  (identity transitions, so padding changes nothing).
  """
  q, k, v, beta, s0 = _prep(q, k, v, beta, scale, initial_state)
  t = q.shape[1]
  xs = tuple(to_chunks(pad_time(a, chunk_size), chunk_size) for a in (q, k, v, beta))

  def body(s, inp):
    return _block(s, *inp)

  return scan_chunks(body, s0, xs, t, checkpoint)


def delta_rule_recurrent(q, k, v, beta, *, scale=None, initial_state=None):
  """Token-by-token delta rule: u = beta (v - S^T k); S += k u^T; o = S^T q.

  Shapes as `delta_rule_parallel`. Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  q, k, v, beta, s0 = _prep(q, k, v, beta, scale, initial_state)

  def step(s, inp):
    qt, kt, vt, bt = inp  # [B, H, *], bt [B, H]
    u = bt[..., None] * (vt - jnp.einsum("bhd,bhdv->bhv", kt, s))
    s = s + kt[..., :, None] * u[..., None, :]
    return s, jnp.einsum("bhd,bhdv->bhv", qt, s)

  s, o = jax.lax.scan(step, s0, tuple(jnp.moveaxis(a, 1, 0) for a in (q, k, v, beta)))
  return jnp.moveaxis(o, 0, 1), s


def delta_rule_attention(q, k, v, beta, *, form: str = "chunked", scale=None, initial_state=None,
                         chunk_size: int = 64, impl: str = "auto"):
  """The delta rule through the dispatch table (family "linear.delta_rule"): impl "xla"
  runs `form` ("chunked" | "parallel" | "recurrent"; `delta_rule_attention_xla`),
  "reference" the materialised `delta_rule_parallel`. Shapes as `delta_rule_parallel`.
  Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  return D.dispatch(FAMILY, impl, q, k, v, beta, form=form, scale=scale, initial_state=initial_state,
                    chunk_size=chunk_size)


def delta_rule_attention_xla(q, k, v, beta, *, form: str = "chunked", scale=None, initial_state=None,
                             chunk_size: int = 64):
  """The delta rule's forms ("chunked" | "parallel" | "recurrent"), shapes as
  `delta_rule_parallel`. Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  check_form(form)
  if form == "chunked":
    return delta_rule_chunked(q, k, v, beta, scale=scale, initial_state=initial_state,
                              chunk_size=chunk_size)
  if form == "parallel":
    return delta_rule_parallel(q, k, v, beta, scale=scale, initial_state=initial_state)
  return delta_rule_recurrent(q, k, v, beta, scale=scale, initial_state=initial_state)
