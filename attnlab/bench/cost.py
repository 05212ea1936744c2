"""`attnlab bench cost`: measured growth of FLOPs and memory in T vs. declared cost classes.

Each variant declares a class (`attention.complexity.CostClass`); this module measures it.

    attnlab bench cost [--variants all|a,b] [--lengths 2048,8192,32768] \
        [--out experiments/zoo/cost_table.md] [--notes experiments/zoo/cost_changes.json] \
        [--from-json rows.json [--measure-decode]]

For a variant at its defaults (batch 1, head_dim 64: d_model = 64 * num_heads) the program
is the forward + backward `jax.grad(sum(module(x)))` w.r.t. x and the params, built at
abstract shapes (`jax.ShapeDtypeStruct`; traced and compiled, never run) at each T:

* FLOPs are counted on the jaxpr (`count_flops`): dot_general 2*M*N*K from its shapes,
  every elementwise op and transcendental by output size, reductions by input size, sort
  and top_k by input size (times log2 of the sorted length for sort); a `scan` body times
  its length, a `while` body times its trip count when it is static (a counter compared
  with a constant, fori_loop style; otherwise it is counted once and reported as
  unknown, which fails the check), `cond` the largest branch, and jit / custom_vjp /
  custom_jvp / remat sub-jaxprs recursed. XLA's own cost analysis counts a loop body once,
  which is why it is not used.
* memory is the compiled program's `memory_analysis().temp_size_in_bytes`.
* decode (variants that declare it): the FLOPs of one single-token decode step against a
  cache allocated for T positions (`measure_decode`, counted the same way), and their
  exponent: ~0 when the step is flat in the cache length (a recurrent state, a windowed
  cache), ~1 when it attends to the whole cache. Reported, not checked here (the flat-decode
  test is tests/attention/test_flat_decode.py).

The growth exponent is the least-squares slope of log(value) on log(T) over the lengths;
the slope of the last segment (8k -> 32k) is checked as well, since lower-order terms
(the projections, O(T d^2)) hide a quadratic term at short T but less and less as T grows.
`check` passes when, for both the fitted and the last-segment slope,

    measured compute exponent <= declared compute exponent + COMPUTE_MARGIN (0.25)
    measured memory exponent  <= declared memory exponent  + MEMORY_MARGIN  (0.25)

and no loop had an unknown trip count. The margins separate the classes that matter:
a T^1.5 claim allows 1.75, below dense mha (fit 1.85, last segment 1.93 at d_model 256)
and below the canary of tests/attention/test_cost_contract.py (last segment 1.83); a
linear or T*w claim allows 1.25. Only an upper bound is checked (a variant may be cheaper
than it declares; lower-order terms make every measured exponent smaller at short T).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attnlab.attention import VARIANTS, build
from attnlab.attention.complexity import CostClass
from attnlab.bench.flops import count_flops
from attnlab.config_lib import VARIANT_NEEDS

LENGTHS = (2048, 8192, 32768)
HEAD_DIM = 64
COMPUTE_MARGIN = 0.25
MEMORY_MARGIN = 0.25
INIT_LENGTH = 1024
# The most generous sub-quadratic class: a variant labelled sub-quadratic must also stay
# within T^1.5 + COMPUTE_MARGIN (and its memory likewise).
SUBQUADRATIC_BOUND = CostClass("T^1.5", "T^1.5", "the weakest sub-quadratic claim")

# Hyperparameters that must follow T for the program to exist at all (not cost knobs).
LENGTH_HPARAMS: dict[str, Callable[[int], dict]] = {
    "linformer": lambda t: {"max_len": t},
    "cosformer": lambda t: {"max_len": t},
}
# Buffer sizes do not depend on LLVM's optimisation level (checked on mha and deltanet:
# identical temp bytes), but compile time drops by about 40%.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}

def variant_hparams(name: str, length: int, **overrides) -> dict:
  """The hyperparameters the cost program uses: the variant's defaults, causal when it
  supports causal self-attention, plus VARIANT_NEEDS and LENGTH_HPARAMS (e.g. linformer's
  max_len = T) and `overrides`."""
  spec = VARIANTS.get(name)
  hp = {"causal": "causal-self" in spec.patterns}
  hp.update(VARIANT_NEEDS.get(name, {}))
  if name in LENGTH_HPARAMS:
    hp.update(LENGTH_HPARAMS[name](length))
  hp.update(overrides)
  return hp


def variant_program(name: str, length: int, *, batch: int = 1, **overrides):
  """(fn, args) for the fwd+bwd of variant `name` at sequence `length`: fn(params, rest, x)
  = jax.grad of sum(module.apply(...)) w.r.t. (params, x); args are ShapeDtypeStructs."""
  hp = variant_hparams(name, length, **overrides)
  module = build(name, **hp)
  cfg = VARIANTS.get(name).make_config(**hp)
  head_dim = cfg.head_dim or HEAD_DIM
  x = jax.ShapeDtypeStruct((batch, length, head_dim * cfg.num_heads), jnp.float32)
  # Parameters do not depend on T (LENGTH_HPARAMS aside): initialise at a short length so
  # that init's trace costs nothing; a T-dependent shape would fail loudly in apply.
  x0 = jax.ShapeDtypeStruct((batch, min(length, INIT_LENGTH)) + x.shape[2:], x.dtype)
  variables = nn.unbox(jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x0))
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k != "params"}

  def loss(p, rest, x):
    return jnp.sum(module.apply({"params": p, **rest}, x, deterministic=True))

  fn = jax.grad(loss, argnums=(0, 2))
  return fn, (params, rest, x)


def decode_step_program(name: str, cache_len: int, **overrides):
  """(fn, args) for one single-token decode step of `name` against a cache allocated for
  `cache_len` positions (causal, the variant's defaults as in `variant_program`):
  fn(params, cache, token) = module.apply(..., decode=True, mutable=["cache"]); args are
  ShapeDtypeStructs (params [at a short length], cache [at cache_len], token [1, 1, d])."""
  hp = variant_hparams(name, cache_len, causal=True, **overrides)
  module = build(name, **hp)
  cfg = VARIANTS.get(name).make_config(**hp)
  d_model = (cfg.head_dim or HEAD_DIM) * cfg.num_heads
  x = jax.ShapeDtypeStruct((1, cache_len, d_model), jnp.float32)
  cache = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, decode=True), x)["cache"]
  x0 = jax.ShapeDtypeStruct((1, min(cache_len, INIT_LENGTH), d_model), jnp.float32)
  params = nn.unbox(jax.eval_shape(lambda x: module.init(jax.random.key(0), x), x0))
  params = {k: v for k, v in params.items() if k != "cache"}

  def step(p, c, token):
    return module.apply({**p, "cache": c}, token, decode=True, mutable=["cache"])

  return step, (params, nn.unbox(cache), jax.ShapeDtypeStruct((1, 1, d_model), jnp.float32))


def measure_decode(name: str, cache_lens: Sequence[int] = LENGTHS, **overrides) -> tuple[tuple, float]:
  """FLOPs of one decode step (counted on the jaxpr, `count_flops`; a `cond` counts its
  largest branch) at each cache length, and their fitted growth exponent: ~0 for a step
  whose cost is flat in the cache length (a recurrent state, a windowed cache), ~1 for a
  step that attends to the whole cache."""
  flops = []
  for n in cache_lens:
    fn, args = decode_step_program(name, n, **overrides)
    flops.append(count_flops(fn, *args).flops)
  return tuple(flops), fit_exponent(cache_lens, flops)


@dataclasses.dataclass
class CostMeasurement:
  """Per length: FLOPs (jaxpr count) and compiled temp bytes; fitted exponents."""
  name: str
  lengths: tuple
  flops: tuple
  temp_bytes: tuple
  unknown_loops: int = 0
  unknown_primitives: tuple = ()
  seconds: float = 0.0

  @property
  def flop_exponent(self) -> float:
    """Least-squares slope of log FLOPs on log T."""
    return fit_exponent(self.lengths, self.flops)

  @property
  def memory_exponent(self) -> float:
    """Least-squares slope of log temp bytes on log T, over the lengths that were compiled."""
    return fit_exponent(*self._measured("temp_bytes"))

  def _measured(self, which: str) -> tuple[tuple, tuple]:
    """(lengths, values) of `which` without the NaNs of lengths not compiled."""
    pairs = [(t, v) for t, v in zip(self.lengths, getattr(self, which)) if not math.isnan(v)]
    return tuple(t for t, _ in pairs), tuple(v for _, v in pairs)

  @property
  def flop_exponent_last(self) -> float:
    """Slope of the last segment (the two longest lengths)."""
    return self.segments("flops")[-1]

  @property
  def memory_exponent_last(self) -> float:
    """Slope of the last segment of temp bytes."""
    return self.segments("temp_bytes")[-1]

  def segments(self, which: str = "flops") -> list[float]:
    """Slopes between consecutive lengths (that were measured)."""
    lengths, vals = self._measured(which)
    return [fit_exponent(lengths[i:i + 2], vals[i:i + 2]) for i in range(len(vals) - 1)]


def fit_exponent(lengths: Sequence[int], values: Sequence[float]) -> float:
  """Least-squares slope of log(max(value, 1)) on log(length)."""
  x = np.log(np.asarray(lengths, np.float64))
  y = np.log(np.maximum(np.asarray(values, np.float64), 1.0))
  return float(np.polyfit(x, y, 1)[0])


def measure(name: str, lengths: Sequence[int] = LENGTHS, *, memory: bool = True, memory_from: int = 0,
            **overrides) -> CostMeasurement:
  """Traces (and, with memory=True, compiles) the fwd+bwd of `name` at each length.

  memory_from: compile (temp bytes) only from this index of `lengths` on, NaN before it:
  compiling is nearly all of the time, tracing and the FLOP count are cheap."""
  t0 = time.perf_counter()
  flops, temps, unknown_loops, unknown = [], [], 0, set()
  for index, t in enumerate(lengths):
    memory_here = memory and index >= memory_from
    fn, args = variant_program(name, t, **overrides)
    traced = jax.jit(fn).trace(*args)
    fc = count_flops(traced.jaxpr)
    flops.append(fc.flops)
    unknown_loops += fc.unknown_loops
    unknown |= fc.unknown_primitives
    temps.append(traced.lower().compile(COMPILER_OPTIONS).memory_analysis().temp_size_in_bytes
                 if memory_here else float("nan"))
  return CostMeasurement(name, tuple(lengths), tuple(flops), tuple(temps), unknown_loops,
                         tuple(sorted(unknown)), time.perf_counter() - t0)


@dataclasses.dataclass
class CostCheck:
  """The verdict of `check`: ok, and one line per violated bound."""
  ok: bool
  failures: list

  def __bool__(self) -> bool:
    return self.ok


class CostContractError(AssertionError):
  """A variant measures above its declared cost class."""


def check(m: CostMeasurement, declared: CostClass, *, compute_margin: float = COMPUTE_MARGIN,
          memory_margin: float = MEMORY_MARGIN) -> CostCheck:
  """Compares measured exponents (fit and last segment) with `declared` (upper bounds
  with the margins)."""
  failures = []
  fe = max(m.flop_exponent, m.flop_exponent_last)
  if fe > declared.compute_exponent + compute_margin:
    failures.append(f"{m.name}: FLOPs grow as T^{fe:.2f} (fit {m.flop_exponent:.2f}, last segment "
                    f"{m.flop_exponent_last:.2f}) over T={list(m.lengths)} ({_fmt(m.flops)}), above the "
                    f"declared compute {declared.compute!r} (T^{declared.compute_exponent:g} + {compute_margin})")
  if sum(not math.isnan(b) for b in m.temp_bytes) >= 2:
    me = max(m.memory_exponent, m.memory_exponent_last)
    if me > declared.memory_exponent + memory_margin:
      failures.append(f"{m.name}: temp memory grows as T^{me:.2f} (fit {m.memory_exponent:.2f}, last segment "
                      f"{m.memory_exponent_last:.2f}; {_fmt(m.temp_bytes)} B), above the declared memory "
                      f"{declared.memory!r} (T^{declared.memory_exponent:g} + {memory_margin})")
  if m.unknown_loops:
    failures.append(f"{m.name}: {m.unknown_loops} while loop(s) with a trip count that is not static "
                    "(their FLOPs cannot be counted)")
  return CostCheck(not failures, failures)


def assert_cost(m: CostMeasurement, declared: CostClass, **margins) -> None:
  """Raises CostContractError listing every violated bound of `check`."""
  verdict = check(m, declared, **margins)
  if not verdict:
    raise CostContractError("; ".join(verdict.failures))


def _fmt(vals) -> str:
  return " -> ".join(f"{v:.3g}" for v in vals)


# ---- the table and the CLI ---------------------------------------------------------------


def cost_rows(names: Sequence[str], lengths: Sequence[int] = LENGTHS, log=print) -> list[dict[str, Any]]:
  """One dict per variant: declared classes, measured values and exponents, verdict."""
  rows = []
  for name in names:
    spec = VARIANTS.get(name)
    m = measure(name, lengths)
    verdict = check(m, spec.cost)
    rows.append(decode_columns(name, lengths) | dict(
        variant=name, lengths=list(m.lengths), compute=spec.cost.compute, memory=spec.cost.memory,
        subquadratic=spec.cost.subquadratic, flops=list(m.flops), temp_bytes=list(m.temp_bytes),
        flop_exponent=m.flop_exponent, flop_segments=m.segments("flops"),
        memory_exponent=m.memory_exponent, memory_segments=m.segments("temp_bytes"),
        ok=verdict.ok, failures=verdict.failures, seconds=m.seconds))
    log(f"{name}: FLOPs T^{m.flop_exponent:.2f}, temp T^{m.memory_exponent:.2f} "
        f"({'ok' if verdict.ok else 'FAIL'}; {m.seconds:.1f} s)")
  return rows


def decode_columns(name: str, lengths: Sequence[int] = LENGTHS) -> dict[str, Any]:
  """{"decode_flops": [per length] or None, "decode_exponent": float or None} (None for a
  variant that does not declare decode)."""
  if "decode" not in VARIANTS.get(name).patterns:
    return {"decode_flops": None, "decode_exponent": None}
  flops, exponent = measure_decode(name, lengths)
  return {"decode_flops": list(flops), "decode_exponent": exponent}


def markdown_table(rows: Sequence[Mapping], lengths: Sequence[int] = LENGTHS,
                   notes: Mapping[str, str] | None = None) -> str:
  """The cost table as markdown (what experiments/zoo/cost_table.md holds)."""
  notes = notes or {}
  span = ", ".join(f"{t // 1024}k" for t in lengths)
  lines = [
      "# Cost classes: declared vs. measured",
      "",
      f"Forward + backward of one layer at the variant's defaults (batch 1, head_dim 64), T = {span}.",
      "FLOPs counted on the jaxpr (loop bodies x trip counts); memory = XLA's compiled temp bytes.",
      f"Exponent = least-squares log-log slope (per-segment slopes in brackets). Check: measured <= "
      f"declared + {COMPUTE_MARGIN} (compute), + {MEMORY_MARGIN} (memory).",
      "Regenerate (measures every variant, about 5 CPU-minutes): `attnlab bench cost "
      "--json experiments/zoo/cost_rows.json --out experiments/zoo/cost_table.md "
      "--notes experiments/zoo/cost_changes.json`; re-render only: add `--from-json experiments/zoo/cost_rows.json`.",
      "Every variant declares its class at registration (`register(..., cost=(compute, memory))`); "
      "sub-quadratic = both exponents below 2. The last column names the labels and defaults that changed.",
      f"Decode exponent: FLOPs of one single-token decode step against a cache of T = {span} positions "
      "(jaxpr count; a `cond` counts its largest branch), fitted slope, and MFLOP per step at "
      f"{lengths[-1] // 1024}k in brackets: ~0 = flat in the cache length, ~1 = attends to the whole cache; "
      "- = no decode. Re-measure only this column: `attnlab bench cost --from-json experiments/zoo/cost_rows.json "
      "--measure-decode --json experiments/zoo/cost_rows.json --out experiments/zoo/cost_table.md "
      "--notes experiments/zoo/cost_changes.json`.",
      "",
      "| variant | compute | memory | sub-quadratic | FLOP exponent | temp-memory exponent | "
      f"GFLOP at {lengths[-1] // 1024}k | temp MiB at {lengths[-1] // 1024}k | decode exponent | check | what changed |",
      "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    seg_f = ", ".join(f"{s:.2f}" for s in r["flop_segments"])
    seg_m = ", ".join(f"{s:.2f}" for s in r["memory_segments"])
    lines.append(
        f"| {r['variant']} | `{r['compute']}` | `{r['memory']}` | {'yes' if r['subquadratic'] else 'no'} | "
        f"{r['flop_exponent']:.2f} [{seg_f}] | {r['memory_exponent']:.2f} [{seg_m}] | "
        f"{r['flops'][-1] / 1e9:.1f} | {r['temp_bytes'][-1] / 2**20:.1f} | {_decode_cell(r)} | "
        f"{'pass' if r['ok'] else 'FAIL'} | {notes.get(r['variant'], '')} |")
  return "\n".join(lines) + "\n"


def _decode_cell(row: Mapping) -> str:
  if row.get("decode_exponent") is None:
    return "-"
  exponent = row["decode_exponent"] + 0.0 if abs(row["decode_exponent"]) >= 0.005 else 0.0  # no "-0.00"
  return f"{exponent:.2f} [{row['decode_flops'][-1] / 1e6:.2f}]"


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The `attnlab bench cost` flags."""
  p.add_argument("--variants", default="all", help="comma-separated names, or 'all' (default)")
  p.add_argument("--lengths", default=",".join(map(str, LENGTHS)), help="sequence lengths T")
  p.add_argument("--out", default=None, help="write the markdown table here")
  p.add_argument("--notes", default=None, help="JSON {variant: 'what changed'} for the last column")
  p.add_argument("--json", default=None, help="write the rows as JSON here")
  p.add_argument("--from-json", default=None,
                 help="render the table from rows an earlier --json wrote (no measuring)")
  p.add_argument("--measure-decode", action="store_true",
                 help="with --from-json: re-measure only the decode column of those rows (seconds per variant)")


def main(args: argparse.Namespace) -> int:
  """Measures the variants, prints the table; exit status 1 when a variant fails its class."""
  names = VARIANTS.names() if args.variants == "all" else [n.strip() for n in args.variants.split(",") if n.strip()]
  lengths = [int(t) for t in args.lengths.split(",")]
  if args.from_json:
    rows = [r for r in json.loads(pathlib.Path(args.from_json).read_text())
            if args.variants == "all" or r["variant"] in names]
    lengths = rows[0].get("lengths", lengths) if rows else lengths
    if args.measure_decode:
      rows = [r | decode_columns(r["variant"], lengths) for r in rows]
  else:
    rows = cost_rows(names, lengths)
  notes = json.loads(pathlib.Path(args.notes).read_text()) if args.notes else {}
  table = markdown_table(rows, lengths, notes)
  print(table)
  if args.out:
    pathlib.Path(args.out).write_text(table)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
  return 0 if all(r["ok"] for r in rows) else 1


def register_cli(subparsers) -> argparse.ArgumentParser:
  """Adds `cost` to a `bench` subparsers object; sets `func` to `main`."""
  p = subparsers.add_parser("cost", help="measured growth of FLOPs and memory in T vs. declared cost classes",
                            description=__doc__.splitlines()[0])
  add_arguments(p)
  p.set_defaults(func=main)
  return p
