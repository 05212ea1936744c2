"""Attention zoo, part 3 (issue 18): gated_deltanet (variants/gated.py), knn (variants/routed.py),
logn_scaling and gatv2 (variants/softmax_like.py).

Every oracle is built here from the module's parameters with plain jnp / numpy and the
shared test helpers (oracle_parts: projections, RoPE), none of the module's own helpers:
* gated_deltanet: the paper's recurrence written plainly, token by token, in the paper's
  convention (S_t [Dv, Dk]): S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T,
  o_t = S_t q_t (no WY/UT transform, no triangular solve); T = 20, chunk 8 (3 chunks, the
  last padded), key padding;
* knn: dense scores, the top-k kept set chosen in numpy, the mean context key as a dense
  masked [T, T] average; 3 key tiles of block_k 8, the last partial, key padding;
* logn_scaling: dense softmax with log(n_i) / log(n_train), n_i counted from the dense mask;
* gatv2: explicit [Tq, Tk, H, D] pre-activations, LeakyReLU as max(z, slope z); 3 query tiles.
Each has a canary: the oracle with the mechanism's piece removed is far from the module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build, masks as M
from attnlab.attention.ops.linear.delta_rule import delta_rule_attention
from tests.attention import contract

T = 20
GDN = dict(num_heads=2, chunk_size=8)


def _assert_bites(variant, what, y, y_wrong, floor=1e-2):
  """The canary: the oracle with `what` broken is visibly far (> floor) from the module."""
  gap = float(jnp.max(jnp.abs(y - y_wrong)))
  print(f"{variant} canary ({what}): max diff {gap:.2e}")
  assert gap > floor, f"{variant}: the oracle with {what} still matches ({gap:.2e})"


# ---- gated_deltanet oracle -------------------------------------------------------------
def _heads(x, p):
  return jnp.einsum("btd,dhk->bthk", x, p["kernel"])


def _unit(a):
  return a / jnp.sqrt(jnp.sum(a * a, -1, keepdims=True) + 1e-6)


def _rms(o, scale, eps=1e-5):
  return o / jnp.sqrt(jnp.mean(o * o, -1, keepdims=True) + eps) * scale


def gated_deltanet_oracle(p, x, valid=None, gated=True):
  """The gated delta rule token by token (a scan over t of the definition, outer products).

  p: the module's params; x [B, T, d]; valid [B, T] bool (a padded step writes nothing and
  does not decay: beta = 0, alpha = 1). gated=False drops alpha (the canary)."""
  q = _unit(jax.nn.silu(_heads(x, p["query"])))
  k = _unit(jax.nn.silu(_heads(x, p["key"])))
  v = _heads(x, p["value"])
  beta = jax.nn.sigmoid(_heads(x, p["beta"])[..., 0])  # [B, T, H]
  alpha = jnp.exp(-jnp.exp(p["A_log"]) * jax.nn.softplus(_heads(x, p["gate_a"])[..., 0] + p["dt_bias"]))
  if not gated:
    alpha = jnp.ones_like(alpha)
  if valid is not None:
    beta = jnp.where(valid[:, :, None], beta, 0.0)
    alpha = jnp.where(valid[:, :, None], alpha, 1.0)
  b, t, h, dk = q.shape
  eye = jnp.eye(dk)

  def step(s, inp):  # one token: S [B, H, Dv, Dk]
    qt, kt, vt, bt, at = inp
    bt, at = bt[..., None, None], at[..., None, None]
    transition = eye - bt * jnp.einsum("bhi,bhj->bhij", kt, kt)
    s = at * jnp.einsum("bhvi,bhij->bhvj", s, transition) + bt * jnp.einsum("bhv,bhk->bhvk", vt, kt)
    return s, jnp.einsum("bhvk,bhk->bhv", s, qt * dk ** -0.5)

  xs = tuple(jnp.moveaxis(a, 1, 0) for a in (q, k, v, beta, alpha))
  o = jnp.moveaxis(jax.lax.scan(step, jnp.zeros((b, h, v.shape[-1], dk)), xs)[1], 0, 1)  # [B, T, H, Dv]
  o = _rms(o, p["head_norm"]["scale"]) * jax.nn.silu(_heads(x, p["out_gate"]))
  return jnp.einsum("bthk,hkd->btd", o, p["out"]["kernel"])


def _oracle_errors(oracle, x, forms, call_kw=None, fwd_tol=2e-5, grad_tol=1e-4):
  """Module (each form) vs oracle on the same random params: forward and the gradient of
  sum(sin y) wrt (params, x). Returns {form: (fwd err, grad err)}."""
  call_kw = call_kw or {}
  base = build("gated_deltanet", **GDN)
  variables = contract.random_params(base, x)
  y_ref, g_ref = contract.output_and_grad(lambda v, x: oracle(v["params"], x), variables, x)
  errors = {}
  for form in forms:
    module = build("gated_deltanet", **{**GDN, "form": form})
    y, g = contract.output_and_grad(lambda v, x: module.apply(v, x, **call_kw), variables, x)
    contract.assert_oracle("gated_deltanet", f"fwd-{form}", y, y_ref, atol=fwd_tol, rtol=1e-4)
    contract.assert_oracle("gated_deltanet", f"grad-{form}", g, g_ref, atol=grad_tol, rtol=1e-4)
    gerr = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)))
    errors[form] = (float(jnp.max(jnp.abs(y - y_ref))), gerr)
    print(f"gated_deltanet {form}: fwd err {errors[form][0]:.2e}, grad err {gerr:.2e}")
  return errors, y_ref


def test_gated_deltanet_oracle_all_forms_padding_and_canary():
  """chunked = recurrent = the plain recurrence, fwd + grads, 3 chunks with a padded tail,
  under key padding (about 30% of keys invalid); the parallel form is tested equal to
  both at the op level (test_gated_delta_rule_reduces_to_delta_rule), to save a compile. Canary: the same oracle
  without the gate is far from the module."""
  x, _ = contract.make_inputs(length=T)
  valid = (jax.random.uniform(jax.random.key(3), (x.shape[0], T)) > 0.3).at[:, :3].set(True)
  _, y_ref = _oracle_errors(lambda p, x: gated_deltanet_oracle(p, x, valid=valid), x,
                            ("chunked", "recurrent"), call_kw={"mask": M.KeyPadding(valid)})
  variables = contract.random_params(build("gated_deltanet", **GDN), x)
  y_ungated = jax.jit(lambda v, x: gated_deltanet_oracle(v["params"], x, valid=valid, gated=False))(variables, x)
  _assert_bites("gated_deltanet", "gate removed", y_ref, y_ungated)


def test_gated_delta_rule_reduces_to_delta_rule():
  """Reduction (alpha = 1 is DeltaNet): the op with log_alpha = 0 equals the ungated op
  (its chunked form, itself tested against the paper's definition in test_gated.py), every
  form, output and final state; with a real gate it differs (canary), and the gated
  forms agree with each other (chunked = parallel = recurrent, output and state)."""
  ks = jax.random.split(jax.random.key(0), 5)
  b, t, h, d = 2, 19, 2, 4
  q = jax.random.normal(ks[0], (b, t, h, d))
  k = _unit(jax.random.normal(ks[1], (b, t, h, d)))
  v = jax.random.normal(ks[2], (b, t, h, 3))
  beta = jax.random.uniform(ks[3], (b, t, h))
  gate = jax.nn.log_sigmoid(jax.random.normal(ks[4], (b, t, h)) + 1.0)

  forms = ("chunked", "parallel", "recurrent")
  run = jax.jit(lambda g, forms: {f: delta_rule_attention(q, k, v, beta, form=f, chunk_size=8, log_alpha=g)
                                  for f in forms}, static_argnums=1)
  plain, ones, gated = run(None, ("chunked",)), run(jnp.zeros((b, t, h)), forms), run(gate, forms)
  for form in forms:  # every gated form at alpha = 1 equals the ungated op (chunked: WY path)
    for a, e in zip(ones[form], plain["chunked"]):
      np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=1e-5)
    assert float(jnp.max(jnp.abs(gated[form][0] - plain["chunked"][0]))) > 1e-2
    for a, e in zip(gated[form], gated["recurrent"]):
      np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=1e-5)


def test_gated_deltanet_patterns():
  contract.check_patterns("gated_deltanet", GDN)


def test_gated_deltanet_decode_matches_full():
  contract.check_decode_matches_full("gated_deltanet", GDN, length=4)


@pytest.mark.parametrize("bad", [dict(a_init_range=(0.0, 16.0)), dict(dt_min=0.2, dt_max=0.1)])
def test_gated_deltanet_rejects_bad_hyperparameters(bad):
  with pytest.raises(ValueError, match="gated_deltanet"):
    build("gated_deltanet", **GDN, **bad)


# ---- knn -------------------------------------------------------------------------------
KNN = dict(num_heads=2, top_k=5, block_k=8)


def _knn_qkv(p, x):
  from tests.attention.oracle_parts import proj, rope_bt
  b, t = x.shape[:2]
  pos = np.broadcast_to(np.arange(t), (b, t))
  return rope_bt(proj(x, p, "query"), pos), rope_bt(proj(x, p, "key"), pos), proj(x, p, "value")


def _knn_base(t, causal, valid):
  """[B, Tq, Tk] keys each query may see (causal, key padding)."""
  base = np.tril(np.ones((t, t), bool)) if causal else np.ones((t, t), bool)
  return base[None] & np.asarray(valid)[:, None, :]


def knn_kept(p, x, top_k, causal, valid):
  """[B, H, Tq, Tk] in numpy: allowed entries >= the row's top_k-th largest allowed score."""
  q, k, _ = _knn_qkv(p, x)
  base = _knn_base(x.shape[1], causal, valid)
  s = np.where(base[:, None], np.asarray(jnp.einsum("bqhd,bkhd->bhqk", q, k)), -np.inf)
  kth = -np.sort(-s, -1)[..., min(top_k, s.shape[-1]) - 1:min(top_k, s.shape[-1])]
  return base[:, None] & (s >= kth)


def knn_oracle(p, x, kept, causal, valid, with_mean=True):
  """Dense: softmax over [the kept keys' scores; the score of the context key = the masked
  mean of the allowed keys (a dense [T, T] average)], values likewise; with_mean=False is
  plain top-k (the canary)."""
  from tests.attention.oracle_parts import out_proj
  q, k, v = _knn_qkv(p, x)
  scale = q.shape[-1] ** -0.5
  base = _knn_base(x.shape[1], causal, valid)
  s = jnp.where(kept, jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale, -jnp.inf)
  w = base / base.sum(-1, keepdims=True)  # [B, Tq, Tk] mean weights
  kbar, vbar = jnp.einsum("bqk,bkhd->bqhd", w, k), jnp.einsum("bqk,bkhd->bqhd", w, v)
  s_mean = jnp.einsum("bqhd,bqhd->bhq", q, kbar)[..., None] * scale
  if not with_mean:
    s_mean = jnp.full_like(s_mean, -jnp.inf)
  a = jax.nn.softmax(jnp.concatenate([s, s_mean], -1), -1)
  o = jnp.einsum("bhqk,bkhd->bqhd", a[..., :-1], v) + jnp.swapaxes(a[..., -1:], 1, 2) * vbar
  return out_proj(o, p)


@pytest.mark.parametrize("causal,top_k", [(True, 5), (False, 24)])
def test_knn_oracle_and_reduction(causal, top_k):
  """Fwd + grads vs the dense oracle at T = 20, block_k = 8 (3 key tiles, the last
  partial), example 0's last 7 keys padded. top_k = 24 >= T is the reduction: the kept set
  is every allowed key, i.e. dense attention over [tokens; mean]. Canary: the oracle
  without the mean key (plain top-k) differs."""
  hp = {**KNN, "causal": causal, "top_k": top_k}
  x, _ = contract.make_inputs(length=T)
  valid = np.ones((2, T), bool)
  valid[0, 13:] = False
  module = build("knn", **hp)
  variables = contract.random_params(module, x)
  kept = knn_kept(variables["params"], x, top_k, causal, valid)
  base = _knn_base(T, causal, valid)
  assert (kept.sum(-1) == np.minimum(top_k, base.sum(-1))[:, None]).all()
  if top_k >= T:
    assert (kept == base[:, None]).all()
  mask = M.KeyPadding(jnp.asarray(valid))
  run = lambda v, x: module.apply(v, x, mask=mask)  # noqa: E731
  ref = lambda v, x: knn_oracle(v["params"], x, kept, causal, valid)  # noqa: E731
  (y, g), (y_ref, g_ref) = contract.output_and_grad(run, variables, x), contract.output_and_grad(ref, variables, x)
  contract.assert_oracle("knn", "fwd", y, y_ref, atol=2e-5, rtol=1e-5)
  contract.assert_oracle("knn", "grad", g, g_ref, atol=5e-5, rtol=1e-4)
  gerr = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)))
  print(f"knn causal={causal} top_k={top_k}: fwd err {float(jnp.max(jnp.abs(y - y_ref))):.2e}, grad err {gerr:.2e}")
  y_plain = jax.jit(lambda v, x: knn_oracle(v["params"], x, kept, causal, valid, with_mean=False))(variables, x)
  _assert_bites("knn", "no mean key", y_ref, y_plain)


