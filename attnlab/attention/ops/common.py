"""Shape checks and small helpers shared by attention ops."""

from __future__ import annotations

import jax.numpy as jnp


def check_qkv(q, k, v) -> tuple[int, int, int, int, int, int]:
  """Validates the canonical layout and returns (B, Tq, Tk, Hq, Hkv, D).

  q: [B, Tq, Hq, D]; k: [B, Tk, Hkv, D]; v: [B, Tk, Hkv, Dv]; Hq % Hkv == 0.
  """
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"q, k, v must be [batch, len, heads, head_dim]; got {q.shape}, {k.shape}, {v.shape}")
  b, tq, hq, d = q.shape
  if k.shape[0] != b or v.shape[0] != b:
    raise ValueError(f"batch sizes differ: q {q.shape}, k {k.shape}, v {v.shape}")
  if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
    raise ValueError(f"k and v must share length and heads: k {k.shape}, v {v.shape}")
  if k.shape[3] != d:
    raise ValueError(f"q and k head_dim differ: q {q.shape}, k {k.shape}")
  hkv = k.shape[2]
  if hq % hkv:
    raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
  return b, tq, k.shape[1], hq, hkv, d


def default_scale(head_dim: int, scale: float | None) -> float:
  """`scale` or head_dim ** -0.5."""
  return head_dim ** -0.5 if scale is None else scale


def repeat_kv(x, num_q_heads: int):
  """[B, T, Hkv, D] -> [B, T, Hq, D] by repeating each kv head Hq/Hkv times (GQA)."""
  rep = num_q_heads // x.shape[2]
  return x if rep == 1 else jnp.repeat(x, rep, axis=2)
