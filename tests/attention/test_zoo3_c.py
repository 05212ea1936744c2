"""Attention zoo, part 3 (issue 18), third batch: superlinear (variants/superlinear.py),
flexprefill (variants/flexprefill.py, ops/sparse/flexprefill.py).

The oracle is written here from the definition in plain jnp / numpy (oracle_parts for
projections and RoPE): spans of ceil(sqrt(T)), span representatives as key means, the
kept set (own span + top_k past spans) chosen in numpy, one dense masked softmax; T = 22
(5 spans, the last partial; 3 query tiles of 8). Canary: the oracle without the span
search. Reduction: every span kept is mha. The paper's claim: scored pairs grow as L^1.5
(counted on the op's program and analytically, fitted).
flexprefill: the block selection in numpy from the definition (pooled block estimate,
diagonal first, cumulative mass < gamma, max_blocks), one dense masked softmax; T = 22 in
blocks of 4. Canary: no mass criterion. Reduction: gamma = 1 is mha. The paper's claim:
the selection covers gamma of the attention (exactly of the estimate; measured of the
true attention).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.attention import build
from tests.attention import contract
from tests.attention.oracle_parts import out_proj, proj, rope_bt
from tests.attention.test_zoo3 import _assert_bites
from tests.attention.test_zoo3_b import _compare, _undeclared_patterns_raise


# ---- superlinear -----------------------------------------------------------------------------
SUPER = dict(num_heads=2, top_k=1, q_chunk=8)
T_SUPER = 22  # spans of ceil(sqrt(22)) = 5: 5 spans, the last partial; query tiles of 8


def _super_qkv(p, x):
  pos = np.broadcast_to(np.arange(x.shape[1]), x.shape[:2])
  return rope_bt(proj(x, p, "query"), pos), rope_bt(proj(x, p, "key"), pos), proj(x, p, "value")


def superlinear_kept(p, x, top_k, search=True):
  """[B, H, T, T] in numpy: span s = ceil(sqrt(T)); query i keeps its own span (keys
  s*floor(i/s) .. i) and the top_k past spans by q_i . mean(k over the span) (post-RoPE
  keys). search=False keeps the local span only (the canary)."""
  b, t = x.shape[:2]
  s = int(np.ceil(np.sqrt(t)))
  q, k, _ = (np.asarray(a, np.float64) for a in _super_qkv(p, x))
  reps = np.stack([k[:, j * s:(j + 1) * s].mean(1) for j in range(-(-t // s))], 1)  # [B, nS, H, D]
  kept = np.zeros((b, q.shape[2], t, t), bool)
  for i in range(t):
    own = i // s
    kept[..., i, own * s:i + 1] = True
    if search and own > 0:
      best = np.argsort(-np.einsum("bhd,bnhd->bhn", q[:, i], reps[:, :own]), -1)[..., :top_k]  # [B, H, k]
      for j in range(own):
        kept[..., i, j * s:(j + 1) * s] |= np.any(best == j, -1)[..., None]
  return kept


def superlinear_oracle(p, x, kept):
  """Dense softmax over the kept keys."""
  q, k, v = _super_qkv(p, x)
  sc = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  w = jax.nn.softmax(jnp.where(kept, sc, -jnp.inf), -1)
  return out_proj(jnp.einsum("bhqk,bkhd->bqhd", w, v), p)


def test_superlinear_oracle_and_canary():
  """Fwd + grads vs the dense oracle, T = 22 (5 spans of 5, the last partial; 3 query tiles
  of 8, the last partial), top_k = 1. The layer takes no extra mask (it raises), so there is
  no key padding here. Canary: the oracle without the span search (local span only)."""
  x, _ = contract.make_inputs(length=T_SUPER)
  module = build("superlinear", **SUPER)
  variables = contract.random_params(module, x)
  p = variables["params"]
  kept = superlinear_kept(p, x, 1)
  y_ref = _compare("superlinear", module, variables, x, lambda v, x: superlinear_oracle(v["params"], x, kept), {})
  _assert_bites("superlinear", "no span search", y_ref, superlinear_oracle(p, x, superlinear_kept(p, x, 1, search=False)))


def test_superlinear_and_flexprefill_reduce_to_dense_causal():
  """Every past key kept is mha (causal, RoPE, same params): superlinear with top_k >= the
  number of spans, flexprefill with gamma = 1 and max_blocks >= the number of blocks."""
  x, _ = contract.make_inputs(length=T_SUPER)
  mha = build("mha", num_heads=2)
  variables = contract.random_params(mha, x)
  y_mha = np.asarray(jax.jit(mha.apply)(variables, x))
  for name, hp in (("superlinear", dict(num_heads=2, top_k=5, q_chunk=8)),
                   ("flexprefill", {**FLEX, "gamma": 1.0, "max_blocks": 6})):
    np.testing.assert_allclose(np.asarray(jax.jit(build(name, **hp).apply)(variables, x)), y_mha, atol=1e-5,
                               err_msg=name)


def test_superlinear_scored_pairs_grow_as_L_to_the_1_5():
  """The claim: the (query, key-or-representative) pairs scored grow as L^1.5. Counted on
  the op's program (dot FLOPs of the forward, `bench.flops.count_flops`, loops times their
  trip counts; abstract shapes, nothing runs) at L = 1k .. 16k and fitted; a fixed span of
  8 on the same lengths (the canary: MoBA's fixed block) grows as L^2, its span search
  scoring L / 8 representatives per query."""
  from attnlab.attention.ops.sparse.block_select import moba_attention
  from attnlab.bench.flops import count_flops
  lengths = (1024, 4096, 16384)
  module = build("superlinear", num_heads=1)

  def dots(length, block):
    x = jax.ShapeDtypeStruct((1, length, 1, 16), jnp.float32)
    return count_flops(lambda q, k, v: moba_attention(q, k, v, block_size=block, top_k=3, impl="xla"), x, x, x).dot_flops

  fit = lambda ys: float(np.polyfit(np.log(lengths), np.log(ys), 1)[0])  # noqa: E731
  ours = [dots(n, module.span_for(n)) for n in lengths]
  fixed = [dots(n, 8) for n in lengths]
  pairs = [n * (-(-n // module.span_for(n)) + 3 * module.span_for(n)) for n in lengths]  # analytic count
  print(f"superlinear: dot FLOPs {ours}, exponent {fit(ours):.3f}; analytic pairs {pairs}, exponent "
        f"{fit(pairs):.3f}; fixed span 8: exponent {fit(fixed):.3f}")
  assert 1.4 < fit(ours) < 1.6 and 1.4 < fit(pairs) < 1.6
  assert fit(fixed) > 1.8


def test_superlinear_contract():
  """Decode equals the full pass; undeclared patterns raise (causal-self is compiled by the
  oracle test); bad hyperparameters raise."""
  _undeclared_patterns_raise("superlinear", SUPER)
  contract.check_decode_matches_full("superlinear", SUPER, length=4)
  for bad in (dict(span=-1), dict(positional="alibi"), dict(top_k=0)):
    with pytest.raises(ValueError):
      build("superlinear", **bad)


# ---- flexprefill ---------------------------------------------------------------------------
FLEX = dict(num_heads=2, block_size=4, gamma=0.6, max_blocks=3)


def _pool(a, bs):
  """Block means over axis 1 (a partial last block averages what it has): [B, T, ...] -> [B, n, ...]."""
  return np.stack([a[:, j:j + bs].mean(1) for j in range(0, a.shape[1], bs)], 1)


def flexprefill_kept(q, k, bs, gamma, max_blocks):
  """[B, H, T, T] numpy: per head, a_hat = causal softmax over key blocks of mean(q block) .
  mean(k block) / sqrt(D); each query block keeps its diagonal, then blocks by decreasing
  a_hat while the mass kept before them is < gamma, at most max_blocks; causal in-block."""
  q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
  b, t, h, d = q.shape
  qm, km = _pool(q, bs), _pool(k, bs)  # [B, n, H, D]
  n = qm.shape[1]
  kept = np.zeros((b, h, t, t), bool)
  for bi in range(b):
    for hi in range(h):
      for i in range(n):
        s = km[bi, :i + 1, hi] @ qm[bi, i, hi] / np.sqrt(d)
        a = np.exp(s - s.max())
        a /= a.sum()
        order = [i] + [j for j in np.argsort(-a) if j != i]
        mass = 0.0
        for j in order[:max_blocks]:
          if mass >= gamma:
            break
          kept[bi, hi, i * bs:(i + 1) * bs, j * bs:(j + 1) * bs] = True
          mass += a[j]
  return kept & np.tril(np.ones((t, t), bool))


def test_flexprefill_oracle_and_canary():
  """Fwd + grads vs the dense oracle (the selection in numpy from the definition), T = 22 in
  blocks of 4 (the last partial; the query tiles are these 6 blocks), gamma 0.6, max 3 blocks. No extra mask
  (the layer raises on one). Canary: the oracle keeping max_blocks blocks regardless of the
  mass (gamma = 1)."""
  x, _ = contract.make_inputs(length=T_SUPER)
  module = build("flexprefill", **FLEX)
  variables = contract.random_params(module, x)
  p = variables["params"]
  q, k, _ = _super_qkv(p, x)
  kept = flexprefill_kept(q, k, 4, 0.6, 3)
  assert kept.sum() < flexprefill_kept(q, k, 4, 1.0, 3).sum()  # the mass criterion drops blocks here
  y_ref = _compare("flexprefill", module, variables, x, lambda v, x: superlinear_oracle(v["params"], x, kept), {})
  _assert_bites("flexprefill", "no mass criterion", y_ref,
                superlinear_oracle(p, x, flexprefill_kept(q, k, 4, 1.0, 3)))


def test_flexprefill_selected_blocks_cover_the_requested_mass():
  """The claim: the blocks selected for a query block carry at least gamma of its attention.
  By construction they carry >= gamma of the pooled estimate (checked exactly, every query
  block); against the true attention (dense causal softmax, each query's mass on its kept
  keys) the coverage is measured and reported. Random q, k of T = 256, blocks of 16, one
  head of width 16."""
  from attnlab.attention.ops.sparse.flexprefill import flexprefill_blocks
  kq, kk = jax.random.split(jax.random.key(7))
  t, bs = 256, 16
  q, k = jax.random.normal(kq, (1, t, 1, 16)), jax.random.normal(kk, (1, t, 1, 16))
  true = np.asarray(jax.nn.softmax(jnp.where(np.tril(np.ones((t, t), bool)),
                                             jnp.einsum("bqhd,bkhd->bhqk", q, k) / 4.0, -jnp.inf), -1))[0, 0]
  select = jax.jit(lambda q, k, g: flexprefill_blocks(q, k, block_size=bs, gamma=g, max_blocks=16))
  for gamma in (0.5, 0.7, 0.9):
    ids, used, est = (np.asarray(a)[0, 0] for a in select(q, k, gamma))
    est_cov = np.array([est[i, ids[i][used[i]]].sum() for i in range(t // bs)])
    assert (est_cov >= gamma - 1e-6).all(), (gamma, est_cov.min())
    kept_blocks = [set(ids[i][used[i]].tolist()) for i in range(t // bs)]
    cov = np.array([sum(true[r, j * bs:(j + 1) * bs].sum() for j in kept_blocks[r // bs]) for r in range(t)])
    frac = np.mean([len(s) for s in kept_blocks]) / np.mean(np.arange(1, t // bs + 1))
    print(f"flexprefill gamma {gamma}: estimated coverage min {est_cov.min():.3f}; true coverage mean "
          f"{cov.mean():.3f}, min {cov.min():.3f}, queries >= gamma {np.mean(cov >= gamma):.2f}; "
          f"blocks kept {frac:.2f} of the causal ones")
    assert cov.mean() >= gamma - 0.05


def test_flexprefill_contract():
  """Undeclared patterns (and decode) raise (causal-self is compiled by the oracle test);
  bad hyperparameters raise."""
  _undeclared_patterns_raise("flexprefill", FLEX)
  for bad in (dict(gamma=0.0), dict(gamma=1.5), dict(max_blocks=0), dict(positional="alibi")):
    with pytest.raises(ValueError):
      build("flexprefill", **bad)
