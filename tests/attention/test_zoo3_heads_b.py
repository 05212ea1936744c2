"""Attention zoo, part 3 (issue 18), scoring and heads, continued (test_zoo3_heads.py has the
rules and rcmha, relational, bam): higher_order (variants/higher_order.py,
ops/softmax/simplicial.py) and sink_calibrated (variants/sink_calibrated.py,
ops/softmax/sink_calibration.py).

Every oracle is built here from the module's parameters with plain jnp / numpy and the
shared projections (oracle_parts), none of the module's own helpers:
* higher_order: one explicit [B, H, T, T, T] logit einsum, softmax over the flattened
  pairs; 3 query blocks, key padding. Canaries: no second key, no second value.
* sink_calibrated: dense softmax, the sink set found in numpy from column means over the
  queries that see each key, the removed mass added back as w_j + removed * w_j / (others'
  mass). Canary: no calibration. (The dense reference path: one tile by design.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build, masks as M
from tests.attention import contract
from tests.attention.oracle_parts import out_proj, proj
from tests.attention.test_zoo3 import _assert_bites
from tests.attention.test_zoo3_b import _compare, _undeclared_patterns_raise
from tests.attention.test_zoo3_heads import T, _allowed, _padded_case, _patterns_and_decode


# ---- higher_order --------------------------------------------------------------------------
HIGHER = dict(num_heads=2, q_chunk=8)


def higher_order_oracle(p, x, causal, kv_valid, second_key=True, second_value=True):
  """The trilinear logits as one explicit [B, H, T, T, T] einsum, softmax over the allowed
  (j, k) pairs flattened, output sum_jk a_ijk (v_j * v'_k) as one einsum. second_key /
  second_value = False replace k' / v' by ones (bilinear attention: the canaries)."""
  b, t = x.shape[:2]
  q, k1, k2 = proj(x, p, "query"), proj(x, p, "key"), proj(x, p, "key2")
  v1, v2 = proj(x, p, "value"), proj(x, p, "value2")
  k2 = k2 if second_key else jnp.ones_like(k2)
  v2 = v2 if second_value else jnp.ones_like(v2)
  logits = jnp.einsum("bihd,bjhd,bkhd->bhijk", q, k1, k2) / np.sqrt(q.shape[-1])
  a = _allowed(b, t, t, causal, kv_valid)  # [B, i, j]
  allowed = a[:, :, :, None] & a[:, :, None, :]  # [B, i, j, k]
  flat = jnp.where(allowed[:, None], logits, -jnp.inf).reshape(b, -1, t, t * t)
  w = jax.nn.softmax(flat, -1).reshape(logits.shape)
  return out_proj(jnp.einsum("bhijk,bjhd,bkhd->bihd", w, v1, v2), p)


def test_higher_order_oracle_padding_and_canaries():
  """Fwd + grads vs the explicit [T, T, T] oracle, causal, T = 20 in query blocks of 8 (3,
  the last padded), example 0's last 7 keys padded; non-causal forward only. Canaries:
  the oracle without k' (bilinear logits) and without v'."""
  x, valid, mask, module, variables = _padded_case(None, "higher_order", HIGHER, tiles=False)
  p = variables["params"]
  y_ref = _compare("higher_order", module, variables, x,
                   lambda v, x: higher_order_oracle(v["params"], x, True, valid), {"mask": mask})
  _assert_bites("higher_order", "no second key", y_ref, higher_order_oracle(p, x, True, valid, second_key=False))
  _assert_bites("higher_order", "no second value", y_ref, higher_order_oracle(p, x, True, valid, second_value=False))
  nc = build("higher_order", **HIGHER, causal=False)
  y_nc = jax.jit(lambda v, x: nc.apply(v, x, mask=mask))(variables, x)
  contract.assert_oracle("higher_order", "fwd-noncausal", y_nc, higher_order_oracle(p, x, False, valid),
                         atol=2e-5, rtol=1e-5)


def test_higher_order_contract_and_decode():
  """Patterns (gradients: the oracle test), decode equal to the full pass, its hook refusal, bad
  configs and masks raise."""
  module, variables, x, full = _patterns_and_decode("higher_order", HIGHER)
  assert "key pairs" in module.weights_unavailable
  with pytest.raises(ValueError, match="q_chunk"):
    build("higher_order", num_heads=2, q_chunk=0)
  with pytest.raises(ValueError, match="KeyPadding"):
    module.apply(variables, x, mask=M.SlidingWindow(2))


# ---- sink_calibrated -----------------------------------------------------------------------
SINK = dict(num_heads=2, threshold=0.1, factor=0.3)


def _softmax_weights(p, x, causal, kv_valid):
  """Plain dense softmax weights [B, H, T, T] of q, k with RoPE (mha's)."""
  from tests.attention.oracle_parts import rope_bt
  b, t = x.shape[:2]
  pos = np.broadcast_to(np.arange(t), (b, t))
  q, k = rope_bt(proj(x, p, "query"), pos), rope_bt(proj(x, p, "key"), pos)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  return jax.nn.softmax(jnp.where(_allowed(b, t, t, causal, kv_valid)[:, None], logits, -jnp.inf), -1)


def sink_set(p, x, causal, kv_valid, threshold):
  """numpy: sinks [B, H, T], keys whose attention averaged over the queries that see them
  (counted from the dense allowed matrix) exceeds the threshold."""
  w = np.asarray(_softmax_weights(p, x, causal, kv_valid))
  allowed = np.broadcast_to(_allowed(x.shape[0], x.shape[1], x.shape[1], causal, kv_valid)[:, None], w.shape)
  seen = allowed.sum(2)
  mean = np.where(seen > 0, (w * allowed).sum(2) / np.maximum(seen, 1), 0.0)
  return (mean > threshold) & (seen > 0)


def sink_oracle(p, x, causal, kv_valid, sinks, factor, calibrate=True):
  """Each row: the sinks keep `factor` of their weight; the removed mass
  (1 - factor) * sum_sinks w is added to the other keys in proportion to their weight
  (rows with no other key unchanged)."""
  w = _softmax_weights(p, x, causal, kv_valid)
  if calibrate:
    s = jnp.asarray(sinks)[:, :, None, :]
    removed = (1.0 - factor) * jnp.sum(w * s, -1, keepdims=True)
    others = jnp.sum(w * ~s, -1, keepdims=True)
    has_others = others > 0  # a row whose visible keys are all sinks stays as it is
    w = jnp.where(has_others, jnp.where(s, factor * w, w + removed * w / jnp.where(has_others, others, 1.0)), w)
  return out_proj(jnp.einsum("bhqk,bkhd->bqhd", w, proj(x, p, "value")), p), w


def test_sink_calibrated_oracle_rows_and_canary():
  """Fwd + grads vs the plain oracle (sinks found in numpy), causal with RoPE, T = 20,
  example 0's last 7 keys padded; some keys but not all are sinks; the sown weights' rows
  sum to 1 over the visible keys and equal the oracle's. Canary: plain softmax (no
  calibration) is far from the module."""
  x, valid, mask, module, variables = _padded_case(None, "sink_calibrated", SINK, tiles=False)
  p = variables["params"]
  sinks = sink_set(p, x, True, valid, SINK["threshold"])
  print(f"sink_calibrated: {int(sinks.sum())} sinks of {sinks.size} (batch, head, key) slots")
  assert 0 < sinks.sum() < sinks.size // 2
  y_ref = _compare("sink_calibrated", module, variables, x,
                   lambda v, x: sink_oracle(v["params"], x, True, valid, sinks, SINK["factor"])[0], {"mask": mask})
  _, sown = jax.jit(lambda v, x: module.apply(v, x, mask=mask, mutable=["attention"]))(variables, x)
  w = np.asarray(sown["attention"]["weights"][0])
  np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(w, np.asarray(sink_oracle(p, x, True, valid, sinks, SINK["factor"])[1]), atol=1e-5)
  _assert_bites("sink_calibrated", "no calibration",
                y_ref, sink_oracle(p, x, True, valid, sinks, SINK["factor"], calibrate=False)[0])


def test_sink_calibrated_is_mha_when_nothing_is_detected():
  """Identity: a threshold above any mean (1.5) detects nothing, and the layer equals mha
  on the same parameters (non-causal, padding); at threshold 0.1 it does not (canary)."""
  x, _ = contract.make_inputs(length=T)
  valid = np.ones((2, T), bool)
  valid[1, 15:] = False
  mask = M.KeyPadding(jnp.asarray(valid))
  mha = build("mha", num_heads=2, causal=False)
  variables = contract.random_params(mha, x)
  run = lambda m: jax.jit(lambda v, x: m.apply(v, x, mask=mask))(variables, x)  # noqa: E731
  y_mha = run(mha)
  y_id = run(build("sink_calibrated", num_heads=2, causal=False, threshold=1.5))
  np.testing.assert_allclose(np.asarray(y_id), np.asarray(y_mha), atol=1e-5)
  y_cal = run(build("sink_calibrated", num_heads=2, causal=False, threshold=0.06, factor=0.0))
  assert float(jnp.max(jnp.abs(y_cal - y_mha))) > 1e-2


def test_sink_calibrated_contract():
  """Undeclared patterns (decode, cross) raise (the declared ones run in the oracle and
  identity tests), bad configs raise."""
  _undeclared_patterns_raise("sink_calibrated", SINK)
  with pytest.raises(ValueError, match="decode"):
    contract.check_decode_matches_full("sink_calibrated", SINK, length=4)
  for bad in (dict(factor=1.5), dict(threshold=-0.1)):
    with pytest.raises(ValueError, match="sink_calibrated"):
      build("sink_calibrated", **{**SINK, **bad})
