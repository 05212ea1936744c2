"""Oracle and contract tests for the softmax family: mha, mqa, gqa, sliding_window, sink_window."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build
from tests.attention import contract

VARIANTS = {
    "mha": dict(num_heads=4),
    "mqa": dict(num_heads=4),
    "gqa": dict(num_heads=4, num_kv_heads=2),
    "sliding_window": dict(num_heads=2, window=3),
    "sink_window": dict(num_heads=2, window=3, num_sinks=2),
}


def rope_np(x, pos, base=10000.0):
  """Independent RoPE: rotate pairs (i, i + D/2) by pos * base^(-2i/D). x [B,T,H,D]."""
  d = x.shape[-1]
  inv = base ** (-np.arange(0, d // 2) * 2.0 / d)
  ang = pos[:, :, None, None] * inv
  x1, x2 = x[..., : d // 2], x[..., d // 2:]
  return jnp.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1)


def allowed_np(name, hp, tq, tk, causal):
  """The [Tq, Tk] boolean pattern each variant implies, from its definition."""
  i, j = np.arange(tq)[:, None], np.arange(tk)[None, :]
  a = np.ones((tq, tk), bool) if not causal else j <= i
  if name == "sliding_window":
    w = hp["window"]  # w keys, the query's own included: causal the last w, else centred
    before, after = (w - 1, 0) if causal else (w // 2, w - 1 - w // 2)
    a = a & (j >= i - before) & (j <= i + after)
  if name == "sink_window":
    a = (j <= i) & ((j >= i - hp["window"] + 1) | (j < hp["num_sinks"]))
  return a


def oracle(name, hp, params, x, context=None, causal=True, positional="rope"):
  """Materialised attention from the module's own params, built the obvious way."""
  p = params["params"]
  src = x if context is None else context
  q = jnp.einsum("btd,dhk->bthk", x, p["query"]["kernel"])
  k = jnp.einsum("btd,dhk->bthk", src, p["key"]["kernel"])
  v = jnp.einsum("btd,dhk->bthk", src, p["value"]["kernel"])
  b, tq, h, d = q.shape
  tk = k.shape[1]
  if positional == "rope":
    q = rope_np(q, np.broadcast_to(np.arange(tq), (b, tq)))
    k = rope_np(k, np.broadcast_to(np.arange(tk), (b, tk)))
  rep = h // k.shape[2]
  k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
  if positional == "alibi":
    slopes = np.array([2 ** (-8 * (i + 1) / h) for i in range(h)])
    s = s - slopes[None, :, None, None] * np.abs(np.arange(tq)[:, None] - np.arange(tk)[None, :])
  s = jnp.where(allowed_np(name, hp, tq, tk, causal), s, -1e30)
  w = jax.nn.softmax(s, axis=-1)
  y = jnp.einsum("bhqk,bkhd->bqhd", w, v)
  return jnp.einsum("bqhd,hdm->bqm", y, p["out"]["kernel"])


CASES = [(n, causal, pos) for n in VARIANTS for causal in (True, False) for pos in ("rope", "alibi")
         if not (n == "sink_window" and not causal)]


@pytest.mark.parametrize("name,causal,positional", CASES)
def test_oracle_forward_and_grad(name, causal, positional):
  hp = {**VARIANTS[name], "causal": causal, "positional": positional}
  x, _ = contract.make_inputs(length=12)
  module, params, y = contract.init_apply(name, hp, x)
  ref = oracle(name, hp, params, x, causal=causal, positional=positional)
  contract.assert_oracle(name, "fwd", y, ref, atol=2e-5, rtol=1e-5)

  loss_mod = lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))  # noqa: E731
  loss_ref = lambda p, x: jnp.sum(jnp.sin(oracle(name, hp, p, x, causal=causal, positional=positional)))  # noqa: E731
  g_mod = jax.grad(loss_mod, argnums=(0, 1))(params, x)
  g_ref = jax.grad(loss_ref, argnums=(0, 1))(params, x)
  contract.assert_oracle(name, "grad", g_mod, g_ref, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["mha", "gqa"])
@pytest.mark.parametrize("causal", [True, False])
def test_oracle_cross_attention(name, causal):
  hp = {**VARIANTS[name], "causal": causal, "positional": "none"}
  x, ctx = contract.make_inputs(length=8, context_len=8 if causal else 11)
  _, params, y = contract.init_apply(name, hp, x, ctx)
  ref = oracle(name, hp, params, x, context=ctx, causal=causal, positional="none")
  contract.assert_oracle(name, "fwd", y, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_contract(name):
  contract.check_patterns(name, VARIANTS[name])
  contract.check_grads_finite(name, VARIANTS[name])


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("chunk", [1, 4])
def test_decode_matches_full(name, chunk):
  contract.check_decode_matches_full(name, VARIANTS[name], chunk=chunk)


def test_decode_alibi_matches_full():
  contract.check_decode_matches_full("mha", {"num_heads": 2, "positional": "alibi"})


def test_mqa_has_one_kv_head_and_gqa_divides():
  x, _ = contract.make_inputs(length=4)
  _, params, _ = contract.init_apply("mqa", {"num_heads": 4}, x)
  assert params["params"]["key"]["kernel"].shape[1] == 1
  with pytest.raises(ValueError, match="multiple of num_kv_heads"):
    contract.init_apply("gqa", {"num_heads": 4, "num_kv_heads": 3}, x)


def test_bad_hyperparameters_are_one_line_errors():
  with pytest.raises(ValueError, match="has no hyperparameter 'windw'"):
    build("sliding_window", windw=3)
  with pytest.raises(KeyError, match="registered:.*mha"):
    build("no_such_variant")
  x, _ = contract.make_inputs(d_model=30)
  with pytest.raises(ValueError, match="not divisible by num_heads"):
    contract.init_apply("mha", {"num_heads": 4}, x)
