"""Layer-aware hyperparameters (issue 9, item 3): variants know their 0-based layer_index and
the layer count num_layers, and the per-layer schedules of their papers follow them.

diff:      lambda_init = 0.8 - 0.6 exp(-0.3 (l - 1)), l = layer_index + 1 (Ye et al., 2024, Sec. 2.1)
lightning: lambda_{h,l} = exp(-(8h / H)(1 - l / L)), h = 1..H, l = layer_index (TransNormerLLM
           Eq. 10); "official": exp(-s_h (1 - l / (L - 1) + 1e-5)), s_h the ALiBi slopes
bigbird:   random key blocks drawn per (layer, head); performer: random features per layer.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build
from attnlab.attention.variants.decay import lightning_log_decay
from attnlab.attention.variants.heads import diff_lambda_init
from tests.attention import contract


def _init(module, x, seed=0):
  return contract.init_variables(module, x, seed)


def test_config_validates_layer_fields():
  assert build("mha").cfg.layer_index == 0 and build("mha").cfg.num_layers == 1
  for hp in (dict(layer_index=2, num_layers=2), dict(layer_index=-1, num_layers=2), dict(num_layers=0)):
    with pytest.raises(ValueError, match="layer_index|num_layers"):
      build("mha", **hp)


# ---- diff ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [0, 1, 5])
def test_diff_lambda_init_follows_the_schedule(layer):
  """At layers 0, 1, 5 of 8 the layer uses 0.8 - 0.6 exp(-0.3 (l - 1)), l = layer + 1: its
  output equals that of a layer-0 module with lambda_init fixed to the formula's value
  (same parameters), and differs from the layer-0 schedule's unless layer == 0."""
  want = 0.8 - 0.6 * math.exp(-0.3 * ((layer + 1) - 1))
  assert diff_lambda_init(layer) == pytest.approx(want, abs=1e-12)
  x, _ = contract.make_inputs(length=8)
  module = build("diff", num_heads=2, layer_index=layer, num_layers=8)
  params = _init(module, x)
  y = module.apply(params, x)
  fixed = build("diff", num_heads=2, layer_index=0, num_layers=8, lambda_init=want)
  np.testing.assert_allclose(np.asarray(y), np.asarray(fixed.apply(params, x)), atol=1e-6)
  first = build("diff", num_heads=2, layer_index=0, num_layers=8).apply(params, x)
  assert (float(jnp.max(jnp.abs(y - first))) > 1e-3) == (layer != 0)


def test_diff_explicit_lambda_init_overrides_the_schedule():
  x, _ = contract.make_inputs(length=8)
  a = build("diff", num_heads=2, layer_index=5, num_layers=8, lambda_init=0.5)
  b = build("diff", num_heads=2, layer_index=0, num_layers=8, lambda_init=0.5)
  params = _init(a, x)
  np.testing.assert_allclose(np.asarray(a.apply(params, x)), np.asarray(b.apply(params, x)), atol=1e-6)
  with pytest.raises(ValueError, match="lambda_init must be in"):
    build("diff", num_heads=2, lambda_init=1.0).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="0-based"):
    diff_lambda_init(-1)


# ---- lightning -----------------------------------------------------------------------------

def _paper_decay(h_count, layer, num_layers):
  h = np.arange(1, h_count + 1)
  return np.exp(-(8.0 * h / h_count) * (1.0 - layer / num_layers))


def _official_decay(h_count, layer, num_layers):
  slopes = 2.0 ** (-8.0 * np.arange(1, h_count + 1) / h_count)  # ALiBi, H a power of two
  factor = 1.0 - (layer / (num_layers - 1) if num_layers > 1 else 0.0) + 1e-5
  return np.exp(-slopes * factor)


@pytest.mark.parametrize("schedule,formula", [("paper", _paper_decay), ("official", _official_decay)])
def test_lightning_decays_follow_the_formula_per_layer(schedule, formula):
  h, num_layers = 4, 4
  per_layer = [np.asarray(lightning_log_decay(h, l, num_layers, schedule)) for l in range(num_layers)]
  for l, log_lam in enumerate(per_layer):
    np.testing.assert_allclose(np.exp(log_lam), formula(h, l, num_layers), rtol=1e-6)
    assert np.all(log_lam < 0)  # every head of every layer decays (lambda < 1)
  for a, b in zip(per_layer, per_layer[1:]):  # higher layers decay more slowly
    assert np.all(b > a)
  with pytest.raises(ValueError, match="decay_schedule"):
    lightning_log_decay(h, 0, 1, "alibi")


