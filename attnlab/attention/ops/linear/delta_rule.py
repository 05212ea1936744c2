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
  (O(T) memory; the chunk body is `jax.checkpoint`ed); W and U do not depend on the state,
  so every chunk's are computed before the scan in one batched solve (as fla's chunk
  kernels do), leaving the scan only the state matmuls;
* `delta_rule_recurrent`: token by token (the decode form).

Gated delta rule (Gated DeltaNet; Yang, Kautz & Hatamizadeh, 2024, "Gated Delta Networks:
Improving Mamba2 with Delta Rule", Eq. 10 / Sec. 3.3): every form takes an optional
`log_alpha` [B, T, H] (log of the decay gate alpha_t in (0, 1]):

    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T

With gamma_i = prod_{s<=i} alpha_s inside a block (Gamma_ij = gamma_i / gamma_j, i >= j):
L = I + tril(diag(beta) (Gamma * K K^T), -1), W = L^{-1} diag(beta gamma) K,
U = L^{-1} diag(beta) V, U' = U - W S_0, O = diag(gamma) Q S_0 + (Gamma * tril(Q K^T)) U',
S_C = gamma_C S_0 + K^T diag(gamma_C / gamma) U'. log_alpha = None is DeltaNet exactly
(no gate arithmetic at all). Gate ratios are formed as exp(G_i - G_j) of the in-block
cumulative log gate only where i >= j (never exp(-G), which would overflow).

Layout: q, k [B, T, H, Dk] (callers L2-normalise k; q is scaled by `scale`, default
Dk^-0.5 as in fla); v [B, T, H, Dv]; beta [B, T, H] in [0, 1]; log_alpha [B, T, H] <= 0.
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


def _forward_substitution(ell, rhs):
  """x with ell @ x = rhs (ell unit lower triangular [..., n, n], rhs [..., n, m]), one row
  per `fori_loop` step: x_i = rhs_i - sum_{j<i} ell_ij x_j (rows >= i of x are still zero,
  so the full-row product is the strict sum)."""
  def body(i, x):
    row = jax.lax.dynamic_index_in_dim(ell, i, -2, keepdims=False)  # [..., n]
    r = jax.lax.dynamic_index_in_dim(rhs, i, -2, keepdims=False) - jnp.einsum("...j,...jm->...m", row, x)
    return jax.lax.dynamic_update_index_in_dim(x, r, i, -2)
  return jax.lax.fori_loop(0, ell.shape[-1], body, jnp.zeros_like(rhs))


def _back_substitution(ell, g):
  """y with ell^T @ y = g, last row first: y_i = g_i - sum_{j>i} ell_ji y_j."""
  n = ell.shape[-1]

  def body(step, y):
    i = n - 1 - step
    col = jax.lax.dynamic_index_in_dim(ell, i, -1, keepdims=False)  # [..., n]: ell[:, i]
    r = jax.lax.dynamic_index_in_dim(g, i, -2, keepdims=False) - jnp.einsum("...j,...jm->...m", col, y)
    return jax.lax.dynamic_update_index_in_dim(y, r, i, -2)
  return jax.lax.fori_loop(0, n, body, jnp.zeros_like(g))


@jax.custom_vjp
def solve_unit_lower(ell, rhs):
  """x with ell @ x = rhs, for unit lower-triangular ell [..., n, n] and rhs [..., n, m].

  Forward substitution in plain XLA ops, n sequential row steps batched over the leading
  axes (callers batch every chunk of a sequence into one solve). The backward is the
  adjoint solve, not autodiff through the loop (which would keep every step's x):
  d rhs = ell^{-T} dx (back substitution), d ell = -tril(d rhs x^T, -1). (Not
  lax.linalg.triangular_solve: on CPU that is a LAPACK custom call into scipy's OpenBLAS,
  which deadlocked a training run when XLA called it from several threads at once.)
  """
  return _forward_substitution(ell, rhs)


def _solve_fwd(ell, rhs):
  x = _forward_substitution(ell, rhs)
  return x, (ell, x)


def _solve_bwd(res, dx):
  ell, x = res
  drhs = _back_substitution(ell, dx)
  n = ell.shape[-1]
  dell = jnp.where(jnp.tril(jnp.ones((n, n), bool), -1), -jnp.einsum("...im,...jm->...ij", drhs, x), 0.0)
  return dell.astype(ell.dtype), drhs


solve_unit_lower.defvjp(_solve_fwd, _solve_bwd)


def _gate_ratios(gh, lower):
  """Gamma_ij = exp(G_i - G_j) where `lower` [C, C] holds, else 0. gh [..., H, C] (the
  in-block cumulative log gate) -> [..., H, C, C]."""
  diff = gh[..., :, None] - gh[..., None, :]
  return jnp.where(lower, jnp.exp(jnp.where(lower, diff, 0.0)), 0.0)


def _wy(k, v, beta, gcum=None):
  """The UT transform of a block (state-independent, so all chunks are solved at once).
  k [..., C, H, Dk], v [..., C, H, Dv], beta [..., C, H], gcum [..., C, H] (in-block
  cumulative log gate, or None: ungated) -> W [..., H, C, Dk], U [..., H, C, Dv]."""
  c = k.shape[-3]
  kh, vh = jnp.swapaxes(k, -3, -2), jnp.swapaxes(v, -3, -2)  # [..., H, C, *]
  bt = jnp.swapaxes(beta, -2, -1)[..., None]  # [..., H, C, 1]
  kk = jnp.einsum("...hid,...hjd->...hij", kh, kh)
  lower = jnp.tril(jnp.ones((c, c), bool), -1)
  if gcum is not None:
    gh = jnp.swapaxes(gcum, -2, -1)  # [..., H, C]
    kk = kk * _gate_ratios(gh, lower)
    kh = kh * jnp.exp(gh)[..., None]  # W = L^{-1} diag(beta gamma) K
  ell = jnp.eye(c, dtype=k.dtype) + jnp.where(lower, bt * kk, 0.0)
  # Forward substitution with the unit lower-triangular L: [W | U] = L^{-1} diag(beta) [K | V].
  wu = solve_unit_lower(ell, bt * jnp.concatenate([kh, vh], -1))
  return wu[..., :k.shape[-1]], wu[..., k.shape[-1]:]


def _block(s, q, k, w, u, gcum=None):
  """One block of the WY/UT form given its W, U. s [B, H, Dk, Dv]; q, k [B, C, H, Dk];
  w [B, H, C, Dk]; u [B, H, C, Dv]; gcum [B, C, H] (in-block cumulative log gate) or None.
  Returns (new state [B, H, Dk, Dv], o [B, C, H, Dv])."""
  c = q.shape[1]
  kh = jnp.moveaxis(k, 1, 2)  # [B, H, C, Dk]
  u = u - jnp.einsum("bhcd,bhdv->bhcv", w, s)  # pseudo-values U' = U - W S_0
  causal = jnp.tril(jnp.ones((c, c), bool))
  qk = jnp.where(causal, jnp.einsum("bihd,bjhd->bhij", q, k), 0.0)
  if gcum is None:
    o = jnp.einsum("bihd,bhdv->bihv", q, s) + jnp.einsum("bhij,bhjv->bihv", qk, u)
    s = s + jnp.einsum("bhcd,bhcv->bhdv", kh, u)
    return s, o
  gh = jnp.moveaxis(gcum, 1, 2)  # [B, H, C]
  qk = qk * _gate_ratios(gh, causal)
  o = (jnp.einsum("bihd,bhdv->bihv", q, s) * jnp.exp(gcum)[..., None]
       + jnp.einsum("bhij,bhjv->bihv", qk, u))
  g_last = gh[..., -1:]  # [B, H, 1]
  s = (s * jnp.exp(g_last)[..., None]
       + jnp.einsum("bhcd,bhcv->bhdv", kh * jnp.exp(g_last - gh)[..., None], u))
  return s, o


def _log_gate(log_alpha):
  return None if log_alpha is None else log_alpha.astype(jnp.float32)


def delta_rule_parallel(q, k, v, beta, *, scale=None, initial_state=None, log_alpha=None):
  """The (gated) delta rule over the whole sequence as one WY block (materialises [T, T]).

  q, k [B, T, H, Dk]; v [B, T, H, Dv]; beta [B, T, H]; initial_state [B, H, Dk, Dv] or None;
  log_alpha [B, T, H] (the gate, see the module docstring) or None.
  Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  q, k, v, beta, s0 = _prep(q, k, v, beta, scale, initial_state)
  g = _log_gate(log_alpha)
  gcum = None if g is None else jnp.cumsum(g, 1)
  s, o = _block(s0, q, k, *_wy(k, v, beta, gcum), gcum)
  return o, s


def delta_rule_chunked(q, k, v, beta, *, scale=None, initial_state=None, chunk_size: int = 64,
                       checkpoint: bool = True, log_alpha=None):
  """Chunked (gated) delta rule (WY representation per chunk, state through `lax.scan`);
  O(T) memory.

  Shapes as `delta_rule_parallel`; T is padded to a multiple of chunk_size with beta = 0
  and log_alpha = 0 (identity transitions, so padding changes nothing).
  """
  q, k, v, beta, s0 = _prep(q, k, v, beta, scale, initial_state)
  t = q.shape[1]
  q, k, v, beta = (to_chunks(pad_time(a, chunk_size), chunk_size) for a in (q, k, v, beta))
  g = _log_gate(log_alpha)
  if g is None:
    w, u = _wy(k, v, beta)  # every chunk's W, U in one batched solve: [N, B, H, C, *]
    return scan_chunks(lambda s, inp: _block(s, *inp), s0, (q, k, w, u), t, checkpoint)
  gcum = jnp.cumsum(to_chunks(pad_time(g, chunk_size), chunk_size), 2)  # [N, B, C, H]
  w, u = _wy(k, v, beta, gcum)
  return scan_chunks(lambda s, inp: _block(s, *inp), s0, (q, k, w, u, gcum), t, checkpoint)


def delta_rule_recurrent(q, k, v, beta, *, scale=None, initial_state=None, log_alpha=None):
  """Token-by-token (gated) delta rule: S = alpha S (if gated); u = beta (v - S^T k);
  S += k u^T; o = S^T q.

  Shapes as `delta_rule_parallel`. Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  q, k, v, beta, s0 = _prep(q, k, v, beta, scale, initial_state)
  g = _log_gate(log_alpha)

  def step(s, inp):
    qt, kt, vt, bt = inp[:4]  # [B, H, *], bt [B, H]
    if g is not None:
      s = s * jnp.exp(inp[4])[..., None, None]
    u = bt[..., None] * (vt - jnp.einsum("bhd,bhdv->bhv", kt, s))
    s = s + kt[..., :, None] * u[..., None, :]
    return s, jnp.einsum("bhd,bhdv->bhv", qt, s)

  xs = (q, k, v, beta) if g is None else (q, k, v, beta, g)
  s, o = jax.lax.scan(step, s0, tuple(jnp.moveaxis(a, 1, 0) for a in xs))
  return jnp.moveaxis(o, 0, 1), s


def delta_rule_attention(q, k, v, beta, *, form: str = "chunked", scale=None, initial_state=None,
                         chunk_size: int = 64, log_alpha=None, impl: str = "auto"):
  """The (gated) delta rule through the dispatch table (family "linear.delta_rule"): impl
  "xla" runs `form` ("chunked" | "parallel" | "recurrent"; `delta_rule_attention_xla`),
  "reference" the materialised `delta_rule_parallel`. Shapes as `delta_rule_parallel`;
  log_alpha [B, T, H] or None (ungated: DeltaNet).
  Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  return D.dispatch(FAMILY, impl, q, k, v, beta, form=form, scale=scale, initial_state=initial_state,
                    chunk_size=chunk_size, log_alpha=log_alpha)


def delta_rule_attention_xla(q, k, v, beta, *, form: str = "chunked", scale=None, initial_state=None,
                             chunk_size: int = 64, log_alpha=None):
  """The (gated) delta rule's forms ("chunked" | "parallel" | "recurrent"), shapes as
  `delta_rule_parallel`. Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  check_form(form)
  kw = dict(scale=scale, initial_state=initial_state, log_alpha=log_alpha)
  if form == "chunked":
    return delta_rule_chunked(q, k, v, beta, chunk_size=chunk_size, **kw)
  if form == "parallel":
    return delta_rule_parallel(q, k, v, beta, **kw)
  return delta_rule_recurrent(q, k, v, beta, **kw)
