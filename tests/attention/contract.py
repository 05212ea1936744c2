"""Shared checks every attention variant must pass (DESIGN.md's oracle rule, generic part).

Variant-specific oracle tests (the materialised attention matrix a variant implies) live
in each family's test file; these helpers cover the contract common to all variants:
patterns declared vs. behaviour, decode == full pass, finite gradients, and compiled
memory for variants that claim to be sub-quadratic.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import VARIANTS, build

D_MODEL = 32


def make_inputs(batch=2, length=16, d_model=D_MODEL, context_len=None, seed=0):
  """x [B, T, d_model] and an optional context [B, S, d_model], standard normal."""
  kx, kc = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (batch, length, d_model), jnp.float32)
  ctx = None if context_len is None else jax.random.normal(kc, (batch, context_len, d_model))
  return x, ctx


def init_apply(name, hparams, x, context=None, seed=0, **call_kw):
  """Builds `name`, initialises on (x, context) and returns (module, variables, y).

  Variables come back unboxed (plain arrays, no logical-partitioning metadata)."""
  module = build(name, **hparams)
  variables = nn.unbox(module.init(jax.random.key(seed), x, context=context, **call_kw))
  y = module.apply(variables, x, context=context, **call_kw)
  return module, variables, y


def _pattern_call(name, hparams, pattern, length, context_len):
  causal = pattern.startswith("causal")
  hp = {**hparams, "causal": causal}
  x, ctx = make_inputs(length=length, context_len=context_len if pattern.endswith("cross") else None)
  _, _, y = init_apply(name, hp, x, ctx)
  return x, y


def check_patterns(name, hparams, length=16, context_len=24):
  """Every declared pattern runs with the right shape and finite output; every other
  non-decode pattern raises ValueError."""
  spec = VARIANTS.get(name)
  for pattern in ("causal-self", "noncausal-self", "causal-cross", "noncausal-cross"):
    if pattern in spec.patterns:
      x, y = _pattern_call(name, hparams, pattern, length, context_len)
      assert y.shape == x.shape, (name, pattern, y.shape)
      assert bool(jnp.all(jnp.isfinite(y))), (name, pattern)
    else:
      try:
        _pattern_call(name, hparams, pattern, length, context_len)
      except ValueError:
        continue
      raise AssertionError(f"{name} does not declare {pattern} but did not raise ValueError")


def decode_step_by_step(module, variables, x, chunk=1):
  """Runs `x` [B, T, d] through the module `chunk` tokens at a time with decode=True."""
  cache = module.init(jax.random.key(0), x, decode=True)["cache"]
  params = {k: v for k, v in variables.items() if k != "cache"}
  outs = []
  for i in range(0, x.shape[1], chunk):
    y, mut = module.apply({**params, "cache": cache}, x[:, i:i + chunk], decode=True, mutable=["cache"])
    cache = mut["cache"]
    outs.append(y)
  return jnp.concatenate(outs, axis=1)


def check_decode_matches_full(name, hparams, length=12, atol=2e-5, chunk=1):
  """Incremental decoding (causal self) equals the full causal pass."""
  x, _ = make_inputs(length=length)
  module, variables, full = init_apply(name, {**hparams, "causal": True}, x)
  inc = decode_step_by_step(module, variables, x, chunk=chunk)
  np.testing.assert_allclose(np.asarray(inc), np.asarray(full), atol=atol, rtol=1e-4)


def check_grads_finite(name, hparams, length=16, pattern="causal-self"):
  """d(sum y^2)/d(params, x) exists and is finite."""
  x, _ = make_inputs(length=length)
  module, variables, _ = init_apply(name, {**hparams, "causal": pattern.startswith("causal")}, x)

  def loss(v, x):
    return jnp.sum(module.apply(v, x) ** 2)

  g = jax.grad(loss, argnums=(0, 1))(variables, x)
  for leaf in jax.tree.leaves(g):
    assert bool(jnp.all(jnp.isfinite(leaf))), name


def compiled_temp_bytes(name, hparams, length, d_model=64, batch=1, causal=True):
  """Temporary memory (bytes) of the compiled fwd+bwd of the module at sequence `length`."""
  module = build(name, **{**hparams, "causal": causal})
  x = jax.ShapeDtypeStruct((batch, length, d_model), jnp.float32)
  variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)

  def loss(v, x):
    return jnp.sum(module.apply(v, x) ** 2)

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(variables, x).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def check_subquadratic(name, hparams, short=1024, long=4096, max_ratio=6.0, causal=True):
  """Compiled fwd+bwd temp memory grows < max_ratio when T grows 4x (dense grows 16x).

  Returns (short_bytes, long_bytes) for reporting."""
  a = compiled_temp_bytes(name, hparams, short, causal=causal)
  b = compiled_temp_bytes(name, hparams, long, causal=causal)
  assert b < max_ratio * a, f"{name}: temp memory {a} B at T={short} -> {b} B at T={long} ({b / a:.1f}x)"
  return a, b
