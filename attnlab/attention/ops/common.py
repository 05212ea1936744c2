"""Shape checks and small helpers shared by attention ops."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


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


def check_equal_heads(q, k, v, name):
  """check_qkv plus equal query and key/value heads (op `name` in the error); (B, Tq, Tk, H, D)."""
  b, tq, tk, hq, hkv, d = check_qkv(q, k, v)
  if hq != hkv:
    raise ValueError(f"{name} needs equal query and key/value heads, got {hq} and {hkv}")
  return b, tq, tk, hq, d


def default_scale(head_dim: int, scale: float | None) -> float:
  """`scale` or head_dim ** -0.5."""
  return head_dim ** -0.5 if scale is None else scale


def repeat_kv(x, num_q_heads: int):
  """[B, T, Hkv, D] -> [B, T, Hq, D] by repeating each kv head Hq/Hkv times (GQA)."""
  rep = num_q_heads // x.shape[2]
  return x if rep == 1 else jnp.repeat(x, rep, axis=2)


def unbroadcast(x, shape):
  """Sums `x` down to `shape` (same rank; dims of size 1 in `shape` are summed over).

  The adjoint of broadcasting: used for gradients of broadcast operands (bias arrays).
  """
  axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, shape)) if b == 1 and a != 1)
  return x.sum(axis=axes, keepdims=True) if axes else x


def mask_flatten(mask):
  """Splits a (dataclass) mask into its array leaves and a rebuild function.

  Returns (leaves: tuple of arrays, rebuild(leaves) -> mask). Sub-masks are recursed
  into; fields holding arrays (segment ids, padding, per-example prefix lengths) become
  leaves, everything else stays static. Lets a jax transform (custom_vjp, scan) take a
  data-dependent mask as explicit array inputs instead of closing over tracers.
  Non-dataclass masks are returned whole with no leaves.
  """
  if not dataclasses.is_dataclass(mask):
    return (), lambda leaves: mask
  fields, parts = [], []
  for f in dataclasses.fields(mask):
    val = getattr(mask, f.name)
    if dataclasses.is_dataclass(val) and hasattr(val, "allowed"):
      sub_leaves, sub_rebuild = mask_flatten(val)
      fields.append((f.name, "mask", len(sub_leaves), sub_rebuild))
      parts.extend(sub_leaves)
    elif isinstance(val, (jax.Array, np.ndarray)):
      fields.append((f.name, "array", 1, None))
      parts.append(val)
    else:
      fields.append((f.name, "static", 0, None))

  def rebuild(leaves):
    leaves, kw, pos = tuple(leaves), {}, 0
    for name, kind, n, sub_rebuild in fields:
      if kind == "mask":
        kw[name] = sub_rebuild(leaves[pos:pos + n])
      elif kind == "array":
        kw[name] = leaves[pos]
      pos += n
    return dataclasses.replace(mask, **kw) if kw else mask

  return tuple(parts), rebuild
