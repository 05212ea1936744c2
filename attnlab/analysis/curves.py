"""Learning curves of one or more runs: their metrics.jsonl records as a long table, and a plot.

Used by `attnlab sweep` (curves.csv and curves.png beside results.csv) and by
`scripts/plot_curves.py`. A plateau-then-jump task such as MQAR needs the curve, not only
the final number: a run near chance at its last step may be on the plateau or unable to
learn the task, and the curve shows how far it got.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

from attnlab.train.metrics import read_metrics

CURVE_COLUMNS = ["label", "step", "metric", "value"]


def curves_frame(runs: Mapping[str, str], prefix: str = "") -> pd.DataFrame:
  """{label: workdir} -> one row per logged scalar: label, step, metric, value.

  Only metrics whose name starts with `prefix` are kept ("eval/" keeps the evaluations);
  a workdir without metrics.jsonl contributes no rows."""
  rows = []
  for label, workdir in runs.items():
    for record in read_metrics(workdir):
      step = record.get("step")
      for metric, value in record.items():
        if metric != "step" and metric.startswith(prefix) and isinstance(value, (int, float)):
          rows.append((label, step, metric, float(value)))
  return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def plot_curves(frame: pd.DataFrame, metrics: Sequence[str], out: str, title: str | None = None) -> str:
  """Plots `frame` (curves_frame's columns): one panel per metric, one line per label.

  Writes the figure to `out` (png) and returns the path."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  labels = list(dict.fromkeys(frame["label"]))
  fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
  cmap = plt.get_cmap("tab20")
  for ax, metric in zip(axes[0], metrics):
    for i, label in enumerate(labels):
      d = frame[(frame.label == label) & (frame.metric == metric)].sort_values("step")
      if len(d):
        ax.plot(d.step, d.value, marker=".", color=cmap(i % 20), label=label)
    ax.set_xlabel("step")
    ax.set_title(metric)
    ax.grid(alpha=0.3)
  handles, names = axes[0][0].get_legend_handles_labels()
  if handles:
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize="small",
               ncol=max(1, math.ceil(len(names) / 25)))
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(out, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return out
