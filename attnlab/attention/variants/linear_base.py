"""Base pieces of the linear and decay variants (linear.py, decay.py): the form/chunk
config, key-padding masks and `LinearAttentionBase` (form checks, decode state). Registers
nothing.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops.linear.common import check_form
from attnlab.attention.ops.linear.core import linear_attention, linear_attention_parallel, linear_attention_recurrent
from attnlab.attention.variants.base import AttentionConfig, AttentionModule


@dataclasses.dataclass(frozen=True)
class LinearFamilyConfig(AttentionConfig):
  """form: "chunked" (default, O(T) memory) | "parallel" (materialised oracle, O(T^2)) |
  "recurrent" (token-by-token scan); chunk_size: chunk length of the chunked form."""
  form: str = "chunked"
  chunk_size: int = 64


# ---- shared module machinery -------------------------------------------------------------------
def key_padding_valid(mask, variant: str, batch: int, length: int, offset=0):
  """bool [B, length] from a KeyPadding mask (or and-combination), or None for mask=None.

  `kv_valid` is indexed by absolute key position: a decode step's keys (at `offset`..)
  are sliced out of a longer array. Any other mask raises ValueError.
  """
  if mask is None:
    return None
  parts, stack = [], [mask]
  while stack:
    m = stack.pop()
    if isinstance(m, M.And):
      stack += [m.a, m.b]
    elif isinstance(m, M.KeyPadding):
      parts.append(jnp.asarray(m.kv_valid, bool))
    else:
      raise ValueError(f"variant {variant!r} is linear attention: it can honour only key-padding "
                       f"masks (masks.KeyPadding), got {type(m).__name__}")
  valid = parts[0]
  for p in parts[1:]:
    valid = valid & p
  valid = jnp.broadcast_to(valid, (batch, valid.shape[1]))
  if valid.shape[1] != length:
    valid = jax.lax.dynamic_slice_in_dim(valid, offset, length, axis=1)
  return valid


class LinearAttentionBase(AttentionModule):
  """Shared plumbing for linear / decay variants: form checks, key padding, decode state.

  An analysis call (`capturing`, not decoding) runs the materialised form and sows the
  matrix it implies: phi(q) . phi(k) with the decay and causal mask applied, row-normalised
  when the variant normalises (`linear_attention_parallel(return_weights=True)`)."""
  weights_unavailable = None

  def check_call(self, context, decode):
    """Pattern check plus the linear-specific ones (form; decode is causal self only)."""
    self.check_pattern(context, decode)
    check_form(self.cfg.form)
    if decode and (context is not None or not self.cfg.causal):
      raise ValueError(f"variant {self.variant!r} decodes causal self-attention only")

  def mask_keys(self, fk, mask, offset=0):
    """Zeroes the features of padded keys. fk [B, Tk, H, F]."""
    valid = key_padding_valid(mask, self.variant, fk.shape[0], fk.shape[1], offset)
    return fk if valid is None else fk * valid[:, :, None, None].astype(fk.dtype)

  def run_linear(self, fq, fk, v, *, decode, normalize, eps=None, log_decay=None, scale=1.0,
                 advance_index=True):
    """fq/fk [B, T, H, F], v [B, T, H, Dv] -> [B, T, H, Dv] by cfg.form, or in decode mode
    by the recurrent form from the cached state (which it updates)."""
    cfg = self.cfg
    eps = getattr(cfg, "eps", 1e-6) if eps is None else eps  # unused unless normalize
    kw = dict(log_decay=log_decay, normalize=normalize, scale=scale, eps=eps)
    if not decode and self.capturing() and self.weights_unavailable is None:
      _, w = linear_attention_parallel(fq, fk, v, causal=cfg.causal, return_weights=True, **kw)
      return self.attend_captured(w, v)
    if not decode:
      return linear_attention(fq, fk, v, form=cfg.form, causal=cfg.causal, chunk_size=cfg.chunk_size, **kw)
    b, t, h, f = fq.shape
    dv = v.shape[-1] + (1 if normalize else 0)
    is_init = not self.has_variable("cache", "state")
    state = self.variable("cache", "state", jnp.zeros, (b, h, f, dv), jnp.float32)
    # advance_index=False: the caller owns "cache_index" (e.g. a KV cache beside the state).
    index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32)) if advance_index else None
    if is_init:  # Flax convention: the init call only allocates the cache
      return linear_attention(fq, fk, v, form=cfg.form, causal=True, chunk_size=cfg.chunk_size, **kw)
    out, state.value = linear_attention_recurrent(fq, fk, v, initial_state=state.value, **kw)
    if index is not None:
      index.value = index.value + t
    return out

  def qkv(self, x, src, qk_dim, v_dim):
    """q [B, T, H, qk_dim] from x; k [B, S, H, qk_dim], v [B, S, H, v_dim] from src."""
    h = self.cfg.num_heads
    return (self.project_heads(x, h, qk_dim, "query"), self.project_heads(src, h, qk_dim, "key"),
            self.project_heads(src, h, v_dim, "value"))


__all__ = ["LinearAttentionBase", "LinearFamilyConfig", "key_padding_valid"]
