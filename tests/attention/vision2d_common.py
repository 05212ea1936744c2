"""Shared pieces of the 2-D variants' oracle tests (test_vision2d*.py): token coordinates,
the modules' own projections, plain masked softmax attention over a dense bool [T, T] mask,
relative-bias lookup, parameter init with a random bias table, and the forward + gradient
comparison. None of it imports the variants' helpers: the oracles stay independent.
"""

import itertools

import jax
import jax.numpy as jnp

from tests.attention import contract
from tests.attention.contract import assert_oracle

D = 16


def coords_of(shape):
  """[(coordinate tuple)] of the tokens of a grid, row-major."""
  return list(itertools.product(*[range(n) for n in shape]))


def project(params, x):
  q = jnp.einsum("btd,dhk->bthk", x, params["query"]["kernel"])
  k = jnp.einsum("btd,dhk->bthk", x, params["key"]["kernel"])
  v = jnp.einsum("btd,dhk->bthk", x, params["value"]["kernel"])
  return q, k, v


def dense_attention(params, x, allowed, bias=None):
  """Plain softmax attention with the module's projections: allowed bool [T, T] or
  [B, T, T]; bias [H, T, T] (only read where allowed)."""
  q, k, v = project(params, x)
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
  if bias is not None:
    s = s + bias[None]
  allowed = allowed[:, None] if allowed.ndim == 3 else allowed[None, None]
  s = jnp.where(allowed, s, -jnp.inf)
  y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
  return jnp.einsum("bthk,hkd->btd", y, params["out"]["kernel"])


def table_bias(table, index, allowed):
  """bias [H, T, T] = table[:, index] where allowed (0 elsewhere), differentiable in table."""
  return jnp.where(allowed[None], jnp.take(table, jnp.asarray(index), axis=1), 0.0)


def init_params(module, x, seed=2):
  """Unboxed params with a random (not ~0) relative-bias table, so that the bias is tested."""
  params = contract.init_variables(module, x)["params"]
  for name in [n for n in params if n.startswith("rel_pos_bias")]:
    params = dict(params, **{name: jax.random.normal(jax.random.key(seed), params[name].shape)})
  return params


def compare(name, module, params, x, oracle, atol=2e-5):
  """Forward and (params, x) gradients of module vs oracle(params, x)."""
  apply = jax.jit(lambda p, x: module.apply({"params": p}, x))
  assert_oracle(name, "fwd", apply(params, x), oracle(params, x), atol=atol)
  gm = jax.jit(jax.grad(lambda p, x: jnp.sum(apply(p, x) ** 2), argnums=(0, 1)))(params, x)
  go = jax.jit(jax.grad(lambda p, x: jnp.sum(oracle(p, x) ** 2), argnums=(0, 1)))(params, x)
  assert_oracle(name, "grad", gm, go, atol=1e-4, rtol=1e-4)
