"""`attnlab reproduce NAME`: a paper's table from its experiment file, ours beside the published.

    attnlab reproduce itransformer_etth1 [--data PATH] [--seeds N] [--scale small|paper] \
        [--workdir DIR] [--jobs N] [--dry-run | --report-only]
    attnlab reproduce --list

NAME is experiments/NAME.py (or a path to such a file). Every run trains as `attnlab
train` in its own subprocess under WORKDIR (default runs/reproduce/NAME/SCALE), so an
interrupted reproduction resumes where it stopped. The table (WORKDIR/table.md,
table.csv, table.png, runs.csv) is rewritten after each run and printed at the end, with
a pass/fail per cell for each of the experiment's claims. Exit 0 when every run finished
(whether the claims pass or not is the table's finding), 1 when a run failed, 2 for bad input.
"""

from __future__ import annotations

import argparse
import os

from attnlab.errors import INPUT_ERRORS, fail

EXPERIMENTS_DIR = "experiments"


def register_cli(subparsers) -> argparse.ArgumentParser:
  """Adds `reproduce` to the attnlab subparsers; sets `func` to `main`."""
  p = subparsers.add_parser("reproduce", help="reproduce a paper's table from experiments/NAME.py (resumable)",
                            description=__doc__.splitlines()[0])
  p.add_argument("name", nargs="?", help="experiment name (experiments/NAME.py) or path")
  p.add_argument("--data", help="replaces the experiment's data file")
  p.add_argument("--seeds", type=int, help="seeds per point (default: the experiment's)")
  p.add_argument("--scale", default="paper", help="a scale the experiment declares (default paper)")
  p.add_argument("--workdir", help="default runs/reproduce/NAME/SCALE")
  p.add_argument("--jobs", type=int, default=1, help="runs trained at once (subprocesses)")
  p.add_argument("--dry-run", action="store_true", help="print the runs' commands and stop")
  p.add_argument("--report-only", action="store_true", help="write the table from the finished runs, train nothing")
  p.add_argument("--list", action="store_true", help="list the experiments and their scales")
  p.set_defaults(func=main)
  return p


def _list() -> int:
  from attnlab.reproduce.experiment import load_experiment
  for f in sorted(os.listdir(EXPERIMENTS_DIR)):
    if f.endswith(".py"):
      exp = load_experiment(f[:-3], EXPERIMENTS_DIR)
      scales = ", ".join(exp.get("scales", {}) or {"paper": None})
      print(f"{exp.name}: {exp.source} (scales: {scales})")
  return 0


def main(args) -> int:
  """Runs `attnlab reproduce`; bad input -> one line, exit 2."""
  from attnlab.reproduce.experiment import load_experiment, plan_runs, scale_of
  try:
    if args.list:
      return _list()
    if not args.name:
      return fail("reproduce needs an experiment NAME (or --list)")
    if args.jobs < 1:
      return fail(f"--jobs must be >= 1, got {args.jobs}")
    exp = load_experiment(args.name, EXPERIMENTS_DIR)
    runs = plan_runs(exp, scale=args.scale, seeds=args.seeds, data=args.data)
    note = scale_of(exp, args.scale).get("note", "")
  except INPUT_ERRORS as e:
    return fail(str(e))
  workdir = args.workdir or os.path.join("runs", "reproduce", exp.name, args.scale)
  if args.dry_run:
    for run in runs:
      print(run.command(workdir))
    return 0
  from attnlab.reproduce.runner import run_experiment
  try:
    table = run_experiment(exp, runs, workdir, scale=args.scale, jobs=args.jobs, note=note,
                           train=not args.report_only)
  except INPUT_ERRORS as e:
    return fail(str(e))
  with open(os.path.join(workdir, "table.md")) as f:
    print(f.read())
  from attnlab.reproduce.runner import finished_results
  done = finished_results(runs, workdir)
  failed = [n for n, r in done.items() if r.get("status") != "done"]
  if args.report_only:
    return 1 if failed else 0
  return 1 if failed or len(done) < len(runs) or table.empty else 0
