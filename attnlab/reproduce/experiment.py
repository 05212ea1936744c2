"""Experiment files (`experiments/<name>.py`): loading, validation, and the runs they imply.

An experiment file defines `get_experiment()` returning a ConfigDict (data only):

  name, config ("configs/<task>.py"), base_arg (the config file's argument, "k=v,...");
  data_arg: the argument that `--data PATH` replaces (optional);
  sweep: {argument: [values]}: the Cartesian product, one run per point and seed;
  seeds: runs per point (each gets `seed=<i>` in the config argument);
  scales: {name: {"args": {argument: [values]} (replaces sweep axes), "overrides":
          ["--config.a.b=v", ...], "seeds": n (optional), "note": "..."}}; "paper" is the default;
  metrics: the result keys reported (e.g. "test/mse", "eval/accuracy");
  cells: [{"point": {argument: value}, "published": {metric: value}}]: one per table
         cell; a cell's point may fix fewer arguments than the sweep (the rest vary inside it);
  claims: [{"metric", "kind": "relative_error" | "at_least" | "improves", "tolerance", ...}]
         (see `attnlab.reproduce.report.check_claims`);
  source: where the published numbers come from;
  best_of: {"axis", "metric", "higher_is_better"} (optional): per cell, only the runs at the
           axis value with the best mean count (see `attnlab.reproduce.report`).

Every run is one `attnlab train` of `config:base_arg,<point>,seed=<i>` plus the scale's
overrides, so a cell can always be rerun by hand with the command `Run.command()` prints.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
from typing import Any

import ml_collections

REQUIRED = ("name", "config", "base_arg", "sweep", "seeds", "metrics", "cells", "claims", "source")
CLAIM_KINDS = ("relative_error", "at_least", "improves")
DEFAULT_SCALE = "paper"


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of an experiment: a sweep point and a seed."""
  point: dict          # {argument: value} (the sweep axes of this run)
  seed: int
  config_spec: str     # "configs/forecast.py:model=itransformer,...,horizon=96,seed=0"
  overrides: tuple     # ("--config.train.epochs=3", ...)
  name: str            # directory name under the experiment's workdir

  def command(self, workdir: str) -> str:
    """The equivalent `attnlab train` command line."""
    return " ".join(["attnlab train --config", self.config_spec, "--workdir", os.path.join(workdir, self.name),
                     *self.overrides])


def experiment_path(name_or_path: str, root: str = "experiments") -> str:
  """"itransformer_etth1" -> "experiments/itransformer_etth1.py"; a path to a .py file as is.
  FileNotFoundError (one line, listing the known experiments) when there is no such file."""
  path = name_or_path if name_or_path.endswith(".py") else os.path.join(root, name_or_path + ".py")
  if not os.path.isfile(path):
    known = sorted(f[:-3] for f in os.listdir(root) if f.endswith(".py")) if os.path.isdir(root) else []
    raise FileNotFoundError(f"no experiment file {path} (known: {', '.join(known) or 'none'}; "
                            "run from the repository root)")
  return path


def load_experiment(name_or_path: str, root: str = "experiments") -> ml_collections.ConfigDict:
  """Imports the experiment file and returns its validated `get_experiment()`."""
  path = experiment_path(name_or_path, root)
  spec = importlib.util.spec_from_file_location(f"attnlab_experiment_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_experiment"):
    raise ValueError(f"{path} has no get_experiment() function")
  exp = module.get_experiment()
  validate(exp, path)
  return exp


