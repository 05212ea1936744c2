"""`attnlab bench attention`: speed and compiled memory of attention ops and variants.

    attnlab bench attention --variants mha,sliding_window --seq 512,1024,2048,4096 \
        [--impls reference,xla] [--json out.json]
    attnlab bench attention --variants all --seq 1024,4096,16384 --no-torch --json zoo.json

Two kinds of rows:

* raw ops: `mha` is `softmax_attention` with a causal mask (no mask when --non-causal),
  `sliding_window` the same with a `SlidingWindow(window)` mask, per impl;
* any other registered variant name: its Flax module (`attention.build(name,
  num_heads=heads, ...)`, d_model = heads * head_dim, projections included), per impl when
  the variant has an `impl` hyperparameter.

Each row has the median forward and forward+backward time (after warmup, with
block_until_ready), XLA's compiled temp/peak memory, and ratios against
`jax.nn.dot_product_attention` (rows `jax_dpa`) and, where `import torch` works, PyTorch's
`scaled_dot_product_attention` on CPU (rows `torch_sdpa`), measured in the same run on the
same shapes: ratio = this row's time / the baseline's (below 1 = faster). Module rows are
compared with the dense causal (or full) baseline of the same shape, and with the `mha`
module (row kind `baseline`, impl `module`: same d_model, heads and projections), which
gives the `*_vs_mha` columns (time and compiled fwd+bwd temp memory).

Compiled memory is read before anything runs: a program whose peak exceeds
--max-memory-gb (default 60% of RAM) is reported with its memory and not timed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import pandas as pd

from attnlab.attention import VARIANTS, build
from attnlab.config_lib import VARIANT_NEEDS
from attnlab.attention import masks as M
from attnlab.attention.ops import softmax_attention
from attnlab.bench import baselines
from attnlab.bench.timing import default_max_memory_mb, measure, use_clock
from attnlab.attention.variants.base import window_extents

RAW_OPS = ("mha", "sliding_window")
COLUMNS = ["kind", "variant", "impl", "seq", "batch", "heads", "head_dim", "causal",
           "fwd_ms", "fwdbwd_ms", "fwd_temp_mb", "fwd_peak_mb", "fwdbwd_temp_mb", "fwdbwd_peak_mb",
           "fwd_vs_jax", "fwdbwd_vs_jax", "fwd_vs_torch", "fwdbwd_vs_torch",
           "fwd_vs_mha", "fwdbwd_vs_mha", "fwdbwd_temp_vs_mha", "note"]


def default_impls() -> list[str]:
  """reference and xla everywhere, plus cudnn on GPU."""
  return ["reference", "xla"] + (["cudnn"] if jax.default_backend() == "gpu" else [])


def _op_mask(variant: str, causal: bool, window: int):
  if variant == "sliding_window":
    left, right = window_extents(window, causal)
    return M.SlidingWindow(left=left, right=right)
  return M.Causal() if causal else None


def _bench_op(variant, impl, q, k, v, causal, window, repeats, max_mb):
  mask = _op_mask(variant, causal, window)
  fn = lambda q, k, v: softmax_attention(q, k, v, mask=mask, impl=impl)
  grad = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), (0, 1, 2))
  return measure(jax.jit(fn), jax.jit(grad), (q, k, v), repeats, max_mb)


def _bench_module(variant, impl, x, heads, causal, repeats, max_mb, attn=None):
  # single-head designs (mega) keep d_model = heads * head_dim in one head
  hp = {"num_heads": 1 if VARIANT_NEEDS.get(variant, {}).get("num_heads") == 1 else heads,
        "causal": causal}
  if impl is not None:
    hp["impl"] = impl
  fields = VARIANTS.get(variant).hyperparameters()
  hp.update({k: v for k, v in (attn or {}).items() if k in fields})
  module = build(variant, **hp)
  params = module.init(jax.random.key(1), x)
  fwd = jax.jit(lambda p, x: module.apply(p, x))
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(module.apply(p, x)), (0, 1)))
  return measure(fwd, grad, (params, x), repeats, max_mb)


def _baselines(seq, q, k, v, causal, window, repeats, use_torch, log, max_mb):
  """Baseline rows (jax_dpa, torch_sdpa) for the dense and the windowed mask."""
  out = {}
  for variant, win in (("mha", None), ("sliding_window", window)):
    log(f"baseline jax.nn.dot_product_attention {variant} T={seq}")
    out[(variant, "jax_dpa")] = baselines.jax_dpa(q, k, v, causal=causal, window=win, repeats=repeats,
                                                  max_mb=max_mb)
    if use_torch:
      log(f"baseline torch SDPA {variant} T={seq}")
      out[(variant, "torch_sdpa")] = baselines.torch_sdpa(q, k, v, causal=causal, window=win, repeats=repeats)
  return out


def run_attention_bench(variants: Sequence[str], seqs: Sequence[int], batch: int = 1, heads: int = 8,
                        head_dim: int = 64, causal: bool = True, impls: Sequence[str] | None = None,
                        repeats: int = 5, window: int = 256, torch: bool = True,
                        max_memory_mb: float | None = None, attn: dict | None = None,
                        console=None) -> pd.DataFrame:
  """Benchmarks `variants` at each sequence length; one row per (variant, seq, impl).

  q, k, v [batch, seq, heads, head_dim] fp32 for raw ops, x [batch, seq, heads * head_dim]
  for modules. impls: op implementations to try (default `default_impls()` for raw ops;
  modules run their default unless impls is given). An impl that cannot run a case gives
  a row with NaN numbers and the reason in `note`; so does a program whose compiled peak
  memory exceeds `max_memory_mb` (default 60% of RAM). When any registered variant is
  benchmarked, the `mha` module is too (a `baseline` row), for the `*_vs_mha` ratios.
  attn: variant hyperparameters, each given to the variants that take it (e.g. cosformer's
  max_len for long sequences).
  Returns a DataFrame with COLUMNS; progress goes to `console` (rich, stderr by default).
  """
  from rich.console import Console
  console = console or Console(stderr=True)
  max_mb = default_max_memory_mb() if max_memory_mb is None else max_memory_mb
  for name in variants:
    if name not in RAW_OPS:
      VARIANTS.get(name)  # unknown names fail before anything runs, listing what exists
  any_module = any(v not in RAW_OPS for v in variants)
  use_torch = torch and baselines.torch_available() is not None
  rows = []
  base = dict(batch=batch, heads=heads, head_dim=head_dim, causal=causal)
  n_cases = sum(len(impls or default_impls()) if v in RAW_OPS else len(_module_impls(v, impls))
                for v in variants) * len(seqs)
  done = 0
  for seq in seqs:
    kq, kk, kv, kx = jax.random.split(jax.random.key(seq), 4)
    q, k, v = (jax.random.normal(key, (batch, seq, heads, head_dim), jnp.float32) for key in (kq, kk, kv))
    x = jax.random.normal(kx, (batch, seq, heads * head_dim), jnp.float32)
    refs = _baselines(seq, q, k, v, causal, window, repeats, use_torch, console.log, max_mb)
    if any_module:
      console.log(f"baseline mha module T={seq}")
      refs[("mha", "module")] = _bench_module("mha", None, x, heads, causal, repeats, max_mb)
    for (variant, impl), numbers in refs.items():
      rows.append({"kind": "baseline", "variant": variant, "impl": impl, "seq": seq, **base, **numbers})
    for variant in variants:
      is_op = variant in RAW_OPS
      for impl in (impls or default_impls()) if is_op else _module_impls(variant, impls):
        done += 1
        console.log(f"[{done}/{n_cases}] {variant} impl={impl or 'default'} T={seq}")
        row = {"kind": "op" if is_op else "module", "variant": variant, "impl": impl or "default",
               "seq": seq, **base}
        try:
          if is_op:
            row.update(_bench_op(variant, impl, q, k, v, causal, window, repeats, max_mb))
          else:
            row.update(_bench_module(variant, impl, x, heads, causal, repeats, max_mb, attn))
        except (ValueError, TypeError, NotImplementedError) as e:
          row["note"] = str(e).splitlines()[0]
          console.log(f"  skipped: {row['note']}")
        _add_ratios(row, refs, variant)
        if not is_op:
          _add_mha_ratios(row, refs.get(("mha", "module")))
        rows.append(row)
  df = pd.DataFrame(rows)
  for col in COLUMNS:
    if col not in df:
      df[col] = math.nan if col != "note" else ""
  df["note"] = df["note"].fillna("")
  return df[COLUMNS]


def _module_impls(variant: str, impls) -> list:
  """The impls a module is run with: `impls` when it has an `impl` hyperparameter, else [None]."""
  if "impl" in VARIANTS.get(variant).hyperparameters():
    return list(impls) if impls else [None]
  return [None]


def _add_ratios(row, refs, variant):
  key = "sliding_window" if variant == "sliding_window" else "mha"
  for name, tag in (("jax_dpa", "jax"), ("torch_sdpa", "torch")):
    ref = refs.get((key, name))
    for t in ("fwd", "fwdbwd"):
      ok = ref is not None and t + "_ms" in row and ref.get(t + "_ms")
      row[f"{t}_vs_{tag}"] = row[t + "_ms"] / ref[t + "_ms"] if ok else math.nan


def _add_mha_ratios(row, mha):
  """Module rows: time and compiled fwd+bwd temp memory over the mha module's (same run)."""
  for col, src in (("fwd_vs_mha", "fwd_ms"), ("fwdbwd_vs_mha", "fwdbwd_ms"),
                   ("fwdbwd_temp_vs_mha", "fwdbwd_temp_mb")):
    ok = mha is not None and src in row and mha.get(src)
    row[col] = row[src] / mha[src] if ok else math.nan


