"""Helpers shared by several variant families (so that no family file imports another).

Positional plumbing of the softmax-style variants (softmax_like.py, heads.py):
`POSITIONAL`, `check_positional`, `rope_and_cache`, `alibi_bias`, `heads_param`.
Input checks of the recurrent variants (gated.py, mega.py): `check_form`,
`check_no_positions`, `check_recurrent_call`, `key_valid_from_mask`.
The analysis path of variants whose op is linear in the values: `attend_or_capture`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attnlab.attention import masks as M
from attnlab.attention.ops.implied import implied_weights
from attnlab.attention.ops.linear.common import FORMS, check_form
from attnlab.attention.positional import AlibiBias

POSITIONAL = ("rope", "alibi", "none")


def check_positional(cfg) -> None:
  """Raises ValueError for an unknown cfg.positional."""
  if cfg.positional not in POSITIONAL:
    raise ValueError(f"positional must be one of {POSITIONAL}, got {cfg.positional!r}")


def rope_and_cache(module, q, k, v, *, positions, context, decode):
  """`AttentionModule.rope_and_cache` with RoPE when cfg.positional == "rope" (checked).

  q [B, T, Hq, Dqk], k [B, S, Hk, Dqk], v [B, S, Hv, Dv] (head counts and sizes may all
  differ: the cache stores k and v as given). Returns (q, k, v, q_offset).
  """
  check_positional(module.cfg)
  rope_base = module.cfg.rope_base if module.cfg.positional == "rope" else None
  return module.rope_and_cache(q, k, v, context=context, positions=positions, decode=decode,
                               rope_base=rope_base)


def alibi_bias(module, num_heads: int):
  """AlibiBias(num_heads) when cfg.positional == "alibi", else None."""
  return AlibiBias(num_heads) if module.cfg.positional == "alibi" else None


def heads_param(module, name: str, num_heads: int, init_value: float):
  """A learned per-head vector [num_heads] (logical axis "heads"), constant-initialised."""
  init = nn.with_logical_partitioning(nn.initializers.constant(init_value), ("heads",))
  return module.param(name, init, (num_heads,), jnp.float32)


def key_valid_from_mask(variant: str, mask, batch: int, length: int, offset=0):
  """bool [B, length] key validity from a KeyPadding mask (None for no mask).

  `offset` is this call's first absolute position (a decode step's cache index): the
  mask's kv_valid covers the whole sequence. Any other mask raises ValueError.
  """
  if mask is None:
    return None
  if isinstance(mask, M.KeyPadding):
    valid = jnp.asarray(mask.kv_valid, bool)
    valid = jnp.broadcast_to(valid, (batch, valid.shape[-1]))
    return jax.lax.dynamic_slice_in_dim(valid, offset, length, axis=1)
  raise ValueError(f"variant {variant!r} supports only mask=None or masks.KeyPadding (its causal "
                   f"structure is built into the recurrence); got {type(mask).__name__}")


def check_no_positions(variant: str, positions):
  """Raises: these variants have no positional encoding to apply `positions` to."""
  if positions is not None:
    raise ValueError(f"variant {variant!r} has no positional encoding (order enters through the "
                     "recurrence); pass positions=None")


def check_recurrent_call(module, context, decode: bool, positions):
  """The checks a recurrent variant's `__call__` starts with (gated.py, mega.py): the call's
  pattern, no `positions`, a known `cfg.form`, and decode only when causal. Returns module.cfg."""
  module.check_pattern(context, decode)
  check_no_positions(module.variant, positions)
  cfg = module.cfg
  check_form(cfg.form)
  if decode and not cfg.causal:
    raise ValueError(f"{module.variant}: decode needs causal=True")
  return cfg


def attend_or_capture(module, attend, v, *, impl="auto", decode: bool = False):
  """attend(v, impl) -> [B, Tq, H, Dv], an op linear in its values v [B, Tk, Hv, Dv].

  In an analysis call (`module.capturing()`, not decoding) the matrix the op implies is
  read off its reference implementation, attend(identity, "reference")
  (`ops.implied.implied_weights`), then sown and applied to v (`attend_captured`);
  otherwise this is attend(v, impl), the training path, unchanged."""
  if module.capturing() and not decode:
    return module.attend_captured(implied_weights(lambda e: attend(e, "reference"), v), v)
  return attend(v, impl)


def selection_qkv(module, x, *, mask, positions, decode: bool, pattern: str):
  """The start of a self-attention variant whose key set is a data-dependent selection
  (superlinear.py, flexprefill.py): no extra mask (it raises, naming `pattern`, what picks
  the keys), q, k, v [B, T, H, D] with H = cfg.num_heads each, RoPE and the KV cache
  (`rope_and_cache`). Returns (q, k, v, q_offset)."""
  if mask is not None:
    raise ValueError(f"variant {module.variant!r} does not take an extra mask (its pattern is {pattern})")
  h, hd = module.cfg.num_heads, module.head_dim_for(x.shape[-1])
  q, k, v = (module.project_heads(x, h, hd, name) for name in ("query", "key", "value"))
  return rope_and_cache(module, q, k, v, positions=positions, context=None, decode=decode)


__all__ = ["FORMS", "POSITIONAL", "alibi_bias", "attend_or_capture", "check_form", "check_no_positions",
           "check_positional", "check_recurrent_call", "heads_param", "key_valid_from_mask", "rope_and_cache",
           "selection_qkv"]
