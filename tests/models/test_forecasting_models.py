"""The forecasting models (vanilla, patchtst, itransformer, timexer, gateformer) with two
attention variants each: shapes, finiteness, the variant really inside, and the series
normalisation / RevIN making the forecast shift-equivariant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab import config_lib
from attnlab.models import MODELS, build_model
from attnlab.models.forecasting import FORECAST_MODELS
from attnlab.models.forecasting.patching import make_patches, num_patches

B, L, C, F, H = 2, 32, 3, 4, 8


def model_cfg(variant):
  c = config_lib.base_config().model
  c.variant, c.causal, c.num_layers, c.d_model, c.num_heads = variant, False, 1, 16, 2
  c.mlp, c.mlp_dim, c.dropout = "gelu", 16, 0.1
  if variant == "mha":
    c.attn.positional = "none"
  return c


def inputs(seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {"series": jax.random.normal(k1, (B, L, C)), "marks": jax.random.uniform(k2, (B, L, F)) - 0.5}


def test_all_registered():
  assert set(FORECAST_MODELS) <= set(MODELS.names())


@pytest.mark.parametrize("name", FORECAST_MODELS)
@pytest.mark.parametrize("variant", ["mha", "linear"])
def test_forward_shapes_and_shift_equivariance(name, variant):
  model = build_model(model_cfg(variant), name, num_features=C, horizon=H, num_targets=C)
  x = inputs()
  variables = model.init(jax.random.key(0), x)
  y = model.apply(variables, x)
  assert y.shape == (B, H, C) and y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(y)))
  shifted = dict(x, series=x["series"] + 5.0)
  np.testing.assert_allclose(model.apply(variables, shifted), y + 5.0, rtol=1e-4, atol=1e-4)
  y_train = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(y_train, y)  # dropout is on in training mode


def test_variant_is_the_one_named():
  x = inputs()
  outs = {}
  for variant in ("mha", "linear"):
    model = build_model(model_cfg(variant), "itransformer", num_features=C, horizon=H)
    outs[variant] = model.apply(model.init(jax.random.key(0), x), x)
  assert not np.allclose(outs["mha"], outs["linear"], atol=1e-4)


def test_timexer_target_only():
  model = build_model(model_cfg("mha"), "timexer", num_features=C, horizon=H, num_targets=1)
  x = inputs()
  y = model.apply(model.init(jax.random.key(0), x), x)
  assert y.shape == (B, H, 1)


def test_itransformer_ignores_marks_when_told():
  cfg = model_cfg("mha")
  cfg.use_marks = False
  model = build_model(cfg, "itransformer", num_features=C, horizon=H)
  x = inputs()
  v = model.init(jax.random.key(0), x)
  np.testing.assert_allclose(model.apply(v, x), model.apply(v, dict(x, marks=x["marks"] * 0)))


def test_patches():
  assert num_patches(96, 16, 8, True) == 12 and num_patches(96, 16, 16, False) == 6
  x = jnp.arange(10.0)[None]
  p = make_patches(x, 4, 3, True)  # padded with 3 copies of 9 -> 13 values -> 4 patches
  np.testing.assert_array_equal(p[0], [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 9, 9, 9]])


def test_causal_is_refused():
  cfg = model_cfg("mha")
  cfg.causal = True
  with pytest.raises(ValueError, match="causal=False"):
    build_model(cfg, "itransformer", num_features=C, horizon=H)
