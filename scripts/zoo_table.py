"""The attention-zoo table: one row per variant, from the outputs of three attnlab commands.

  # 1. oracle errors, recorded by the oracle tests
  ATTNLAB_ORACLE_REPORT=runs/zoo/oracle.jsonl python -m pytest tests/attention -n 2 -q
  # 2. speed and compiled memory relative to the mha module
  attnlab bench attention --variants all --seq 1024,4096,16384 --no-torch --repeats 3 \
      --json runs/zoo/bench.json
  # 3. MQAR recall (seq 256, 16 key-value pairs) per width
  attnlab sweep --config configs/mqar.py:size=recall --workdir runs/zoo/mqar \
      --axis arg.variant=mha,based,... --axis model.d_model=64,128,256 --jobs 2
  # the table (markdown on stdout, and a CSV)
  python scripts/zoo_table.py --oracle runs/zoo/oracle.jsonl --bench runs/zoo/bench.json \
      --mqar runs/zoo/mqar/results.csv --csv runs/zoo/table.csv --plot runs/zoo/recall.png \
      [--variants a,b,...]

Columns: family, patterns (c = causal-self, n = noncausal-self, cc/nc = causal/noncausal
cross, d = decode), sub-quadratic flag, declared cost class (compute / memory in T at the
defaults; measured in experiments/zoo/cost_table.md), max oracle error (forward, gradient), fwd+bwd
time and compiled fwd+bwd temp memory over mha's at each benchmarked length, and MQAR
eval accuracy at each width. Missing inputs leave their columns out.
"""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd

from attnlab.attention import list_variants

PATTERN_CODES = {"causal-self": "c", "noncausal-self": "n", "causal-cross": "cc",
                 "noncausal-cross": "nc", "decode": "d"}


def oracle_errors(path: str) -> pd.DataFrame:
  """Max |actual - oracle| per variant over every recorded comparison: columns fwd_err, grad_err."""
  recs = [json.loads(line) for line in open(path) if line.strip()]
  df = pd.DataFrame(recs)
  df["kind"] = df["what"].map(lambda w: "grad" if w.startswith("grad") else "fwd")
  out = df.groupby(["variant", "kind"]).max_abs_err.max().unstack()
  return out.rename(columns={"fwd": "fwd_err", "grad": "grad_err"})


def bench_ratios(path: str) -> pd.DataFrame:
  """fwd+bwd time and temp memory over the mha module's, per variant, one column per length."""
  rows = pd.DataFrame(json.load(open(path))["rows"])
  mods = rows[rows.kind == "module"]
  mods = mods[mods.impl.isin(["default", "xla"])].drop_duplicates(["variant", "seq"])
  out = {}
  for seq, grp in mods.groupby("seq"):
    g = grp.set_index("variant")
    out[f"time@{seq}"] = g.fwdbwd_vs_mha
    out[f"mem@{seq}"] = g.fwdbwd_temp_vs_mha
  mha = rows[(rows.kind == "baseline") & (rows.impl == "module")].set_index("seq")
  table = pd.DataFrame(out)
  for seq in mha.index:  # mha's own row: 1.0 where it ran, blank where it did not
    table.loc["mha", f"time@{seq}"] = 1.0 if _num(mha.loc[seq, "fwdbwd_ms"]) else math.nan
    table.loc["mha", f"mem@{seq}"] = 1.0
  return table


def mqar_accuracy(path: str) -> pd.DataFrame:
  """Final MQAR eval accuracy (%) per variant and d_model; "n/a" = the variant cannot run the
  task (e.g. non-causal only), "failed" = the run stopped (e.g. a non-finite loss)."""
  df = pd.read_csv(path)
  vcol = "arg.variant" if "arg.variant" in df else "model.variant"
  cells: dict[str, dict[str, str]] = {}
  for _, r in df.iterrows():
    col = f"mqar@d{r['model.d_model']}" if "model.d_model" in df else "mqar"
    if r["status"] == "done":
      cell = f"{100 * r['eval/accuracy']:.1f}"
    else:
      cell = "n/a" if r["status"] == "invalid" else "failed"
    cells.setdefault(col, {})[r[vcol]] = cell
  return pd.DataFrame(cells)