def test_knn_patterns_and_decode():
  contract.check_patterns("knn", KNN)
  contract.check_decode_matches_full("knn", KNN, length=4)
  with pytest.raises(ValueError, match="KeyPadding"):
    x, _ = contract.make_inputs(length=8)
    module = build("knn", **KNN)
    module.apply(contract.random_params(module, x), x, mask=M.SlidingWindow(2))


# ---- logn_scaling ------------------------------------------------------------------------
LOGN = dict(num_heads=2, n_train=8)


def logn_oracle(name, hp, variables, x, context=None, causal=True, positional="rope", kv_valid=None,
                scaled=True):
  """Dense: softmax((log n_i / log n_train) q_i k_j / sqrt(d)) over the allowed keys, n_i
  counted from the [Tq, Tk] allowed matrix (causal, padding). scaled=False: plain softmax."""
  from tests.attention.oracle_parts import out_proj, proj, rope_bt
  p = variables["params"]
  b, t = x.shape[:2]
  q, k, v = proj(x, p, "query"), proj(x, p, "key"), proj(x, p, "value")
  if positional == "rope":
    pos = np.broadcast_to(np.arange(t), (b, t))
    q, k = rope_bt(q, pos), rope_bt(k, pos)
  allowed = np.tril(np.ones((t, t), bool)) if causal else np.ones((t, t), bool)
  allowed = allowed[None] & (np.ones((b, t), bool) if kv_valid is None else np.asarray(kv_valid))[:, None, :]
  n = allowed.sum(-1)[:, None, :, None]  # [B, 1, Tq, 1]
  factor = np.log(n) / np.log(hp["n_train"]) if scaled else 1.0
  logits = factor * jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  w = jax.nn.softmax(jnp.where(allowed[:, None], logits, -jnp.inf), -1)
  return out_proj(jnp.einsum("bhqk,bkhd->bqhd", w, v), p)


