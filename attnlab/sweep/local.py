"""Runs a sweep: validates every grid point, then trains the unfinished ones through an
executor (here: `jobs` subprocesses at a time; `attnlab.sweep.ray_executor`: Ray tasks), and
writes results.csv, summary.csv/.md and the learning curves.

Finished points (a `result.json` in their directory) are skipped on a rerun; failed and
unfinished ones are trained again, resuming from their last checkpoint as `attnlab train`
does, up to `retries + 1` attempts per invocation.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import signal
from typing import Any, Iterator, Sequence

import pandas as pd

from attnlab.sweep.grid import grid, point_config, point_name, point_overrides
from attnlab.sweep.point import RESULT_FILE, check_point, inspect_point, run_point, run_point_attempts
from attnlab.sweep.summary import write_summary

KILL_AFTER_POINTS_ENV = "ATTNLAB_TEST_KILL_SWEEP_AFTER_POINTS"  # test hook, see _maybe_kill

# Every row of results.csv has these (`attnlab report` reads them), after the axes.
RESULT_COLUMNS = ["status", "config_hash", "seed", "step", "eval_examples", "wall_s", "steps_per_s", "params",
                  "attempts", "error"]


@dataclasses.dataclass(frozen=True)
class PointTask:
  """One point to train: its name, config spec, overrides, directory, identity and attempts."""
  name: str
  spec: str
  overrides: tuple[str, ...]
  workdir: str
  info: dict
  attempts: int


def run_local(tasks: Sequence[PointTask], jobs: int = 1) -> Iterator[tuple[PointTask, dict[str, Any]]]:
  """The local executor: each task's `run_point_attempts` in a thread, `jobs` at a time;
  yields (task, result) as they finish."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
    futures = {pool.submit(run_point_attempts, t.spec, t.overrides, t.workdir, t.info, t.attempts): t
               for t in tasks}
    for fut in concurrent.futures.as_completed(futures):
      yield futures[fut], fut.result()


def _absolute_spec(config_spec: str) -> str:
  """configs/x.py:arg -> /abs/configs/x.py:arg (a Ray worker may start elsewhere)."""
  path, sep, arg = config_spec.partition(":")
  return os.path.abspath(path) + sep + arg


def run_sweep(config_spec: str, axes: Sequence[tuple[str, list[str]]], root: str,
              shared: Sequence[str] = (), jobs: int = 1, console=None, *, retries: int = 0,
              executor: str = "local", ray_options: dict | None = None) -> pd.DataFrame:
  """Validates every point, then trains the runnable unfinished ones on `executor` ("local":
  `jobs` at a time; "ray": `attnlab.sweep.ray_executor.run_ray(**ray_options)`), each up to
  `retries + 1` attempts.

  Returns one row per point: the axis values, RESULT_COLUMNS and the final eval metrics;
  written to root/results.csv after every finished point, with root/summary.csv and
  root/summary.md (mean ± std over seeds)."""
  from rich.console import Console
  console = console or Console(stderr=True)
  points = grid(axes)
  root = os.path.abspath(root)
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
    spec = _absolute_spec(point_config(config_spec, point))
    info = inspect_point(spec, overrides)
    if "error" in info:
      rows[name] = {**point, "status": "invalid", **info}
      console.log(f"{name}: cannot run: {info['error']}")
      continue
    todo.append(PointTask(name, spec, tuple(overrides), os.path.join(root, name), info, retries + 1))
  where = f"{jobs} at a time" if executor == "local" else f"on Ray {ray_options or {}}"
  console.log(f"{len(points)} points: {len(todo)} to train, {len(rows)} finished or invalid; {where}")
  os.makedirs(root, exist_ok=True)
  _write(rows, points, root)
  if executor == "ray":
    from attnlab.sweep.ray_executor import run_ray
    finished = run_ray(todo, **(ray_options or {}))
  elif executor == "local":
    finished = run_local(todo, jobs)
  else:
    raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
  for i, (task, result) in enumerate(finished, 1):
    point = points[[point_name(p) for p in points].index(task.name)]
    rows[task.name] = {**point, **result}
    metrics = {k: v for k, v in result.items() if k.startswith("eval/")}
    console.log(f"[{i}/{len(todo)}] {task.name}: {result['status']} "
                f"{json.dumps(metrics) if metrics else result.get('error', '')} "
                f"({result.get('wall_s', 0.0):.0f} s, attempt {result.get('attempts', 1)})")
    _write(rows, points, root)
    _maybe_kill(i)
  _write_curves(points, root, console)
  df = _write(rows, points, root)
  write_summary(df, [k for k, _ in axes], root)
  return df


def _maybe_kill(recorded: int) -> None:
  """Test hook: SIGKILLs this sweep once `recorded` points have been recorded, if asked to
  (a point may be training then: its subprocess dies with the sweep)."""
  target = os.environ.get(KILL_AFTER_POINTS_ENV)
  if target is not None and int(target) == recorded:
    os.kill(os.getpid(), signal.SIGKILL)


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
  """root/results.csv (atomically): one row per recorded point in grid order, the axes first."""
  ordered = [rows[point_name(p)] for p in points if point_name(p) in rows]
  keys = list(points[0]) if points else []
  df = pd.DataFrame(ordered)
  metrics = sorted(c for c in df.columns if c.startswith("eval/"))
  first = list(dict.fromkeys([*keys, *RESULT_COLUMNS[:4], *metrics, *RESULT_COLUMNS[4:]]))
  df = df.reindex(columns=first + [c for c in df.columns if c not in first])
  path = os.path.join(root, "results.csv")
  df.to_csv(path + ".tmp", index=False)
  os.replace(path + ".tmp", path)
  return df


__all__ = ["RESULT_COLUMNS", "RESULT_FILE", "PointTask", "check_point", "run_local", "run_point", "run_sweep"]
