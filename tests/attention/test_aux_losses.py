"""Auxiliary losses sown by variants (issue 9, item 2): MoH's load-balance loss.

MoH (Jin et al., 2024, Eq. 7): L_b = sum_{i routed} f_i P_i with f_i the fraction of tokens
that select routed head i and P_i the mean routing probability softmax(W_r x)_i. The
variant sows it as ("losses", "load_balance"); the trainer adds
aux_loss_weights["load_balance"] * (its sum over layers) to the task loss, so the loss
must reach the router's parameters.
"""

import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import build
from tests.attention import contract

HP = dict(num_heads=4, num_shared=1, top_k=2)  # 3 routed heads, 2 active per token


def _moh(x, seed=0):
  module = build("moh", **HP)
  params = contract.init_variables(module, x, seed)
  # An uneven but unsaturated router (saturated softmax probabilities carry no gradient).
  params = jax.tree.map(lambda a: a, params)
  params["params"]["router_routed"] = params["params"]["router_routed"] * 2.0
  return module, params


def _paper_loss(x, w_routed, top_k):
  """Eq. 7 by hand: numpy, every token of the batch."""
  logits = np.asarray(x, np.float64).reshape(-1, x.shape[-1]) @ np.asarray(w_routed, np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  sel = np.zeros_like(p)
  np.put_along_axis(sel, np.argsort(-p, -1)[:, :top_k], 1.0, -1)
  return float(np.sum(sel.mean(0) * p.mean(0)))


def test_moh_sows_the_load_balance_loss():
  x, _ = contract.make_inputs(length=12)
  module, params = _moh(x)
  y, state = module.apply(params, x, mutable=["losses"])
  (loss,) = state["losses"]["load_balance"]  # one entry per call (flax's sow)
  assert loss.shape == () and loss.dtype == jnp.float32
  np.testing.assert_allclose(float(loss), _paper_loss(x, params["params"]["router_routed"], 2), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(y), np.asarray(module.apply(params, x)), atol=1e-6)  # same output
  assert "losses" not in module.init(jax.random.key(0), x)  # init returns parameters only


def test_uniform_routing_gives_top_k_over_routed_heads():
  x, _ = contract.make_inputs(length=12)
  module, params = _moh(x)
  params["params"]["router_routed"] = jnp.zeros_like(params["params"]["router_routed"])
  _, state = module.apply(params, x, mutable=["losses"])
  np.testing.assert_allclose(float(state["losses"]["load_balance"][0]), 2 / 3, rtol=1e-6)


def test_load_balance_loss_reaches_the_router():
  """d(task + w * aux) / d(router) changes with w: w = 0 and w = 1 differ, and the
  difference is exactly the aux loss's own gradient (nonzero). 2 x 10 tokens over 3 routed
  heads cannot be exactly balanced (with f_i all equal, sum_i f_i P_i is constant)."""
  x, _ = contract.make_inputs(length=10)
  module, params = _moh(x)
  target = jax.random.normal(jax.random.key(5), x.shape)

  def total(p, w):
    y, state = module.apply(p, x, mutable=["losses"])
    task = jnp.mean((y - target) ** 2)
    aux = sum(jax.tree.leaves(state["losses"]))
    return task + w * aux

  g0 = jax.grad(total)(params, 0.0)["params"]
  g1 = jax.grad(total)(params, 1.0)["params"]
  diff = g1["router_routed"] - g0["router_routed"]
  assert float(jnp.max(jnp.abs(diff))) > 1e-4, "the load-balance loss does not reach router_routed"

  def aux_only(p):
    _, state = module.apply(p, x, mutable=["losses"])
    return sum(jax.tree.leaves(state["losses"]))
  g_aux = jax.grad(aux_only)(params)["params"]
  np.testing.assert_allclose(np.asarray(diff), np.asarray(g_aux["router_routed"]), atol=1e-6)
  # The attention projections get the same gradient from both: the loss depends on the router only.
  np.testing.assert_allclose(np.asarray(g1["query"]["kernel"]), np.asarray(g0["query"]["kernel"]), atol=1e-7)


def test_no_loss_without_routed_heads():
  """All heads shared: no router to balance, nothing sown."""
  x, _ = contract.make_inputs(length=8)
  module = build("moh", num_heads=2, num_shared=2, top_k=0)
  params = module.init(jax.random.key(0), x)
  _, state = module.apply(params, x, mutable=["losses"])
  assert not jax.tree.leaves(state.get("losses", {}))
