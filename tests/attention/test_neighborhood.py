"""neighborhood: equals a direct per-pixel implementation of NATTEN's definition (oracle rule).

The oracle builds, query by query, the list of keys the definition names (the query's
residue class mod d, the window of floor(w/2) before / the rest after shifted inward at the
borders, or the last w keys when causal), materialises the dense [T, T] mask and relative
bias, and runs plain softmax attention with the module's own parameters.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import VARIANTS, build, masks
from tests.attention.contract import assert_oracle, check_grads_finite, check_patterns, init_variables


def oracle_axis(length, i, window, dilation, causal):
  """[(key position, offset in dilated units)] of query i on one axis, from the definition."""
  cls = [j for j in range(length) if j % dilation == i % dilation]
  p = cls.index(i)
  if causal:
    idx = [m for m in range(p - window + 1, p + 1) if m >= 0]
  else:
    start = min(max(p - window // 2, 0), len(cls) - window)
    idx = list(range(start, start + window))
  return [(cls[m], m - p) for m in idx]


def oracle_mask_bias(shape, window, dilation, causal, table):
  """Dense allowed [T, T] and bias [H, T, T] (0 where not allowed) for axis sizes `shape`."""
  t = int(np.prod(shape))
  allowed = np.zeros((t, t), bool)
  bias = np.zeros((table.shape[0], t, t), np.float32)
  coords = list(itertools.product(*[range(n) for n in shape]))
  for qi, qc in enumerate(coords):
    per_axis = [oracle_axis(n, c, window, dilation, ca) for n, c, ca in zip(shape, qc, causal)]
    for combo in itertools.product(*per_axis):
      kc = [pos for pos, _ in combo]
      ki = int(np.ravel_multi_index(kc, shape))
      allowed[qi, ki] = True
      flat = 0
      for _, off in combo:
        flat = flat * (2 * window - 1) + off + window - 1
      bias[:, qi, ki] = table[:, flat]
  return allowed, bias


def oracle_forward(params, x, allowed, bias):
  """Plain dense softmax attention with the module's projections, mask and bias."""
  q = jnp.einsum("btd,dhk->bthk", x, params["query"]["kernel"])
  k = jnp.einsum("btd,dhk->bthk", x, params["key"]["kernel"])
  v = jnp.einsum("btd,dhk->bthk", x, params["value"]["kernel"])
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5 + bias[None]
  s = jnp.where(allowed[None, None], s, -jnp.inf)
  y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
  return jnp.einsum("bthk,hkd->btd", y, params["out"]["kernel"])


CASES = [  # (grid, window, dilation, causal_axes)
    ((), 3, 1, (False,)),
    ((), 4, 1, (False,)),        # even window: 2 before, 1 after
    ((), 3, 2, (False,)),        # dilation with L = 11 (residue classes of unequal length)
    ((), 3, 1, (True,)),
    ((), 2, 3, (True,)),
    ((5, 6), 3, 1, (False, False)),
    ((6, 5), 2, 1, (False, False)),
    ((6, 7), 3, 2, (False, False)),
    ((5, 6), 3, 1, (True, False)),  # causal along rows only
    ((4, 4), 4, 1, (False, False)),  # w = L: full attention
]


@pytest.mark.parametrize("grid,window,dilation,causal", CASES)
def test_forward_and_grads_match_per_pixel_oracle(grid, window, dilation, causal):
  shape = grid or (11,)
  t = int(np.prod(shape))
  x = jax.random.normal(jax.random.key(1), (2, t, 16), jnp.float32)
  module = build("neighborhood", num_heads=2, window=window, dilation=dilation, grid=grid,
                 causal_axes=causal, causal=False)
  params = init_variables(module, x)["params"]
  params = dict(params, rel_pos_bias=jax.random.normal(jax.random.key(2), params["rel_pos_bias"].shape))
  allowed, bias = oracle_mask_bias(shape, window, dilation, causal, np.asarray(params["rel_pos_bias"]))
  counts = allowed.sum(1)
  if not any(causal):
    assert np.all(counts == window ** len(shape))  # the window shifts inward: always w^ndim keys

  def oracle(p, x):
    # The bias as a differentiable function of the table, at the oracle's (query, key) pairs.
    return oracle_forward(p, x, allowed, _bias_of(p["rel_pos_bias"], shape, window, dilation, causal))

  y = jax.jit(lambda p, x: module.apply({"params": p}, x))(params, x)
  assert_oracle("neighborhood", "fwd", y, oracle_forward(params, x, allowed, bias), atol=2e-5)
  loss_m = lambda p, x: jnp.sum(module.apply({"params": p}, x) ** 2)  # noqa: E731
  loss_o = lambda p, x: jnp.sum(oracle(p, x) ** 2)  # noqa: E731
  gm = jax.jit(jax.grad(loss_m, argnums=(0, 1)))(params, x)
  go = jax.jit(jax.grad(loss_o, argnums=(0, 1)))(params, x)
  assert_oracle("neighborhood", "grad", gm, go, atol=1e-4, rtol=1e-4)


