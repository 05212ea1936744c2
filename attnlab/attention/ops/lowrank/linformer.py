"""Linformer attention (Wang et al., 2020, "Linformer: Self-Attention with Linear
Complexity"): efficient form and materialised reference.

Layout: q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv]; computed in
fp32, returned in q's dtype. Non-causal (the length projections mix all keys).
Dispatch family "lowrank.linformer".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from attnlab.attention.ops import dispatch as D
from attnlab.attention.ops.common import check_equal_heads, default_scale

FAMILY = "lowrank.linformer"


def linformer_attention(q, k, v, e, f, *, scale=None, impl="auto"):
  """Linformer through the dispatch table (family "lowrank.linformer"): "xla"
  (`linformer_attention_xla`, O(Tq * k_proj) memory) or "reference" (`linformer_reference`,
  the materialised [Tq, Tk] matrix). Same shapes."""
  return D.dispatch(FAMILY, impl, q, k, v, e, f, scale=scale)


def _check(q, k, v, e, f) -> int:
  """Validates shapes (equal q/kv heads, E and F [k_proj, Tk]); returns head_dim."""
  _, _, tk, _, d = check_equal_heads(q, k, v, "linformer_attention")
  if e.shape[1] != tk or f.shape[1] != tk or e.shape != f.shape:
    raise ValueError(f"E and F must be [k_proj, Tk={tk}], got {e.shape} and {f.shape}")
  return d


def linformer_attention_xla(q, k, v, e, f, *, scale=None):
  """Linformer (Wang et al., 2020, eq. 7): softmax(Q (E K)^T * scale) (F V).

  e, f [k_proj, Tk]: length projections (already sliced to Tk). Memory O(Tq * k_proj).
  q [B, Tq, H, D], k [B, Tk, H, D], v [B, Tk, H, Dv] -> [B, Tq, H, Dv].
  """
  d = _check(q, k, v, e, f)
  kp = jnp.einsum("pt,bthd->bphd", e.astype(jnp.float32), k.astype(jnp.float32))  # [B, k_proj, H, D]
  vp = jnp.einsum("pt,bthd->bphd", f.astype(jnp.float32), v.astype(jnp.float32))
  s = jnp.einsum("bqhd,bphd->bhqp", q.astype(jnp.float32), kp) * default_scale(d, scale)
  return jnp.einsum("bhqp,bphd->bqhd", jax.nn.softmax(s, axis=-1), vp).astype(q.dtype)


def linformer_reference(q, k, v, e, f, *, scale=None):
  """The [Tq, Tk] matrix Linformer implies, materialised:
  out = P F V with P = softmax(Q K^T E^T * scale), written as (P F) V, i.e. attention
  weights over the original keys A = P F [B, H, Tq, Tk] (rows need not sum to 1)."""
  d = _check(q, k, v, e, f)
  qk = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))  # [B, H, Tq, Tk]
  s = jnp.einsum("bhqk,pk->bhqp", qk, e.astype(jnp.float32)) * default_scale(d, scale)
  a = jnp.einsum("bhqp,pk->bhqk", jax.nn.softmax(s, axis=-1), f.astype(jnp.float32))
  return jnp.einsum("bhqk,bkhd->bqhd", a, v.astype(jnp.float32)).astype(q.dtype)


__all__ = ["linformer_attention", "linformer_attention_xla", "linformer_reference"]