def expand_variants(names: Sequence[str]) -> list[str]:
  """"all" -> every registered variant (in registry order); other names pass through."""
  out = []
  for n in names:
    out += VARIANTS.names() if n == "all" else [n]
  return list(dict.fromkeys(out))


def parse_attn(items: Sequence[str]) -> dict[str, Any]:
  """["max_len=16384", "window=128"] -> {"max_len": 16384, "window": 128} (Python literals,
  else strings); a key no registered variant takes is a ValueError."""
  import ast
  known = {k for name in VARIANTS.names() for k in VARIANTS.get(name).hyperparameters()}
  out = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep:
      raise ValueError(f"--attn {item!r} must look like key=value")
    if key not in known:
      raise ValueError(f"--attn {key!r} is not a hyperparameter of any registered variant")
    try:
      out[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[key] = text
  return out


def _fmt(x, digits=1):
  return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def print_table(df: pd.DataFrame, console=None) -> None:
  """A rich table of the results (ratios: time / baseline time; below 1 = faster)."""
  from rich.console import Console
  from rich.table import Table
  console = console or Console(width=max(150, Console().width))
  table = Table(title="attention benchmark (ms; MiB; ratio = time / baseline)")
  heads = ("variant", "impl", "T", "fwd ms", "f+b ms", "fwd temp", "f+b temp",
           "fwd/jax", "f+b/jax", "fwd/torch", "f+b/torch", "f+b/mha", "mem/mha", "note")
  for h in heads:
    table.add_column(h, justify="left" if h in ("variant", "impl", "note") else "right", overflow="fold")
  for r in df.sort_values(["seq", "variant", "kind"], kind="stable").itertuples():
    table.add_row(r.variant, r.impl, str(r.seq), _fmt(r.fwd_ms), _fmt(r.fwdbwd_ms), _fmt(r.fwd_temp_mb),
                  _fmt(r.fwdbwd_temp_mb), _fmt(r.fwd_vs_jax, 2), _fmt(r.fwdbwd_vs_jax, 2),
                  _fmt(r.fwd_vs_torch, 2), _fmt(r.fwdbwd_vs_torch, 2), _fmt(r.fwdbwd_vs_mha, 2),
                  _fmt(r.fwdbwd_temp_vs_mha, 2), r.note)
  console.print(table)


def environment() -> dict[str, Any]:
  """What the numbers were measured on."""
  return {"jax": jax.__version__, "backend": jax.default_backend(),
          "device": str(jax.devices()[0].device_kind), "torch": baselines.torch_available(),
          "machine": platform.machine(), "processor": platform.processor()}


# ---- CLI ---------------------------------------------------------------------------


def _csv(kind):
  return lambda s: [kind(x) for x in s.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
  """The `bench attention` options."""
  p.add_argument("--variants", type=_csv(str), default=["mha", "sliding_window"],
                 help="comma list: raw ops mha,sliding_window and/or registered variant names; "
                      "'all' = every registered variant")
  p.add_argument("--seq", type=_csv(int), default=[512, 1024, 2048], help="comma list of sequence lengths")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--heads", type=int, default=8)
  p.add_argument("--head-dim", type=int, default=64)
  p.add_argument("--non-causal", action="store_true", help="bidirectional attention (default causal)")
  p.add_argument("--impls", type=_csv(str), default=None,
                 help="comma list of op impls (default: reference,xla and cudnn on GPU)")
  p.add_argument("--window", type=int, default=256, help="sliding_window's window")
  p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median)")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch SDPA baseline")
  p.add_argument("--attn", action="append", default=[], metavar="KEY=VALUE",
                 help="a variant hyperparameter (repeatable), given to the variants that take it")
  p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                 help="wall time, or this process's CPU time (steadier on a shared machine)")
  p.add_argument("--max-memory-gb", type=float, default=None,
                 help="do not run programs whose compiled peak exceeds this (default 60%% of RAM)")
  p.add_argument("--json", default=None, help="also write {environment, rows} to this file")


