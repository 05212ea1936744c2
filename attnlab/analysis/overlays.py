"""What a run's attention positions are, for the rollout / relevancy overlays of `attnlab analyze`.

A run's task and model say what its T attention positions stand for (`input_view`):

- "tokens" (any sequence task): positions labelled by their token ids (or indices); the
  explained row is the task's explained position (e.g. the induction query);
- "patches" (a `vision` run with the `vit` model): the gh x gw patch grid, row-major, after
  an optional class token; the explained row is the class token (pooling "cls") or the mean
  over every patch query (pooling "mean": the head reads the mean of all tokens), and the
  overlay is drawn over the input image (`figures.patch_overlay`);
- "variates" (a `forecast` run with the inverted `itransformer`: one token per variate,
  then one per time feature): the explained row is the target variate's token (its
  forecast is read from it), and the overlay is bars over the named variates plus the
  variate x variate matrix (`figures.variate_overlay`).

A run whose positions do not fit its view (e.g. a stem that changes the grid) falls back to
"tokens" over plain indices.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from attnlab.analysis import figures


@dataclasses.dataclass
class InputView:
  """kind: "tokens" | "patches" | "variates"; rows: the query rows explained (their mean);
  keys: the key columns shown; labels [len(keys)]; what: the explained row in words;
  draw(rows: {name: [len(keys)]}, matrices: {name: [T, T]}) -> a matplotlib Figure."""
  kind: str
  rows: list
  keys: np.ndarray
  labels: list
  what: str
  draw: Callable

  def explain(self, m) -> np.ndarray:
    """A [T, T] relevance matrix (rollout, flow, relevancy) -> [len(keys)]: the mean of the
    explained rows over the shown key columns."""
    return np.asarray(m, np.float64)[self.rows][:, self.keys].mean(0)


def _tokens(t: int, pos: int, labels) -> InputView:
  return InputView("tokens", [pos], np.arange(t), list(labels), f"explained position {pos} of input 0",
                   lambda rows, matrices: figures.token_overlay(rows, labels))


def _patches(config, image, t: int) -> InputView | None:
  from attnlab.models.vision import patch_grid
  m = config.model
  cls = int(str(m.get("pooling", "mean")) == "cls")
  try:
    grid = patch_grid(np.shape(image), int(m.get("patch_size", 2)), bool(m.get("stem_pool", False)))
  except ValueError:
    return None
  if grid[0] * grid[1] + cls != t:
    return None
  rows = [0] if cls else list(range(t))
  what = "the class token" if cls else "the mean over all patch queries (mean pooling)"
  return InputView("patches", rows, np.arange(cls, t), [f"patch {i}" for i in range(t - cls)],
                   f"{what} of input 0, over the {grid[0]} x {grid[1]} patch grid",
                   lambda r, matrices: figures.patch_overlay(r, image, grid))


def _variates(task, t: int) -> InputView | None:
  data = task.data
  names = list(data.columns) + [f"time feature {i}" for i in range(data.marks["train"].shape[1])]
  if len(names) != t:
    names = list(data.columns)
    if len(names) != t:
      return None
  target = list(data.columns).index(data.target_columns[-1])
  keys = np.arange(t)

  def draw(rows, matrices):
    name, m = next(iter(matrices.items()))
    return figures.variate_overlay(rows, names, np.asarray(m)[:, keys], f"{name} (rows: variate explained)")

  return InputView("variates", [target], keys, names,
                   f"the token of the target variate {names[target]!r} in input 0 (its forecast is read from it)", draw)


def input_view(run, inputs0, t: int, pos: int, labels) -> InputView:
  """The `InputView` of a run (`train.trainer.setup`'s) for input 0 (`inputs0`, one example's
  inputs) with T attention positions; `pos` and `labels` are the token view's."""
  task_cfg = run.config.task
  view = None
  if task_cfg.name == "vision" and task_cfg.get("model", "vit") == "vit":
    view = _patches(run.config, inputs0, t)
  elif task_cfg.name == "forecast" and task_cfg.get("model", "") == "itransformer":
    view = _variates(run.task, t)
  return view or _tokens(t, pos, labels)


__all__ = ["InputView", "input_view"]
