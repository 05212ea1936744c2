"""Runs a sweep on this machine: each grid point an `attnlab train` subprocess, `jobs` at a time.

Finished points (a `result.json` in their directory) are skipped on a rerun; unfinished
ones resume from their last checkpoint, as `attnlab train` does.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
from typing import Any, Sequence

import pandas as pd

from attnlab.errors import INPUT_ERRORS
from attnlab.sweep.grid import grid, point_config, point_name, point_overrides

RESULT_FILE = "result.json"


def check_point(config_spec: str, overrides: Sequence[str]) -> str | None:
  """Loads and validates one point's config; None when it can run, else the one-line reason.

  A config key that does not exist raises (it is a typo in the sweep, not a result)."""
  from attnlab.config_loading import load_config
  from attnlab.train.trainer import setup
  config = load_config(config_spec, overrides)  # unknown keys raise here
  try:
    setup(config)  # every check before compiling (the point then trains in its own process)
  except INPUT_ERRORS as e:
    return str(e).splitlines()[0]
  return None


def run_point(config_spec: str, overrides: Sequence[str], workdir: str) -> dict[str, Any]:
  """Trains one point in a subprocess (`python -m attnlab train`), log in workdir/train.log.

  Returns {"status": "done", **final metrics, "wall_s"} or {"status": "failed", "error"}; the
  result is also written to workdir/result.json, which marks the point finished."""
  os.makedirs(workdir, exist_ok=True)
  cmd = [sys.executable, "-m", "attnlab", "train", "--config", config_spec, "--workdir", workdir, *overrides]
  start = time.perf_counter()
  with open(os.path.join(workdir, "train.log"), "a") as log:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    log.write(proc.stdout)
  wall = time.perf_counter() - start
  lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
  if proc.returncode != 0 or not lines:
    tail = _last_line(os.path.join(workdir, "train.log"))
    return {"status": "failed", "error": f"exit {proc.returncode}: {tail}", "wall_s": wall}
  result = {"status": "done", **json.loads(lines[-1]), "wall_s": wall}
  with open(os.path.join(workdir, RESULT_FILE), "w") as f:
    json.dump(result, f)
  return result


def _last_line(path: str) -> str:
  with open(path) as f:
    lines = [ln.strip() for ln in f if ln.strip()]
  return lines[-1] if lines else ""


def run_sweep(config_spec: str, axes: Sequence[tuple[str, list[str]]], root: str,
              shared: Sequence[str] = (), jobs: int = 1, console=None) -> pd.DataFrame:
  """Validates every point, then trains the runnable unfinished ones, `jobs` at a time.

  Returns one row per point: the axis values, status (done | failed | invalid), the final
  metrics, wall_s and error; also written to root/results.csv after every finished point."""
  from rich.console import Console
  console = console or Console(stderr=True)
  points = grid(axes)
  rows: dict[str, dict[str, Any]] = {}
  todo = []
  for point in points:
    name = point_name(point)
    overrides = point_overrides(point, shared)
    done_file = os.path.join(root, name, RESULT_FILE)
    if os.path.exists(done_file):
      with open(done_file) as f:
        rows[name] = {**point, **json.load(f)}
      console.log(f"{name}: finished earlier")
      continue
    spec = point_config(config_spec, point)
    reason = check_point(spec, overrides)
    if reason is not None:
      rows[name] = {**point, "status": "invalid", "error": reason}
      console.log(f"{name}: cannot run: {reason}")
      continue
    todo.append((name, point, spec, overrides))
  console.log(f"{len(points)} points: {len(todo)} to train, {len(rows)} finished or invalid; "
              f"{jobs} at a time")
  os.makedirs(root, exist_ok=True)
  _write(rows, points, root)
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
    futures = {pool.submit(run_point, spec, ov, os.path.join(root, name)): (name, point)
               for name, point, spec, ov in todo}
    for i, fut in enumerate(concurrent.futures.as_completed(futures), 1):
      name, point = futures[fut]
      rows[name] = {**point, **fut.result()}
      metrics = {k: v for k, v in rows[name].items() if k.startswith("eval/")}
      console.log(f"[{i}/{len(todo)}] {name}: {rows[name]['status']} "
                  f"{json.dumps(metrics) if metrics else rows[name].get('error', '')} "
                  f"({rows[name]['wall_s']:.0f} s)")
      _write(rows, points, root)
  _write_curves(points, root, console)
  return _write(rows, points, root)


def _write_curves(points, root, console) -> None:
  """root/curves.csv: every point's eval metrics at every eval step (long format, the axis
  values as columns); root/curves.png: their plot, one line per point."""
  from attnlab.analysis.curves import curves_frame, plot_curves
  runs = {" ".join(p.values()): os.path.join(root, point_name(p)) for p in points}
  frame = curves_frame(runs, prefix="eval/")
  if frame.empty:
    return
  axes = pd.DataFrame(points, index=list(runs)).loc[frame.label]
  long = pd.concat([axes.reset_index(drop=True), frame.drop(columns="label")], axis=1)
  long.to_csv(os.path.join(root, "curves.csv"), index=False)
  metrics = sorted(set(frame.metric), key=lambda m: (m != "eval/accuracy", m))
  out = plot_curves(frame, metrics, os.path.join(root, "curves.png"), title=os.path.basename(os.path.normpath(root)))
  console.log(f"learning curves: {os.path.join(root, 'curves.csv')}, {out}")


def _write(rows, points, root) -> pd.DataFrame:
  ordered = [rows[point_name(p)] for p in points if point_name(p) in rows]
  df = pd.DataFrame(ordered)
  df.to_csv(os.path.join(root, "results.csv"), index=False)
  return df
