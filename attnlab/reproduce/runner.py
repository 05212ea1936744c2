"""Runs an experiment's training runs on this machine (resumable) and rewrites its table
after each one.

Each run is `attnlab train` in its own subprocess (`attnlab.sweep.run_point`) in
`<workdir>/<run name>/`; a run with a `result.json` is finished and skipped on a rerun, an
unfinished one resumes as `attnlab train` does. Every run's config is validated first, so a
bad experiment stops before anything trains.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from typing import Sequence

from attnlab.reproduce.experiment import Run
from attnlab.reproduce.report import write_report
from attnlab.sweep.local import RESULT_FILE, check_point, run_point


def finished_results(runs: Sequence[Run], workdir: str) -> dict[str, dict]:
  """{run name: result} for the runs whose result.json exists under workdir."""
  out = {}
  for run in runs:
    path = os.path.join(workdir, run.name, RESULT_FILE)
    if os.path.isfile(path):
      with open(path) as f:
        out[run.name] = json.load(f)
  return out


def run_experiment(exp, runs: Sequence[Run], workdir: str, *, scale: str, jobs: int = 1, note: str = "",
                   train: bool = True, console=None):
  """Validates every unfinished run, trains them `jobs` at a time, and writes the report
  (table.md, table.csv, runs.csv, table.png) after each; train=False only writes the report
  of the finished runs. Returns the final table."""
  from rich.console import Console
  console = console or Console(stderr=True)
  results = finished_results(runs, workdir)
  todo = [r for r in runs if r.name not in results] if train else []
  for run in todo:  # every config is checked before anything trains
    reason = check_point(run.config_spec, run.overrides)
    if reason is not None:
      raise ValueError(f"run {run.name}: {reason}")
  console.log(f"{exp.name} ({scale}): {len(runs)} runs, {len(results)} finished earlier, "
              f"{len(todo)} to train, {jobs} at a time; workdir {workdir}")
  table = write_report(exp, runs, results, workdir, scale=scale, note=note)
  with concurrent.futures.ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
    futures = {pool.submit(run_point, r.config_spec, r.overrides, os.path.join(workdir, r.name)): r for r in todo}
    for i, fut in enumerate(concurrent.futures.as_completed(futures), 1):
      run = futures[fut]
      results[run.name] = fut.result()
      shown = {m: round(results[run.name][m], 4) for m in exp.metrics if m in results[run.name]}
      console.log(f"[{i}/{len(todo)}] {run.name}: {results[run.name]['status']} "
                  f"{shown or results[run.name].get('error', '')} ({results[run.name]['wall_s']:.0f} s)")
      table = write_report(exp, runs, results, workdir, scale=scale, note=note)
  return table


__all__ = ["finished_results", "run_experiment"]
