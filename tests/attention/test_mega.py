"""Tests of mega (attnlab/attention/variants/mega.py).

The oracle recomputes the layer from the module's own params with plain jnp: the EMA as
an explicit [T, T] Toeplitz matrix per channel, sum_n eta p r^(t-s) (the materialised
convolution; bidirectional: plus the backward matrix), and the attention as the dense
[T, T] score matrix with the Mega-chunk block-diagonal (and causal) mask and the relative
bias table[j - i + L - 1], then the gates. Every EMA form is compared against it, forward
and gradients.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import attnlab.attention.variants.mega  # noqa: F401  (registers "mega" until variants/__init__ imports it)
from attnlab.attention import build, masks as M
from tests.attention import contract

T = 20
HP = dict(chunk_size=8, ema_chunk=8, ema_dim=4)
FORMS = ("chunked", "parallel", "recurrent")


def _perturbed(hp, x, seed=1):
  module = build("mega", **hp)
  params = contract.init_variables(module, x)["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  leaves = [p + 0.3 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
  return jax.tree.unflatten(tree, leaves)


def _ema_matrix(e, direction, t):
  """[D, T, T]: M[d, i, s] = sum_n eta p r^|i - s| on the causal (fwd) / anti-causal (bwd) side."""
  alpha = jax.nn.sigmoid(e[f"alpha_{direction}"])
  delta = jax.nn.sigmoid(e[f"delta_{direction}"])
  n = alpha.shape[-1]
  p, r = alpha * e[f"beta_{direction}"], 1 - alpha * delta
  eta = e[f"eta_{direction}"] * (1.0 / n) ** 0.5
  lag = np.arange(t)[:, None] - np.arange(t)[None, :]
  if direction == "bwd":
    lag = -lag
  side = lag >= 0
  powers = jnp.where(side, r[..., None, None] ** np.where(side, lag, 0), 0.0)  # [D, n, T, T]
  return jnp.einsum("dn,dnis->dis", eta * p, powers)


def mega_oracle(p, x, chunk_size, causal=True, valid=None, span=None):
  b, t, d = x.shape
  xin = x if valid is None else x * valid[..., None]
  y = jnp.einsum("dis,bsd->bid", _ema_matrix(p["ema"], "fwd", t), xin)
  if not causal:
    y = y + jnp.einsum("dis,bsd->bid", _ema_matrix(p["ema"], "bwd", t), xin)
  mx = jax.nn.silu(y + xin * p["ema"]["omega"])

  def dense(a, name):
    return a @ p[name]["kernel"] + p[name]["bias"]

  u = jax.nn.sigmoid(dense(mx, "update_gate"))
  z = jax.nn.silu(dense(mx, "z"))
  r = jax.nn.silu(dense(mx, "reset_gate"))
  hx = dense(mx, "h")
  v = jax.nn.silu(dense(x, "value"))
  q = z * p["qk_scale"][0] + p["qk_offset"][0]
  k = z * p["qk_scale"][1] + p["qk_offset"][1]
  i, j = np.arange(t)[:, None], np.arange(t)[None, :]
  span = span or chunk_size
  bias = p["rel_bias"][j - i + span - 1]
  allowed = jnp.asarray((i // chunk_size == j // chunk_size) if chunk_size else np.ones((t, t), bool))
  if causal:
    allowed = allowed & (j <= i)
  allowed = jnp.broadcast_to(allowed, (b, t, t))
  if valid is not None:
    allowed = allowed & valid[:, None, :]
  s = jnp.einsum("biz,bjz->bij", q, k) / np.sqrt(q.shape[-1]) + bias
  s = jnp.where(allowed, s, -jnp.inf)
  any_ = allowed.any(-1, keepdims=True)
  w = jnp.where(any_, jax.nn.softmax(jnp.where(any_, s, 0.0), axis=-1), 0.0)
  o = jnp.einsum("bij,bjv->biv", w, v)
  h = jax.nn.silu(hx + (o * r) @ p["h_from_attention"]["kernel"][0])
  return x + u * (h - x)


def _compare(hp, oracle, x, forms=FORMS, call_kw=None, atol=1e-5):
  """Module (each EMA form) vs oracle, forward and d(sum(y * w))/d(params, x)."""
  call_kw = call_kw or {}
  w = jax.random.normal(jax.random.key(7), x.shape)
  params = _perturbed(hp, x)

  def value_grad(fn):
    def loss(p, x):
      y = fn(p, x)
      return jnp.sum(y * w), y
    (_, y), g = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(params, x)
    return y, g

  y_ref, g_ref = value_grad(oracle)
  for form in forms:
    module = build("mega", **{**hp, "form": form})
    y, g = value_grad(lambda p, x: module.apply({"params": p}, x, **call_kw))
    suffix = "" if form == "chunked" else f"-{form}"  # chunked is the default EMA form
    contract.assert_oracle("mega", "fwd" + suffix, y, y_ref, atol=atol, rtol=1e-4)
    pairs = list(zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)))
    contract.assert_oracle("mega", "grad" + suffix, g, g_ref, atol=10 * atol, rtol=1e-4)
    print(f"mega {form} {hp}: fwd max err {float(jnp.max(jnp.abs(y - y_ref))):.2e}, grad max err "
          f"{max(float(jnp.max(jnp.abs(a - b_))) for a, b_ in pairs):.2e}")


@pytest.mark.parametrize("causal", [True, False])
def test_oracle_all_forms(causal):
  """Mega-chunk (T=20 not a multiple of the chunk 8: a partial last chunk), every EMA form
  (non-causal: chunked and parallel; its recurrent form is the causal one run on the
  flipped sequence, already covered)."""
  x, _ = contract.make_inputs(length=T)
  _compare({**HP, "causal": causal}, lambda p, x: mega_oracle(p, x, 8, causal=causal), x,
           forms=FORMS if causal else ("chunked", "parallel"))


def test_oracle_key_padding_and_full_attention():
  x, _ = contract.make_inputs(length=T)
  valid = (jax.random.uniform(jax.random.key(3), (x.shape[0], T)) > 0.3).at[:, :3].set(True)
  _compare(HP, lambda p, x: mega_oracle(p, x, 8, valid=valid), x, forms=("chunked",),
           call_kw={"mask": M.KeyPadding(valid)})
  hp_full = {**HP, "chunk_size": 0, "max_positions": 32}
  _compare(hp_full, lambda p, x: mega_oracle(p, x, 0, span=32), x, forms=("chunked",))


def test_chunk_covering_sequence_is_full_attention():
  """Reduction: Mega-chunk with one chunk >= T is Mega with full attention (same params)."""
  x, _ = contract.make_inputs(length=T)
  params = _perturbed({**HP, "chunk_size": 32}, x)
  y_chunk = build("mega", **{**HP, "chunk_size": 32}).apply({"params": params}, x)
  y_full = build("mega", **{**HP, "chunk_size": 0, "max_positions": 32}).apply({"params": params}, x)
  np.testing.assert_allclose(np.asarray(y_chunk), np.asarray(y_full), atol=1e-5)


def test_ema_forms_with_state():
  """The three EMA op forms agree, including a nonzero initial state and the final state."""
  from attnlab.attention.ops.linear.mega_ema import ema
  ks = jax.random.split(jax.random.key(0), 6)
  x = jax.random.normal(ks[0], (2, 21, 3))
  coeffs = (jax.nn.sigmoid(jax.random.normal(ks[1], (3, 4))), jax.nn.sigmoid(jax.random.normal(ks[2], (3, 4))),
            jax.random.normal(ks[3], (3, 4)), jax.random.normal(ks[4], (3, 4)))
  h0 = jax.random.normal(ks[5], (2, 3, 4))
  y_r, h_r = ema(x, *coeffs, form="recurrent", initial_state=h0)
  for form in ("chunked", "parallel"):
    y, h = ema(x, *coeffs, form=form, initial_state=h0, chunk_size=8)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_r), atol=1e-5)
    np.testing.assert_allclose(np.asarray(h), np.asarray(h_r), atol=1e-5)


def test_patterns():
  contract.check_patterns("mega", HP)


def test_decode_matches_full():
  contract.check_decode_matches_full("mega", {**HP, "chunk_size": 4}, length=12)


def test_grads_finite():
  contract.check_grads_finite("mega", HP)
  contract.check_grads_finite("mega", HP, pattern="noncausal-self")


def test_rejects_unsupported_options():
  x, _ = contract.make_inputs(length=8)
  module = build("mega", **HP)
  variables = module.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="KeyPadding"):
    module.apply(variables, x, mask=M.SlidingWindow(2))
  with pytest.raises(ValueError, match="positions"):
    module.apply(variables, x, positions=jnp.zeros((2, 8), jnp.int32))
  with pytest.raises(ValueError, match="single-headed"):
    build("mega", **{**HP, "num_heads": 2}).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="causal"):
    build("mega", **{**HP, "causal": False}).init(jax.random.key(0), x, decode=True)
