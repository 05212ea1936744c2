"""The softmax-like and head-level variants skip masked tiles as mha does (issue 14, point 2).

FLOPs of the fwd+bwd program (`bench.cost.variant_program`: grad of sum(module(x)) w.r.t.
params and x, causal, the variant's defaults) are counted on the jaxpr at T = 16k with
abstract shapes (`count_flops`: loop bodies times trip counts; traced, never compiled or
run) and compared with mha's. Each variant's "xla" path runs over blocked.py's static tile
lists, so at T = 16k causal it must cost at most 1.2x mha (it cost ~2x when the row-wise
ops ran dense query tiles). The canary forces the same programs onto a dense plan (every
tile visited, the causal mask applied inside each: still exact) and must exceed 1.2x (~2x),
so the count does see masked tiles being visited.

talking_heads is held to its own documented bound: its post-softmax head mixing needs an
extra statistics pass forward and an extra delta pass backward (ops/softmax/
talking_heads.py), 10 T x T x D products against mha's 7, about 1.5x; 1.2x is marked as
a strict xfail so that a cheaper exact form shows up.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from attnlab.attention import masks as M
from attnlab.attention.ops.softmax import blocked
from attnlab.bench.cost import count_flops, variant_program

T = 16384
BOUND = 1.2
TALKING_HEADS_BOUND = 1.6  # two passes each way: (10 + head mixings) / 7 products
SKIPPING = ["cog", "sigmoid", "softmax_off_by_one", "scalable_softmax", "diff", "diffqkv", "moh"]
POINT_2 = SKIPPING + ["talking_heads"]
_plan_tiles = blocked.plan_tiles


@functools.lru_cache(maxsize=None)
def _flops(name: str, dense: bool = False) -> float:
  if dense:
    with pytest.MonkeyPatch.context() as mp:
      mp.setattr(blocked, "plan_tiles", _dense_plan)
      return _flops.__wrapped__(name)
  fn, args = variant_program(name, T)
  fc = count_flops(fn, *args)
  assert fc.unknown_loops == 0, f"{name}: a loop with an unknown trip count"
  return fc.flops


def _dense_plan(mask, tq, tk, block_q, block_k, q_offset):
  """Every tile PARTIAL (visited, mask evaluated inside): the unskipped plan of the canary."""
  plan = _plan_tiles(None, tq, tk, block_q, block_k, 0)
  pairs = np.argwhere(np.ones((plan.nq, plan.nk), bool)).astype(np.int32).reshape(-1, 2)
  return blocked.TilePlan(block_q, block_k, plan.nq, plan.nk, pairs[:0], pairs)


def _ratio(name: str, dense: bool = False) -> float:
  r = _flops(name, dense) / _flops("mha")
  print(f"{name}{' (dense plan)' if dense else ''}: fwd+bwd FLOPs at T={T} causal = {r:.3f} x mha")
  return r


@pytest.mark.parametrize("name", [
    *SKIPPING,
    pytest.param("talking_heads", marks=pytest.mark.xfail(
        strict=True, reason="post-softmax head mixing: two passes each way, ~1.5x mha (talking_heads.py)")),
])
def test_within_bound_of_mha(name):
  assert _ratio(name) <= BOUND


def test_talking_heads_two_pass_cost():
  """talking_heads skips the masked tiles in all four of its passes: ~1.5x mha, where its
  dense query-tiled path cost ~2.1x."""
  assert _ratio("talking_heads") <= TALKING_HEADS_BOUND


@pytest.mark.parametrize("name", ["mha", "cog", "sigmoid", "talking_heads"])
def test_canary_dense_plan_exceeds_bound(name):
  """The same programs with every tile visited cost ~2x mha (talking_heads ~3x): the count bites."""
  assert _ratio(name, dense=True) > (TALKING_HEADS_BOUND if name == "talking_heads" else BOUND)


def test_dense_plan_is_exact():
  """The canary's plan changes the work, not the result (it is the old unskipped cost)."""
  import jax
  from attnlab.attention.ops.softmax import signed_softmax_attention
  q, k, v = (jax.random.normal(jax.random.key(i), (1, 40, 2, 8)) for i in range(3))
  f = lambda: signed_softmax_attention(q, k, v, mask=M.Causal(), impl="xla", block_q=8, block_k=8)  # noqa: E731
  want = f()
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(blocked, "plan_tiles", _dense_plan)
    got = f()
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
