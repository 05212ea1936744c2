"""The finished runs of a sweep or reproduction directory, with what each column means.

A sweep (`attnlab sweep`) writes DIR/results.csv: the axis values, then status, the final
metrics and bookkeeping (step, wall_s, seed, config_hash, eval_examples, steps_per_s,
params; the later ones may be absent). A reproduction (`attnlab reproduce`) writes
DIR/runs.csv: the point, seed, run, status, metrics. Any other per-run CSV with the same
shape (axes first, then seed or status, then numbers) can be named with `results=`.
"""

from __future__ import annotations

import dataclasses
import os

import pandas as pd

RESULT_FILES = ("results.csv", "runs.csv")
SEED = "seed"
# Columns that are neither a swept axis nor a metric.
BOOKKEEPING = frozenset({SEED, "run", "status", "error", "step", "epochs", "best_epoch", "wall_s",
                         "steps_per_s", "params", "config_hash", "seeds", "attempts"})
EXAMPLE_COLUMNS = ("eval_examples", "eval/examples", "test/examples", "examples")
VARIANT_AXES = ("variant", "arg.variant", "model.variant", "model.attn.name", "model")
FINAL_SPLITS = ("eval/", "test/")
HIGHER_IS_BETTER = ("acc", "f1", "auc", "recall", "precision", "score")


@dataclasses.dataclass
class RunTable:
  """Finished runs of one directory.

  frame: one row per finished run (status "done"); axes: the swept columns (seed excluded);
  variant: the axis whose values name the compared variants (None: one line per point);
  metrics: the final metric columns; examples: the column counting evaluated examples (or
  None); point_columns: the columns that name a run's point (its directory,
  `sweep.grid.point_name`; seed included when it was swept); source: the CSV read;
  skipped: rows not finished (failed, invalid, pending)."""
  root: str
  source: str
  frame: pd.DataFrame
  axes: list
  variant: str | None
  metrics: list
  examples: str | None
  point_columns: list = dataclasses.field(default_factory=list)
  skipped: int = 0

  @property
  def seed(self) -> str | None:
    """The seed column, when the CSV has one."""
    return SEED if SEED in self.frame else None


def higher_is_better(metric: str) -> bool:
  """Accuracy-like metrics are maximised; losses and errors (mse, mae, loss) minimised."""
  return any(word in metric.lower() for word in HIGHER_IS_BETTER)


def main_metric(metrics) -> str:
  """The metric a report leads with: the first accuracy-like one, else the first."""
  return next((m for m in metrics if higher_is_better(m)), metrics[0])


def _point_columns(frame: pd.DataFrame) -> list:
  cols = list(frame.columns)
  for marker in ("status", SEED, "run"):
    if marker in cols:
      cut = cols.index(marker)
      break
  else:
    numeric = [i for i, c in enumerate(cols) if pd.api.types.is_numeric_dtype(frame[c])]
    cut = numeric[0] if numeric else len(cols)
  return [c for c in cols[:cut] if c not in BOOKKEEPING or c == SEED]


def _metrics(frame: pd.DataFrame, axes, examples) -> list:
  found = [c for c in frame.columns if c not in axes and c not in BOOKKEEPING and c != examples
           and "examples" not in c and pd.api.types.is_numeric_dtype(frame[c])]
  for split in FINAL_SPLITS:
    final = [c for c in found if c.startswith(split)]
    if final:
      return final
  return found


def load_runs(root: str, results: str | None = None, metrics=None) -> RunTable:
  """Reads root/results.csv or root/runs.csv (or root/`results`); ValueError / FileNotFoundError
  with a one-line reason for a missing directory, no results file, or no finished run.
  `metrics` (names) replaces the detected metric columns."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"report: {root!r} is not a directory")
  names = (results,) if results else RESULT_FILES
  path = next((os.path.join(root, n) for n in names if os.path.isfile(os.path.join(root, n))), None)
  if path is None:
    raise FileNotFoundError(f"report: {root!r} has no {' or '.join(names)} (a sweep or reproduction directory)")
  try:
    frame = pd.read_csv(path)
  except pd.errors.EmptyDataError:
    raise ValueError(f"report: {path} is empty") from None
  total = len(frame)
  point_columns = _point_columns(frame)  # before a status column is added at the end
  if "status" in frame:
    frame = frame[frame.status == "done"]
  frame = frame.assign(status="done").reset_index(drop=True)  # run_stats reads finished rows
  if frame.empty:
    raise ValueError(f"report: {path} has no finished run ({total} rows, none with status done)")
  axes = [c for c in point_columns if c != SEED]
  examples = next((c for c in EXAMPLE_COLUMNS if c in frame), None)
  found = list(metrics) if metrics else _metrics(frame, axes, examples)
  missing = [m for m in found if m not in frame]
  if missing or not found:
    raise ValueError(f"report: {path} has no metric column {', '.join(missing) or '(none numeric)'}; "
                     f"columns: {', '.join(frame.columns)}")
  variant = next((a for a in VARIANT_AXES if a in axes), None)
  return RunTable(root, path, frame, axes, variant, found, examples, point_columns, total - len(frame))


__all__ = ["RunTable", "higher_is_better", "load_runs", "main_metric"]
