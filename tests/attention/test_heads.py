"""Oracle, reduction and contract tests for the head-structure variants: moh, diff,
talking_heads, diffqkv."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build
from attnlab.attention.variants.heads import diff_lambda_init
from tests.attention import contract
from tests.attention.contract import random_params
from tests.attention.test_softmax_like import allowed_np, alibi_np, rope_np

VARIANTS = {
    "moh": dict(num_heads=4, num_shared=1, top_k=2),
    "diff": dict(num_heads=2, layer_index=2, num_layers=4),  # 0-based: lambda_init at depth l = 3
    "talking_heads": dict(num_heads=2, num_qk_heads=3, num_v_heads=4, head_dim=8),
    "diffqkv": dict(num_heads=4, num_k_heads=1, num_v_heads=2, k_head_dim=6, v_head_dim=10),
}
NAMES = list(VARIANTS)


# ---- independent oracles ------------------------------------------------------------

def proj(x, kernel):
  return jnp.einsum("btd,dhk->bthk", x, kernel)


def softmax_rows(s, allowed):
  """Softmax over visible keys (rows in these tests always see at least one key).

  The row max is a stop_gradient shift: softmax does not depend on it, so its gradient
  is exactly zero either way."""
  m = jax.lax.stop_gradient(jnp.max(jnp.where(allowed, s, -1e30), -1, keepdims=True))
  e = jnp.where(allowed, jnp.exp(s - m), 0.0)
  return e / e.sum(-1, keepdims=True)


def head_scores(q, k, qh, kh, bias_h):
  """Scores of query head qh against key head kh, [B, Tq, Tk]."""
  return jnp.einsum("bqd,bkd->bqk", q[:, :, qh], k[:, :, kh]) / np.sqrt(q.shape[-1]) + bias_h


def oracle(name, hp, variables, x, context=None, causal=True, positional="rope", kv_valid=None):
  """Each variant rebuilt from its params with explicit per-head [Tq, Tk] weight matrices."""
  p = variables["params"]
  src = x if context is None else context
  q, k, v = proj(x, p["query"]["kernel"]), proj(src, p["key"]["kernel"]), proj(src, p["value"]["kernel"])
  tq, tk = q.shape[1], k.shape[1]
  if positional == "rope":
    q, k = rope_np(q, np.arange(tq)), rope_np(k, np.arange(tk))
  allowed = allowed_np(tq, tk, causal, kv_valid)[:, 0]  # [B|1, Tq, Tk]
  h = hp["num_heads"]
  alibi = alibi_np(h, tq, tk)[0] if positional == "alibi" else np.zeros((h, 1, 1))

  if name == "moh":
    hs, top_k, hkv = hp["num_shared"], hp["top_k"], k.shape[2]
    heads = []
    for i in range(h):
      w = softmax_rows(head_scores(q, k, i, i // (h // hkv), alibi[i]), allowed)
      heads.append(jnp.einsum("bqk,bkd->bqd", w, v[:, :, i // (h // hkv)]))
    o = jnp.stack(heads, axis=2)  # [B, T, H, D]
    gates = []
    if hs:
      gates.append(jax.nn.softmax(x @ p["router_shared"], -1) * hs if hs > 1 else jnp.ones(x.shape[:2] + (1,)))
    if h > hs:
      pr = jax.nn.softmax(x @ p["router_routed"], -1)
      order = jnp.argsort(-pr, axis=-1)[..., :top_k]
      sel = (order[..., :, None] == jnp.arange(h - hs)).any(-2)
      kept = jnp.where(sel, pr, 0.0)
      gates.append(kept / kept.sum(-1, keepdims=True) * top_k)
    if hs and h > hs:
      alpha = jax.nn.softmax(x @ p["router_type"], -1) * 2
      gates = [gates[0] * alpha[..., :1], gates[1] * alpha[..., 1:]]
    y = o * jnp.concatenate(gates, -1)[..., None]

  elif name == "diff":
    lam_init = 0.8 - 0.6 * math.exp(-0.3 * hp.get("layer_index", 0))  # l - 1 = the 0-based index
    lam = (jnp.exp(jnp.dot(p["lambda_q1"], p["lambda_k1"])) - jnp.exp(jnp.dot(p["lambda_q2"], p["lambda_k2"]))
           + lam_init)
    hkv = v.shape[2]
    heads = []
    for i in range(h):
      g = i // (h // hkv)
      a1 = softmax_rows(head_scores(q, k, 2 * i, 2 * g, alibi[i]), allowed)
      a2 = softmax_rows(head_scores(q, k, 2 * i + 1, 2 * g + 1, alibi[i]), allowed)
      o = jnp.einsum("bqk,bkd->bqd", a1 - lam * a2, v[:, :, g])
      o = o / jnp.sqrt(jnp.mean(o ** 2, -1, keepdims=True) + 1e-5) * p["subln_scale"]
      heads.append(o * (1 - lam_init))
    y = jnp.stack(heads, axis=2)

  elif name == "talking_heads":
    j = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = jnp.einsum("bkqt,kh->bhqt", j, p["logits_mix"]) + alibi[None]
    w = softmax_rows(logits, allowed[:, None])
    u = jnp.einsum("bhqt,hv->bvqt", w, p["weights_mix"])
    y = jnp.einsum("bvqt,btvd->bqvd", u, v)

  elif name == "diffqkv":
    hk, hv = k.shape[2], v.shape[2]
    heads = []
    for i in range(h):
      w = softmax_rows(head_scores(q, k, i, i // (h // hk), alibi[i]), allowed)
      heads.append(jnp.einsum("bqk,bkd->bqd", w, v[:, :, i // (h // hv)]))
    y = jnp.stack(heads, axis=2)
  else:
    raise KeyError(name)
  return jnp.einsum("bqhd,hdm->bqm", y, p["out"]["kernel"])


def init(name, hp, x, context=None):
  module = build(name, **hp)
  return module, nn.unbox(jax.jit(module.init)(jax.random.key(0), x, context=context))


def assert_matches_oracle(name, hp, x, context=None, **kw):
  """`name` equals this file's `oracle`, forward and gradients (`contract.check_against_oracle`)."""
  contract.check_against_oracle(oracle, name, hp, x, context, **kw)


