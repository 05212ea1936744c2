"""`attnlab sweep`: one config, a grid of overrides, each point a resumable `attnlab train` run.

    attnlab sweep --config configs/mqar.py:size=recall --workdir runs/recall \
        --axis arg.variant=mha,based,gla --axis model.d_model=64,256 --jobs 2

Each point of the grid (the Cartesian product of the --axis lists) is trained in its own
subprocess in `<workdir>/<point>/` (e.g. `model.variant=based__model.d_model=64`), so a
crash loses nothing: a rerun skips finished points and resumes unfinished ones from their
last checkpoint. Before anything trains, every point's config is loaded and validated; a
point that cannot run (e.g. linformer under a causal task) is recorded with its one-line
reason instead of stopping the sweep, while a misspelt config key stops it at once.

Results go to `<workdir>/results.csv` (one row per point: the axis values, status, final
metrics, wall seconds, error) and a table on stdout; every point's evaluations at every
eval step go to `<workdir>/curves.csv` and are plotted in `<workdir>/curves.png` (a run
near chance at its last step may still be on a plateau: the curve shows it).

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


def register_cli(subparsers) -> argparse.ArgumentParser:
  """Adds `sweep` to the attnlab subparsers; sets `func` to `main`."""
  p = subparsers.add_parser("sweep", help="train a grid of config overrides (resumable)",
                            description=__doc__.splitlines()[0],
                            epilog="Shared overrides: --config.a.b=value (applied to every point).")
  p.add_argument("--config", required=True, help="configs/<task>.py[:arg]")
  p.add_argument("--workdir", required=True, help="root directory: one subdirectory per point")
  p.add_argument("--axis", action="append", default=[], required=True,
                 help="key=v1,v2 (repeatable; the grid is their product)")
  p.add_argument("--jobs", type=int, default=1, help="points trained at once (subprocesses)")
  p.set_defaults(func=main, takes_overrides=True)
  return p


def main(args, overrides) -> int:
  """Runs `attnlab sweep`; bad axes or config keys -> one line, exit 2."""
  from attnlab.config_loading import load_config
  try:
    axes = [parse_axis(a) for a in args.axis]
    points = grid(axes)
    load_config(point_config(args.config, points[0]), point_overrides(points[0], overrides))  # typos stop here
  except INPUT_ERRORS as e:
    return fail(str(e))
  try:
    df = run_sweep(args.config, axes, args.workdir, overrides, jobs=args.jobs)
  except INPUT_ERRORS as e:
    return fail(str(e))
  cols = [c for c in df.columns if c in dict(axes) or c in ("status", "wall_s") or c.startswith("eval/")]
  print(df[cols].to_string(index=False))
  return 0 if (df.status != "failed").all() else 1
