"""Attention zoo, part 3 (issue 18), scoring and heads: rcmha (variants/rcmha.py), relational
(variants/relational.py), bam (variants/bam.py); higher_order and sink_calibrated are in
test_zoo3_heads_b.py (same rules, same helpers); the training test covers all five.

Every oracle is built here from the module's parameters with plain jnp / numpy and the
shared projections (oracle_parts), none of the module's own helpers:
* rcmha: the causal depthwise convolutions as explicit shifted sums, the clipped
  relative-distance table gathered into a dense [H, T, T] bias in numpy index arithmetic,
  dense masked softmax; T = 20 in 8 x 8 tiles of the blocked op (3 per side, the last
  partial), key padding. Canaries: no convolution, no relative bias.
* relational: per-head dense softmax, the relations r_ij as an explicit [B, T, T, d_r]
  tensor and the head output sum_j alpha_ij (r_ij W_r + s_j W_s) summed over j as written
  (the module instead pools psi(x_j) through the op); same tiles and padding. Canaries: no
  relations, no symbols.
* bam: expert by expert, each its own dense softmax and output projection, mixed by the
  router's softmax; same tiles and padding. Canary: uniform expert weights.
Each variant also trains (one layer each of a five-layer MQAR smoke hybrid) with finite loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build, masks as M
from attnlab.attention.ops.softmax import blocked
from tests.attention import contract
from tests.attention.oracle_parts import out_proj, proj
from tests.attention.test_zoo3 import _assert_bites
from tests.attention.test_zoo3_b import _compare, _undeclared_patterns_raise

T = 20


def _allowed(b, tq, tk, causal, kv_valid):
  """bool [B, Tq, Tk]: causal (or all) and-ed with key validity."""
  a = np.tril(np.ones((tq, tk), bool)) if causal else np.ones((tq, tk), bool)
  valid = np.ones((b, tk), bool) if kv_valid is None else np.asarray(kv_valid)
  return a[None] & valid[:, None, :]


def _padded_case(monkeypatch, name, hp, tiles=True):
  """The oracle tests' common case: x [2, T, 32], example 0's last 7 keys padded (valid,
  its KeyPadding mask), `name` built with hp and random parameters; tiles=True makes the
  blocked softmax op use 8 x 8 tiles (3 per side at T = 20, the last partial).
  Returns (x, valid, mask, module, variables)."""
  if tiles:
    monkeypatch.setattr(blocked, "DEFAULT_BLOCK_Q", 8)
    monkeypatch.setattr(blocked, "DEFAULT_BLOCK_K", 8)
  x, _ = contract.make_inputs(length=T)
  valid = np.ones((2, T), bool)
  valid[0, 13:] = False
  module = build(name, **hp)
  return x, valid, M.KeyPadding(jnp.asarray(valid)), module, contract.random_params(module, x)


def _patterns_and_decode(name, hp, oracle_compiles_both=True):
  """The patterns: the undeclared ones raise when traced (`_undeclared_patterns_raise`);
  the declared self patterns run in the oracle test, or (oracle_compiles_both=False: it runs
  causal only) non-causal self runs here with the right shape and a finite output. Then
  decode step by step equal to the full pass at T = 4 on random parameters (non-trivial
  taps, tables, routers). Returns (module, variables, x, full)."""
  _undeclared_patterns_raise(name, hp)
  if not oracle_compiles_both:
    x_nc, y_nc = contract._pattern_call(name, hp, "noncausal-self", 16, 24)
    assert y_nc.shape == x_nc.shape and bool(jnp.all(jnp.isfinite(y_nc)))
  x, _ = contract.make_inputs(length=4)
  module = build(name, **hp)
  variables = contract.random_params(module, x)
  full = jax.jit(module.apply)(variables, x)
  inc = contract.decode_step_by_step(module, variables, x)
  np.testing.assert_allclose(np.asarray(inc), np.asarray(full), atol=2e-5, rtol=1e-4)
  return module, variables, x, full


# ---- rcmha -----------------------------------------------------------------------------------
RCMHA = dict(num_heads=2, kernel_size=3, max_distance=5, impl="xla")


def rcmha_oracle(p, x, causal, kv_valid, conv=True, rel=True):
  """Dense RCMHA from the definition: q~_t = sum_i w_i q_{t-i} (zeros before 0), logits
  q~ k~ / sqrt(D) + table[h, clip(j - i, -K, K) + K], masked softmax, times v~."""
  def shifted_sum(a, taps):
    if not conv:
      return a
    out = jnp.zeros_like(a)
    for i in range(taps.shape[0]):
      shifted = jnp.pad(a, ((0, 0), (i, 0), (0, 0), (0, 0)))[:, :a.shape[1]]  # a_{t-i}
      out = out + taps[i] * shifted
    return out
  q, k, v = (shifted_sum(proj(x, p, n), p[f"conv_{n}"]) for n in ("query", "key", "value"))
  b, t = x.shape[:2]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if rel:
    r = (p["rel_bias"].shape[1] - 1) // 2
    dist = np.arange(t)[None, :] - np.arange(t)[:, None]  # j - i
    logits = logits + p["rel_bias"][:, np.clip(dist, -r, r) + r][None]
  w = jax.nn.softmax(jnp.where(_allowed(b, t, t, causal, kv_valid)[:, None], logits, -jnp.inf), -1)
  return out_proj(jnp.einsum("bhqk,bkhd->bqhd", w, v), p)


def test_rcmha_oracle_tiles_padding_and_canaries(monkeypatch):
  """Fwd + grads vs the dense oracle on random parameters (random taps and table), causal,
  T = 20 over 8 x 8 tiles of the blocked op, example 0's last 7 keys padded; non-causal
  forward only. Canaries: the oracle without the convolutions, and without the relative
  bias, are far from the module."""
  x, valid, mask, module, variables = _padded_case(monkeypatch, "rcmha", RCMHA)
  p = variables["params"]
  y_ref = _compare("rcmha", module, variables, x, lambda v, x: rcmha_oracle(v["params"], x, True, valid),
                   {"mask": mask})
  _assert_bites("rcmha", "no convolution", y_ref, rcmha_oracle(p, x, True, valid, conv=False))
  _assert_bites("rcmha", "no relative bias", y_ref, rcmha_oracle(p, x, True, valid, rel=False))
  nc = build("rcmha", **RCMHA, causal=False)
  y_nc = jax.jit(lambda v, x: nc.apply(v, x, mask=mask))(variables, x)
  y_nc_ref = rcmha_oracle(p, x, False, valid)
  contract.assert_oracle("rcmha", "fwd-noncausal", y_nc, y_nc_ref, atol=2e-5, rtol=1e-5)
  _assert_bites("rcmha", "no relative bias (non-causal)", y_nc_ref, rcmha_oracle(p, x, False, valid, rel=False))


def test_rcmha_reduces_to_mha():
  """Reduction: kernel_size 1 with unit taps and a zero table is mha without RoPE (same
  projections); so is the init (identity taps, zero table) at kernel_size 3. A non-zero
  table breaks it (canary)."""
  x, _ = contract.make_inputs(length=T)
  mha = build("mha", num_heads=2, positional="none")
  variables = contract.random_params(mha, x)
  y_mha = jax.jit(mha.apply)(variables, x)
  for k in (1, 3):
    p = dict(variables["params"])
    for n in ("query", "key", "value"):
      p[f"conv_{n}"] = jnp.zeros((k, 2, 16)).at[0].set(1.0)
    p["rel_bias"] = jnp.zeros((2, 11))
    module = build("rcmha", num_heads=2, kernel_size=k, max_distance=5)
    y = jax.jit(module.apply)({"params": p}, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_mha), atol=1e-5)
  p["rel_bias"] = jnp.linspace(-1.0, 1.0, 22).reshape(2, 11)
  assert float(jnp.max(jnp.abs(jax.jit(module.apply)({"params": p}, x) - y_mha))) > 1e-2


def test_rcmha_contract_and_decode():
  """Patterns (gradients: the oracle test), decode (conv states + KV cache) equal to the full pass
  (on random parameters, so the taps and table are non-trivial), bad configs raise."""
  module, variables, x, full = _patterns_and_decode("rcmha", RCMHA)
  for bad in (dict(kernel_size=0), dict(max_distance=0)):
    with pytest.raises(ValueError):
      build("rcmha", **{**RCMHA, **bad})


# ---- relational ------------------------------------------------------------------------------
REL = dict(num_heads=4, num_relational=2, num_relations=3, relation_dim=4, max_len=32)


def relational_oracle(p, x, causal, kv_valid, relations=True, symbols=True):
  """Dual attention from Algorithm 1, materialised: per head alpha^h [B, H, T, T] (RoPE on
  q, k); the relations r_ij [B, T, T, d_r] as an explicit einsum of phi(x_i) and psi(x_j);
  a relational head's output sum_j alpha_ij (r_ij W_r^h + s_j W_s^h); sensory heads
  alpha v. relations / symbols = False drop that term (the canaries)."""
  from tests.attention.oracle_parts import rope_bt
  b, t = x.shape[:2]
  pos = np.broadcast_to(np.arange(t), (b, t))
  q, k = rope_bt(proj(x, p, "query"), pos), rope_bt(proj(x, p, "key"), pos)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  alpha = jax.nn.softmax(jnp.where(_allowed(b, t, t, causal, kv_valid)[:, None], logits, -jnp.inf), -1)
  hs = p["value"]["kernel"].shape[1]
  sensory = jnp.einsum("bhqk,bkhd->bqhd", alpha[:, :hs], proj(x, p, "value"))
  phi, psi = proj(x, p, "rel_query"), proj(x, p, "rel_key")  # [B, T, d_r, d_k]
  r = jnp.einsum("bild,bjld->bijl", phi, psi) / np.sqrt(phi.shape[-1])  # [B, T, T, d_r]
  s = jnp.einsum("td,dhk->thk", p["symbols"][:t], p["symbol"]["kernel"])  # s_j W_s^h [T, H_r, D]
  term = jnp.einsum("bijl,hld->bhijd", r, p["rel_out"]) * relations + s.transpose(1, 0, 2)[None, :, None] * symbols
  relational = jnp.einsum("bhij,bhijd->bihd", alpha[:, hs:], term)
  return out_proj(jnp.concatenate([sensory, relational], axis=2), p)


def test_relational_oracle_padding_and_canaries(monkeypatch):
  """Fwd + grads vs the materialised oracle (2 sensory + 2 relational heads), causal with
  RoPE, T = 20 over 8 x 8 tiles, example 0's last 7 keys padded (the non-causal case
  differs only in its mask: rcmha's test covers it). Canaries: the oracle without the
  relations, and without the symbols."""
  x, valid, mask, module, variables = _padded_case(monkeypatch, "relational", REL)
  p = variables["params"]
  y_ref = _compare("relational", module, variables, x, lambda v, x: relational_oracle(v["params"], x, True, valid),
                   {"mask": mask})
  _assert_bites("relational", "no relations", y_ref, relational_oracle(p, x, True, valid, relations=False))
  _assert_bites("relational", "no symbols", y_ref, relational_oracle(p, x, True, valid, symbols=False))


def test_relational_reduces_to_mha():
  """Reduction: no relational head is mha (same parameter tree, RoPE, GQA off); with a
  relational head the same shared parameters give a different output (canary)."""
  x, _ = contract.make_inputs(length=T)
  mha = build("mha", num_heads=2)
  variables = contract.random_params(mha, x)
  y = jax.jit(build("relational", num_heads=2, num_relational=0).apply)(variables, x)
  np.testing.assert_allclose(np.asarray(y), np.asarray(jax.jit(mha.apply)(variables, x)), atol=1e-5)


def test_relational_contract_and_decode():
  """Patterns (gradients: the oracle test), decode equal to the full pass on random parameters,
  the hook's weights times the values reproduce the output, bad configs raise."""
  module, variables, x, full = _patterns_and_decode("relational", REL, oracle_compiles_both=False)
  y_cap, sown = jax.jit(lambda v, x: module.apply(v, x, mutable=["attention"]))(variables, x)
  np.testing.assert_allclose(np.asarray(y_cap), np.asarray(full), atol=2e-5)
  w = sown["attention"]["weights"][0]
  assert w.shape == (2, 4, 4, 4) and np.allclose(np.asarray(w.sum(-1)), 1.0, atol=1e-5)
  for bad in (dict(num_relational=5), dict(num_kv_heads=1), dict(num_relations=0)):
    with pytest.raises(ValueError):
      build("relational", **{**REL, **bad})