# ---- oracle tests ----------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal,positional", [(True, "rope"), (False, "alibi")])
def test_oracle_self(name, causal, positional):
  x, _ = contract.make_inputs(length=12)
  assert_matches_oracle(name, VARIANTS[name], x, causal=causal, positional=positional)


@pytest.mark.parametrize("name,causal", [(n, False) for n in NAMES] + [("talking_heads", True), ("diffqkv", True)])
def test_oracle_cross(name, causal):
  x, ctx = contract.make_inputs(length=8, context_len=8 if causal else 11)
  assert_matches_oracle(name, VARIANTS[name], x, ctx, causal=causal, positional="none")


EXTRA_CASES = [
    ("moh", dict(num_heads=4, num_shared=0, top_k=2, num_kv_heads=2)),  # routing only, GQA
    ("moh", dict(num_heads=4, num_shared=3, top_k=1)),  # learned shared router (hs > 1)
    ("diff", dict(num_heads=2, num_kv_heads=1, layer_index=0)),  # GQA pairs
    ("talking_heads", dict(num_heads=3, num_qk_heads=2, num_v_heads=2, head_dim=8)),
    ("diffqkv", dict(num_heads=4, num_k_heads=2, num_v_heads=1)),  # more K than V heads
]


@pytest.mark.parametrize("name,hp", EXTRA_CASES)
def test_oracle_other_head_layouts_with_padding(name, hp):
  x, _ = contract.make_inputs(length=10)
  kv_valid = np.ones((2, 10), bool)
  kv_valid[0, 6:] = False
  assert_matches_oracle(name, hp, x, causal=False, positional="rope", kv_valid=kv_valid)


# ---- reductions ----------------------------------------------------------------------

def _mha_of(variables, **hp):
  """mha with the same query/key/value/out params."""
  params = {n: variables["params"][n] for n in ("query", "key", "value", "out")}
  return build("mha", **hp), {"params": params}


