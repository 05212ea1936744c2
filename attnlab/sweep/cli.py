"""`attnlab sweep`: one config, a grid of overrides, each point a resumable `attnlab train` run.

    attnlab sweep --config configs/mqar.py:size=recall --workdir runs/recall \
        --axis arg.variant=mha,based,gla --axis model.d_model=64,256 --jobs 2

Each point of the grid (the Cartesian product of the --axis lists) is trained in its own
subprocess in `<workdir>/<point>/` (e.g. `model.variant=based__model.d_model=64`), so a
crash loses nothing: a rerun skips finished points and resumes unfinished ones from their
last checkpoint. Before anything trains, every point's config is loaded and validated; a
point that cannot run (e.g. linformer under a causal task) is recorded with its one-line
reason instead of stopping the sweep, while a misspelt config key stops it at once.

Results go to `<workdir>/results.csv`, one row per point: the axis values, status (done |
failed | invalid), config_hash (of the point's resolved config), seed, step, the final
eval metrics, eval_examples (the examples behind them), wall_s, steps_per_s (median of the
logged rates), params, attempts, error. Every point's evaluations at every eval step go to
`<workdir>/curves.csv` and are plotted in `<workdir>/curves.png` (a run near chance at its
last step may still be on a plateau: the curve shows it).

Seeds: `--axis seed=0,1,2` sets the config's `seed`. `<workdir>/summary.csv` and
`<workdir>/summary.md` (also printed) aggregate over it: for every combination of the
other axes, mean ± std of each final eval metric over the finished seeds, and their number.

Failures: a point that fails keeps its traceback in `<workdir>/<point>/error.txt` and
status `failed`; `--retries N` retries it up to N more times in this invocation (default 0),
each retry resuming from its last checkpoint, and a rerun tries it again. A killed sweep
loses nothing: finished points are skipped, a point's training subprocess dies with the
sweep, and a rerun resumes it.

Ray (`pip install -e ".[ray]"`): `--executor ray` runs each point as a Ray task reserving
`--cpus-per-point` CPUs and `--gpus-per-point` GPUs, on a local Ray started without a
dashboard or on the cluster at `--address` (e.g. `auto`, or `ray://head:10001`; every node
must see the workdir and have attnlab installed). A worker that dies mid-point is retried
by Ray (WORKER_RETRIES in attnlab/sweep/ray_executor.py) and resumes from its checkpoint.
`--jobs` is for the local executor; on Ray the reserved resources set how many run at once:

    attnlab sweep --config configs/mqar.py:size=recall --workdir runs/recall_ray \
        --axis arg.variant=mha,based --axis model.d_model=32,64 --axis seed=0,1 \
        --executor ray --cpus-per-point 1

Axis values are split on commas; a value list containing "|" is split on "|" instead, for
values with commas in them (`--axis 'model.variant=mha|based,mha'`). An axis named `arg.k`
sets key k of the config file's argument (`configs/mqar.py:variant=...`), so the config
file sees it: use `arg.variant` where a variant needs other settings (mega is
single-headed).
"""

from __future__ import annotations

import argparse

from attnlab.errors import INPUT_ERRORS, fail
from attnlab.sweep.grid import grid, parse_axis, point_config, point_overrides
from attnlab.sweep.local import run_sweep
from attnlab.sweep.summary import summary_markdown, summarize


def register_cli(subparsers) -> argparse.ArgumentParser:
  """Adds `sweep` to the attnlab subparsers; sets `func` to `main`."""
  p = subparsers.add_parser("sweep", help="train a grid of config overrides (resumable)",
                            description=__doc__.splitlines()[0],
                            epilog="Shared overrides: --config.a.b=value (applied to every point).")
  p.add_argument("--config", required=True, help="configs/<task>.py[:arg]")
  p.add_argument("--workdir", required=True, help="root directory: one subdirectory per point")
  p.add_argument("--axis", action="append", default=[], required=True,
                 help="key=v1,v2 (repeatable; the grid is their product)")
  p.add_argument("--jobs", type=int, default=1, help="points trained at once (local executor: subprocesses)")
  p.add_argument("--retries", type=int, default=0,
                 help="retries of a failed point in this invocation (default 0: one attempt)")
  p.add_argument("--executor", choices=("local", "ray"), default="local",
                 help="local subprocesses, or Ray tasks (needs the ray extra)")
  p.add_argument("--address", default=None, help="Ray cluster to connect to (default: start a local one)")
  p.add_argument("--cpus-per-point", type=float, default=1.0, help="CPUs each Ray task reserves")
  p.add_argument("--gpus-per-point", type=float, default=0.0, help="GPUs each Ray task reserves")
  p.set_defaults(func=main, takes_overrides=True)
  return p


def main(args, overrides) -> int:
  """Runs `attnlab sweep`; bad axes, config keys or flags (or --executor ray without ray)
  -> one line, exit 2, before anything runs. Exit 1 when a point failed."""
  from attnlab.config_loading import load_config
  try:
    if args.retries < 0:
      raise ValueError(f"--retries must be >= 0, got {args.retries}")
    if args.executor == "ray":
      from attnlab.sweep.ray_executor import require_ray
      require_ray()
    elif args.address is not None:
      raise ValueError("--address is for --executor ray")
    axes = [parse_axis(a) for a in args.axis]
    points = grid(axes)
    load_config(point_config(args.config, points[0]), point_overrides(points[0], overrides))  # typos stop here
  except INPUT_ERRORS as e:
    return fail(str(e))
  try:
    ray_options = dict(address=args.address, cpus_per_point=args.cpus_per_point, gpus_per_point=args.gpus_per_point)
    df = run_sweep(args.config, axes, args.workdir, overrides, jobs=args.jobs, retries=args.retries,
                   executor=args.executor, ray_options=ray_options if args.executor == "ray" else None)
  except INPUT_ERRORS as e:
    return fail(str(e))
  cols = [c for c in df.columns if c in dict(axes) or c in ("status", "wall_s") or c.startswith("eval/")]
  print(df[cols].to_string(index=False))
  print()
  print(summary_markdown(summarize(df, [k for k, _ in axes])), end="")
  return 0 if (df.status != "failed").all() else 1
