"""The MODELS registry: lm, classifier and forecaster on the one backbone; per-layer overrides."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnlab.models import MODELS, build_model, transformer_config


def model_cfg(**kw):
  base = dict(variant="mha", num_layers=2, d_model=32, num_heads=2, mlp="gelu", mlp_dim=0,
              short_conv=0, dropout=0.0, dtype="float32", causal=False,
              attn=ml_collections.ConfigDict(), layers=ml_collections.ConfigDict())
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_registry_lists_the_three_models():
  assert {"lm", "classifier", "forecaster"} <= set(MODELS.names())


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_classifier_ignores_padding(pooling):
  model = build_model(model_cfg(pooling=pooling), "classifier", vocab_size=12, num_classes=3)
  tokens = jnp.asarray([[3, 4, 5, 0, 0, 0], [6, 7, 8, 9, 10, 11]])
  params = model.init(jax.random.key(0), tokens)
  logits = model.apply(params, tokens)
  assert logits.shape == (2, 3) and logits.dtype == jnp.float32
  # Shorter padding (the same real tokens) gives the same logits: padding is masked out.
  # (Learned positions of the real tokens are the same, pads are never attended or pooled.)
  short = model.apply(params, tokens.at[0, 5].set(0))
  np.testing.assert_allclose(short, logits, atol=1e-5)
  changed = model.apply(params, tokens.at[0, 1].set(9))
  assert not np.allclose(changed[0], logits[0])


def test_classifier_is_noncausal_by_config():
  model = build_model(model_cfg(), "classifier", vocab_size=12, num_classes=3)
  tokens = jnp.asarray([[3, 4, 5, 6]])
  params = model.init(jax.random.key(0), tokens)
  # With mean pooling over a non-causal encoder, the first state depends on the last token.
  emb = lambda p, t: model.apply(p, t, capture_intermediates=True, mutable=["intermediates"])[1]
  a = emb(params, tokens)["intermediates"]["backbone"]["__call__"][0]
  b = emb(params, tokens.at[0, 3].set(9))["intermediates"]["backbone"]["__call__"][0]
  assert not np.allclose(a[0, 0], b[0, 0])


def test_forecaster_maps_lookback_to_horizon_and_undoes_normalisation():
  model = build_model(model_cfg(), "forecaster", num_features=3, horizon=5)
  x = jax.random.normal(jax.random.key(0), (2, 16, 3))
  params = model.init(jax.random.key(1), x)
  y = model.apply(params, x)
  assert y.shape == (2, 5, 3)
  # Series normalisation: shifting and scaling the input shifts and scales the forecast.
  np.testing.assert_allclose(model.apply(params, 3.0 * x + 10.0), 3.0 * y + 10.0, rtol=1e-4, atol=1e-3)


def test_lm_refuses_a_noncausal_backbone():
  with pytest.raises(ValueError, match="needs model.causal=True"):
    build_model(model_cfg(causal=False), "lm", vocab_size=5)


def test_per_layer_overrides_and_layer_index():
  layers = ml_collections.ConfigDict({"1": {"window": 8}})
  cfg = transformer_config(model_cfg(variant="sliding_window", num_layers=3, causal=True,
                                     attn=ml_collections.ConfigDict({"window": 4}), layers=layers))
  assert [cfg.layer_hparams(i)["window"] for i in range(3)] == [4, 8, 4]
  assert [cfg.layer_hparams(i)["layer_index"] for i in range(3)] == [0, 1, 2]
  assert {cfg.layer_hparams(i)["num_layers"] for i in range(3)} == {3}
  model = build_model(model_cfg(variant="sliding_window", num_layers=3, causal=True, layers=layers),
                      "lm", vocab_size=9)
  tokens = jnp.zeros((1, 4), jnp.int32)
  params = model.init(jax.random.key(0), tokens)
  assert set(nn.unbox(params)["params"]["backbone"]) == {"layer_0", "layer_1", "layer_2", "final_norm"}


@pytest.mark.parametrize("layers,message", [
    ({"3": {"window": 8}}, "layer indices 0..2"),
    ({"x": {"window": 8}}, "layer indices"),
    ({"0": {"window": 8}}, "layer 0's variant 'mha' does not take"),
])
def test_bad_per_layer_overrides(layers, message):
  with pytest.raises(ValueError, match=message):
    transformer_config(model_cfg(variant="mha,sliding_window,mha", num_layers=3, causal=True,
                                 layers=ml_collections.ConfigDict(layers)))


@pytest.mark.parametrize("kw,message", [
    (dict(d_model=0), "d_model must be an integer >= 1"),
    (dict(num_heads=0), "num_heads must be an integer >= 1"),
    (dict(num_layers=0), "num_layers must be an integer >= 1"),
    (dict(d_model=30, num_heads=4), "head dimension must be an integer"),
    (dict(variant="gla", causal=True, attn=ml_collections.ConfigDict({"chunk_size": 0})),
     "chunk_size must be an integer >= 1"),
])
def test_bad_backbone_values_are_one_line_errors(kw, message):
  """Also per-layer: a bad size in config.model.layers fails the same way (see below)."""
  with pytest.raises(ValueError, match=message) as e:
    transformer_config(model_cfg(**kw))
  assert "\n" not in str(e.value)


def test_bad_per_layer_size_and_zero_where_documented():
  with pytest.raises(ValueError, match="window must be an integer >= 1"):
    transformer_config(model_cfg(variant="sliding_window", causal=True,
                                 layers=ml_collections.ConfigDict({"1": {"window": 0}})))
  cfg = transformer_config(model_cfg(variant="mega", num_heads=1, causal=True,
                                     attn=ml_collections.ConfigDict({"chunk_size": 0})))
  assert cfg.layer_hparams(0)["chunk_size"] == 0  # mega: 0 = full attention
