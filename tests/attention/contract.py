"""Shared checks every attention variant must pass (DESIGN.md's oracle rule, generic part).

Variant-specific oracle tests (the materialised attention matrix a variant implies) live
in each family's test file; these helpers cover the contract common to all variants:
patterns declared vs. behaviour, decode == full pass, finite gradients and decode-step
FLOPs. (Growth in T of compute and memory is the cost contract's, for every variant at
2k/8k/32k: tests/attention/test_cost_contract.py; the old 1k -> 4k temp-memory check it
replaces passed dense mha.) `assert_oracle` is the comparison the
family oracle tests use (it records each module-vs-oracle error when ATTNLAB_ORACLE_REPORT
is set).
"""

from __future__ import annotations

import json
import os
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import VARIANTS, build
from attnlab.attention import masks as M
from attnlab.bench.flops import count_flops

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
  init = jax.jit(lambda k, x, c: nn.unbox(module.init(k, x, context=c, **call_kw)))
  variables = init(jax.random.key(seed), x, context)
  y = jax.jit(lambda v, x, c: module.apply(v, x, context=c, **call_kw))(variables, x, context)
  return module, variables, y



def init_variables(module, x, seed=0, **call_kw):
  """`module.init(key(seed), x, **call_kw)` compiled as one program, unboxed (an eager init
  runs, and compiles, every initializer op by op)."""
  return jax.jit(lambda k, x: nn.unbox(module.init(k, x, **call_kw)))(jax.random.key(seed), x)


def random_params(module, x, context=None, seed=1):
  """Random parameters of the module's shapes (no init compile): kernels ~ N(0, 1/fan_in),
  other (per-head / per-dim) params 1 + N(0, 0.3^2) for scales, else N(0, 0.3^2)."""
  shapes = jax.eval_shape(lambda: nn.unbox(module.init(jax.random.key(0), x, context=context)))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      fan_in = int(np.prod(leaf.shape[:-1])) if "['out']" in name else leaf.shape[0]
      return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)
    offset = 1.0 if ("scale" in name or "ssmax_s" in name) else 0.0
    return (offset + 0.3 * rng.standard_normal(leaf.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def output_and_grad(f, variables, x):
  """(f(v, x), d sum(sin f) / d(v, x)) in one jitted computation."""
  def both(v, x):
    y, vjp = jax.vjp(f, v, x)
    return y, vjp(jnp.cos(y))
  return jax.jit(both)(variables, x)


def check_against_oracle(oracle, name, hp, x, context=None, causal=True, positional="rope", kv_valid=None,
                         fwd_tol=2e-5, grad_tol=5e-5):
  """`name` built with `hp` (plus causal, positional) equals the test file's
  `oracle(name, hp, variables, x, context, causal, positional, kv_valid)` on random
  parameters, forward and gradients (parameters and input), with key padding `kv_valid`
  [B, Tk] bool when given."""
  hp = {**hp, "causal": causal, "positional": positional}
  call_kw = {} if kv_valid is None else {"mask": M.KeyPadding(jnp.asarray(kv_valid))}
  module = build(name, **hp)
  variables = random_params(module, x, context)
  run = lambda v, x: module.apply(v, x, context=context, **call_kw)  # noqa: E731
  ref = lambda v, x: oracle(name, hp, v, x, context, causal, positional, kv_valid)  # noqa: E731
  (y, g), (y_ref, g_ref) = output_and_grad(run, variables, x), output_and_grad(ref, variables, x)
  err = float(jnp.max(jnp.abs(y - y_ref)))
  assert_oracle(name, "fwd", y, y_ref, atol=fwd_tol, rtol=1e-5)
  gerr = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)))
  assert_oracle(name, "grad", g, g_ref, atol=grad_tol, rtol=1e-4)
  print(f"{name} {hp}: fwd err {err:.2e}, grad err {gerr:.2e}")


