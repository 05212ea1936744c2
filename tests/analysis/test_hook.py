"""The attention-weights hook (`AttentionModule.capturing` / `attend_captured`, head gates).

Independent check: the captured weights, multiplied by the values computed here from the
layer's own value/output kernels (plain einsums, no attnlab helper), reproduce the layer's
normal output; a transposed matrix (the canary) does not. The hook must not exist in an
ordinary call: init makes no extra collections and the normal output is unchanged.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build
from attnlab.analysis.capture import refusal, LayerInfo

B, T, D, H = 2, 12, 32, 4

# (variant, hyperparameters): softmax family, a window, a sparse pattern, linear features.
# The value path of each is x @ W_value (no positional map on v), so o_h = A_h (x W_v,h).
DIRECT = [
    ("mha", dict(positional="none")),
    ("cog", {}),
    ("block_local", dict(block_size=4)),
    ("linear", dict(form="chunked", chunk_size=4)),
]


@functools.lru_cache(maxsize=None)
def _run(name, hp_items=()):
  module = build(name, num_heads=H, causal=True, **dict(hp_items))
  x = jax.random.normal(jax.random.PRNGKey(0), (B, T, D))
  variables = nn.meta.unbox(jax.jit(module.init)(jax.random.PRNGKey(1), x))

  @jax.jit
  def both(variables, x):
    y = module.apply(variables, x)
    y_cap, state = module.apply(variables, x, mutable=["attention"])
    return y, y_cap, state["attention"]["weights"][0]

  return module, variables, x, *both(variables, x)


def _reconstruct(variables, x, w):
  """y = sum_h (w_h @ (x W_v,h)) W_o,h from the layer's kernels."""
  p = variables["params"]
  wv, wo = p["value"]["kernel"], p["out"]["kernel"]  # [D, Hkv, Dh], [H, Dh, D]
  v = jnp.einsum("btd,dhk->bthk", x, wv)
  v = jnp.repeat(v, H // v.shape[2], axis=2)
  o = jnp.einsum("bhqk,bkhd->bqhd", w, v)
  return jnp.einsum("bqhd,hdm->bqm", o, wo)


@pytest.mark.parametrize("name,hp", DIRECT, ids=[n for n, _ in DIRECT])
def test_captured_weights_times_values_reproduce_the_output(name, hp):
  module, variables, x, y, y_cap, w = _run(name, tuple(hp.items()))
  assert set(variables) == {"params"}  # the hook adds nothing at init
  assert w.shape == (B, H, T, T) and w.dtype == jnp.float32
  np.testing.assert_allclose(y_cap, y, atol=2e-5, rtol=1e-4)  # capture path == normal path
  np.testing.assert_allclose(_reconstruct(variables, x, w), y, atol=2e-5, rtol=1e-4)
  # causal: nothing above the diagonal
  assert float(jnp.abs(jnp.triu(w, 1)).max()) == 0.0
  # canary: the transposed matrix does not reproduce the output
  wrong = _reconstruct(variables, x, jnp.swapaxes(w, -1, -2))
  assert float(jnp.abs(wrong - y).max()) > 1e-3
  if module.weight_kind == "probability":
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  if name == "cog":
    assert module.weight_kind == "signed" and float(w.min()) < 0
  if name == "block_local":  # the sparse pattern: zero off its blocks, positive on them
    blocks = np.arange(T) // 4
    off = blocks[:, None] != blocks[None, :]
    on = ~off & np.tri(T, dtype=bool)
    assert float(jnp.abs(w[..., off]).max()) == 0.0 and float(w[..., on].min()) > 0


def test_decay_variant_capture_path_equals_normal_path():
  """Retention's implied matrix (decayed q.k, signed): capture output == normal output."""
  module, variables, x, y, y_cap, w = _run("retention")
  np.testing.assert_allclose(y_cap, y, atol=2e-5, rtol=1e-4)
  assert module.weight_kind == "signed"
  # the decay: |w[i, j]| relative to q.k shrinks with i - j; row sums are not 1
  assert float(jnp.abs(w.sum(-1) - 1).max()) > 1e-2


def test_head_gates_remove_a_head():
  module, variables, x, y, _, w = _run("mha", (("positional", "none"),))

  @jax.jit
  def gated(variables, x, xi):
    return module.apply({**variables, "head_gates": {"xi": xi}}, x)

  np.testing.assert_allclose(gated(variables, x, jnp.ones(H)), y, atol=1e-6)
  xi = jnp.ones(H).at[1].set(0.0)
  keep = jnp.ones(H).at[1].set(0.0)[None, :, None, None]
  np.testing.assert_allclose(gated(variables, x, xi), _reconstruct(variables, x, w * keep), atol=2e-5, rtol=1e-4)
  assert float(jnp.abs(gated(variables, x, xi) - y).max()) > 1e-3  # canary: the gate bites


def test_head_outputs_are_sown_and_project_to_the_layer_output():
  """attention/head_outputs [B, T, H, Dv]: each head's output before W_o; sum_h o_h W_o,h is
  the layer's output (the layer has no output bias); the canary: the heads permuted miss it."""
  module, variables, x, y, _, w = _run("mha", (("positional", "none"),))
  state = jax.jit(lambda v, x: module.apply(v, x, mutable=["attention"])[1])(variables, x)
  heads = state["attention"]["head_outputs"][0]
  wo = variables["params"]["out"]["kernel"]  # [H, Dv, D]
  assert heads.shape == (B, T, H, wo.shape[1])
  np.testing.assert_allclose(jnp.einsum("bthk,hkd->btd", heads, wo), y, atol=2e-5, rtol=1e-4)
  wrong = jnp.einsum("bthk,hkd->btd", heads[:, :, ::-1], wo)
  assert float(jnp.abs(wrong - y).max()) > 1e-3


def test_variants_without_the_hook_declare_it_and_methods_refuse():
  assert build("based", num_heads=H).weights_unavailable  # its two branches weight two value projections
  for name in ("mha", "diff", "gla"):  # diff, gla: tests/analysis/test_hook_zoo.py
    assert build(name, num_heads=H).weights_unavailable is None
  infos = [LayerInfo("mha", "probability", None), LayerInfo("gla", "probability", "no hook")]
  assert "layer 1 (gla)" in refusal(infos)
  assert "signed" in refusal([LayerInfo("cog", "signed", None)], kinds=("probability",))
  assert refusal(infos[:1]) is None
