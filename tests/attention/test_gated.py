"""Tests of gla, deltanet and mala (attnlab/attention/variants/gated.py).

Oracles: each variant's output is recomputed from the module's own params with plain jnp,
the obvious way (the full [T, T] attention matrix the variant implies, with explicit
masks), forward and gradients. Independent of the ops' own "parallel" forms:
* GLA: the decay prod_{j < s <= i} alpha_s is built from an explicit [T, T, T] interval
  indicator (no cumulative-sum trick);
* DeltaNet: the [T, T] matrix tril(Q K^T) (I + tril(diag(beta) K K^T, -1))^{-1} diag(beta)
  with a dense matrix inverse (the op uses triangular solves), and separately the
  definition S_t = S_{t-1}(I - beta k k^T) + beta v k^T run token by token in numpy;
* MALA: the [T, T] weights beta_i a_ij - gamma_i.
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
HP = {
    "gla": dict(num_heads=2, chunk_size=8, sub_chunk=4),
    "deltanet": dict(num_heads=2, chunk_size=8),
    "mala": dict(num_heads=2, chunk_size=8),
}
NAMES = sorted(HP)


def _perturbed(name, hp, x, seed=1):
  """Module and unboxed params with noise added (so gates/norms are not at their init)."""
  module = build(name, **hp)
  params = contract.init_variables(module, x)["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
  return module, jax.tree.unflatten(tree, leaves)


def _proj(x, p):
  return jnp.einsum("btd,dhk->bthk", x, p["kernel"])


def _out(y, p):
  return jnp.einsum("bthk,hkd->btd", y, p["kernel"])


def _layer_norm(o, p, rms=False, eps=1e-5):
  if not rms:
    o = o - o.mean(-1, keepdims=True)
  o = o / jnp.sqrt((o * o).mean(-1, keepdims=True) + eps) * p["scale"]
  return o if rms else o + p["bias"]


def _causal(t):
  return jnp.tril(jnp.ones((t, t), bool))


# ---- oracles -----------------------------------------------------------------------
def gla_oracle(p, x, valid=None, tau=16.0):
  q, k, v = _proj(x, p["query"]), _proj(x, p["key"]), _proj(x, p["value"])
  g_logit = jnp.einsum("btr,rhk->bthk", x @ p["gate_down"]["kernel"], p["gate_up"]["kernel"])
  log_alpha = jax.nn.log_sigmoid(g_logit + p["gate_up"]["bias"]) / tau
  t = x.shape[1]
  i, j, s = np.arange(t)[:, None, None], np.arange(t)[None, :, None], np.arange(t)[None, None, :]
  interval = jnp.asarray((j < s) & (s <= i), jnp.float32)  # [i, j, s]: s in (j, i]
  decay = jnp.exp(jnp.einsum("ijs,bshk->bijhk", interval, log_alpha))  # prod_{s in (j,i]} alpha_s
  a = jnp.einsum("bihk,bjhk,bijhk->bhij", q * q.shape[-1] ** -0.5, k, decay)
  allowed = _causal(t)[None, None]
  if valid is not None:
    allowed = allowed & valid[:, None, None, :]
  o = jnp.einsum("bhij,bjhv->bihv", jnp.where(allowed, a, 0.0), v)
  o = _layer_norm(o, p["head_norm"])
  return _out(o * jax.nn.swish(_proj(x, p["out_gate"])), p["out"])


def _l2(a):
  return a / jnp.sqrt((a * a).sum(-1, keepdims=True) + 1e-6)


def deltanet_oracle(p, x, valid=None):
  q = _l2(jax.nn.silu(_proj(x, p["query"])))
  k = _l2(jax.nn.silu(_proj(x, p["key"])))
  v = _proj(x, p["value"])
  beta = jax.nn.sigmoid(_proj(x, p["beta"])[..., 0])  # [B, T, H]
  if valid is not None:
    beta = beta * valid[:, :, None]
  t = x.shape[1]
  qh, kh, vh, bh = (jnp.moveaxis(a, 1, 2) for a in (q * q.shape[-1] ** -0.5, k, v, beta))
  strict = jnp.tril(jnp.ones((t, t)), -1)
  ell = jnp.eye(t) + strict * bh[..., :, None] * (kh @ jnp.swapaxes(kh, -1, -2))
  attn = (jnp.tril(qh @ jnp.swapaxes(kh, -1, -2)) @ jnp.linalg.inv(ell)) * bh[..., None, :]
  o = jnp.moveaxis(attn @ vh, 1, 2)  # [B, T, H, Dv]
  return _out(_layer_norm(o, p["head_norm"], rms=True), p["out"])


def mala_oracle(p, x, causal=True, valid=None):
  qf = jax.nn.elu(_proj(x, p["query"])) + 1
  kf = jax.nn.elu(_proj(x, p["key"])) + 1
  v = _proj(x, p["value"])
  b, t = x.shape[:2]
  allowed = _causal(t)[None] if causal else jnp.ones((1, t, t), bool)
  if valid is not None:
    allowed = allowed & valid[:, None, :]
  allowed = allowed[:, None]  # [B|1, 1, T, T]
  n = allowed.sum(-1).astype(jnp.float32)  # keys visible to query i
  a = jnp.where(allowed, jnp.einsum("bihd,bjhd->bhij", qf * qf.shape[-1] ** -0.5, kf), 0.0) / n[..., None]
  z = a.sum(-1, keepdims=True)
  weights = jnp.where(allowed, (1 + 1 / (z + 1e-6)) * a - z / n[..., None], 0.0)  # beta a - gamma
  o = jnp.einsum("bhij,bjhv->bihv", weights, v)
  return _out(o * _proj(x, p["out_gate"]), p["out"])


ORACLES = {"gla": gla_oracle, "deltanet": deltanet_oracle, "mala": mala_oracle}


def _grads(module, params, x, call_kw, w):
  """(y, d(sum(y * w))/d(params, x)) of the module, jitted."""
  def loss(p, x):
    y = module.apply({"params": p}, x, **call_kw)
    return jnp.sum(y * w), y
  (_, y), g = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(params, x)
  return y, g


def _compare(name, hp, oracle, x, forms=("chunked",), call_kw=None, atol=1e-5):
  """Forward and d(loss)/d(params, x) of the module (each form) vs the oracle.

  Returns {form: (max fwd error, max grad error)}."""
  call_kw = call_kw or {}
  w = jax.random.normal(jax.random.key(7), x.shape)
  module, params = _perturbed(name, hp, x)

  def loss_ref(p, x):
    y = oracle(p, x)
    return jnp.sum(y * w), y

  (_, y_ref), g_ref = jax.jit(jax.value_and_grad(loss_ref, (0, 1), has_aux=True))(params, x)
  errors = {}
  for form in forms:
    module = build(name, **{**hp, "form": form})
    y, g = _grads(module, params, x, call_kw, w)
    suffix = "" if form == "chunked" else f"-{form}"  # chunked is the default form
    contract.assert_oracle(name, "fwd" + suffix, y, y_ref, atol=atol, rtol=1e-4)
    contract.assert_oracle(name, "grad" + suffix, g, g_ref, atol=10 * atol, rtol=1e-4)
    errors[form] = (float(jnp.max(jnp.abs(y - y_ref))),
                    max(float(jnp.max(jnp.abs(a - b_))) for a, b_ in
                        zip(jax.tree.leaves(g), jax.tree.leaves(g_ref))))
    print(f"{name} {form}: fwd max err {errors[form][0]:.2e}, grad max err {errors[form][1]:.2e}")
  return errors


# ---- (1) oracle + (6) every form equals the oracle (hence each other) -----------------
@pytest.mark.parametrize("name", NAMES)
def test_oracle_all_forms(name):
  x, _ = contract.make_inputs(length=T)
  _compare(name, HP[name], ORACLES[name], x, forms=("chunked", "parallel", "recurrent"))


@pytest.mark.parametrize("name", NAMES)
def test_oracle_key_padding(name):
  x, _ = contract.make_inputs(length=T)
  valid = (jax.random.uniform(jax.random.key(3), (x.shape[0], T)) > 0.3).at[:, :3].set(True)
  oracle = ORACLES[name]
  _compare(name, HP[name], lambda p, x: oracle(p, x, valid=valid), x,
           call_kw={"mask": M.KeyPadding(valid)})


def test_mala_noncausal_oracle():
  x, _ = contract.make_inputs(length=T)
  valid = (jax.random.uniform(jax.random.key(3), (x.shape[0], T)) > 0.3).at[:, :3].set(True)
  hp = {**HP["mala"], "causal": False}
  _compare("mala", hp, lambda p, x: mala_oracle(p, x, causal=False, valid=valid), x,
           forms=("chunked", "parallel"), call_kw={"mask": M.KeyPadding(valid)})


def test_delta_rule_matches_definition():
  """The delta rule op (all forms) against the paper's definition, token by token in numpy:
  S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t (S_t [Dv, Dk])."""
  rng = np.random.default_rng(0)
  b, t, h, dk, dv = 2, 19, 2, 4, 3
  q, k = rng.normal(size=(b, t, h, dk)), rng.normal(size=(b, t, h, dk))
  k /= np.linalg.norm(k, axis=-1, keepdims=True)
  v, beta = rng.normal(size=(b, t, h, dv)), rng.uniform(size=(b, t, h))
  ref = np.zeros((b, t, h, dv))
  for bi in range(b):
    for hi in range(h):
      s = np.zeros((dv, dk))
      for ti in range(t):
        kk, bb = k[bi, ti, hi], beta[bi, ti, hi]
        s = s @ (np.eye(dk) - bb * np.outer(kk, kk)) + bb * np.outer(v[bi, ti, hi], kk)
        ref[bi, ti, hi] = s @ q[bi, ti, hi]
  for form in ("chunked", "parallel", "recurrent"):
    o, _ = delta_rule_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v, beta)), form=form,
                                scale=1.0, chunk_size=8)
    np.testing.assert_allclose(np.asarray(o), ref, atol=1e-5)


def test_gla_chunked_stable_under_strong_decay():
  """Strong gates (log alpha ~ -30 per step): the chunked form must stay finite and match
  the recurrence (a naive q exp(G) / k exp(-G) factorisation overflows here)."""
  from attnlab.attention.ops.linear.gla import gla_chunked, gla_recurrent
  ks = jax.random.split(jax.random.key(0), 4)
  q, k = jax.random.normal(ks[0], (1, 64, 1, 4)), jax.random.normal(ks[1], (1, 64, 1, 4))
  v = jax.random.normal(ks[2], (1, 64, 1, 3))
  g = -30.0 * jax.random.uniform(ks[3], (1, 64, 1, 4))
  o, s = gla_chunked(q, k, v, g, chunk_size=32, sub_chunk=8)
  o_r, s_r = gla_recurrent(q, k, v, g)
  assert bool(jnp.all(jnp.isfinite(o)))
  np.testing.assert_allclose(np.asarray(o), np.asarray(o_r), atol=1e-5)
  np.testing.assert_allclose(np.asarray(s), np.asarray(s_r), atol=1e-5)


# ---- (7) property / reduction tests -------------------------------------------------------
def test_mala_weights_sum_to_one_and_see_query_magnitude():
  """MALA's weights sum to one (constant values pass through unchanged), and unlike plain
  linear attention, scaling phi(q) changes the output (the point of the paper)."""
  from attnlab.attention.ops.linear.mala import mala_parallel
  ks = jax.random.split(jax.random.key(0), 2)
  qf = jax.nn.elu(jax.random.normal(ks[0], (1, 12, 1, 4))) + 1
  kf = jax.nn.elu(jax.random.normal(ks[1], (1, 12, 1, 4))) + 1
  const = jnp.ones((1, 12, 1, 3)) * jnp.array([1.0, -2.0, 0.5])
  for causal in (True, False):
    out = mala_parallel(qf, kf, const, causal=causal)
    np.testing.assert_allclose(np.asarray(out), np.asarray(const), atol=1e-4)
  v = jax.random.normal(ks[0], (1, 12, 1, 3))
  a, b = mala_parallel(qf, kf, v, causal=False), mala_parallel(3 * qf, kf, v, causal=False)
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3


# ---- (2)-(5) shared contract ---------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_patterns(name):
  contract.check_patterns(name, HP[name])


@pytest.mark.parametrize("name", NAMES)
def test_decode_matches_full(name):
  contract.check_decode_matches_full(name, HP[name], length=12)


@pytest.mark.parametrize("name", NAMES)
def test_grads_finite(name):
  contract.check_grads_finite(name, HP[name])
  if name == "mala":
    contract.check_grads_finite(name, HP[name], pattern="noncausal-self")


@pytest.mark.parametrize("name", NAMES)
def test_rejects_unsupported_options(name):
  x, _ = contract.make_inputs(length=8)
  module = build(name, **HP[name])
  variables = module.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="KeyPadding"):
    module.apply(variables, x, mask=M.SlidingWindow(2))
  with pytest.raises(ValueError, match="positions"):
    module.apply(variables, x, positions=jnp.zeros((2, 8), jnp.int32))
  with pytest.raises(ValueError, match="form"):
    build(name, **{**HP[name], "form": "fft"}).apply(variables, x)


def test_gla_op_matches_shared_linear_attention():
  """Cross-check with the shared linear-attention op (an independent implementation with a
  per-key-channel decay [B, T, H, Dk]): GLA's chunked form equals its parallel form."""
  from attnlab.attention.ops.linear.gla import gla_chunked
  from attnlab.attention.ops.linear.core import linear_attention_parallel
  ks = jax.random.split(jax.random.key(1), 4)
  q, k = jax.random.normal(ks[0], (2, 21, 2, 4)), jax.random.normal(ks[1], (2, 21, 2, 4))
  v = jax.random.normal(ks[2], (2, 21, 2, 3))
  g = jax.nn.log_sigmoid(2 * jax.random.normal(ks[3], (2, 21, 2, 4)))
  o, _ = gla_chunked(q, k, v, g, scale=0.5, chunk_size=8, sub_chunk=4)
  ref = linear_attention_parallel(q, k, v, log_decay=g, scale=0.5)
  np.testing.assert_allclose(np.asarray(o), np.asarray(ref), atol=1e-5)


@pytest.mark.parametrize("n", [5, 13, 64])
def test_solve_unit_lower_matches_numpy(n):
  from attnlab.attention.ops.linear.delta_rule import solve_unit_lower
  rng = np.random.default_rng(n)
  ell = np.eye(n) + np.tril(rng.normal(size=(2, n, n)) * 0.3, -1)
  rhs = rng.normal(size=(2, n, 3))
  got = solve_unit_lower(jnp.asarray(ell, jnp.float32), jnp.asarray(rhs, jnp.float32))
  np.testing.assert_allclose(got, np.linalg.solve(ell, rhs), atol=1e-4, rtol=1e-4)