# ---- bam -------------------------------------------------------------------------------------
BAM = dict(num_heads=2, num_experts=3)


def bam_oracle(p, x, causal, kv_valid, shared_kv, routed=True):
  """y = sum_e g_e(x) O_e softmax(q^e k^e / sqrt(D)) v^e, one expert at a time (head h of
  expert e at column h * E + e of the stacked kernels), RoPE on q, k; g = softmax of the
  router's logits. routed=False mixes the experts uniformly (the canary)."""
  from tests.attention.oracle_parts import rope_bt
  b, t = x.shape[:2]
  n_exp = p["router"]["kernel"].shape[1]
  pos = np.broadcast_to(np.arange(t), (b, t))
  g = jax.nn.softmax(jnp.einsum("btd,de->bte", x, p["router"]["kernel"][..., 0]), -1)
  if not routed:
    g = jnp.full_like(g, 1.0 / n_exp)
  allowed = _allowed(b, t, t, causal, kv_valid)[:, None]
  y = 0.0
  for e in range(n_exp):
    cols = np.arange(p["query"]["kernel"].shape[1] // n_exp) * n_exp + e  # heads (h, e) for h = 0..H-1
    kv_cols = slice(None) if shared_kv else cols
    q = rope_bt(jnp.einsum("btd,dhk->bthk", x, p["query"]["kernel"][:, cols]), pos)
    k = rope_bt(jnp.einsum("btd,dhk->bthk", x, p["key"]["kernel"][:, kv_cols]), pos)
    v = jnp.einsum("btd,dhk->bthk", x, p["value"]["kernel"][:, kv_cols])
    w = jax.nn.softmax(jnp.where(allowed, jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1]), -jnp.inf), -1)
    o = jnp.einsum("bqhd,hdm->bqm", jnp.einsum("bhqk,bkhd->bqhd", w, v), p["out"]["kernel"][cols])
    y = y + g[..., e:e + 1] * o
  return y


