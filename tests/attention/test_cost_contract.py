"""The cost contract (DESIGN.md "Cost classes"): every registered variant's measured growth
of FLOPs and compiled temp memory in T (fwd+bwd at T = 2k, 8k, 32k, abstract shapes,
`attnlab.bench.cost`) stays within its declared class; dense `mha` and a canary that
hides a data-dependent [T, T] mask inside a sliding window fail the sub-quadratic check.

Each variant's measurement is cached per process, so the mha and canary tests reuse it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from jax import lax

from attnlab.attention import VARIANTS, build, list_variants
from attnlab.attention.complexity import CostClass, exponent
from attnlab.attention.registry import register
from attnlab.attention.variants.base import AttentionConfig, AttentionModule
from attnlab.bench import cost as C

S = jax.ShapeDtypeStruct
F32 = jnp.float32


@functools.lru_cache(maxsize=None)
def _measured(name):
  # Temp memory on the last segment only (8k -> 32k, the slope `check` takes the max with):
  # compiling is nearly all of this file's time, and the 2k compile only adds the 3-length
  # fit, which in experiments/zoo/cost_rows.json exceeds the last segment for 4 of 48
  # variants, by at most 0.09 (shvit), against margins of 0.25. FLOPs: all three lengths.
  return C.measure(name, memory_from=len(C.LENGTHS) - 2)


# ---- every registered variant against its declared class ---------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS.names())
def test_variant_within_declared_class(name):
  spec = VARIANTS.get(name)
  assert isinstance(spec.cost, CostClass), f"{name} declares no cost class"
  m = _measured(name)
  assert m.unknown_loops == 0, f"{name}: loops with unknown trip counts"
  C.assert_cost(m, spec.cost)
  if spec.subquadratic:  # the label implies the sub-quadratic bound as well
    C.assert_cost(m, C.SUBQUADRATIC_BOUND)


def test_subquadratic_flag_is_derived_from_the_class():
  for name, spec in VARIANTS.items():
    e = spec.cost.compute_exponent
    assert spec.subquadratic == (e < 2 and spec.cost.memory_exponent < 2), name


def test_list_and_cli_show_the_classes(capsys, tmp_path):
  from attnlab import cli
  rows = {v["name"]: v for v in list_variants()}
  assert (rows["mha"]["compute"], rows["mha"]["memory"], rows["mha"]["subquadratic"]) == ("T^2", "T", False)
  assert rows["strided"]["compute"] == "T^1.5" and rows["strided"]["subquadratic"]
  for name in ("topk", "moba", "s2_attention", "duo"):  # quadratic compute, whatever their memory
    assert rows[name]["subquadratic"] is False and exponent(rows[name]["compute"]) == 2, name
  assert cli.main(["list"]) == 0
  assert "T^2/b + T*k*b" in capsys.readouterr().out
  out, rows = tmp_path / "cost.md", tmp_path / "rows.json"
  assert cli.main(["bench", "cost", "--variants", "sliding_window", "--lengths", "256,512,1024",
                   "--out", str(out), "--json", str(rows)]) == 0
  table = out.read_text()
  assert "| sliding_window | `T*w` | `T` | yes |" in table and "| pass |" in table
  assert cli.main(["bench", "cost", "--from-json", str(rows), "--out", str(out)]) == 0
  assert out.read_text() == table  # re-rendered from the rows, nothing measured


def test_strided_default_stride_is_the_papers_sqrt_T():
  module = build("strided")
  assert [module.stride_for(t) for t in (1, 16, 17, 2048, 32768)] == [1, 4, 5, 46, 182]
  assert build("strided", stride=64).stride_for(32768) == 64
  with pytest.raises(ValueError, match="summary"):
    build("strided", summary=5).stride_for(16)


# ---- the check bites: dense mha and a canary ---------------------------------------------


@pytest.mark.slow
def test_mha_fails_the_subquadratic_check():
  m = _measured("mha")
  assert m.flop_exponent > C.SUBQUADRATIC_BOUND.compute_exponent + C.COMPUTE_MARGIN  # the fit alone fails
  verdict = C.check(m, C.SUBQUADRATIC_BOUND)
  assert not verdict.ok and "FLOPs grow as T^" in verdict.failures[0]
  with pytest.raises(C.CostContractError, match="mha: FLOPs grow"):
    C.assert_cost(m, CostClass("T*w", "T"))
  C.assert_cost(m, VARIANTS.get("mha").cost)  # its honest class passes


@dataclasses.dataclass(frozen=True)
class CanaryConfig(AttentionConfig):
  """window: keys per query (the query's own included)."""
  window: int = 32


class DenseMaskCanary(AttentionModule):
  """A causal sliding window of `window` keys gathered per query (O(T * w)), whose keys are
  also filtered by a data-dependent dense mask `q k^T > 0` built over all [T, T] pairs:
  a sparse pattern with a quadratic mask hidden inside."""

  @nn.compact
  def __call__(self, x, *, context=None, mask=None, positions=None, decode=False, deterministic=True):
    cfg = self.cfg
    hd = self.head_dim_for(x.shape[-1])
    q = self.project_heads(x, cfg.num_heads, hd, "query")
    k = self.project_heads(x, cfg.num_heads, hd, "key")
    v = self.project_heads(x, cfg.num_heads, hd, "value")
    t, w = x.shape[1], cfg.window
    keep = jnp.einsum("bqhd,bkhd->bhqk", q, k) > 0  # the hidden [T, T] mask
    idx = jnp.arange(t)[:, None] - jnp.arange(w)[None, :]  # [T, w] window keys
    ok = idx >= 0
    idx = jnp.clip(idx, 0, t - 1)
    kw, vw = k[:, idx], v[:, idx]  # [B, T, w, H, D]
    ok = ok[None, None] & jnp.take_along_axis(keep, jnp.broadcast_to(idx, keep.shape[:2] + idx.shape), axis=-1)
    s = jnp.einsum("bqhd,bqwhd->bhqw", q, kw) * hd ** -0.5
    p = jax.nn.softmax(jnp.where(ok, s, -1e30), axis=-1) * ok
    y = jnp.einsum("bhqw,bqwhd->bqhd", p, vw)
    return self.project_out(y, x.shape[-1])


@contextlib.contextmanager
def _canary_registered(name="_canary_dense_mask"):
  register(name, family="test", config=CanaryConfig, patterns=("causal-self",),
           cost=CostClass("T*w", "T*w", "claims a window; hides a [T, T] mask"))(DenseMaskCanary)
  try:
    yield name
  finally:
    VARIANTS.remove(name)
    _measured.cache_clear()


@pytest.mark.slow
def test_canary_with_hidden_dense_mask_fails_its_declared_class():
  with _canary_registered() as name:
    spec = VARIANTS.get(name)
    assert spec.subquadratic  # it claims to be
    m = C.measure(name)
    verdict = C.check(m, spec.cost)
    assert not verdict.ok, verdict
    assert any("FLOPs grow as T^" in f for f in verdict.failures)
    assert m.flop_exponent_last > C.SUBQUADRATIC_BOUND.compute_exponent + C.COMPUTE_MARGIN
    assert not C.check(m, C.SUBQUADRATIC_BOUND).ok
    with pytest.raises(C.CostContractError):
      C.assert_cost(m, spec.cost)
  assert name not in VARIANTS


# ---- the FLOP counter on known programs --------------------------------------------------


def test_counts_a_matmul():
  fc = C.count_flops(lambda a, b: a @ b, S((32, 16), F32), S((16, 8), F32))
  assert fc.flops == fc.dot_flops == 2 * 32 * 16 * 8


def test_counts_batched_dot_general_and_elementwise():
  fc = C.count_flops(lambda a, b: jnp.exp(jnp.einsum("bqd,bkd->bqk", a, b)), S((3, 10, 4), F32), S((3, 7, 4), F32))
  assert fc.dot_flops == 2 * 3 * 10 * 7 * 4
  assert fc.transcendentals == 3 * 10 * 7
  assert fc.flops == fc.dot_flops + fc.transcendentals


@pytest.mark.parametrize("n", [1, 5, 12])
def test_scan_of_n_matmuls_counts_n_times(n):
  one = C.count_flops(lambda x, m: x @ m, S((4, 8), F32), S((8, 8), F32)).flops
  fc = C.count_flops(lambda x, m: lax.scan(lambda c, _: (c @ m, None), x, None, length=n)[0],
                     S((4, 8), F32), S((8, 8), F32))
  assert fc.flops == n * one


def test_while_with_static_trip_count():
  mm = 2 * 4 * 8 * 8

  def fn(x, m):
    return lax.while_loop(lambda c: c[0] < 7, lambda c: (c[0] + 1, c[1] @ m), (0, x))[1]
  fc = C.count_flops(fn, S((4, 8), F32), S((8, 8), F32))
  assert fc.unknown_loops == 0
  assert fc.dot_flops == 7 * mm
  assert fc.flops == 7 * (mm + 1) + 8  # + the counter's add per trip, the compare per test


def test_while_bound_from_constant_arithmetic_and_fori_loop():
  mm = 2 * 4 * 8 * 8

  def fn(x, m):
    n = jnp.int32(3) * 4
    return lax.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, c[1] @ m), (0, x))[1]
  assert C.count_flops(fn, S((4, 8), F32), S((8, 8), F32)).dot_flops == 12 * mm
  fc = C.count_flops(lambda x, m: lax.fori_loop(2, 9, lambda i, c: c @ m, x), S((4, 8), F32), S((8, 8), F32))
  assert fc.dot_flops == 7 * mm


