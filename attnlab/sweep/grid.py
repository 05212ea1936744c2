"""Sweep grids: `--axis key=v1,v2` parsing, the Cartesian product, and point names."""

from __future__ import annotations

import itertools
from typing import Sequence


def parse_axis(text: str) -> tuple[str, list[str]]:
  """"model.d_model=64,256" -> ("model.d_model", ["64", "256"]) ("|" splits when present).

  Keys are config leaves ("model.d_model", "config." optional) or "arg.k", a key of the
  config file's argument (configs/mqar.py:variant=...)."""
  key, sep, values = text.partition("=")
  if not sep or not key or not values:
    raise ValueError(f"--axis {text!r} must look like key=value1,value2")
  key = key[len("config."):] if key.startswith("config.") else key
  items = [v.strip() for v in values.split("|" if "|" in values else ",")]
  if not all(items):
    raise ValueError(f"--axis {text!r} has an empty value")
  return key, items


def grid(axes: Sequence[tuple[str, list[str]]]) -> list[dict[str, str]]:
  """The Cartesian product of the axes, as a list of {key: value} points (first axis slowest)."""
  keys = [k for k, _ in axes]
  if len(set(keys)) != len(keys):
    raise ValueError(f"an --axis key is repeated: {', '.join(keys)}")
  return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def point_name(point: dict[str, str]) -> str:
  """A directory name for a grid point: "a.b=1__c=x" (path separators replaced)."""
  return "__".join(f"{k}={v}" for k, v in point.items()).replace("/", "_").replace(" ", "") or "run"


ARG_PREFIX = "arg."


def point_overrides(point: dict[str, str], shared: Sequence[str]) -> list[str]:
  """The `--config.k=v` overrides of one point: the shared ones, then the point's
  (keys other than the config-argument ones, see `point_config`)."""
  return list(shared) + [f"--config.{k}={v}" for k, v in point.items() if not k.startswith(ARG_PREFIX)]


def point_config(config_spec: str, point: dict[str, str]) -> str:
  """The config spec of one point: axes named "arg.k" go into the config file's argument.

  "configs/mqar.py:size=recall" with {"arg.variant": "mega"} ->
  "configs/mqar.py:size=recall,variant=mega", so get_config(arg) sees the variant (and
  sets what it needs, e.g. mega's single head), unlike a later --config.model.variant.
  """
  extra = [f"{k[len(ARG_PREFIX):]}={v}" for k, v in point.items() if k.startswith(ARG_PREFIX)]
  if not extra:
    return config_spec
  path, _, arg = config_spec.partition(":")
  return f"{path}:{','.join(([arg] if arg else []) + extra)}"