def test_bam_oracle_padding_and_canary(monkeypatch):
  """Fwd + grads vs the expert-by-expert oracle (separate K/V, 3 experts), causal with RoPE,
  T = 20 over 8 x 8 tiles, example 0's last 7 keys padded; shared K/V non-causal forward
  only. Canary: the oracle with uniform expert weights instead of the router."""
  x, valid, mask, module, variables = _padded_case(monkeypatch, "bam", BAM)
  p = variables["params"]
  y_ref = _compare("bam", module, variables, x, lambda v, x: bam_oracle(v["params"], x, True, valid, False),
                   {"mask": mask})
  _assert_bites("bam", "uniform router", y_ref, bam_oracle(p, x, True, valid, False, routed=False))
  shared = build("bam", **BAM, shared_kv=True, causal=False)
  v_shared = contract.random_params(shared, x)
  y_nc = jax.jit(lambda v, x: shared.apply(v, x, mask=mask))(v_shared, x)
  contract.assert_oracle("bam", "fwd-shared-kv", y_nc, bam_oracle(v_shared["params"], x, False, valid, True),
                         atol=2e-5, rtol=1e-5)


def test_bam_reduces_to_mha():
  """Reductions: one expert is mha (the router is the constant 1); shared K/V with E
  identical experts (query and out kernels copied per expert) is mha for any router.
  Different experts give a different output (canary)."""
  x, _ = contract.make_inputs(length=T)
  mha = build("mha", num_heads=2)
  variables = contract.random_params(mha, x)
  y_mha = jax.jit(mha.apply)(variables, x)
  router = jax.random.normal(jax.random.key(5), (32, 3, 1))
  p1 = {**variables["params"], "router": {"kernel": router[:, :1]}}
  y1 = jax.jit(build("bam", num_heads=2, num_experts=1).apply)({"params": p1}, x)
  np.testing.assert_allclose(np.asarray(y1), np.asarray(y_mha), atol=1e-5)
  pm = variables["params"]
  p3 = {"key": pm["key"], "value": pm["value"], "router": {"kernel": router},
        "query": {"kernel": jnp.repeat(pm["query"]["kernel"], 3, axis=1)},
        "out": {"kernel": jnp.repeat(pm["out"]["kernel"], 3, axis=0)}}
  run3 = jax.jit(build("bam", num_heads=2, num_experts=3, shared_kv=True).apply)
  np.testing.assert_allclose(np.asarray(run3({"params": p3}, x)), np.asarray(y_mha), atol=1e-5)
  p3["query"] = {"kernel": p3["query"]["kernel"].at[:, 1].multiply(-1.0)}
  assert float(jnp.max(jnp.abs(run3({"params": p3}, x) - y_mha))) > 1e-2


