"""The delta rule's unit-lower-triangular solve (forward substitution with an adjoint-solve
backward) against numpy's dense solve, values and gradients, with a canary."""

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention.ops.linear.delta_rule import solve_unit_lower


def _system(seed=0, n=13, batch=(2, 3), m=5):
  r = np.random.default_rng(seed)
  ell = np.tril(0.4 * r.standard_normal(batch + (n, n)), -1) + np.eye(n)
  return ell.astype(np.float32), r.standard_normal(batch + (n, m)).astype(np.float32)


def test_solve_equals_dense_solve():
  ell, rhs = _system()
  x = np.asarray(solve_unit_lower(jnp.asarray(ell), jnp.asarray(rhs)))
  np.testing.assert_allclose(x, np.linalg.solve(ell.astype(np.float64), rhs), atol=2e-5, rtol=1e-5)


def test_gradients_equal_the_dense_solves():
  """d/d(ell, rhs) of sum(sin(x)) against jnp.linalg.solve's autodiff (strictly lower part of
  d ell: the diagonal and upper triangle are structural, not inputs of the solve)."""
  ell, rhs = map(jnp.asarray, _system(seed=1))
  loss = lambda solve: (lambda a, b: jnp.sum(jnp.sin(solve(a, b))))  # noqa: E731
  ga, gb = jax.grad(loss(solve_unit_lower), (0, 1))(ell, rhs)
  ra, rb = jax.grad(loss(jnp.linalg.solve), (0, 1))(ell, rhs)
  strict = np.tril(np.ones(ell.shape[-2:], bool), -1)
  np.testing.assert_allclose(np.where(strict, ga, 0), np.where(strict, ra, 0), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(gb, rb, atol=1e-4, rtol=1e-4)
  # canary: the transposed system (what a wrong adjoint would solve) is far off
  wrong = jnp.linalg.solve(jnp.swapaxes(ell, -1, -2), jnp.cos(jnp.linalg.solve(ell, rhs)))
  assert float(jnp.max(jnp.abs(wrong - rb))) < 1e-4  # the adjoint is ell^-T cos(x) ...
  assert float(jnp.max(jnp.abs(jnp.linalg.solve(ell, jnp.cos(jnp.linalg.solve(ell, rhs))) - rb))) > 1e-2  # ... not ell^-1
