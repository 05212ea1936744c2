"""Linear attention with optional per-step decay: parallel (oracle), chunked and recurrent forms.

The one core shared by the linear / decay / gated families (like fla's
`ops/<family>/{naive,chunk,fused_recurrent}.py`). Inputs are already feature-mapped:

    q, k: [B, T, H, Dk]    (phi(q), phi(k): the caller applies its feature map)
    v:    [B, T, Hkv, Dv]  (k/v heads may divide q heads: GQA, repeated here)

Causal recurrence (Katharopoulos et al., 2020, eq. 18-20; with decay as in RetNet,
Sun et al., 2023, eq. 1-4, and GLA, Yang et al., 2024, eq. 3):

    S_t = diag(a_t) S_{t-1} + k_t^T v_t        S: [Dk, Dv] per (batch, head)
    o_t = scale * q_t S_t                        a_t = exp(log_decay_t) in (0, 1]

so o_i = scale * sum_{j <= i} (q_i * exp(b_i - b_j)) . k_j  v_j  with b = cumsum(log_decay)
(the attention matrix it implies). `log_decay` may be

  * None: no decay (plain linear attention);
  * [H]: a per-head constant (RetNet, Lightning / TransNormerLLM);
  * [B, T, H]: data dependent, one scalar per step and head (Mamba-2 style);
  * [B, T, H, Dk]: data dependent per key channel (GLA).

It must be <= 0 (a decay, not a growth); every exponential below is of a non-positive
number, so the chunked form is stable for any decay strength.

`normalize=True` adds the Katharopoulos denominator: o_t = (q_t S_t) / (q_t z_t + eps) with
z_t = diag(a_t) z_{t-1} + k_t (the same decayed recurrence with v = 1). It is computed by
appending a ones column to v, so every form supports it and the recurrent state then has
Dv + 1 value columns (the last holds z). `eps` is a float or an array broadcastable to
[B, Tq, H, 1] (a per-query eps, for feature maps that rescale each query, e.g. FAVOR+).

Non-causal (`causal=False`, no decay only) is the global form phi(Q) (phi(K)^T V): O(T),
and q may have a different length than k/v (cross-attention).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.common import repeat_kv
from attnlab.attention.ops.linear.common import check_form

DEFAULT_CHUNK = 64
FAMILY = "linear"


# ---- shared preparation -------------------------------------------------------------
def _check(q, k, v, causal):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"q, k, v must be [batch, len, heads, dim]; got {q.shape}, {k.shape}, {v.shape}")
  if q.shape[0] != k.shape[0] or k.shape[:3] != v.shape[:3]:
    raise ValueError(f"incompatible shapes q {q.shape}, k {k.shape}, v {v.shape}")
  if q.shape[-1] != k.shape[-1]:
    raise ValueError(f"q and k feature dims differ: q {q.shape}, k {k.shape}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of key/value heads ({k.shape[2]})")
  if causal and q.shape[1] != k.shape[1]:
    raise ValueError(f"causal linear attention needs equal q/k lengths, got {q.shape[1]} and {k.shape[1]}")


def _prepare(q, k, v, log_decay, causal, normalize):
  """fp32 copies, kv heads repeated, ones column for the normaliser, decay as [B, T, H, 1|Dk]."""
  _check(q, k, v, causal)
  h = q.shape[2]
  qf = q.astype(jnp.float32)
  kf = repeat_kv(k.astype(jnp.float32), h)
  vf = repeat_kv(v.astype(jnp.float32), h)
  if normalize:
    vf = jnp.concatenate([vf, jnp.ones(vf.shape[:-1] + (1,), jnp.float32)], axis=-1)
  g = None
  if log_decay is not None:
    if not causal:
      raise ValueError("decay is directional: log_decay needs causal=True")
    g = _decay_4d(log_decay, q.shape)
  return qf, kf, vf, g


def _decay_4d(log_decay, q_shape):
  """log_decay [H] | [B, T, H] | [B, T, H, Dk] -> fp32 broadcastable [B|1, T|1, H, 1|Dk]."""
  b, t, h, dk = q_shape
  g = jnp.asarray(log_decay, jnp.float32)
  if g.shape == (h,):
    return g[None, None, :, None]
  if g.shape == (b, t, h):
    return g[..., None]
  if g.shape == (b, t, h, dk):
    return g
  raise ValueError(f"log_decay must be [H], [B, T, H] or [B, T, H, Dk] = {(h,)}, {(b, t, h)} or "
                   f"{(b, t, h, dk)}; got {g.shape}")


def _finish(out, normalize, eps, dtype):
  """Splits off the normaliser column and divides; casts to the input dtype."""
  if normalize:
    out = out[..., :-1] / (out[..., -1:] + eps)
  return out.astype(dtype)


# Each form is jitted (static: flags, sizes, scale) so eager callers (decode loops,
# debugging) reuse one compiled executable per shape instead of re-tracing the scans.
def _jit(*static):
  return functools.partial(jax.jit, static_argnames=("normalize", "scale") + static)


# ---- parallel (materialised) form: the oracle ------------------------------------------
@_jit("causal", "return_weights")
def linear_attention_parallel(q, k, v, *, log_decay=None, causal=True, normalize=False,
                              scale=1.0, eps=1e-6, return_weights=False):
  """Materialises the [T, T] attention matrix the recurrence implies. The oracle; O(T^2).

  q [B, Tq, H, Dk], k [B, Tk, Hkv, Dk], v [B, Tk, Hkv, Dv], log_decay None | [H] |
  [B, T, H] | [B, T, H, Dk] (causal only) -> [B, Tq, H, Dv] in q's dtype.
  A[i, j] = scale * sum_d q_id k_jd exp(b_id - b_jd) for j <= i (b = cumsum(log_decay)).
  return_weights: also the matrix the output applies to v, [B, H, Tq, Tk] fp32: A, or
  with normalize A[i, j] / (sum_j A[i, j] + eps_i) (Katharopoulos et al.'s normaliser).
  """
  qf, kf, vf, g = _prepare(q, k, v, log_decay, causal, normalize)
  tq, tk = qf.shape[1], kf.shape[1]
  allowed = jnp.tril(jnp.ones((tq, tk), bool)) if causal else jnp.ones((tq, tk), bool)
  if g is None:
    a = jnp.einsum("bihd,bjhd->bhij", qf, kf)
  else:
    bcum = jnp.cumsum(jnp.broadcast_to(g, qf.shape[:3] + (g.shape[-1],)), axis=1)  # [B, T, H, 1|Dk]
    diff = bcum[:, :, None] - bcum[:, None, :]  # [B, Ti, Tj, H, 1|Dk]
    # Mask before exponentiating: above the diagonal diff > 0 and may overflow.
    w = jnp.exp(jnp.where(allowed[None, :, :, None, None], diff, -jnp.inf))
    a = jnp.einsum("bihd,bjhd,bijhd->bhij", qf, kf, jnp.broadcast_to(w, w.shape[:4] + (qf.shape[-1],)))
  a = jnp.where(allowed, a, 0.0) * scale
  out = jnp.einsum("bhij,bjhe->bihe", a, vf)
  if return_weights:
    # The normaliser column of `out` is sum_j A[i, j]; eps may be per query ([B, T, H, 1]).
    w = a / jnp.swapaxes(out[..., -1:] + eps, 1, 2) if normalize else a
    return _finish(out, normalize, eps, q.dtype), w
  return _finish(out, normalize, eps, q.dtype)


# ---- chunked form: the default XLA path ---------------------------------------------------
def _chunk_body(carry, xs, *, scale, has_decay):
  """One chunk. carry S [B, H, Dk, Dv']; xs q/k [B, C, H, Dk], v [B, C, H, Dv'], g [B, C, H, 1|Dk].

  With b = cumsum of g inside the chunk (b_0 = first step's own decay, b_last = total):
    intra o_i = sum_{j <= i} (q_i exp(b_i - b_j)) . k_j v_j   (masked [C, C], eq. of
      Lightning Attention-2 Alg. 1 / GLA sec. 3.3, secondary-level exps kept <= 0)
    inter o_i += (q_i * exp(b_i)) S                            (state entering the chunk)
    S' = exp(b_last) * S + sum_j (k_j * exp(b_last - b_j))^T v_j
  """
  s = carry
  q, k, v, g = xs
  c = q.shape[1]
  causal_mask = jnp.tril(jnp.ones((c, c), bool))
  if not has_decay:
    a = jnp.where(causal_mask, jnp.einsum("bihd,bjhd->bhij", q, k), 0.0)
    o = jnp.einsum("bhij,bjhe->bihe", a, v) + jnp.einsum("bihd,bhde->bihe", q, s)
    s = s + jnp.einsum("bjhd,bjhe->bhde", k, v)
    return s, o * scale
  bcum = jnp.cumsum(jnp.broadcast_to(g, q.shape[:3] + (g.shape[-1],)), axis=1)  # [B, C, H, 1|Dk]
  diff = bcum[:, :, None] - bcum[:, None, :]  # [B, Ci, Cj, H, 1|Dk], <= 0 where j <= i
  w = jnp.exp(jnp.where(causal_mask[None, :, :, None, None], diff, -jnp.inf))
  if g.shape[-1] == 1:  # scalar decay per step: one [C, C] decay matrix per head
    a = jnp.einsum("bihd,bjhd->bhij", q, k) * jnp.moveaxis(w[..., 0], 3, 1)
  else:  # per-channel decay (GLA): the decay sits inside the dot product
    a = jnp.einsum("bihd,bjhd,bijhd->bhij", q, k, w)
  blast = bcum[:, -1:]  # [B, 1, H, 1|Dk]
  o = jnp.einsum("bhij,bjhe->bihe", a, v) + jnp.einsum("bihd,bhde->bihe", q * jnp.exp(bcum), s)
  k_to_end = k * jnp.exp(blast - bcum)
  s = jnp.exp(jnp.moveaxis(blast, 1, -1)) * s + jnp.einsum("bjhd,bjhe->bhde", k_to_end, v)
  return s, o * scale


@_jit("causal", "chunk_size", "return_state")
def linear_attention_chunked(q, k, v, *, log_decay=None, causal=True, normalize=False,
                             scale=1.0, eps=1e-6, chunk_size=DEFAULT_CHUNK, initial_state=None,
                             return_state=False):
  """Chunk-parallel linear attention: O(T * chunk) memory and compute, no [T, T] array.

  Shapes as `linear_attention_parallel`. Causal: the sequence is cut into chunks of
  `chunk_size` (zero padded at the end, which leaves the state unchanged); each chunk does
  its masked [C, C] part in parallel and reads the state [B, H, Dk, Dv] carried through
  a `lax.scan`. The chunk body is `jax.checkpoint`ed so the backward pass keeps only the
  per-chunk states (O(T / C * Dk * Dv)), recomputing the [C, C] blocks.
  Non-causal: the global form (phi(Q) (phi(K)^T V)).
  `initial_state` [B, H, Dk, Dv(+1 if normalize)] and `return_state` (-> (out, final_state))
  let a prefill continue from / hand over to the recurrent form.
  """
  qf, kf, vf, g = _prepare(q, k, v, log_decay, causal, normalize)
  b, t, h, dk = qf.shape
  if not causal:
    if initial_state is not None or return_state:
      raise ValueError("initial_state / return_state need causal=True")
    kv = jnp.einsum("bjhd,bjhe->bhde", kf, vf)
    return _finish(jnp.einsum("bihd,bhde->bihe", qf, kv) * scale, normalize, eps, q.dtype)
  c = min(chunk_size, t)
  n = -(-t // c)
  pad = n * c - t

  def chunks(x):  # [B, T, ...] -> [N, B, C, ...]
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape((x.shape[0], n, c) + x.shape[2:]), 1, 0)

  has_decay = g is not None
  if has_decay:
    g = jnp.broadcast_to(g, (b, t, h, g.shape[-1]))  # zero padding = no decay in the pad
  else:
    g = jnp.zeros((b, t, h, 1), jnp.float32)  # unused by the body
  s0 = _initial_state(initial_state, b, h, dk, vf.shape[-1])
  body = jax.checkpoint(functools.partial(_chunk_body, scale=scale, has_decay=has_decay))
  s, o = jax.lax.scan(body, s0, (chunks(qf), chunks(kf), chunks(vf), chunks(g)))
  o = jnp.moveaxis(o, 0, 1).reshape((b, n * c, h, vf.shape[-1]))[:, :t]
  out = _finish(o, normalize, eps, q.dtype)
  return (out, s) if return_state else out


def _initial_state(initial_state, b, h, dk, dv):
  if initial_state is None:
    return jnp.zeros((b, h, dk, dv), jnp.float32)
  if initial_state.shape != (b, h, dk, dv):
    raise ValueError(f"initial_state must be [B, H, Dk, Dv'] = {(b, h, dk, dv)} (Dv' = Dv + 1 with "
                     f"normalize), got {initial_state.shape}")
  return initial_state.astype(jnp.float32)


# ---- recurrent form: the decode path --------------------------------------------------------
@_jit()
def linear_attention_recurrent(q, k, v, *, log_decay=None, normalize=False, scale=1.0, eps=1e-6,
                               initial_state=None):
  """Token-by-token recurrence with a constant-size state (causal). The decode path.

  q [B, T, H, Dk], k [B, T, Hkv, Dk], v [B, T, Hkv, Dv], log_decay None | [H] | [B, T, H] |
  [B, T, H, Dk]; initial_state [B, H, Dk, Dv'] or None (zeros), Dv' = Dv + 1 with
  `normalize` (last column = normaliser z). Returns (out [B, T, H, Dv], final_state
  [B, H, Dk, Dv'] fp32). S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t.
  """
  qf, kf, vf, g = _prepare(q, k, v, log_decay, True, normalize)
  b, t, h, dk = qf.shape
  if g is None:
    g = jnp.zeros((b, t, h, 1), jnp.float32)
  g = jnp.broadcast_to(g, (b, t, h, g.shape[-1]))
  s0 = _initial_state(initial_state, b, h, dk, vf.shape[-1])

  def step(s, xs):
    qt, kt, vt, gt = xs  # [B, H, Dk], [B, H, Dk], [B, H, Dv'], [B, H, 1|Dk]
    s = jnp.exp(gt)[..., None] * s + kt[..., :, None] * vt[..., None, :]
    return s, jnp.einsum("bhd,bhde->bhe", qt, s) * scale

  tm = lambda x: jnp.moveaxis(x, 1, 0)  # noqa: E731
  s, o = jax.lax.scan(step, s0, (tm(qf), tm(kf), tm(vf), tm(g)))
  return _finish(jnp.moveaxis(o, 0, 1), normalize, eps, q.dtype), s


def linear_attention(q, k, v, *, form="chunked", log_decay=None, causal=True, normalize=False,
                     scale=1.0, eps=1e-6, chunk_size=DEFAULT_CHUNK, impl="auto"):
  """Linear attention through the dispatch table (family "linear"); shapes as
  `linear_attention_parallel`.

  impl "xla" (or "auto") runs `form` (`linear_attention_xla`): "chunked" (default, O(T)
  memory) | "parallel" (materialised) | "recurrent" (token scan; causal only, final state
  discarded). impl "reference" runs the materialised oracle `linear_attention_parallel`.
  """
  return D.dispatch(FAMILY, impl, q, k, v, form=form, log_decay=log_decay, causal=causal, normalize=normalize,
                    scale=scale, eps=eps, chunk_size=chunk_size)


def linear_attention_xla(q, k, v, *, form="chunked", log_decay=None, causal=True, normalize=False,
                         scale=1.0, eps=1e-6, chunk_size=DEFAULT_CHUNK):
  """The three forms of linear attention (see `linear_attention`)."""
  check_form(form, causal)
  if form == "chunked":
    return linear_attention_chunked(q, k, v, log_decay=log_decay, causal=causal, normalize=normalize,
                                    scale=scale, eps=eps, chunk_size=chunk_size)
  if form == "parallel":
    return linear_attention_parallel(q, k, v, log_decay=log_decay, causal=causal, normalize=normalize,
                                     scale=scale, eps=eps)
  return linear_attention_recurrent(q, k, v, log_decay=log_decay, normalize=normalize, scale=scale,
                                    eps=eps)[0]