def test_bam_contract_and_decode():
  """Patterns (gradients: the oracle test), decode equal to the full pass (shared K/V), bad
  configs raise."""
  module, variables, x, full = _patterns_and_decode("bam", {**BAM, "shared_kv": True})
  for bad in (dict(num_experts=0), dict(num_kv_heads=1)):
    with pytest.raises(ValueError):
      build("bam", **{**BAM, **bad})


# ---- training through a task config --------------------------------------------------------
NEW = ("rcmha", "relational", "bam", "higher_order", "sink_calibrated")


def test_each_trains_in_an_mqar_hybrid_with_finite_loss():
  """configs/mqar.py (smoke) with a five-layer hybrid, one layer of each new variant (one
  compile instead of five), through the trainer's own setup and jitted train step: two
  steps on the task's batches, finite loss and gradient norm, parameters updated."""
  import os
  import flax.linen as nn
  from attnlab.config_loading import load_config
  from attnlab.train import sharding as shd
  from attnlab.train.state import init_state
  from attnlab.train.trainer import jitted_train_step, setup
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  c = load_config(os.path.join(root, "configs", "mqar.py") + f":variant={','.join(NEW)},smoke=True")
  c.model.num_layers = len(NEW)
  run = setup(c)
  state = init_state(run.init_fn, run.shardings, run.rules)
  before = [np.asarray(a) for a in jax.tree.leaves(state.params)]  # the step donates the state
  iterator = run.task.train_iterator()
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    step = jitted_train_step(run)
    for _ in range(2):
      state, metrics = step(state, shd.put_batch(next(iterator), run.batch_sharding))
  metrics = jax.device_get(metrics)
  print({k: float(v) for k, v in metrics.items() if np.ndim(v) == 0})
  assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"]), metrics
  assert any(not np.allclose(a, b) for a, b in zip(before, jax.tree.leaves(state.params)))