def test_logn_scaling_oracle_padding_and_canary():
  """Fwd + grads vs the dense oracle, causal with RoPE and key padding (n_i then counts
  only valid keys), T = 20. Canary: the oracle without the factor (plain softmax) differs."""
  x, _ = contract.make_inputs(length=T)
  valid = np.ones((2, T), bool)
  valid[0, 13:] = False
  contract.check_against_oracle(logn_oracle, "logn_scaling", LOGN, x, kv_valid=valid)
  hp = {**LOGN, "causal": True, "positional": "rope"}
  variables = contract.random_params(build("logn_scaling", **hp), x)
  mask = M.KeyPadding(jnp.asarray(valid))
  y = jax.jit(lambda v, x: build("logn_scaling", **hp).apply(v, x, mask=mask))(variables, x)
  y_plain = logn_oracle("logn_scaling", hp, variables, x, kv_valid=valid, scaled=False)
  _assert_bites("logn_scaling", "no factor", y, y_plain)


def test_logn_scaling_reduces_to_softmax_at_n_train():
  """Reduction: non-causal, no mask, n = T = n_train -> the factor is 1: equals mha with the
  same parameters (and differs at another n_train: canary)."""
  x, _ = contract.make_inputs(length=T)
  hp = dict(num_heads=2, causal=False)
  mha = build("mha", **hp)
  variables = contract.random_params(mha, x)
  run = jax.jit(lambda v, x, n: build("logn_scaling", **hp, n_train=n).apply(v, x), static_argnums=2)
  y_mha = jax.jit(mha.apply)(variables, x)
  np.testing.assert_allclose(np.asarray(run(variables, x, T)), np.asarray(y_mha), atol=1e-5)
  assert float(jnp.max(jnp.abs(run(variables, x, 4 * T) - y_mha))) > 1e-2