def assert_oracle(variant: str, what: str, actual, expected, *, atol: float, rtol: float = 0.0) -> None:
  """np.testing.assert_allclose(actual, expected, atol=atol, rtol=rtol), leaf by leaf,
  recording the error first when ATTNLAB_ORACLE_REPORT names a file.

  `actual` and `expected` are arrays or pytrees of arrays with the same leaf paths (e.g.
  the (params, x) gradients of a module and of its oracle); a leaf that disagrees is
  named by its path in the failure message.

  When the environment variable ATTNLAB_ORACLE_REPORT names a file, one JSON line
    {"variant", "what", "max_abs_err", "max_abs_ref", "atol", "rtol", "test"}
  is appended to it before the comparison (so failures are recorded too): max_abs_err is
  the largest |actual - expected| over all leaves, max_abs_ref the largest |expected|
  (for scale), test the running pytest node id. The file is opened in append mode per
  record, so several pytest-xdist workers can share it.

  Args:
    variant: the registered variant name, e.g. "mha".
    what: "fwd" (the module output), "grad" (gradients of x and params together), or
      another label such as "fwd-decode" or "fwd-parallel".
    actual: the module's output (or gradient pytree).
    expected: the oracle's output (or gradient pytree).
    atol: absolute tolerance.
    rtol: relative tolerance.
  """
  a_leaves, _ = jax.tree_util.tree_flatten_with_path(actual)
  e_leaves, _ = jax.tree_util.tree_flatten_with_path(expected)
  a_paths = [jax.tree_util.keystr(k) for k, _ in a_leaves]
  e_paths = [jax.tree_util.keystr(k) for k, _ in e_leaves]
  if a_paths != e_paths:
    raise AssertionError(f"{variant} {what}: actual and expected have different leaves:\n"
                         f"  actual:   {a_paths}\n  expected: {e_paths}")
  pairs = [(path, np.asarray(a), np.asarray(e)) for path, (_, a), (_, e) in zip(a_paths, a_leaves, e_leaves)]
  report = os.environ.get("ATTNLAB_ORACLE_REPORT")
  if report:
    # np.max over the per-leaf maxima so that a NaN anywhere is recorded as NaN.
    err = float(np.max([np.max(np.abs(a - e)) for _, a, e in pairs if a.size] or [0.0]))
    ref = float(np.max([np.max(np.abs(e)) for _, _, e in pairs if e.size] or [0.0]))
    record = {"variant": variant, "what": what, "max_abs_err": err, "max_abs_ref": ref,
              "atol": float(atol), "rtol": float(rtol),
              "test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]}
    with open(report, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")
  for path, a, e in pairs:
    np.testing.assert_allclose(a, e, atol=atol, rtol=rtol, err_msg=f"{variant} {what} leaf {path or '<root>'}")


def _pattern_call(name, hparams, pattern, length, context_len, compile=True):
  """(x, y) of `name` under `pattern`, initialised and applied in one compiled call; with
  compile=False only traced (`jax.eval_shape`: y is a ShapeDtypeStruct), which raises the
  same trace-time ValueError for an undeclared pattern without compiling anything."""
  causal = pattern.startswith("causal")
  module = build(name, **{**hparams, "causal": causal})
  x, ctx = make_inputs(length=length, context_len=context_len if pattern.endswith("cross") else None)

  def run(k, x, c):
    return module.apply(nn.unbox(module.init(k, x, context=c)), x, context=c)
  return x, (jax.jit(run) if compile else partial(jax.eval_shape, run))(jax.random.key(0), x, ctx)


def check_patterns(name, hparams, length=16, context_len=24):
  """Every declared pattern runs with the right shape and finite output; every other
  non-decode pattern raises ValueError (when traced: the check compiles nothing for it)."""
  spec = VARIANTS.get(name)
  for pattern in ("causal-self", "noncausal-self", "causal-cross", "noncausal-cross"):
    if pattern in spec.patterns:
      x, y = _pattern_call(name, hparams, pattern, length, context_len)
      assert y.shape == x.shape, (name, pattern, y.shape)
      assert bool(jnp.all(jnp.isfinite(y))), (name, pattern)
    else:
      try:
        _pattern_call(name, hparams, pattern, length, context_len, compile=False)
      except ValueError:
        continue
      raise AssertionError(f"{name} does not declare {pattern} but did not raise ValueError")


def decode_step_by_step(module, variables, x, chunk=1, jit=None, **call_kw):
  """Runs `x` [B, T, d] through the module `chunk` tokens at a time with decode=True
  (`call_kw`, e.g. mask=, passed to every step). jit=True compiles the step once per
  step length; jit=False runs it op by op (a step that reads the cache index in Python
  needs that); None (default) compiles it unless tracing it raises a concretization
  error, then runs op by op: the same computation either way, compiling is faster."""
  cache = jax.jit(lambda x: module.init(jax.random.key(0), x, decode=True, **call_kw))(x)["cache"]
  params = {k: v for k, v in variables.items() if k != "cache"}
  eager = lambda v, xt: module.apply(v, xt, decode=True, mutable=["cache"], **call_kw)  # noqa: E731
  apply = eager if jit is False else jax.jit(eager)
  outs = []
  for i in range(0, x.shape[1], chunk):
    try:
      y, mut = apply({**params, "cache": cache}, x[:, i:i + chunk])
    except jax.errors.ConcretizationTypeError:
      if jit:
        raise
      apply = eager
      y, mut = apply({**params, "cache": cache}, x[:, i:i + chunk])
    cache = mut["cache"]
    outs.append(y)
  return jnp.concatenate(outs, axis=1)


def check_decode_matches_full(name, hparams, length=12, atol=2e-5, chunk=1, jit=None, **call_kw):
  """Incremental decoding (causal self) equals the full causal pass (`call_kw`, e.g. a
  key-padding mask over the whole sequence, passed to both)."""
  x, _ = make_inputs(length=length)
  module, variables, full = init_apply(name, {**hparams, "causal": True}, x, **call_kw)
  inc = decode_step_by_step(module, variables, x, chunk=chunk, jit=jit, **call_kw)
  np.testing.assert_allclose(np.asarray(inc), np.asarray(full), atol=atol, rtol=1e-4)


def decode_step_flops(name, hparams, cache_len, d_model=64):
  """FLOPs of one single-token decode step against a cache allocated for `cache_len`
  positions, counted on the jaxpr (`attnlab.bench.flops.count_flops`: loop bodies times
  their trip counts, a lax.cond as its largest branch). XLA's cost analysis counts a loop
  body once, so it would miss a blocked kernel's loop over the cache's key tiles."""
  module = build(name, **{**hparams, "causal": True})
  x = jax.ShapeDtypeStruct((1, cache_len, d_model), jnp.float32)
  cache = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, decode=True), x)["cache"]
  params = jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x)

  def step(p, c, xt):
    return module.apply({**p, "cache": c}, xt, decode=True, mutable=["cache"])

  token = jax.ShapeDtypeStruct((1, 1, d_model), jnp.float32)
  return count_flops(step, params, cache, token).flops


def check_grads_finite(name, hparams, length=16, pattern="causal-self"):
  """d(sum y^2)/d(params, x) at the module's initial parameters exists and is finite
  (init and gradient in one compiled call)."""
  x, _ = make_inputs(length=length)
  module = build(name, **{**hparams, "causal": pattern.startswith("causal")})

  def grads(k, x):
    variables = nn.unbox(module.init(k, x))
    return jax.grad(lambda v, x: jnp.sum(module.apply(v, x) ** 2), argnums=(0, 1))(variables, x)

  g = jax.jit(grads)(jax.random.key(0), x)
  for leaf in jax.tree.leaves(g):
    assert bool(jnp.all(jnp.isfinite(leaf))), name