def test_lightning_module_uses_its_layers_decay():
  """The module's output is the decayed attention with its own layer's lambdas: equal to a
  materialised oracle with the formula's decay, and different between layers 0 and 2."""
  h, num_layers, t = 2, 3, 10
  x, _ = contract.make_inputs(length=t)
  outs = []
  for layer in (0, 2):
    module = build("lightning", num_heads=h, chunk_size=4, layer_index=layer, num_layers=num_layers)
    params = _init(module, x)
    y = module.apply(params, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(_lightning_oracle(params, x, _paper_decay(h, layer, num_layers))),
                               atol=2e-5, rtol=1e-5)
    outs.append(y)
  assert float(jnp.max(jnp.abs(outs[0] - outs[1]))) > 1e-3


def _lightning_oracle(params, x, lam):
  """TransNormerLLM's layer, materialised: silu q/k, D[i, j] = lam_h^(i - j), SRMSNorm, gate."""
  p = params["params"]
  proj = lambda name: jnp.einsum("btd,dhk->bthk", x, p[name]["kernel"])  # noqa: E731
  q, k, v = jax.nn.silu(proj("query")), jax.nn.silu(proj("key")), proj("value")
  t = x.shape[1]
  i, j = np.arange(t)[:, None], np.arange(t)[None, :]
  decay = np.where(j <= i, lam[:, None, None] ** np.maximum(i - j, 0), 0.0)
  y = jnp.einsum("bhij,bjhe->bihe", jnp.einsum("bihd,bjhd->bhij", q, k) * decay, v)
  y = y / jnp.sqrt((y ** 2).mean(axis=(-2, -1), keepdims=True) + 1e-6)
  return jnp.einsum("bqhd,hdm->bqm", proj("gate") * y, p["out"]["kernel"])


# ---- bigbird -------------------------------------------------------------------------------

BIGBIRD = dict(num_heads=2, block_size=2, window_blocks=2, num_global_blocks=1, num_random_blocks=2)


def _bigbird_tables(layer, num_layers=4, tk=32, seed=0):
  module = build("bigbird", **BIGBIRD, layer_index=layer, num_layers=num_layers, seed=seed)
  return np.asarray(module.random_blocks(np.arange(BIGBIRD["num_heads"]), tk))


def test_bigbird_random_blocks_differ_per_layer_and_are_reproducible():
  t0, t1 = _bigbird_tables(0), _bigbird_tables(1)
  assert t0.shape == t1.shape == (2, 16, 2)
  assert not np.array_equal(t0, t1)  # layer 0 and layer 1 draw different blocks
  np.testing.assert_array_equal(t0, _bigbird_tables(0))  # the same layer: the same blocks
  np.testing.assert_array_equal(t1, _bigbird_tables(1, num_layers=8))  # the layer count does not matter
  assert not np.array_equal(t0[0], t0[1])  # heads stay independent
  assert not np.array_equal(_bigbird_tables(1, seed=3), t1)  # and the seed still matters
  # Rows are valid draws in every layer: distinct, outside window and global blocks, causal.
  for table in (t0, t1):
    for row_i, row in enumerate(table[0]):
      chosen = row[row >= 0]
      assert len(set(chosen)) == len(chosen)
      assert np.all((chosen >= 1) & (chosen < row_i - 1))


def test_bigbird_module_outputs_differ_per_layer():
  """The per-layer blocks reach the attention: same parameters, different outputs."""
  x, _ = contract.make_inputs(length=32)
  m0 = build("bigbird", **BIGBIRD, layer_index=0, num_layers=2)
  m1 = build("bigbird", **BIGBIRD, layer_index=1, num_layers=2)
  params = _init(m0, x)
  assert float(jnp.max(jnp.abs(jax.jit(m0.apply)(params, x) - jax.jit(m1.apply)(params, x)))) > 1e-4


# ---- performer -----------------------------------------------------------------------------

def test_performer_features_differ_per_layer():
  from attnlab.attention.variants.linear import performer_projection
  w = [np.asarray(performer_projection(build("performer", layer_index=l, num_layers=3).cfg, 8)) for l in (0, 1, 2)]
  assert not np.allclose(w[0], w[1]) and not np.allclose(w[1], w[2])
  np.testing.assert_array_equal(w[1], performer_projection(build("performer", layer_index=1, num_layers=3).cfg, 8))