def main(args) -> int:
  """Runs the benchmark from parsed `bench attention` arguments; prints the table.

  Returns the exit code (2 with a one-line message for an unknown variant or bad size)."""
  import sys
  from attnlab.registry import UnknownNameError
  try:
    attn = parse_attn(args.attn)
    args.variants = expand_variants(args.variants)
    for name in args.variants:
      if name not in RAW_OPS:
        VARIANTS.get(name)
    if min(args.seq + [args.batch, args.heads, args.head_dim, args.repeats]) <= 0:
      raise ValueError("--seq, --batch, --heads, --head-dim and --repeats must be positive")
  except (UnknownNameError, ValueError) as e:
    print(f"attnlab: error: {e}", file=sys.stderr)
    return 2
  with use_clock(args.clock):
    df = run_attention_bench(args.variants, args.seq, batch=args.batch, heads=args.heads,
                             head_dim=args.head_dim, causal=not args.non_causal, impls=args.impls,
                             repeats=args.repeats, window=args.window, torch=not args.no_torch,
                             max_memory_mb=None if args.max_memory_gb is None else args.max_memory_gb * 1024,
                             attn=attn)
  print_table(df)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"environment": {**environment(), "clock": args.clock},
                 "rows": json.loads(df.to_json(orient="records"))}, f, indent=1)
  return 0


def register_cli(subparsers) -> argparse.ArgumentParser:
  """Adds `attention` to a `bench` subparsers object; sets `func` to `main`."""
  p = subparsers.add_parser("attention", help="speed and compiled memory of attention ops and variants",
                            description=__doc__.splitlines()[0])
  add_arguments(p)
  p.set_defaults(func=main)
  return p


add_subparser = register_cli
