"""Gated linear attention with data-dependent diagonal decay (GLA; Yang et al., 2024,
"Gated Linear Attention Transformers with Hardware-Efficient Training").

Recurrence (per head; row convention, state S_t [Dk, Dv]):

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t,        o_t = (scale * q_t) S_t

with log gates g_t <= 0 of shape [Dk]. Unrolled (G_t = sum_{s<=t} g_s, cumulative):

    o_i = sum_{j<=i} sum_d q_id k_jd exp(G_id - G_jd) v_j  +  (q_i * exp(G_i)) S_0

Three forms, all returning (o [B, T, H, Dv], final state [B, H, Dk, Dv]):

* `gla_parallel`: the materialised [T, T, Dk] decay tensor (the oracle; O(T^2) memory);
* `gla_chunked`: chunks of `chunk_size` passed with `lax.scan` (O(T) memory). Inside a
  chunk the [C, C] scores use fla's secondary chunking: between sub-chunks a matmul on
  gate-rescaled q and k with a reference point at the query sub-chunk's start (every
  exponent <= 0, so nothing overflows however strong the decay); within a sub-chunk the
  exact pairwise [c, c, Dk] form. The chunk body is `jax.checkpoint`ed.
* `gla_recurrent`: token by token (the decode form).

Layout: q, k [B, T, H, Dk]; v [B, T, H, Dv]; g [B, T, H, Dk] (log decay, <= 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.linear.common import check_form, pad_time, scan_chunks, to_chunks

FAMILY = "linear.gla"


def _scale(dk, scale):
  return dk ** -0.5 if scale is None else scale


def _zero_state(q, v):
  b, _, h, dk = q.shape
  return jnp.zeros((b, h, dk, v.shape[-1]), jnp.float32)


def _masked_exp(exponent, allowed):
  """exp(exponent) where allowed else 0, without evaluating exp of masked (maybe > 0)
  entries (keeps both the value and the gradient finite)."""
  return jnp.where(allowed, jnp.exp(jnp.where(allowed, exponent, 0.0)), 0.0)


def gla_parallel(q, k, v, g, *, scale=None, initial_state=None):
  """Materialised GLA: A[i, j] = sum_d q_id k_jd exp(G_id - G_jd) (j <= i), o = A v.

  q, k, g [B, T, H, Dk]; v [B, T, H, Dv]; initial_state [B, H, Dk, Dv] or None.
  Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]). O(T^2 Dk) memory: the oracle.
  """
  f32 = jnp.float32
  q, k, v, g = (a.astype(f32) for a in (q, k, v, g))
  t = q.shape[1]
  q = q * _scale(q.shape[-1], scale)
  s0 = _zero_state(q, v) if initial_state is None else initial_state.astype(f32)
  big_g = jnp.cumsum(g, axis=1)  # [B, T, H, Dk]
  causal = (jnp.arange(t)[:, None] >= jnp.arange(t)[None, :])[None, :, :, None, None]
  decay = _masked_exp(big_g[:, :, None] - big_g[:, None, :], causal)  # [B, Ti, Tj, H, Dk]
  a = jnp.einsum("bihd,bjhd,bijhd->bhij", q, k, decay)
  o = jnp.einsum("bhij,bjhv->bihv", a, v)
  o = o + jnp.einsum("bihd,bhdv->bihv", q * jnp.exp(big_g), s0)
  g_last = big_g[:, -1]  # [B, H, Dk]
  s = (jnp.exp(g_last)[..., None] * s0
       + jnp.einsum("bjhd,bjhv->bhdv", k * jnp.exp(g_last[:, None] - big_g), v))
  return o, s


def _intra_chunk_scores(q, k, big_g, sub_chunk: int):
  """Causal [C, C] scores of one chunk with secondary chunking (numerically stable).

  q, k, big_g [B, C, H, Dk] (big_g: cumulative log gates from the chunk start, so it is
  non-increasing along C). Returns A [B, H, C, C] with A[i, j] = sum_d q_id k_jd
  exp(G_id - G_jd) for j <= i, else 0.
  """
  b, c, h, dk = q.shape
  ns = c // sub_chunk
  gs = big_g.reshape(b, ns, sub_chunk, h, dk)
  qs = q.reshape(b, ns, sub_chunk, h, dk)
  ks = k.reshape(b, ns, sub_chunk, h, dk)
  # Reference point of query sub-chunk a: G just before it starts (G_{a*c - 1}; 0 for a=0).
  ref = jnp.concatenate([jnp.zeros_like(gs[:, :1, 0]), gs[:, :-1, -1]], axis=1)  # [B, ns, H, Dk]
  # Off-diagonal sub-chunk blocks: exp(G_i - G_j) = exp(G_i - ref_a) * exp(ref_a - G_j),
  # both factors <= 1 for j < a*c <= i, so a plain matmul is safe.
  q_t = qs * jnp.exp(gs - ref[:, :, None])  # [B, ns, c, H, Dk]
  j_pos = jnp.arange(c)
  before = j_pos[None, :] < (jnp.arange(ns) * sub_chunk)[:, None]  # [ns, C]: key before sub-chunk a
  k_t = k[:, None] * _masked_exp(ref[:, :, None] - big_g[:, None], before[None, :, :, None, None])
  a_off = jnp.einsum("baihd,bajhd->bhaij", q_t, k_t).reshape(b, h, c, c)
  # Diagonal sub-chunk blocks: the exact pairwise form on [c, c, Dk].
  tri = jnp.arange(sub_chunk)[:, None] >= jnp.arange(sub_chunk)[None, :]
  decay = _masked_exp(gs[:, :, :, None] - gs[:, :, None, :], tri[None, None, :, :, None, None])
  a_diag = jnp.einsum("baihd,bajhd,baijhd->bhaij", qs, ks, decay)
  a_diag = jnp.einsum("bhaij,ae->bhaiej", a_diag, jnp.eye(ns, dtype=q.dtype)).reshape(b, h, c, c)
  return a_off + a_diag


def gla_chunked(q, k, v, g, *, scale=None, initial_state=None, chunk_size: int = 64,
                sub_chunk: int = 16, checkpoint: bool = True):
  """Chunked GLA: O(T) memory; same result as `gla_parallel`.

  q, k, g [B, T, H, Dk]; v [B, T, H, Dv]; T is padded to a multiple of chunk_size
  (zero keys and zero log gates change nothing). sub_chunk must divide chunk_size.
  Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  if chunk_size % sub_chunk:
    raise ValueError(f"sub_chunk ({sub_chunk}) must divide chunk_size ({chunk_size})")
  f32 = jnp.float32
  q, k, v, g = (a.astype(f32) for a in (q, k, v, g))
  t = q.shape[1]
  q = q * _scale(q.shape[-1], scale)
  s0 = _zero_state(q, v) if initial_state is None else initial_state.astype(f32)
  xs = tuple(to_chunks(pad_time(a, chunk_size), chunk_size) for a in (q, k, v, g))

  def body(s, inp):
    qc, kc, vc, gc = inp  # [B, C, H, *]
    big_g = jnp.cumsum(gc, axis=1)
    o = jnp.einsum("bchd,bhdv->bchv", qc * jnp.exp(big_g), s)  # inter-chunk
    a = _intra_chunk_scores(qc, kc, big_g, sub_chunk)
    o = o + jnp.einsum("bhij,bjhv->bihv", a, vc)
    g_last = big_g[:, -1]  # [B, H, Dk]
    s = (jnp.exp(g_last)[..., None] * s
         + jnp.einsum("bjhd,bjhv->bhdv", kc * jnp.exp(g_last[:, None] - big_g), vc))
    return s, o

  return scan_chunks(body, s0, xs, t, checkpoint)


