"""Plots learning curves from one or more workdirs' metrics.jsonl.

  python scripts/plot_curves.py runs/mqar runs/swa --metric eval/accuracy --out curves.png
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def read_metrics(workdir: str) -> pd.DataFrame:
  """metrics.jsonl -> DataFrame with one row per logged record (columns: step, metric names)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no metrics.jsonl in {workdir}")
  with open(path) as f:
    return pd.DataFrame([json.loads(line) for line in f if line.strip()])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("workdirs", nargs="+")
  p.add_argument("--metric", action="append", help="metric name(s), default eval/accuracy and train/loss")
  p.add_argument("--out", default="curves.png")
  args = p.parse_args()
  metrics = args.metric or ["eval/accuracy", "train/loss"]
  fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
  for workdir in args.workdirs:
    df = read_metrics(workdir)
    for ax, m in zip(axes[0], metrics):
      if m in df:
        d = df[["step", m]].dropna()
        ax.plot(d["step"], d[m], marker=".", label=os.path.basename(os.path.normpath(workdir)))
  for ax, m in zip(axes[0], metrics):
    ax.set_xlabel("step")
    ax.set_title(m)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  fig.savefig(args.out, dpi=120)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