def _num(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def build_table(oracle=None, bench=(), mqar=(), variants=None) -> pd.DataFrame:
  """The merged table, indexed by variant, in registry order (or `variants` order).

  oracle: JSONL path; bench: JSON paths; mqar: results.csv paths (widths merge into columns)."""
  info = pd.DataFrame([{"variant": v["name"], "family": v["family"],
                        "patterns": " ".join(PATTERN_CODES[p] for p in v["patterns"]),
                        "subquad": "yes" if v["subquadratic"] else "",
                        "cost": f"`{v['compute']}` / `{v['memory']}`"} for v in list_variants()])
  table = info.set_index("variant")
  parts = [oracle_errors(oracle) if oracle else None]
  for path in bench:
    parts.append(bench_ratios(path))
  if mqar:
    acc = pd.concat([mqar_accuracy(p) for p in mqar])
    parts.append(acc.groupby(level=0).first())  # one row per variant across the sweeps
  for part in parts:
    if part is not None:
      new = [c for c in part.columns if c not in table.columns]
      table = table.join(part[new], how="left")
      for c in part.columns:  # a column two files share (a length benchmarked twice): fill gaps
        if c not in new:
          table[c] = table[c].fillna(part[c])
  if variants:
    table = table.loc[[v for v in variants if v in table.index]]
  others = table.drop(index="mha", errors="ignore")  # drop columns only the baseline fills
  return table[[c for c in table.columns if others[c].notna().any()]]


def to_markdown(table: pd.DataFrame) -> str:
  """A GitHub markdown table; errors in %.0e, ratios in %.2f."""
  def fmt(col, x):
    if isinstance(x, str):
      return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
      return ""
    if col.endswith("_err"):
      return f"{x:.0e}"
    return f"{x:.2f}"
  cols = ["variant"] + list(table.columns)
  lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for name, row in table.iterrows():
    lines.append("| " + " | ".join([name] + [fmt(c, row[c]) for c in table.columns]) + " |")
  return "\n".join(lines)


def plot_recall(mqar_paths, out: str) -> None:
  """MQAR accuracy against d_model, one line per variant (Zoology's recall-versus-width plot)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  frames = []
  for path in mqar_paths:
    df = pd.read_csv(path)
    df = df[df.status == "done"]
    vcol = "arg.variant" if "arg.variant" in df else "model.variant"
    frames.append(pd.DataFrame({"variant": df[vcol], "d_model": df["model.d_model"],
                                "acc": 100 * df["eval/accuracy"]}))
  data = pd.concat(frames).drop_duplicates(["variant", "d_model"])
  fig, ax = plt.subplots(figsize=(7, 4.5))
  cmap, markers = plt.get_cmap("tab20"), "os^vD<>pXh"  # 20 colours x 10 markers: no two lines alike
  for i, (name, grp) in enumerate(data.groupby("variant")):
    grp = grp.sort_values("d_model")
    ax.plot(grp.d_model, grp.acc, marker=markers[i % len(markers)], lw=2.5 if name == "mha" else 1,
            color="black" if name == "mha" else cmap(i % 20), label=name)
  ax.set_xscale("log", base=2)
  ax.set_xticks(sorted(data.d_model.unique()), [str(d) for d in sorted(data.d_model.unique())])
  ax.set_xlabel("d_model")
  ax.set_ylabel("MQAR accuracy (%)")
  ax.set_ylim(0, 101)
  ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
  fig.tight_layout()
  fig.savefig(out, dpi=120)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--oracle", help="JSONL written by the oracle tests (ATTNLAB_ORACLE_REPORT)")
  p.add_argument("--bench", nargs="*", default=[],
                 help="JSON files from `attnlab bench attention --json` (lengths merge into columns; "
                      "where two files measure the same variant and length, the first listed wins)")
  p.add_argument("--mqar", nargs="*", default=[],
                 help="results.csv files from `attnlab sweep` over arg.variant (and model.d_model)")
  p.add_argument("--variants", default="", help="comma list to keep (default: all registered)")
  p.add_argument("--csv", help="also write the table here")
  p.add_argument("--plot", help="also plot MQAR accuracy against d_model to this image")
  a = p.parse_args()
  table = build_table(a.oracle, a.bench, a.mqar, [v for v in a.variants.split(",") if v])
  print(to_markdown(table))
  if a.csv:
    table.to_csv(a.csv)
  if a.plot and a.mqar:
    plot_recall(a.mqar, a.plot)


if __name__ == "__main__":
  main()