def validate(exp: ml_collections.ConfigDict, where: str = "experiment") -> None:
  """One-line ValueError for a missing field, an unknown claim kind, or a cell whose point
  names an argument that is not swept."""
  missing = [k for k in REQUIRED if k not in exp]
  if missing:
    raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
  for claim in exp.claims:
    if claim['kind'] not in CLAIM_KINDS:
      raise ValueError(f"{where}: claim kind {claim['kind']!r} is not one of {', '.join(CLAIM_KINDS)}")
    if claim['metric'] not in exp.metrics:
      raise ValueError(f"{where}: claim metric {claim['metric']!r} is not in metrics {list(exp.metrics)}")
  spec = exp.get("best_of", None)
  if spec and spec.get("axis") not in exp.sweep:
    raise ValueError(f"{where}: best_of axis {spec.get('axis')!r} is not a sweep axis")
  if spec and spec.get("metric") not in exp.metrics:
    raise ValueError(f"{where}: best_of metric {spec.get('metric')!r} is not in metrics {list(exp.metrics)}")
  for cell in exp.cells:
    extra = set(cell['point']) - set(exp.sweep)
    if extra:
      raise ValueError(f"{where}: cell point {dict(cell['point'])} names unswept argument(s) {sorted(extra)}")


def _parse_pairs(arg: str) -> dict[str, str]:
  """"a=1,b=x" -> {"a": "1", "b": "x"} (order kept)."""
  out: dict[str, str] = {}
  for piece in filter(None, (p.strip() for p in arg.split(","))):
    key, sep, value = piece.partition("=")
    if not sep:
      raise ValueError(f"base_arg piece {piece!r} is not key=value")
    out[key] = value
  return out


def scale_of(exp: ml_collections.ConfigDict, scale: str) -> dict[str, Any]:
  """The scale's settings ({} for "paper" when the file declares no scales)."""
  scales = exp.get("scales", {}) or {}
  if scale not in scales:
    if scale == DEFAULT_SCALE and not scales:
      return {}
    raise ValueError(f"experiment {exp.name!r} has no scale {scale!r} (scales: {', '.join(scales) or 'none'})")
  return dict(scales[scale])


def plan_runs(exp: ml_collections.ConfigDict, *, scale: str = DEFAULT_SCALE, seeds: int | None = None,
              data: str | None = None) -> list[Run]:
  """Every run of the experiment at `scale`: the sweep (with the scale's axes replacing the
  file's) times the seeds (`seeds` overrides the scale's and the file's count); `data`
  replaces the `data_arg` argument. Raises FileNotFoundError when the data file is absent."""
  settings = scale_of(exp, scale)
  axes = {k: list(v) for k, v in exp.sweep.items()}
  axes.update({k: list(v) for k, v in dict(settings.get("args", {})).items()})
  n_seeds = seeds if seeds is not None else settings.get("seeds", exp.seeds)
  if n_seeds < 1:
    raise ValueError(f"--seeds must be >= 1, got {n_seeds}")
  base = _parse_pairs(exp.base_arg)
  data_arg = exp.get("data_arg")
  if data is not None:
    if not data_arg:
      raise ValueError(f"experiment {exp.name!r} takes no --data (it has no data_arg)")
    base[data_arg] = data
  if data_arg and base.get(data_arg) and not os.path.isfile(base[data_arg]):
    raise FileNotFoundError(f"data file not found: {base[data_arg]} (pass --data PATH)")
  overrides = tuple(settings.get("overrides", ()))
  runs = []
  keys = list(axes)
  for values in itertools.product(*(axes[k] for k in keys)):
    point = dict(zip(keys, values))
    for seed in range(n_seeds):
      arg = {**base, **{k: str(v) for k, v in point.items()}, "seed": str(seed)}
      spec = f"{exp.config}:{','.join(f'{k}={v}' for k, v in arg.items())}"
      name = "__".join(f"{k}={v}" for k, v in point.items()).replace("/", "_") + f"__seed={seed}"
      runs.append(Run(point, seed, spec, overrides, name))
  return runs


def cell_matches(cell_point: dict, point: dict) -> bool:
  """Whether a run's sweep point falls in a cell (every argument the cell fixes agrees;
  compared as strings, so 96 and "96" agree)."""
  return all(str(point.get(k)) == str(v) for k, v in cell_point.items())


__all__ = ["CLAIM_KINDS", "DEFAULT_SCALE", "Run", "cell_matches", "experiment_path", "load_experiment",
           "plan_runs", "scale_of", "validate"]