def test_logn_scaling_contract():
  contract.check_patterns("logn_scaling", LOGN)
  contract.check_decode_matches_full("logn_scaling", LOGN, length=4)
  with pytest.raises(ValueError, match="n_train"):
    build("logn_scaling", num_heads=2, n_train=1)


# ---- gatv2 ---------------------------------------------------------------------------------
GAT = dict(num_heads=2, q_chunk=8)


def gatv2_oracle(name, hp, variables, x, context=None, causal=True, positional="none", kv_valid=None,
                 slope=None):
  """Explicit per-(i, j) pre-activations q_i + k_j [B, Tq, Tk, H, D], LeakyReLU written as
  max(z, slope z), score a_h . (.), softmax over the allowed keys. slope=1.0 removes the
  nonlinearity (the canary)."""
  from tests.attention.oracle_parts import out_proj, proj
  p = variables["params"]
  src = x if context is None else context
  q, k, v = proj(x, p, "query"), proj(src, p, "key"), proj(src, p, "value")
  tq, tk = q.shape[1], k.shape[1]
  z = q[:, :, None, :, :] + k[:, None, :, :, :]
  slope = hp.get("negative_slope", 0.2) if slope is None else slope
  e = jnp.einsum("bijhd,hd->bhij", jnp.where(z > 0, z, slope * z), p["gatv2_a"])
  allowed = np.tril(np.ones((tq, tk), bool)) if causal else np.ones((tq, tk), bool)
  allowed = allowed[None] & (np.ones((x.shape[0], tk), bool) if kv_valid is None else np.asarray(kv_valid))[:, None]
  w = jax.nn.softmax(jnp.where(allowed[:, None], e, -jnp.inf), -1)
  return out_proj(jnp.einsum("bhij,bjhd->bihd", w, v), p)


