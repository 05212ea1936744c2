"""The reproduction table: our numbers (mean ± std over seeds) beside the published ones,
each claim checked per cell, written as markdown, CSV and a bar plot.

Claim kinds (fields of a claim in the experiment file):
  relative_error  |ours - published| / |published| <= tolerance   (e.g. MSE within 5%)
  at_least        ours >= published - tolerance                  (e.g. accuracy, absolute points)
  improves        inside each cell, the runs matching `by` beat those matching `over` on the
                  metric by more than `tolerance` (relative), lower is better unless
                  `higher_is_better` is set (e.g. inverted beats vanilla on MSE)
A claim on a cell without a published number (or without finished runs) is "n/a".

`best_of` (optional): {"axis": "lr", "metric": "eval/accuracy", "higher_is_better": True}: in
every cell, and on each side of an `improves` claim, only the runs at the value of `axis`
whose mean `metric` is best count (Zoology's "best of 4 learning rates per cell"); the table
names the value chosen.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from attnlab.reproduce.experiment import Run, cell_matches


def runs_frame(runs: Sequence[Run], results: dict[str, dict]) -> pd.DataFrame:
  """One row per planned run: its point, seed, status (done | failed | invalid | pending),
  the metrics of its result, wall_s."""
  rows = []
  for run in runs:
    res = results.get(run.name, {"status": "pending"})
    rows.append({**{k: str(v) for k, v in run.point.items()}, "seed": run.seed, "run": run.name, **res})
  return pd.DataFrame(rows)


def run_stats(frame: pd.DataFrame, metric: str) -> tuple[float, float, int]:
  """(mean, sample std over runs (ddof 1; NaN for one run), n) of the finished runs' metric;
  NaNs when none."""
  if frame.empty or metric not in frame or "status" not in frame:
    return math.nan, math.nan, 0
  values = frame.loc[frame.status == "done", metric].dropna().astype(float).to_numpy()
  if values.size == 0:
    return math.nan, math.nan, 0
  std = float(values.std(ddof=1)) if values.size > 1 else math.nan
  return float(values.mean()), std, int(values.size)


def _subset(frame: pd.DataFrame, point: dict) -> pd.DataFrame:
  if frame.empty:
    return frame
  keep = [cell_matches(point, row) for row in frame.to_dict("records")]
  return frame[np.asarray(keep, bool)]


def best_of(exp, in_cell: pd.DataFrame) -> tuple[pd.DataFrame, str]:
  """(the runs of `in_cell` at the best value of exp.best_of's axis, "axis=value"); the cell
  unchanged and "" when the experiment declares no best_of or nothing finished."""
  spec = exp.get("best_of", None)
  if not spec or in_cell.empty or "status" not in in_cell or spec["axis"] not in in_cell:
    return in_cell, ""
  done = in_cell[(in_cell.status == "done")]
  if spec["metric"] not in done or done[spec["metric"]].dropna().empty:
    return in_cell, ""
  means = done.dropna(subset=[spec["metric"]]).groupby(spec["axis"])[spec["metric"]].apply(
      lambda v: v.astype(float).mean())
  best = means.idxmax() if spec.get("higher_is_better", True) else means.idxmin()
  return in_cell[in_cell[spec["axis"]] == best], f"{spec['axis']}={best}"


def _varying_axes(exp, point: dict, in_cell: pd.DataFrame) -> list[str]:
  """Sweep axes the cell leaves free that take several values among its finished runs: its
  mean then pools different configurations, not seeds of one."""
  if in_cell.empty or "status" not in in_cell:
    return []
  done = in_cell[in_cell.status == "done"]
  chosen = (exp.get("best_of", None) or {}).get("axis")
  return [a for a in exp.sweep if a not in point and a != chosen and a in done and done[a].nunique() > 1]


def cell_label(point: dict) -> str:
  """{"horizon": 96} -> "horizon=96"."""
  return ", ".join(f"{k}={v}" for k, v in point.items()) or "all"


def check_claims(exp, frame: pd.DataFrame) -> pd.DataFrame:
  """The table: one row per (cell, metric) with ours (mean, std, n), published, the relative
  error, and for each claim on the metric its verdict ("pass", "fail" or "n/a")."""
  rows = []
  for cell in exp.cells:
    point = dict(cell['point'])
    published = dict(cell.get("published", {}))
    whole_cell = _subset(frame, point)
    in_cell, chosen = best_of(exp, whole_cell)
    for metric in exp.metrics:
      mean, std, n = run_stats(in_cell, metric)
      pub = published.get(metric)
      row: dict[str, Any] = {"cell": cell_label(point) + (f" (best {chosen})" if chosen else ""), "metric": metric, "ours": mean, "std": std, "n": n,
                             "published": pub if pub is not None else math.nan,
                             "mixes": ",".join(_varying_axes(exp, point, in_cell))}
      row["rel_err"] = (mean - pub) / abs(pub) if pub not in (None, 0) and n else math.nan
      verdicts = []
      for claim in exp.claims:
        if claim['metric'] != metric:
          continue
        verdicts.append(_verdict(exp, claim, mean, pub, n, whole_cell))
      row["claim"] = "; ".join(verdicts) if verdicts else ""
      rows.append(row)
  return pd.DataFrame(rows)


def _verdict(exp, claim, mean: float, pub, n: int, in_cell: pd.DataFrame) -> str:
  """"pass (...)", "fail (...)" or "n/a" for one claim on one cell (`in_cell`: all its runs)."""
  tol = float(claim.get("tolerance", 0.0))
  if claim['kind'] == "improves":
    over_mean, _, n_over = run_stats(best_of(exp, _subset(in_cell, dict(claim['over'])))[0], claim['metric'])
    by_mean, _, n_by = run_stats(best_of(exp, _subset(in_cell, dict(claim['by'])))[0], claim['metric'])
    if not (n_over and n_by):
      return "n/a"
    gain = (by_mean - over_mean) / abs(over_mean) if claim.get("higher_is_better", False) \
        else (over_mean - by_mean) / abs(over_mean)
    what = f"{cell_label(dict(claim['by']))} {by_mean:.4g} vs {cell_label(dict(claim['over']))} {over_mean:.4g}"
    return f"{'pass' if gain > tol else 'fail'} ({what}, {100 * gain:+.1f}%)"
  if pub is None or not n:
    return "n/a"
  if claim['kind'] == "relative_error":
    err = abs(mean - pub) / abs(pub)
    return f"{'pass' if err <= tol else 'fail'} (|err| {100 * err:.1f}% vs {100 * tol:.0f}%)"
  if claim['kind'] == "at_least":
    return f"{'pass' if mean >= pub - tol else 'fail'} ({mean:.4g} vs >= {pub - tol:.4g})"
  raise ValueError(f"unknown claim kind {claim['kind']!r}")


def fmt_number(x: float, digits: int = 4) -> str:
  """x with `digits` decimals; "-" for None or NaN."""
  return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(exp, table: pd.DataFrame, *, scale: str, note: str = "") -> str:
  """The table as markdown, with the experiment's source and the scale's note."""
  lines = [f"# {exp.name} ({scale} scale)", "", f"Published: {exp.source}."]
  if note:
    lines += ["", note]
  lines += ["", "| cell | metric | ours (mean ± std) | seeds | published | rel. err. | claim |",
            "|---|---|---|---|---|---|---|"]
  for r in table.to_dict("records"):
    ours = f"{fmt_number(r['ours'])} ± {fmt_number(r['std'])}" if r["n"] else "-"
    if r.get("mixes"):  # a pooled mean over configurations is no figure to read: the claim column has them
      ours = f"- (pools {r['mixes']})"
    rel = "-" if math.isnan(r["rel_err"]) else f"{100 * r['rel_err']:+.1f}%"
    lines.append(f"| {r['cell']} | {r['metric']} | {ours} | {r['n']} | {fmt_number(r['published'])} | {rel} | "
                 f"{r['claim'] or '-'} |")
  return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path: str, title: str) -> str | None:
  """Bars of ours (with std) beside published, one panel per metric; None if nothing finished."""
  done = table[table.n > 0]
  if done.empty:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  metrics = list(dict.fromkeys(done.metric))
  fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6), squeeze=False)
  for ax, metric in zip(axes[0], metrics):
    part = done[done.metric == metric]
    x = np.arange(len(part))
    ax.bar(x - 0.2, part.ours, 0.4, yerr=part["std"].fillna(0.0), label="attnlab", capsize=3)
    ax.bar(x + 0.2, part.published.fillna(0.0), 0.4, label="published")
    ax.set_xticks(x, part.cell, rotation=30, ha="right", fontsize=8)
    ax.set_title(metric)
  axes[0][0].legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_report(exp, runs: Sequence[Run], results: dict[str, dict], workdir: str, *, scale: str,
                 note: str = "") -> pd.DataFrame:
  """Writes workdir/{runs.csv, table.csv, table.md, table.png} and copies the first finished
  run's report figure of each cell (e.g. forecast.png) to workdir/<cell>.png. Returns the table."""
  os.makedirs(workdir, exist_ok=True)
  frame = runs_frame(runs, results)
  frame.to_csv(os.path.join(workdir, "runs.csv"), index=False)
  table = check_claims(exp, frame)
  table.to_csv(os.path.join(workdir, "table.csv"), index=False)
  with open(os.path.join(workdir, "table.md"), "w") as f:
    f.write(markdown(exp, table, scale=scale, note=note))
  plot(table, os.path.join(workdir, "table.png"), f"{exp.name}: attnlab vs published")
  _copy_figures(exp, runs, results, workdir)
  return table


def _copy_figures(exp, runs, results, workdir) -> None:
  import shutil
  for cell in exp.cells:
    for run in runs:
      src = os.path.join(workdir, run.name, "forecast.png")
      if cell_matches(dict(cell['point']), run.point) and results.get(run.name, {}).get("status") == "done" \
          and os.path.isfile(src):
        name = cell_label(dict(cell['point'])).replace(", ", "__").replace("/", "_")
        shutil.copyfile(src, os.path.join(workdir, f"forecast_{name}.png"))
        break


__all__ = ["best_of", "cell_label", "check_claims", "markdown", "plot", "fmt_number", "run_stats", "runs_frame", "write_report"]