@pytest.mark.parametrize("routing", [dict(num_shared=4, top_k=0), dict(num_shared=0, top_k=4)])
def test_moh_reduces_to_mha(routing):
  """All heads shared (or top-k = all heads) with zero routers: unit gates, exactly mha."""
  x, _ = contract.make_inputs(length=12)
  module = build("moh", num_heads=4, **routing)
  variables = random_params(module, x)
  mha, mha_vars = _mha_of(variables, num_heads=4)
  y_mha = mha.apply(mha_vars, x)
  assert float(jnp.max(jnp.abs(module.apply(variables, x) - y_mha))) > 1e-3  # the router matters
  zeroed = {"params": {n: (jnp.zeros_like(w) if n.startswith("router") else w)
                       for n, w in variables["params"].items()}}
  np.testing.assert_allclose(np.asarray(module.apply(zeroed, x)), np.asarray(y_mha), atol=1e-6)


def test_moh_load_balance_loss_is_sown():
  x, _ = contract.make_inputs(length=12)
  hp = dict(num_heads=4, num_shared=1, top_k=2)
  module = build("moh", **hp)
  variables = random_params(module, x)
  _, mut = module.apply(variables, x, mutable=["losses"])
  (loss,) = mut["losses"]["load_balance"]
  pr = jax.nn.softmax(x @ variables["params"]["router_routed"], -1).reshape(-1, 3)
  sel = np.zeros_like(np.asarray(pr))
  np.put_along_axis(sel, np.argsort(-np.asarray(pr), -1)[:, :2], 1.0, -1)
  ref = np.sum(sel.mean(0) * np.asarray(pr).mean(0))  # sum_i f_i P_i (MoH Eq. 7)
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
  zero = jax.tree.map(lambda a: a, variables)
  zero["params"]["router_routed"] = jnp.zeros_like(zero["params"]["router_routed"])
  _, mut = module.apply(zero, x, mutable=["losses"])
  np.testing.assert_allclose(float(mut["losses"]["load_balance"][0]), 2 / 3, rtol=1e-6)  # = top_k / hr
  with pytest.raises(ValueError, match="top_k must be"):
    init("moh", dict(num_heads=4, num_shared=4, top_k=2), x)


def test_talking_heads_at_init_is_mha():
  """Square mixing matrices start as the identity: talking_heads == mha at init."""
  x, _ = contract.make_inputs(length=12)
  module, variables = init("talking_heads", dict(num_heads=2), x)
  mha, mha_vars = _mha_of(variables, num_heads=2)
  np.testing.assert_allclose(np.asarray(module.apply(variables, x)), np.asarray(mha.apply(mha_vars, x)), atol=1e-6)


def test_diffqkv_with_equal_heads_is_mha():
  x, _ = contract.make_inputs(length=12)
  module = build("diffqkv", num_heads=2, num_k_heads=2, num_v_heads=2)
  variables = random_params(module, x)
  mha, mha_vars = _mha_of(variables, num_heads=2)
  np.testing.assert_allclose(np.asarray(module.apply(variables, x)), np.asarray(mha.apply(mha_vars, x)), atol=1e-6)


def test_diff_lambda_init_schedule():
  assert diff_lambda_init(0) == pytest.approx(0.2)  # 0-based layer index: l = 1
  assert diff_lambda_init(11) == pytest.approx(0.8 - 0.6 * math.exp(-3.3))  # l = 12
  with pytest.raises(ValueError, match="0-based"):
    diff_lambda_init(-1)


def test_unused_num_kv_heads_raises():
  x, _ = contract.make_inputs(length=4)
  for name in ("talking_heads", "diffqkv"):
    with pytest.raises(ValueError, match="does not use num_kv_heads"):
      init(name, dict(num_heads=2, num_kv_heads=1), x)


# ---- contract ------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_contract(name):
  contract.check_patterns(name, VARIANTS[name])
  contract.check_grads_finite(name, VARIANTS[name])


@pytest.mark.parametrize("name,chunk", [(n, 1) for n in NAMES] + [("diff", 4), ("talking_heads", 4)])
def test_decode_matches_full(name, chunk):
  contract.check_decode_matches_full(name, VARIANTS[name], chunk=chunk)