def test_gatv2_oracle_padding_and_canary():
  """Fwd + grads vs the explicit oracle, causal, key padding, T = 20 in query tiles of 8
  (the last padded). Canary: the oracle without the LeakyReLU (slope 1) differs."""
  x, _ = contract.make_inputs(length=T)
  valid = np.ones((2, T), bool)
  valid[0, 13:] = False
  contract.check_against_oracle(gatv2_oracle, "gatv2", GAT, x, positional="none", kv_valid=valid)
  hp = {**GAT, "causal": True, "positional": "none"}
  variables = contract.random_params(build("gatv2", **hp), x)
  mask = M.KeyPadding(jnp.asarray(valid))
  y = jax.jit(lambda v, x: build("gatv2", **hp).apply(v, x, mask=mask))(variables, x)
  y_lin = gatv2_oracle("gatv2", hp, variables, x, kv_valid=valid, slope=1.0)
  _assert_bites("gatv2", "no LeakyReLU", y, y_lin)


def test_gatv2_contract():
  contract.check_patterns("gatv2", GAT)
  contract.check_decode_matches_full("gatv2", GAT, length=4)
  for bad in (dict(positional="rope"), dict(q_chunk=0), dict(impl="pallas")):
    with pytest.raises(ValueError, match="gatv2"):
      build("gatv2", **{**GAT, **bad})
