"""The rows of experiments/listops/table.md, and curves.png, from the logs run_all.sh leaves.

  python experiments/listops/make_table.py

Reads logs/<variant>.test.json (the test-split eval), logs/<variant>.metrics.jsonl (the
training run) and logs/walltimes.jsonl; prints the rows beside the published LRA ListOps
accuracies and writes them to table_rows.md (table.md adds the setting and the discussion).
Also prints the majority-class baseline of the test split.
"""

from __future__ import annotations

import collections
import json
import os
import statistics

import pandas as pd

from attnlab.analysis.curves import CURVE_COLUMNS, plot_curves
from attnlab.data import listops as lo

HERE = os.path.dirname(os.path.abspath(__file__))
LOGS = os.path.join(HERE, "logs")
VARIANTS = ("mha", "linformer", "nystromformer", "performer", "bigbird", "longformer", "linear", "lsh")
# Longer probes (750 steps, warmup 75; otherwise the same config) of the variants still on the
# loss plateau at 250 steps: logs/<name>.* written by hand (see table.md).
PROBES = {"lsh_long": "lsh", "linear_long": "linear"}
# LRA (Tay et al., 2021, Table 1) ListOps test accuracy; Nystromformer from Xiong et al. (2021), Table 3.
PUBLISHED = {"mha": ("Transformer", 36.37), "longformer": ("Longformer", 35.63),
             "linformer": ("Linformer", 35.70), "lsh": ("Reformer", 37.27),
             "bigbird": ("BigBird", 36.05), "linear": ("Linear Transformer", 16.13),
             "performer": ("Performer", 18.01), "nystromformer": ("Nystromformer (its paper)", 37.15)}


def _records(variant: str) -> list[dict]:
  path = os.path.join(LOGS, f"{variant}.metrics.jsonl")
  if not os.path.isfile(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _json_line(path: str) -> dict | None:
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    text = f.read().strip()
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return None


def majority_baseline(config_task: dict) -> tuple[float, int]:
  """Test accuracy (%) of always predicting the train split's most frequent class, and that class."""
  kw = {k: config_task[k] for k in ("seq_len", "max_depth", "max_args", "min_length", "max_length")}
  seed = config_task["data_seed"]
  train = collections.Counter(int(lo.listops(seed, i, split="train", **kw)["targets"]) for i in range(2000))
  cls = train.most_common(1)[0][0]
  test = [int(lo.listops(seed, i, split="test", **kw)["targets"])
          for i in range(config_task["num_test_examples"])]
  return 100.0 * sum(t == cls for t in test) / len(test), cls


def main() -> None:
  walls = {}
  wall_path = os.path.join(LOGS, "walltimes.jsonl")
  if os.path.isfile(wall_path):
    for line in open(wall_path, encoding="utf-8"):
      if line.strip():
        r = json.loads(line)
        walls[r["variant"]] = r
  rows, curve_rows, config_task = [], [], None
  for v in VARIANTS + tuple(PROBES):
    recs = _records(v)
    test = _json_line(os.path.join(LOGS, f"{v}.test.json"))
    if not recs or not test:
      if v in VARIANTS:
        rows.append((v, None, None, None, None, None))
      continue
    sps = [r["train/steps_per_sec"] for r in recs if "train/steps_per_sec" in r][1:]  # first: compile
    evals = [r for r in recs if "eval/accuracy" in r]
    for r in recs:
      for k in ("eval/accuracy", "train/loss", "eval/loss"):
        if k in r:
          curve_rows.append((v, r["step"], k, r[k]))
    rows.append((v, 100.0 * test["eval/accuracy"], int(test["eval/examples"]),
                 100.0 * evals[-1]["eval/accuracy"], statistics.median(sps) if sps else None,
                 walls.get(v, {}).get("train_wall_s")))
    if config_task is None:
      cfg_path = os.path.join(HERE, "..", "..", "runs", "listops", v, "config.json")
      if os.path.isfile(cfg_path):
        config_task = json.load(open(cfg_path, encoding="utf-8"))["task"]
  lines = ["| variant | test acc. (%) | test examples | val acc. (%) | steps/s (median) | train wall (s) "
           "| published (LRA) | published acc. (%) |", "|---|---:|---:|---:|---:|---:|---|---:|"]
  for v, acc, n, val, sps, wall in rows:
    name, pub = PUBLISHED[PROBES.get(v, v)]
    if v in PROBES:
      v = f"{PROBES[v]}, 750 steps"
    fmt = lambda x, f: "—" if x is None else format(x, f)  # noqa: E731
    lines.append(f"| {v} | {fmt(acc, '.2f')} | {fmt(n, 'd')} | {fmt(val, '.2f')} | {fmt(sps, '.2f')} "
                 f"| {fmt(wall, 'd')} | {name} | {pub:.2f} |")
  table = "\n".join(lines)
  print(table)
  if config_task:
    base, cls = majority_baseline(config_task)
    print(f"\nmajority class (train's most frequent, {cls}) on test: {base:.2f}%")
  if curve_rows:
    frame = pd.DataFrame(curve_rows, columns=CURVE_COLUMNS)
    print("wrote", plot_curves(frame, ["eval/accuracy", "train/loss"], os.path.join(HERE, "curves.png"),
                               title="ListOps, CPU budget (configs/listops.py)"))
  with open(os.path.join(HERE, "table_rows.md"), "w", encoding="utf-8") as f:
    f.write(table + "\n")


if __name__ == "__main__":
  main()
