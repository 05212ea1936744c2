"""The figures of `attnlab reproduce icl_linear_regression`: error against the number of
in-context examples (one line per model, mean over seeds, with the least-squares and
zero-predictor baselines) and the learning curves.

  python experiments/icl/plot.py experiments/icl/small

Reads WORKDIR/<run>/result.json, config.json and metrics.jsonl; writes WORKDIR/error_vs_n.png,
error_vs_n.csv and curves.png.
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from attnlab.analysis.curves import curves_frame, plot_curves  # noqa: E402
from attnlab.data import icl_regression as icl  # noqa: E402
from attnlab.tasks import build_task  # noqa: E402
from attnlab.tasks.icl_regression import curve  # noqa: E402


def model_label(config: ml_collections.ConfigDict) -> str:
  """"mha, 4 heads" style label of a run's config."""
  m = config.model
  return f"{m.variant}, {m.num_heads} head{'s' if m.num_heads > 1 else ''}"


def least_squares_curve(config: ml_collections.ConfigDict) -> pd.Series:
  """Normalised squared error of minimum-norm least squares on the run's eval prompts, by n."""
  task = build_task(config)
  out = {}
  for batch in task.eval_batches():
    n = int(batch["num_examples"][0])
    pred = icl.ridge_prediction(batch["inputs"]["tokens"], batch["inputs"]["valid"])
    out.setdefault(n, []).extend(((pred - batch["targets"]) ** 2 / task.dim).tolist())
  return pd.Series({n: float(np.mean(v)) for n, v in sorted(out.items())})


def main(workdir: str) -> None:
  rows, runs, config = [], {}, None
  for name in sorted(os.listdir(workdir)):
    run = os.path.join(workdir, name)
    if not os.path.isfile(os.path.join(run, "result.json")):
      continue
    with open(os.path.join(run, "result.json")) as f:
      result = json.load(f)
    with open(os.path.join(run, "config.json")) as f:
      config = ml_collections.ConfigDict(json.load(f))
    label = model_label(config)
    runs[f"{label} (seed {config.seed})"] = run
    for n, err in zip(*curve(result)):
      rows.append({"model": label, "seed": config.seed, "n": n, "nmse": err})
  if config is None:
    raise SystemExit(f"no finished runs under {workdir}")
  frame = pd.DataFrame(rows)
  table = frame.groupby(["model", "n"]).nmse.agg(["mean", "std", "count"]).reset_index()
  ls = least_squares_curve(config)
  table = pd.concat([table, pd.DataFrame({"model": "least squares", "n": ls.index, "mean": ls.values,
                                          "std": 0.0, "count": 1})])
  table.to_csv(os.path.join(workdir, "error_vs_n.csv"), index=False)
  n_train = int(config.task.train_examples)
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for model, part in table.groupby("model", sort=False):
    style = dict(color="k", ls="--") if model == "least squares" else {}
    ax.plot(part.n, part["mean"], label=model, **style)
    if model != "least squares":
      ax.fill_between(part.n, part["mean"] - part["std"].fillna(0), part["mean"] + part["std"].fillna(0),
                      alpha=0.2)
  ax.axhline(1.0, color="0.5", ls=":", label="predict 0")
  ax.axvline(n_train, color="0.7", lw=0.8)
  ax.text(n_train, 1.02, " training length N", fontsize=8, color="0.4")
  ax.set_xlabel("in-context examples n")
  ax.set_ylabel("squared error / d")
  ax.set_ylim(0, 1.25)
  ax.set_title(f"in-context linear regression, d = {config.task.dim}, trained at N = {n_train}")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, "error_vs_n.png"), dpi=120)
  plt.close(fig)
  plot_curves(curves_frame(runs, prefix="eval/"), ["eval/nmse_train_len", "eval/nmse_max_len"],
              os.path.join(workdir, "curves.png"), title="eval error at n = N and n = 2N")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "experiments/icl/small")
