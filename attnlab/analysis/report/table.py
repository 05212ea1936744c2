"""The report's tables: for each point (the swept axes but the seed), mean ± std over its
seeds of every final metric, with the seed count and the evaluated examples per run; and
the measured cost of each point with its place on the Pareto fronts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnlab.analysis.report.runs import RunTable
from attnlab.reproduce.report import fmt_number, run_stats


def _examples(part: pd.DataFrame, column: str | None) -> str:
  """The examples each run evaluated: "2785", "2689-2785" when they differ, "-" unknown."""
  if column is None:
    return "-"
  values = pd.to_numeric(part[column], errors="coerce").dropna()
  if values.empty:
    return "-"
  low, high = int(values.min()), int(values.max())
  return str(low) if low == high else f"{low}-{high}"


def seed_table(runs: RunTable) -> pd.DataFrame:
  """One row per point, in the CSV's order: the axes, `seeds` (finished runs), `examples`,
  then `<metric>_mean` and `<metric>_std` (sample std, ddof 1; NaN for one seed) per metric
  (`reproduce.report.run_stats`)."""
  keys = runs.axes
  groups = runs.frame.groupby(keys, sort=False, dropna=False) if keys else [((), runs.frame)]
  rows = []
  for values, part in groups:
    values = values if isinstance(values, tuple) else (values,)
    row = {**dict(zip(keys, values)), "seeds": len(part), "examples": _examples(part, runs.examples)}
    for m in runs.metrics:
      row[f"{m}_mean"], row[f"{m}_std"], _ = run_stats(part, m)
    rows.append(row)
  return pd.DataFrame(rows)


def _mean_std(mean: float, std: float) -> str:
  """"0.4321 ± 0.0123"; the mean alone for one seed (no std)."""
  return fmt_number(mean) if pd.isna(std) else f"{fmt_number(mean)} ± {fmt_number(std)}"


def table_markdown(runs: RunTable, table: pd.DataFrame) -> str:
  """The table as markdown: one "mean ± std" column per metric (the mean alone for one seed)."""
  head = [*runs.axes, "seeds", "examples / run", *runs.metrics]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in table.to_dict("records"):
    cells = [str(r[k]) for k in runs.axes] + [str(r["seeds"]), r["examples"]]
    cells += [_mean_std(r[f"{m}_mean"], r[f"{m}_std"]) for m in runs.metrics]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def cost_markdown(runs: RunTable, table: pd.DataFrame, costs: pd.DataFrame, metric: str, fronts: dict) -> str:
  """The cost table as markdown: per point its measured variant, T, GFLOPs, temp MiB, the
  metric, whether it is on the Pareto front of each cost (`plots.cost_fronts`) and what was
  measured (or why not)."""
  lines = ["| point | variant | T | GFLOPs | temp MiB | " + metric + " | front (FLOPs) | front (memory) | measured at |",
           "|---|---|---|---|---|---|---|---|---|"]
  for i, r in enumerate(table.to_dict("records")):
    c = costs.iloc[i]
    point = ", ".join(f"{a}={r[a]}" for a in runs.axes) or "all"
    gflops = f"{c.flops / 1e9:.3g}" if np.isfinite(c.flops) else "-"
    mib = f"{c.temp_bytes / 2 ** 20:.3g}" if np.isfinite(c.temp_bytes) else "-"
    lines.append(f"| {point} | {c.cost_variant or '-'} | {c.cost_T or '-'} | {gflops} | {mib} | "
                 f"{fmt_number(r[f'{metric}_mean'])} | {'yes' if fronts['flops'][i] else ''} | "
                 f"{'yes' if fronts['temp_bytes'][i] else ''} | {c.cost_note} |")
  return "\n".join(lines) + "\n"


__all__ = ["cost_markdown", "seed_table", "table_markdown"]
