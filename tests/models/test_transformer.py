"""Transformer backbone and language model: hybrids, MLP kinds, decoding, config validation."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from attnlab.models import build_model, transformer_config
from attnlab.models.layers import RMSNorm


def model_cfg(**kw):
  base = dict(variant="mha", num_layers=2, d_model=32, num_heads=2, mlp="swiglu", mlp_dim=0,
              short_conv=0, dropout=0.0, dtype="float32", attn=ml_collections.ConfigDict())
  base.update(kw)
  return ml_collections.ConfigDict(base)


def test_hybrid_is_one_config_line():
  cfg = transformer_config(model_cfg(variant="sliding_window,mha", num_layers=4,
                                     attn=ml_collections.ConfigDict({"window": 4})))
  assert cfg.layer_variants == ("sliding_window", "mha", "sliding_window", "mha")
  assert cfg.layer_hparams(0)["window"] == 4
  assert "window" not in cfg.layer_hparams(1)
  model = build_model(model_cfg(variant="sliding_window,mha", num_layers=4,
                                attn=ml_collections.ConfigDict({"window": 4})), vocab_size=11)
  tokens = jnp.arange(24).reshape(2, 12) % 11
  params = model.init(jax.random.key(0), tokens)
  logits = model.apply(params, tokens)
  assert logits.shape == (2, 12, 11) and logits.dtype == jnp.float32
  assert set(nn.unbox(params)["params"]["backbone"]) == {"layer_0", "layer_1", "layer_2", "layer_3", "final_norm"}


@pytest.mark.parametrize("mlp,short_conv", [("swiglu", 0), ("gelu", 0), ("none", 0), ("none", 3)])
def test_causal_lm_does_not_see_the_future(mlp, short_conv):
  model = build_model(model_cfg(mlp=mlp, short_conv=short_conv), vocab_size=13)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 13, (1, 10)))
  params = model.init(jax.random.key(0), tokens)
  assert ("mlp" in nn.unbox(params)["params"]["backbone"]["layer_0"]) == (mlp != "none")
  a = model.apply(params, tokens)
  b = model.apply(params, tokens.at[0, 7].set((tokens[0, 7] + 1) % 13))
  np.testing.assert_allclose(a[0, :7], b[0, :7], atol=1e-6)
  assert not np.allclose(a[0, 7:], b[0, 7:])


@pytest.mark.parametrize("short_conv", [0, 3])
def test_decoding_through_the_model_equals_full_pass(short_conv):
  model = build_model(model_cfg(variant="gqa,sink_window", short_conv=short_conv, attn=ml_collections.ConfigDict(
      {"num_kv_heads": 1, "window": 3, "num_sinks": 1})), vocab_size=17)
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, 17, (2, 9)))
  params = model.init(jax.random.key(0), tokens)["params"]
  full = model.apply({"params": params}, tokens)
  cache = model.init(jax.random.key(0), tokens, decode=True)["cache"]
  steps = []
  for t in range(tokens.shape[1]):
    out, mut = model.apply({"params": params, "cache": cache}, tokens[:, t:t + 1], decode=True,
                           mutable=["cache"])
    cache = mut["cache"]
    steps.append(out)
  np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=3e-5, rtol=1e-4)


def test_rmsnorm_matches_formula():
  x = jax.random.normal(jax.random.key(0), (3, 8))
  p = RMSNorm().init(jax.random.key(1), x)
  y = RMSNorm().apply(p, x)
  ref = x / np.sqrt(np.mean(np.asarray(x) ** 2, -1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(y, ref, atol=1e-5)


@pytest.mark.parametrize("kw,message", [
    (dict(variant="mha,nope"), "unknown attention variant 'nope'"),
    (dict(variant="mha,mha,mha"), "does not divide"),
    (dict(num_heads=3), "not divisible"),
    (dict(attn=ml_collections.ConfigDict({"window": 3})), "'window', which no layer's variant"),
    (dict(mlp="relu"), "mlp must be"),
])
def test_bad_model_configs(kw, message):
  with pytest.raises((ValueError, KeyError), match=message):
    model = build_model(model_cfg(**kw), vocab_size=5)
    model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))


def test_short_conv_matches_explicit_convolution():
  from attnlab.models.layers import ShortConv
  x = jax.random.normal(jax.random.key(0), (2, 7, 5))
  conv = ShortConv(3)
  params = conv.init(jax.random.key(1), x)
  w = np.asarray(params["params"]["kernel"].unbox() if hasattr(params["params"]["kernel"], "unbox")
                 else params["params"]["kernel"])
  xn = np.asarray(x)
  want = xn.copy()
  for t in range(7):
    for i in range(3):
      if t - i >= 0:
        want[:, t] += w[i] * xn[:, t - i]
  np.testing.assert_allclose(conv.apply(params, x), want, atol=1e-6)
