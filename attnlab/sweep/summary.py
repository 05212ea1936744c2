"""A sweep's summary over seeds: for each combination of the other axes, mean ± std of every
final eval metric over the finished points, and how many seeds are behind it.

Written by `attnlab sweep` as `<workdir>/summary.csv` (columns: the axes, `seeds`, then
`<metric>_mean` and `<metric>_std` per metric) and `<workdir>/summary.md`.
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import pandas as pd

SEED_AXIS = "seed"
COUNT_METRICS = ("eval/examples",)  # a count, not a figure to average


def summary_metrics(results: pd.DataFrame) -> list[str]:
  """The final eval metrics of a results table (eval/* but the example count)."""
  return [c for c in results.columns if c.startswith("eval/") and c not in COUNT_METRICS]


def summarize(results: pd.DataFrame, axis_keys: Sequence[str]) -> pd.DataFrame:
  """One row per combination of the non-seed axes (in grid order): the axes, `seeds` (the
  number of finished points), `<metric>_mean` and `<metric>_std` (sample std; NaN for one seed)."""
  keys = [k for k in axis_keys if k != SEED_AXIS]
  metrics = summary_metrics(results)
  groups = results.groupby(keys, sort=False, dropna=False) if keys else [((), results)]
  rows = []
  for values, part in groups:
    values = values if isinstance(values, tuple) else (values,)
    done = part[part.status == "done"]
    row = {**dict(zip(keys, values)), "seeds": len(done)}
    for m in metrics:
      col = pd.to_numeric(done[m], errors="coerce").dropna()
      row[f"{m}_mean"] = col.mean() if len(col) else math.nan
      row[f"{m}_std"] = col.std(ddof=1) if len(col) > 1 else math.nan
    rows.append(row)
  return pd.DataFrame(rows, columns=[*keys, "seeds", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])


def _cell(mean: float, std: float) -> str:
  if math.isnan(mean):
    return "-"
  return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def summary_markdown(summary: pd.DataFrame) -> str:
  """The summary as a markdown table: one "mean ± std" column per metric."""
  metrics = [c[:-len("_mean")] for c in summary.columns if c.endswith("_mean")]
  keys = list(summary.columns[:list(summary.columns).index("seeds")])
  head = [*keys, "seeds", *metrics]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in summary.to_dict("records"):
    cells = [str(r[k]) for k in keys] + [str(r["seeds"])] + [_cell(r[f"{m}_mean"], r[f"{m}_std"]) for m in metrics]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def write_summary(results: pd.DataFrame, axis_keys: Sequence[str], root: str) -> tuple[pd.DataFrame, str]:
  """Writes root/summary.csv and root/summary.md; returns (the summary, its markdown)."""
  summary = summarize(results, axis_keys)
  text = summary_markdown(summary)
  summary.to_csv(os.path.join(root, "summary.csv"), index=False)
  with open(os.path.join(root, "summary.md"), "w") as f:
    f.write(text)
  return summary, text
