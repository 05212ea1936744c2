"""The report's figures (matplotlib, Agg): each metric against each swept axis, one line per
variant; the main metric against measured FLOPs and memory with the Pareto front marked."""

from __future__ import annotations

import numpy as np
import pandas as pd

from attnlab.analysis.pareto import pareto_mask
from attnlab.analysis.report.runs import RunTable, higher_is_better


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _safe(name: str) -> str:
  return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))


def _positions(values: pd.Series):
  """(x positions, tick labels or None): numbers as they are, anything else in order of appearance."""
  numeric = pd.to_numeric(values, errors="coerce")
  if numeric.notna().all():
    return numeric.to_numpy(float), None
  labels = list(dict.fromkeys(values.astype(str)))
  return np.array([labels.index(str(v)) for v in values], float), labels


def swept_axes(runs: RunTable, table: pd.DataFrame) -> list:
  """The axes a figure is drawn against: every axis but the variant axis with several values."""
  return [a for a in runs.axes if a != runs.variant and table[a].nunique() > 1]


def plot_axis(runs: RunTable, table: pd.DataFrame, axis: str, path: str) -> str:
  """One panel per metric: mean (± std over seeds) against `axis`, one line per variant and
  combination of the other axes."""
  plt = _pyplot()
  others = [a for a in runs.axes if a != axis]
  fig, axes = plt.subplots(1, len(runs.metrics), figsize=(4.6 * len(runs.metrics), 3.6), squeeze=False)
  _, labels = _positions(table[axis])
  for ax, metric in zip(axes[0], runs.metrics):
    lines = table.groupby(others, sort=False, dropna=False) if others else [((), table)]
    for key, part in lines:
      key = key if isinstance(key, tuple) else (key,)
      x, _ = _positions(part[axis]) if labels is None else (
          np.array([labels.index(str(v)) for v in part[axis]], float), None)
      order = np.argsort(x, kind="stable")
      ax.errorbar(x[order], part[f"{metric}_mean"].to_numpy()[order],
                  yerr=part[f"{metric}_std"].fillna(0.0).to_numpy()[order], marker="o", capsize=3,
                  label=", ".join(map(str, key)) or None)
    if labels is not None:
      ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(axis)
    ax.set_title(metric)
  if others:
    axes[0][-1].legend(fontsize=7, title=", ".join(others), title_fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


COSTS = (("flops", "FLOPs (fwd+bwd, one attention layer)"), ("temp_bytes", "temp memory (bytes)"))


def cost_fronts(table: pd.DataFrame, costs: pd.DataFrame, metric: str) -> dict:
  """{cost column: bool mask of the table's rows on the Pareto front of (cost, metric)}."""
  better_high = higher_is_better(metric)
  return {c: pareto_mask(np.stack([costs[c].to_numpy(float), table[f"{metric}_mean"].to_numpy(float)], 1),
                         (True, not better_high))
          for c, _ in COSTS}


def plot_cost(runs: RunTable, table: pd.DataFrame, costs: pd.DataFrame, metric: str, path: str) -> str | None:
  """`metric` against FLOPs and against memory (log x), a marker per point labelled by its
  axes; the Pareto front ringed and joined. None when no point has a cost."""
  if not np.isfinite(costs.flops.to_numpy(float)).any():
    return None
  plt = _pyplot()
  fronts = cost_fronts(table, costs, metric)
  fig, axes = plt.subplots(1, len(COSTS), figsize=(5.2 * len(COSTS), 3.9), squeeze=False)
  labels = [", ".join(str(r[a]) for a in runs.axes) or "all" for r in table.to_dict("records")]
  y = table[f"{metric}_mean"].to_numpy(float)
  for ax, (col, title) in zip(axes[0], COSTS):
    x = costs[col].to_numpy(float)
    for xi, yi, label in zip(x, y, labels):
      if np.isfinite(xi) and np.isfinite(yi):
        ax.scatter([xi], [yi], s=24)
        ax.annotate(label, (xi, yi), fontsize=6, xytext=(3, 3), textcoords="offset points")
    on = fronts[col]
    order = np.argsort(x[on])
    ax.plot(x[on][order], y[on][order], "k--", lw=0.8, label="Pareto front")
    ax.scatter(x[on], y[on], s=90, facecolors="none", edgecolors="k")
    ax.set_xscale("log")
    ax.set_xlabel(title)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def axis_figure_name(axis: str) -> str:
  """The file name of the figure against `axis`."""
  return f"report_{_safe(axis)}.png"


__all__ = ["COSTS", "axis_figure_name", "cost_fronts", "plot_axis", "plot_cost", "swept_axes"]
