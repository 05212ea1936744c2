"""Oracle, form-agreement and contract tests for the decay family: retention, lightning."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build
from attnlab.attention import masks as M
from attnlab.attention.variants.decay import lightning_log_decay, retention_log_decay
from tests.attention import contract
from tests.attention.oracle_parts import head_proj, rope_bt

VARIANTS = {
    "retention": dict(num_heads=2, chunk_size=4),
    "lightning": dict(num_heads=2, chunk_size=4),
}




def oracle(name, hp, params, x, kv_valid=None):
  """The decayed causal attention matrix D[i, j] = lambda_h^(i - j) (j <= i), materialised."""
  p = params["params"]
  q, k, v = head_proj(x, p["query"]), head_proj(x, p["key"]), head_proj(x, p["value"])
  b, t, h, d = q.shape
  i, j = np.arange(t)[:, None], np.arange(t)[None, :]
  if name == "retention":
    pos = np.broadcast_to(np.arange(t), (b, t))
    if hp.get("positional", "rope") == "rope":
      q, k = rope_bt(q, pos), rope_bt(k, pos)
    gamma = 1.0 - 2.0 ** (-5.0 - np.arange(h))  # RetNet: gamma_h = 1 - 2^(-5 - h)
    decay = gamma[:, None, None] ** np.maximum(i - j, 0)[None]
    scores = jnp.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(d)
  else:
    q, k = jax.nn.silu(q), jax.nn.silu(k)
    layer, num_layers = hp.get("layer_index", 0), hp.get("num_layers", 1)
    if hp.get("decay_schedule", "paper") == "paper":
      # TransNormerLLM Eq. 10: lambda = exp(-(8h/H)(1 - l/L)), h = 1..H, l 0-based.
      rates = np.array([8.0 * (n + 1) / h * (1.0 - layer / num_layers) for n in range(h)])
    else:
      # The released code: ALiBi slopes 2^(-8/H * (h+1)) times 1 - l/(L-1) + 1e-5 (1 + 1e-5 if L == 1).
      factor = 1.0 - (layer / (num_layers - 1) if num_layers > 1 else 0.0) + 1e-5
      rates = np.array([2.0 ** (-8.0 * (n + 1) / h) * factor for n in range(h)])
    decay = np.exp(-rates[:, None, None] * np.maximum(i - j, 0)[None])
    scores = jnp.einsum("bihd,bjhd->bhij", q, k)
  allowed = (j <= i)[None, None]
  if kv_valid is not None:
    allowed = allowed & np.asarray(kv_valid)[:, None, None, :]
  y = jnp.einsum("bhij,bjhe->bihe", jnp.where(allowed, scores * decay, 0.0), v)
  if name == "retention":
    mu = y.mean(-1, keepdims=True)
    var = ((y - mu) ** 2).mean(-1, keepdims=True)
    y = (y - mu) / jnp.sqrt(var + 1e-5) * p["norm_scale"] + p["norm_bias"]
    y = jax.nn.silu(head_proj(x, p["gate"])) * y
  else:
    y = y / jnp.sqrt((y ** 2).mean(axis=(-2, -1), keepdims=True) + 1e-6)
    y = head_proj(x, p["gate"]) * y
  return jnp.einsum("bqhd,hdm->bqm", y, p["out"]["kernel"])


def init_jit(name, hp, x):
  module = build(name, **hp)
  params = nn.unbox(jax.jit(lambda x: module.init(jax.random.key(0), x))(x))
  return module, params


@pytest.mark.parametrize("name,extra", [("retention", {}), ("retention", {"positional": "none", "value_factor": 1}),
                                        ("lightning", {}), ("lightning", {"layer_index": 1, "num_layers": 3}),
                                        ("lightning", {"decay_schedule": "official", "layer_index": 1,
                                                       "num_layers": 3})])
def test_oracle_forward_and_grad(name, extra):
  hp = {**VARIANTS[name], **extra}
  x, _ = contract.make_inputs(length=14)  # 3 chunks of 4 + padding
  module, params = init_jit(name, hp, x)
  y = jax.jit(module.apply)(params, x)
  ref = oracle(name, hp, params, x)
  contract.assert_oracle(name, "fwd", y, ref, atol=2e-5, rtol=1e-5)
  loss_mod = lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))  # noqa: E731
  loss_ref = lambda p, x: jnp.sum(jnp.sin(oracle(name, hp, p, x)))  # noqa: E731
  g_mod = jax.jit(jax.grad(loss_mod, argnums=(0, 1)))(params, x)
  g_ref = jax.grad(loss_ref, argnums=(0, 1))(params, x)
  contract.assert_oracle(name, "grad", g_mod, g_ref, atol=5e-5, rtol=1e-4)
  gerr = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g_mod), jax.tree.leaves(g_ref)))
  print(f"{name} {extra}: max |fwd err| {float(jnp.max(jnp.abs(y - ref))):.2e}, max |grad err| {gerr:.2e}")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forms_agree(name):
  """chunked (default) == parallel == recurrent, forward and gradients."""
  x, _ = contract.make_inputs(length=13)
  module, params = init_jit(name, VARIANTS[name], x)
  y = jax.jit(module.apply)(params, x)
  loss = lambda m: jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(m.apply(p, x)))))(params)  # noqa: E731
  g0 = loss(module)
  for form in ("parallel", "recurrent"):
    other = build(name, **{**VARIANTS[name], "form": form})
    np.testing.assert_allclose(np.asarray(jax.jit(other.apply)(params, x)), np.asarray(y), atol=1e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(loss(other)), jax.tree.leaves(g0)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_key_padding_mask(name):
  x, _ = contract.make_inputs(length=10)
  valid = np.ones((2, 10), bool)
  valid[0, 2:5] = False
  valid[1, 7:] = False
  module, params = init_jit(name, VARIANTS[name], x)
  y = jax.jit(lambda p, x: module.apply(p, x, mask=M.KeyPadding(jnp.asarray(valid))))(params, x)
  ref = oracle(name, VARIANTS[name], params, x, kv_valid=valid)
  contract.assert_oracle(name, "fwd", y, ref, atol=2e-5, rtol=1e-5)
  with pytest.raises(ValueError, match="key-padding"):
    module.apply(params, x, mask=M.Chunked(4))


@pytest.mark.parametrize("name", list(VARIANTS))
def test_contract(name):
  contract.check_patterns(name, VARIANTS[name])
  contract.check_grads_finite(name, VARIANTS[name])


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("chunk", [1, 5])
def test_decode_matches_full(name, chunk):
  contract.check_decode_matches_full(name, VARIANTS[name], chunk=chunk)


def test_decay_rates():
  """RetNet's gamma = 1 - 2^(-5 - h); TransNormerLLM's lambda = exp(-(8h/H)(1 - l/L)) (Eq. 10)
  or, "official", exp(-slope_h * (1 - l/(L-1) + 1e-5)) with ALiBi slopes."""
  np.testing.assert_allclose(np.exp(np.asarray(retention_log_decay(4))), 1 - 2.0 ** -np.arange(5, 9), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(lightning_log_decay(4)), -2.0 * np.arange(1, 5), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(lightning_log_decay(4, layer_index=3, num_layers=4)),
                             -0.5 * np.arange(1, 5), rtol=1e-6)
  official = np.asarray(lightning_log_decay(4, schedule="official"))
  np.testing.assert_allclose(official, -(2.0 ** -np.arange(2, 9, 2)) * (1 + 1e-5), rtol=1e-6)
  last = np.asarray(lightning_log_decay(4, layer_index=3, num_layers=4, schedule="official"))
  np.testing.assert_allclose(last, -(2.0 ** -np.arange(2, 9, 2)) * 1e-5, rtol=1e-4)
  with pytest.raises(ValueError, match="layer_index"):
    lightning_log_decay(2, layer_index=2, num_layers=2)
  with pytest.raises(ValueError, match="layer_index"):
    build("lightning", num_heads=2, layer_index=2, num_layers=2)


def test_long_sequence_decay_is_stable():
  """Strong decays over many chunks: the chunked form stays finite and equals the recurrence."""
  x, _ = contract.make_inputs(batch=1, length=300)
  hp = dict(num_heads=8, chunk_size=64)  # lightning heads decay by e^-1 .. e^-8 per step
  module, params = init_jit("lightning", hp, x)
  y = jax.jit(module.apply)(params, x * 10)
  y_rec = jax.jit(build("lightning", **{**hp, "form": "recurrent"}).apply)(params, x * 10)
  assert bool(jnp.all(jnp.isfinite(y)))
  np.testing.assert_allclose(np.asarray(y), np.asarray(y_rec), atol=1e-4, rtol=1e-4)
