"""Accuracy against recurrent state size (the headline plot of Zoology and Based) for an
`attnlab reproduce zoology_mqar` (or any MQAR sweep) workdir:

  python scripts/recall_vs_state.py experiments/zoology_mqar/small [--metric eval/accuracy]

Reads WORKDIR/runs.csv and each finished run's config.json; a run's state size is its
model's decode state at the run's sequence length (`attnlab.models.state_size`: a KV cache
counts every token). Per (variant, seq_len, d_model) the best learning rate's mean over seeds
is plotted, one panel per sequence length, one line per variant (its widths). Writes
WORKDIR/recall_vs_state.png and WORKDIR/recall_vs_state.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import ml_collections
import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from attnlab.models.state_size import model_state_floats  # noqa: E402


def points(workdir: str, metric: str) -> pd.DataFrame:
  """One row per finished run: variant, seq_len, d_model, lr, seed, state (floats), metric."""
  rows = []
  for run in pd.read_csv(os.path.join(workdir, "runs.csv")).to_dict("records"):
    path = os.path.join(workdir, run["run"], "config.json")
    if run.get("status") != "done" or not os.path.isfile(path):
      continue
    with open(path) as f:
      config = ml_collections.ConfigDict(json.load(f))
    t = int(config.task.seq_len)
    rows.append({"variant": config.model.variant, "seq_len": t, "d_model": int(config.model.d_model),
                 "lr": float(config.train.learning_rate), "seed": int(config.seed),
                 "state": model_state_floats(config.model, t), metric: float(run[metric])})
  return pd.DataFrame(rows)


def best_lr(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
  """Mean over seeds per (variant, seq_len, d_model, lr), then the best lr of each cell."""
  keys = ["variant", "seq_len", "d_model"]
  means = frame.groupby(keys + ["lr"], as_index=False).agg(state=("state", "first"), value=(metric, "mean"))
  return means.loc[means.groupby(keys)["value"].idxmax()].sort_values(keys)


def plot(table: pd.DataFrame, path: str, metric: str) -> None:
  """One panel per seq_len: metric against state floats (log scale), a line per variant."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  lengths = sorted(table.seq_len.unique())
  fig, axes = plt.subplots(1, len(lengths), figsize=(4.6 * len(lengths), 3.8), squeeze=False, sharey=True)
  for ax, t in zip(axes[0], lengths):
    for variant, part in table[table.seq_len == t].groupby("variant"):
      part = part.sort_values("state")
      ax.plot(part.state, part.value, marker="o", label=variant)
      for _, r in part.iterrows():
        ax.annotate(str(r.d_model), (r.state, r.value), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_title(f"seq_len {t}")
    ax.set_xlabel("decode state (floats per sequence)")
    ax.grid(alpha=0.3)
  axes[0][0].set_ylabel(metric)
  axes[0][-1].legend(fontsize=7)
  fig.suptitle("MQAR accuracy against state size (labels: d_model)")
  fig.tight_layout()
  fig.savefig(path, dpi=130)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir")
  parser.add_argument("--metric", default="eval/accuracy")
  args = parser.parse_args(argv)
  if not os.path.isfile(os.path.join(args.workdir, "runs.csv")):
    print(f"recall_vs_state: no runs.csv in {args.workdir} (run attnlab reproduce first)", file=sys.stderr)
    return 2
  frame = points(args.workdir, args.metric)
  if frame.empty:
    print(f"recall_vs_state: no finished run in {args.workdir}", file=sys.stderr)
    return 2
  table = best_lr(frame, args.metric)
  table.to_csv(os.path.join(args.workdir, "recall_vs_state.csv"), index=False)
  plot(table, os.path.join(args.workdir, "recall_vs_state.png"), args.metric)
  print(table.to_string(index=False))
  return 0


if __name__ == "__main__":
  sys.exit(main())