def _bias_of(table, shape, window, dilation, causal):
  """bias [H, T, T] = table[:, flat offset index] at the oracle's (query, key) pairs (0 elsewhere)."""
  t = int(np.prod(shape))
  index = np.zeros((t, t), np.int64)
  present = np.zeros((t, t), bool)
  coords = list(itertools.product(*[range(n) for n in shape]))
  for qi, qc in enumerate(coords):
    per_axis = [oracle_axis(n, c, window, dilation, ca) for n, c, ca in zip(shape, qc, causal)]
    for combo in itertools.product(*per_axis):
      ki = int(np.ravel_multi_index([pos for pos, _ in combo], shape))
      flat = 0
      for _, off in combo:
        flat = flat * (2 * window - 1) + off + window - 1
      index[qi, ki], present[qi, ki] = flat, True
  return jnp.where(present[None], jnp.take(table, jnp.asarray(index), axis=1), 0.0)


def test_full_window_is_full_attention_mask():
  allowed, _ = oracle_mask_bias((4, 4), 4, 1, (False, False), np.zeros((1, 49)))
  assert allowed.all()
  from attnlab.attention.variants.neighborhood import neighborhood_layout
  keys, valid, _ = neighborhood_layout((4, 4), 4, 1, (False, False))
  assert valid.all() and all(sorted(row) == list(range(16)) for row in keys.tolist())


def test_key_padding_mask_and_patterns():
  check_patterns("neighborhood", {"window": 3, "num_heads": 2}, length=16)
  check_grads_finite("neighborhood", {"window": 3, "num_heads": 2, "grid": (4, 4)}, length=16,
                     pattern="noncausal-self")
  x = jax.random.normal(jax.random.key(0), (1, 8, 16))
  valid = jnp.array([[True] * 6 + [False] * 2])
  m = build("neighborhood", window=8, num_heads=2, causal=False, rel_pos_bias=False)
  p = m.init(jax.random.key(0), x)
  y = m.apply(p, x, mask=masks.KeyPadding(valid))
  # Changing the padded keys' inputs does not change any output of the valid queries.
  y2 = m.apply(p, x.at[:, 6:].set(5.0), mask=masks.KeyPadding(valid))
  np.testing.assert_allclose(y[:, :6], y2[:, :6], atol=1e-5)


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="exceeds the axis length"):
    m = build("neighborhood", window=4, dilation=3, causal=False)
    x = jnp.zeros((1, 10, 16))
    m.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="does not fit"):
    m = build("neighborhood", window=3, grid=(3, 3), causal=False)
    m.init(jax.random.key(0), jnp.zeros((1, 10, 16)))
  with pytest.raises(ValueError, match="dilation"):
    build("neighborhood", dilation=0)


def test_registered_subquadratic_and_gathers_no_dense_matrix():
  assert VARIANTS.get("neighborhood").subquadratic
  m = build("neighborhood", window=3, grid=(-1, -1), causal=False, num_heads=2)
  x = jax.ShapeDtypeStruct((1, 32 * 32, 16), jnp.float32)
  v = jax.eval_shape(lambda x: m.init(jax.random.key(0), x), x)
  jaxpr = jax.make_jaxpr(lambda v, x: m.apply(v, x))(v, x)
  t = 32 * 32
  shapes = [tuple(var.aval.shape) for eqn in jaxpr.jaxpr.eqns for var in eqn.outvars]
  assert not any(s.count(t) >= 2 for s in shapes), "a [T, T] array appears in the program"
