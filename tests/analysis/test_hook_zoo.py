"""The attention-weights hook of the 1-D zoo: routed, gated, linear (mala), heads, lowrank, ema.

Independent check, per variant: the captured weights W [B, H, T, T] times the values
computed here from the layer's own kernels (plain einsums), through the variant's own
output path written out from its paper (per-head norms, output gates, lambda scaling,
W_o), reproduce the layer's normal output; the transposed W (the canary) does not. Also:
the capture call's output equals the normal call's, W has nothing above the diagonal when
causal, padded keys get zero columns, probability rows sum to 1, the signed variants'
W has negative entries, and (gla, linformer) the gradient with respect to W through the
"perturbations" hook is the reconstruction's. Shapes B=2, T=12, D=32, H=4: several chunks / blocks with a
partial last one, key padding on the last 3 keys of input 1 where the variant takes it.
Random parameters (`contract.random_params`: gates, mixing matrices and norms away from
their identity init), one jitted function per variant.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.analysis.capture import layer_infos, refusal
from attnlab.attention import build
from attnlab.attention import masks as M
from attnlab.models import TransformerConfig
from tests.attention.contract import random_params

B, T, D, H = 2, 12, 32, 4
VALID = np.ones((B, T), bool)
VALID[1, -3:] = False
TOL = dict(atol=3e-5, rtol=1e-4)


def _values(p, x, name="value"):
  return jnp.einsum("btd,dhk->bthk", x, p[name]["kernel"])


def _apply(w, v):
  """o[b, t, h] = sum_j W[b, h, t, j] v[b, j, g(h)], value head g(h) = h // (H / Hv)."""
  v = jnp.repeat(v, w.shape[1] // v.shape[2], axis=2)
  return jnp.einsum("bhqk,bkhd->bqhd", w, v)


def _out(p, o):
  return jnp.einsum("bqhd,hdm->bqm", o, p["out"]["kernel"])


def _norm(o, scale, bias=None, eps=1e-5):
  """Per-head LayerNorm (bias given) or RMSNorm over the head dimension."""
  if bias is not None:
    o = o - o.mean(-1, keepdims=True)
  o = o / jnp.sqrt(jnp.mean(o * o, -1, keepdims=True) + eps) * scale
  return o if bias is None else o + bias


def _plain(p, x, w):
  """y = sum_h (W_h (x W_v,h)) W_o,h."""
  return _out(p, _apply(w, _values(p, x)))


def _gla(p, x, w):  # Yang et al., 2024: (LayerNorm(o) * swish(x W_r)) W_o
  o = _norm(_apply(w, _values(p, x)), p["head_norm"]["scale"], p["head_norm"]["bias"])
  return _out(p, o * jax.nn.swish(_values(p, x, "out_gate")))


def _deltanet(p, x, w):  # per-head RMSNorm, then W_o
  return _out(p, _norm(_apply(w, _values(p, x)), p["head_norm"]["scale"]))


def _gated_deltanet(p, x, w):  # (RMSNorm(o) * SiLU(x W_g)) W_o
  o = _norm(_apply(w, _values(p, x)), p["head_norm"]["scale"])
  return _out(p, o * jax.nn.silu(_values(p, x, "out_gate")))


def _mala(p, x, w):  # o * (x W_gate), then W_o
  return _out(p, _apply(w, _values(p, x)) * _values(p, x, "out_gate"))


def _diff(p, x, w):  # Ye et al., 2024, eq. 3: (1 - lambda_init) RMSNorm(head_i); layer 0: lambda_init = 0.2
  return _out(p, _norm(_apply(w, _values(p, x)), p["subln_scale"]) * (1 - (0.8 - 0.6)))


# name -> (variant, hyperparameters, takes key padding, causal, reconstruction)
CASES = {
    "routing": ("routing", dict(num_clusters=3, window=4, local_window=3), False, True, _plain),
    "lsh": ("lsh", dict(num_buckets=4, chunk_size=4), False, True, _plain),
    "moba": ("moba", dict(block_size=4, top_k=2), False, True, _plain),
    "topk": ("topk", dict(top_k=3, block_k=8), True, True, _plain),
    "knn": ("knn", dict(top_k=3, block_k=8), True, True, _plain),
    "duo": ("duo", dict(window=3, num_sinks=1, num_kv_heads=2), True, True, _plain),
    "duo_static": ("duo", dict(window=3, num_sinks=1, streaming_heads=(0, 2)), True, True, _plain),
    "gla": ("gla", dict(chunk_size=8, sub_chunk=4, expand_k=1.0), True, True, _gla),
    "deltanet": ("deltanet", dict(chunk_size=8), True, True, _deltanet),
    "gated_deltanet": ("gated_deltanet", dict(chunk_size=8), True, True, _gated_deltanet),
    "mala": ("mala", dict(chunk_size=8), True, True, _mala),
    "moh": ("moh", dict(num_shared=1, top_k=2), True, True, _plain),
    "diff": ("diff", dict(num_heads=2, num_kv_heads=1), True, True, _diff),
    "diffqkv": ("diffqkv", dict(num_k_heads=1, num_v_heads=2), True, True, _plain),
    "talking_heads": ("talking_heads", dict(num_qk_heads=2), True, True, _plain),
    "linformer": ("linformer", dict(k_proj=4, max_len=16), True, False, _plain),
    "nystromformer": ("nystromformer", dict(num_landmarks=4, conv_kernel=3), False, False, _plain),
    "pooled_cross": ("pooled_cross", dict(pool=5), True, False, _plain),  # windows 5, 5, 2 (partial)
}
KIND = {"routing": "nonnegative", "moh": "nonnegative", "gla": "signed", "deltanet": "signed",
        "gated_deltanet": "signed", "mala": "signed", "diff": "signed", "talking_heads": "signed",
        "linformer": "signed", "nystromformer": "signed"}


@functools.lru_cache(maxsize=None)
def _run(case):
  variant, hp, padded, causal, _ = CASES[case]
  module = build(variant, **{"num_heads": H, "causal": causal, **hp})
  x = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
  variables = random_params(module, x)
  mask = M.KeyPadding(jnp.asarray(VALID)) if padded else None

  @jax.jit
  def both(variables, x):
    y = module.apply(variables, x, mask=mask)
    y_cap, state = module.apply(variables, x, mask=mask, mutable=["attention"])
    return y, y_cap, state["attention"]["weights"][0]

  return module, variables, x, *jax.device_get(both(variables, x))


@pytest.mark.parametrize("case", list(CASES))
def test_captured_weights_times_values_reproduce_the_output(case):
  variant, hp, padded, causal, reconstruct = CASES[case]
  module, variables, x, y, y_cap, w = _run(case)
  p = variables["params"]
  heads = hp.get("num_heads", H)
  assert module.weights_unavailable is None and module.weight_kind == KIND.get(variant, "probability")
  assert w.shape == (B, heads, T, T) and w.dtype == np.float32
  np.testing.assert_allclose(y_cap, y, **TOL)  # the capture path's output == the normal path's
  np.testing.assert_allclose(reconstruct(p, x, w), y, **TOL)
  wrong = reconstruct(p, x, np.swapaxes(w, -1, -2))  # canary: the transposed matrix
  assert float(np.abs(wrong - y).max()) > 1e-2 * float(np.abs(y).max())
  if causal:
    assert float(np.abs(np.triu(w, 1)).max()) == 0.0
  if padded:  # padded keys are never read
    assert float(np.abs(w[1, :, :, ~VALID[1]]).max()) == 0.0 and float(np.abs(w[0]).max()) > 0
  if variant == "pooled_cross":  # a window's tokens share their pooled query's row; windows differ
    np.testing.assert_array_equal(w[:, :, :5], np.repeat(w[:, :, :1], 5, axis=2))
    np.testing.assert_array_equal(w[:, :, 10:], np.repeat(w[:, :, 10:11], 2, axis=2))
    assert float(np.abs(w[:, :, 0] - w[:, :, 5]).max()) > 1e-3
  if module.weight_kind == "probability":
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  elif module.weight_kind == "nonnegative":
    assert float(w.min()) >= 0.0
  else:  # signed: the flag is needed
    assert float(w.min()) < -1e-3


@pytest.mark.parametrize("case", ["gla", "linformer"])
def test_weight_gradients_through_the_hook(case):
  """d loss / d W through the "perturbations" entry equals the gradient of the independent
  reconstruction at W (loss = sum y^2); canary: the gradient at the transposed W differs."""
  variant, hp, padded, causal, reconstruct = CASES[case]
  module, variables, x, y, _, w = _run(case)
  mask = M.KeyPadding(jnp.asarray(VALID)) if padded else None
  loss = jax.jit(jax.grad(lambda pert: jnp.sum(module.apply(
      {**variables, "perturbations": {"weights": pert}}, x, mask=mask, mutable=["attention"])[0] ** 2)))
  g = np.asarray(loss(jnp.zeros_like(w)))
  expected = jax.grad(lambda ww: jnp.sum(reconstruct(variables["params"], x, ww) ** 2))
  np.testing.assert_allclose(g, expected(jnp.asarray(w)), atol=1e-4 * float(np.abs(g).max()))
  wrong = np.asarray(expected(jnp.swapaxes(jnp.asarray(w), -1, -2)))
  assert float(np.abs(wrong - g).max()) > 1e-2 * float(np.abs(g).max())


def test_mega_attention_weights_through_its_gates():
  """Mega (Ma et al., 2023): the weights W [B, 1, T, T] applied to V = SiLU(x W_v + b_v);
  the layer's own (gamma * (W V)) U_h (the "h_from_attention" projection, read from the
  normal call's intermediates) is reproduced; chunk 8 over T = 12: a partial last chunk
  and zero weight across chunks."""
  module = build("mega", num_heads=1, chunk_size=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
  variables = random_params(module, x)
  mask = M.KeyPadding(jnp.asarray(VALID))

  @jax.jit
  def both(variables, x):
    y, inter = module.apply(variables, x, mask=mask, capture_intermediates=True, mutable=["intermediates"])
    y_cap, state = module.apply(variables, x, mask=mask, mutable=["attention"])
    return y, y_cap, state["attention"]["weights"][0], inter["intermediates"]

  y, y_cap, w, inter = jax.device_get(both(variables, x))
  p = variables["params"]
  np.testing.assert_allclose(y_cap, y, **TOL)
  assert w.shape == (B, 1, T, T) and module.weight_kind == "probability"
  v = jax.nn.silu(x @ p["value"]["kernel"] + p["value"]["bias"])
  gamma = jax.nn.silu(inter["reset_gate"]["__call__"][0])

  def h_from_attention(w):
    o = jnp.einsum("bqk,bkd->bqd", w[:, 0], v) * gamma
    return jnp.einsum("bqd,dm->bqm", o, p["h_from_attention"]["kernel"][0])

  np.testing.assert_allclose(h_from_attention(w), inter["h_from_attention"]["__call__"][0], **TOL)
  wrong = h_from_attention(np.swapaxes(w, -1, -2))  # canary
  assert float(np.abs(wrong - inter["h_from_attention"]["__call__"][0]).max()) > 1e-3
  chunk = np.arange(T) // 8
  assert float(np.abs(w[..., chunk[:, None] != chunk[None, :]]).max()) == 0.0
  assert float(np.abs(np.triu(w, 1)).max()) == 0.0 and float(np.abs(w[1, :, :, ~VALID[1]]).max()) == 0.0
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)


def test_flow_and_rollout_refuse_the_signed_zoo_with_one_line():
  """rollout / flow need non-negative weights (`analyze` asks `refusal(kinds=("probability",
  "nonnegative"))`): the newly hooked signed variants are refused by name, the
  non-negative ones pass; based still has no hook and says why."""
  nonneg = ("probability", "nonnegative")
  for variant in ("diff", "gla", "linformer"):
    cfg = TransformerConfig(d_model=D, num_layers=2, layer_variants=("mha", variant), causal=variant != "linformer")
    reason = refusal(layer_infos(cfg), kinds=nonneg)
    assert reason.startswith(f"layer 1 ({variant}) has signed attention weights") and "\n" not in reason
    assert refusal(layer_infos(cfg)) is None  # raw maps take signed weights
  for variant in ("moh", "topk", "mega"):
    cfg = TransformerConfig(d_model=D, num_layers=1, layer_variants=(variant,),
                            num_heads=1 if variant == "mega" else H)
    assert refusal(layer_infos(cfg), kinds=nonneg) is None
  assert "different value projections" in build("based").weights_unavailable
