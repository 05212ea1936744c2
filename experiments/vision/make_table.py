"""Tables and learning curves of the issue-12 vision runs (reads the `attnlab reproduce` workdirs).

  python experiments/vision/make_table.py [--root runs/reproduce]

Writes experiments/vision/{table.md (the three below), digits.md, digits.csv, digits_ablation.md, pathfinder.md,
pathfinder.csv, digits_curves.png, pathfinder_curves.png, pathfinder_curves.csv}. Per run:
the final eval accuracy (result.json), steps/s (mean of the logged train/steps_per_sec after
the first window, which includes compilation; the only window when there is one), parameters (train.log's "initialised N
params"), wall seconds; per variant: mean ± std (ddof 1) over the finished seeds and the
declared cost class (compute, memory in T at the defaults; crossvit: its mha branches).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

import pandas as pd

from attnlab.analysis.curves import curves_frame, plot_curves
from attnlab.attention import VARIANTS
from attnlab.reproduce.experiment import load_experiment
from attnlab.train.metrics import read_metrics

HERE = os.path.dirname(os.path.abspath(__file__))
LRA = {"mha": 71.40, "linear": 75.30, "performer": 77.05, "linformer": 76.34, "neighborhood": 66.63}


def run_rows(workdir: str) -> pd.DataFrame:
  """One row per finished run under workdir: its point (from the directory name), seed, accuracy %,
  steps/s, parameters, wall_s."""
  rows = []
  for result_path in sorted(glob.glob(os.path.join(workdir, "*", "result.json"))):
    run = os.path.dirname(result_path)
    point = dict(p.split("=", 1) for p in os.path.basename(run).split("__"))
    with open(result_path) as f:
      result = json.load(f)
    if result.get("status") != "done":
      continue
    speeds = [r["train/steps_per_sec"] for r in read_metrics(run) if "train/steps_per_sec" in r]
    speeds = speeds[1:] or speeds  # one window only (pathfinder's 100 steps): it includes compilation
    with open(os.path.join(run, "train.log")) as f:
      params = re.search(r"initialised ([\d,]+) params", f.read())
    rows.append({**point, "accuracy": 100 * result["eval/accuracy"], "examples": int(result["eval/examples"]),
                 "steps_per_s": sum(speeds) / len(speeds) if speeds else float("nan"),
                 "params": int(params.group(1).replace(",", "")) if params else -1, "wall_s": result["wall_s"]})
  return pd.DataFrame(rows)


def cost_class(variant: str) -> str:
  """The registered variant's declared (compute, memory) class."""
  if variant == "crossvit":
    return "mha branches (quadratic)"
  cost = VARIANTS.get(variant).cost
  return f"{cost.compute} / {cost.memory}"


def summary(frame: pd.DataFrame, key: str) -> pd.DataFrame:
  """Mean ± std per `key` value (in first-appearance order)."""
  g = frame.groupby(key, sort=False)
  out = pd.DataFrame({"seeds": g.seed.count(), "acc_mean": g.accuracy.mean(), "acc_std": g.accuracy.std(),
                      "steps_per_s": g.steps_per_s.mean(), "params": g.params.first(), "wall_s": g.wall_s.mean()})
  return out.reset_index()


def fmt(mean: float, std: float) -> str:
  return f"{mean:.2f}" if pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def write_digits(root: str) -> None:
  frame = run_rows(os.path.join(root, "vision_digits", "small"))
  if frame.empty:
    return
  order = list(load_experiment("vision_digits").sweep.variant)
  s = summary(frame, "variant")
  s = s.iloc[sorted(range(len(s)), key=lambda i: order.index(s.variant[i]))].reset_index(drop=True)
  s["cost"] = [cost_class(v) for v in s.variant]
  s.to_csv(os.path.join(HERE, "digits.csv"), index=False)
  lines = ["| variant | test accuracy % (mean ± std) | seeds | steps/s | parameters | cost class (compute / memory) |",
           "|---|---|---|---|---|---|"]
  lines += [f"| {r.variant} | {fmt(r.acc_mean, r.acc_std)} | {r.seeds} | {r.steps_per_s:.2f} | {r.params:,} | {r.cost} |"
            for r in s.itertuples()]
  with open(os.path.join(HERE, "digits.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  runs = {f"{v} s{sd}": os.path.join(root, "vision_digits", "small", f"variant={v}__seed={sd}")
          for v, sd in zip(frame.variant, frame.seed)}
  plot_curves(curves_frame(runs, "eval/"), ["eval/accuracy"], os.path.join(HERE, "digits_curves.png"),
              "digits: test accuracy vs step (300-step budget)")
  abl = run_rows(os.path.join(root, "vision_digits_ablation", "small"))
  base = frame[frame.variant == "mha"].assign(ablate="none (default recipe)")
  if not abl.empty:
    a = summary(pd.concat([base, abl]), "ablate")
    lines = ["| mha, digits | test accuracy % | seeds |", "|---|---|---|"]
    names = {"stem": "no conv stem (ablate=stem)", "smoothing": "no label smoothing (ablate=smoothing)"}
    lines += [f"| {names.get(r.ablate, r.ablate)} | {fmt(r.acc_mean, r.acc_std)} | {r.seeds} |"
              for r in a.itertuples()]
    with open(os.path.join(HERE, "digits_ablation.md"), "w") as f:
      f.write("\n".join(lines) + "\n")


def write_pathfinder(root: str) -> None:
  workdir = os.path.join(root, "lra_pathfinder", "small")
  frame = run_rows(workdir)
  if frame.empty:
    return
  frame["lra"] = [LRA.get(v, float("nan")) for v in frame.variant]
  frame.to_csv(os.path.join(HERE, "pathfinder.csv"), index=False)
  runs = {v: os.path.join(workdir, f"variant={v}__seed=0") for v in frame.variant}
  curves = curves_frame(runs, "eval/")
  curves.to_csv(os.path.join(HERE, "pathfinder_curves.csv"), index=False)
  plot_curves(curves, ["eval/accuracy"], os.path.join(HERE, "pathfinder_curves.png"),
              "Pathfinder 32x32: test accuracy vs step (100-step budget; chance = 0.5)")
  lines = ["| variant | ours: test accuracy % (500 images) | accuracy by step (25 / 50 / 75 / 100) | LRA published % | steps/s | parameters | wall s |",
           "|---|---|---|---|---|---|---|"]
  for r in frame.itertuples():
    c = curves[(curves.label == r.variant) & (curves.metric == "eval/accuracy")].sort_values("step")
    by_step = " / ".join(f"{100 * v:.1f}" for v in c.value)
    lines.append(f"| {r.variant} | {r.accuracy:.1f} | {by_step} | {r.lra:.2f} | {r.steps_per_s:.3f} | "
                 f"{r.params:,} | {r.wall_s:.0f} |")
  with open(os.path.join(HERE, "pathfinder.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--root", default="runs/reproduce")
  root = p.parse_args().root
  write_digits(root)
  write_pathfinder(root)
  parts = [("Digits, 300 steps (experiments/vision_digits.py, scale small)", "digits.md"),
           ("Digits recipe ablation, mha, 300 steps", "digits_ablation.md"),
           ("Pathfinder 32x32, 100 steps, 2 layers d32 (experiments/lra_pathfinder.py, scale small)", "pathfinder.md")]
  with open(os.path.join(HERE, "table.md"), "w") as out:
    for title, name in parts:
      if os.path.isfile(os.path.join(HERE, name)):
        with open(os.path.join(HERE, name)) as f:
          out.write(f"## {title}\n\n{f.read()}\n")


if __name__ == "__main__":
  main()