def test_while_with_dynamic_trip_count_is_flagged():
  fc = C.count_flops(lambda x, m, n: lax.fori_loop(0, n, lambda i, c: c @ m, x),
                     S((4, 8), F32), S((8, 8), F32), S((), jnp.int32))
  assert fc.unknown_loops == 1
  m = C.CostMeasurement("x", (1, 2), (1.0, 2.0), (1.0, 2.0), unknown_loops=1)
  assert not C.check(m, CostClass("T", "T")).ok


def test_cond_takes_the_largest_branch_and_sub_jaxprs_are_recursed():
  mm = 2 * 4 * 8 * 8

  @jax.custom_vjp
  def twice(a):
    return a @ a.T @ a

  twice.defvjp(lambda a: (twice(a), a), lambda a, g: (g,))

  def fn(x, m):
    y = lax.cond(x.sum() > 0, lambda a: a @ m @ m, lambda a: a, x)
    y = jax.jit(lambda a: a @ m)(y)
    y = jax.checkpoint(lambda a: a @ m)(y)
    return twice(y)
  fc = C.count_flops(fn, S((4, 8), F32), S((8, 8), F32))
  assert fc.dot_flops == 4 * mm + 2 * 4 * 8 * 4 + 2 * 4 * 4 * 8


def test_fit_and_check_margins():
  ts = (2048, 8192, 32768)
  quad = C.CostMeasurement("q", ts, tuple(float(t) ** 2 for t in ts), tuple(float(t) for t in ts))
  assert quad.flop_exponent == pytest.approx(2.0) and quad.memory_exponent == pytest.approx(1.0)
  assert C.check(quad, CostClass("T^2", "T")).ok
  assert not C.check(quad, CostClass("T^1.5", "T")).ok
  assert not C.check(quad, CostClass("T^2", "1")).ok
  assert C.check(quad, CostClass("T^2/b", "T*w")).ok
  assert quad.segments("flops") == pytest.approx([2.0, 2.0])
  # a quadratic term hidden by a linear one at short T: the fit passes T^1.5, the last segment does not
  hidden = C.CostMeasurement("h", ts, tuple(3e3 * t + float(t) ** 2 for t in ts), tuple(float(t) for t in ts))
  assert hidden.flop_exponent < 1.75 < hidden.flop_exponent_last
  verdict = C.check(hidden, CostClass("T^1.5", "T"))
  assert not verdict.ok and "last segment" in verdict.failures[0]


def test_cost_class_expressions():
  assert exponent("T") == exponent("linear") == exponent("T*w") == exponent("T*log T") == 1
  assert exponent("T^1.5") == exponent("T*sqrt(T)") == 1.5
  assert exponent("T^2/b") == exponent("T^2/b + T*k*b") == exponent("quadratic") == exponent("T²") == 2
  for bad in ("", "T^", "(T", "T^x", "T)"):
    with pytest.raises(ValueError):
      exponent(bad)
  assert CostClass("T^2/b", "T").subquadratic is False
  assert CostClass("T^1.5", "T").subquadratic is True
  with pytest.raises(ValueError, match="contradicts"):
    register("_bad_label", family="test", config=CanaryConfig, patterns=("causal-self",),
             cost=("T^2", "T"), subquadratic=True)
  with pytest.raises(ValueError, match="must declare cost"):
    register("_no_label", family="test", config=CanaryConfig, patterns=("causal-self",))
  assert "_bad_label" not in VARIANTS and "_no_label" not in VARIANTS