def gla_recurrent(q, k, v, g, *, scale=None, initial_state=None):
  """Token-by-token GLA (the decode form): S = exp(g_t) S + k_t^T v_t, o_t = q_t S.

  Shapes as `gla_parallel`. Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  f32 = jnp.float32
  q, k, v, g = (a.astype(f32) for a in (q, k, v, g))
  q = q * _scale(q.shape[-1], scale)
  s0 = _zero_state(q, v) if initial_state is None else initial_state.astype(f32)

  def step(s, inp):
    qt, kt, vt, gt = inp  # [B, H, *]
    s = jnp.exp(gt)[..., None] * s + kt[..., :, None] * vt[..., None, :]
    return s, jnp.einsum("bhd,bhdv->bhv", qt, s)

  s, o = jax.lax.scan(step, s0, tuple(jnp.moveaxis(a, 1, 0) for a in (q, k, v, g)))
  return jnp.moveaxis(o, 0, 1), s


def gla_attention(q, k, v, g, *, form: str = "chunked", scale=None, initial_state=None,
                  chunk_size: int = 64, sub_chunk: int = 16, impl: str = "auto"):
  """GLA through the dispatch table (family "linear.gla"): impl "xla" runs `form`
  ("chunked" | "parallel" | "recurrent"; `gla_attention_xla`), "reference" the
  materialised `gla_parallel`. Shapes as `gla_parallel`.
  Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  return D.dispatch(FAMILY, impl, q, k, v, g, form=form, scale=scale, initial_state=initial_state,
                    chunk_size=chunk_size, sub_chunk=sub_chunk)


def gla_attention_xla(q, k, v, g, *, form: str = "chunked", scale=None, initial_state=None,
                      chunk_size: int = 64, sub_chunk: int = 16):
  """GLA's three forms ("chunked" | "parallel" | "recurrent"), shapes as `gla_parallel`.
  Returns (o [B, T, H, Dv], final_state [B, H, Dk, Dv]).
  """
  check_form(form)
  if form == "chunked":
    return gla_chunked(q, k, v, g, scale=scale, initial_state=initial_state,
                       chunk_size=chunk_size, sub_chunk=sub_chunk)
  if form == "parallel":
    return gla_parallel(q, k, v, g, scale=scale, initial_state=initial_state)
  return gla_recurrent(q, k, v, g, scale=scale, initial_state=initial_state)
