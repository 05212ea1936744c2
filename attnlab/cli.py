"""`attnlab train | eval | sweep | reproduce | report | analyze | list | bench`.

Bad input (unknown variant/task/config key, shapes that don't divide, missing files) is
reported as one line on stderr with exit code 2, before anything compiles.
"""

from __future__ import annotations

import argparse
import json
import sys

from attnlab.errors import INPUT_ERRORS, RUN_FAULT_EXIT, RUN_FAULT_TRACEBACK, fail


def _json_result(result) -> str:
  """The final metrics as one JSON line (step as an int)."""
  return json.dumps({k: int(v) if k == "step" else float(v) for k, v in (result or {}).items()},
                    sort_keys=True)


def _save_traceback(workdir: str) -> str:
  """Writes the exception being handled to WORKDIR/traceback.txt; returns " (traceback:
  PATH)" for the error line, or "" if it could not be written (e.g. the disk is full)."""
  import os
  import traceback
  path = os.path.join(os.path.abspath(workdir), RUN_FAULT_TRACEBACK)
  try:
    with open(path, "w") as f:
      f.write(traceback.format_exc())
  except OSError:
    return ""
  return f" (traceback: {path})"


def _validated_then(action):
  """A subcommand that loads and validates the config (bad input -> one line, exit 2),
  then runs `action(config, workdir, run=prepared)` and prints its result as JSON."""

  def command(args, overrides) -> int:
    from attnlab.config_loading import checked_setup, load_config
    try:
      config = load_config(args.config, overrides)
      run = checked_setup(config, args.config)  # every check (model, task, mesh, train); compiles nothing
    except INPUT_ERRORS as e:
      return fail(str(e))
    from attnlab.train.checkpoint import CheckpointWriteError, NoRestorableCheckpointError
    try:
      result = action(config, args.workdir, run=run)
    except (FloatingPointError, CheckpointWriteError, NoRestorableCheckpointError) as e:
      # A run that stopped on a fault (non-finite loss or gradient, a failed checkpoint
      # write, no readable checkpoint) -- not bad input: one line, exit code 1.
      return fail(f"{type(e).__name__}: {e}{_save_traceback(args.workdir)}", code=RUN_FAULT_EXIT)
    print(_json_result(result))
    return 0

  return command


def cmd_train(args, overrides) -> int:
  """Validates, then trains (resuming from the workdir's latest checkpoint); with
  config.train.protocol="early_stopping", `attnlab.train.early_stopping.train` instead."""
  from attnlab.train.trainer import train

  def action(config, workdir, *, run):
    if config.train.get("protocol", "steps") == "early_stopping":
      from attnlab.train import early_stopping
      return early_stopping.train(config, workdir, run=run)
    return train(config, workdir, run=run)

  return _validated_then(action)(args, overrides)


def cmd_eval(args, overrides) -> int:
  """Validates, then evaluates the latest checkpoint in the workdir."""
  from attnlab.train.trainer import evaluate
  return _validated_then(evaluate)(args, overrides)


def cmd_list(args) -> int:
  """Prints the registered attention variants (and tasks)."""
  from attnlab.attention import list_variants
  from attnlab.tasks import TASKS
  variants = list_variants()
  if args.json:
    print(json.dumps({"variants": variants, "tasks": TASKS.names()}, indent=1, default=str))
    return 0
  from rich.console import Console
  from rich.table import Table
  table = Table(title=f"{len(variants)} attention variants")
  from attnlab.attention.registry import LIST_D_MODEL
  for col in ("name", "family", "patterns", "compute", "memory", "sub-quadratic",
              f"decode state (floats, d_model={LIST_D_MODEL})", "hyperparameters (defaults)"):
    table.add_column(col, overflow="fold")
  for v in variants:
    hp = ", ".join(f"{k}={v['hyperparameters'][k]!r}" for k in v["hyperparameters"])
    table.add_row(v["name"], v["family"], " ".join(v["patterns"]), v["compute"], v["memory"],
                  "yes" if v["subquadratic"] else "", v["state_size"], hp)
  console = Console(width=max(160, Console().width))
  console.print(table)
  console.print("tasks: " + ", ".join(TASKS.names()))
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="attnlab", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  for name, fn, help_ in (("train", cmd_train, "train a model from a config (resumes automatically)"),
                          ("eval", cmd_eval, "evaluate the latest checkpoint in a workdir")):
    p = sub.add_parser(name, help=help_,
                       epilog="Override single leaves with --config.a.b=value (e.g. --config.train.steps=100).")
    p.add_argument("--config", required=True, help="configs/<task>.py[:arg], e.g. configs/mqar.py:variant=based")
    p.add_argument("--workdir", required=True, help="directory for checkpoints, metrics.jsonl, TensorBoard")
    p.set_defaults(func=fn, takes_overrides=True)
  from attnlab import sweep
  sweep.register_cli(sub)
  from attnlab.reproduce import cli as reproduce_cli
  reproduce_cli.register_cli(sub)
  from attnlab.analysis.report import cli as report_cli
  report_cli.register_cli(sub)
  from attnlab.analysis import analyze_cli
  analyze_cli.register_cli(sub)
  p = sub.add_parser("list", help="list registered attention variants and tasks")
  p.add_argument("--json", action="store_true", help="machine-readable output")
  p.set_defaults(func=cmd_list)
  bench = sub.add_parser("bench", help="speed and memory benchmarks")
  bench_sub = bench.add_subparsers(dest="bench_command", required=True)
  from attnlab.bench import attention as bench_attention
  bench_attention.register_cli(bench_sub)
  from attnlab.bench import cost as bench_cost
  bench_cost.register_cli(bench_sub)
  from attnlab.bench import kernels as bench_kernels
  bench_kernels.register_cli(bench_sub)
  return parser


def main(argv=None) -> int:
  """Entry point of the `attnlab` console script; returns the exit code."""
  from attnlab.train import initialize_distributed
  try:
    initialize_distributed()  # multi-host only when JAX_COORDINATOR_ADDRESS / ATTNLAB_MULTIHOST is set
  except INPUT_ERRORS as e:
    return fail(str(e))
  parser = build_parser()
  args, extra = parser.parse_known_args(argv)
  overrides = [a for a in extra if a.startswith("--config.")]
  stray = [a for a in extra if not a.startswith("--config.")]
  if stray or (overrides and not getattr(args, "takes_overrides", False)):
    return fail(f"unrecognized arguments: {' '.join(stray or overrides)}")
  if getattr(args, "takes_overrides", False):
    return args.func(args, overrides) or 0
  return args.func(args) or 0


if __name__ == "__main__":
  sys.exit(main())
