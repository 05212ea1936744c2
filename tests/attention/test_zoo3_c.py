"""Attention zoo, part 3 (issue 18), third batch: superlinear (variants/superlinear.py).

The oracle is written here from the definition in plain jnp / numpy (oracle_parts for
projections and RoPE): spans of ceil(sqrt(T)), span representatives as key means, the
kept set (own span + top_k past spans) chosen in numpy, one dense masked softmax; T = 22
(5 spans, the last partial; 3 query tiles of 8). Canary: the oracle without the span
search. Reduction: every span kept is mha. The paper's claim: scored pairs grow as L^1.5
(counted on the op's program and analytically, fitted).
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
from tests.attention.test_zoo3_b import _compare


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


def test_superlinear_reduces_to_dense_causal_when_every_span_is_kept():
  """top_k >= the number of spans: every past key is kept, equal to mha (causal, RoPE)."""
  x, _ = contract.make_inputs(length=T_SUPER)
  mha = build("mha", num_heads=2)
  variables = contract.random_params(mha, x)
  dense = build("superlinear", num_heads=2, top_k=5, q_chunk=8)
  np.testing.assert_allclose(np.asarray(jax.jit(dense.apply)(variables, x)),
                             np.asarray(jax.jit(mha.apply)(variables, x)), atol=1e-5)


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
  contract.check_patterns("superlinear", SUPER)
  contract.check_decode_matches_full("superlinear", SUPER, length=4)
  for bad in (dict(span=-1), dict(positional="alibi"), dict(top_k=0)):
    with pytest.raises(ValueError):
      build("superlinear", **bad)
