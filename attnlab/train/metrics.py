"""Run outputs in WORKDIR: metrics.jsonl, TensorBoard events, config.json, progress.

Only process 0 writes files. `metrics.jsonl` holds one JSON object per line, each
with an int "step" and float metrics named "<split>/<name>" ("train/loss",
"eval/accuracy", ...). On a terminal the run shows a rich progress bar with steps/s
and ETA; otherwise it prints one plain line per logged step.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np


def _is_writer() -> bool:
  return jax.process_index() == 0


def log(message: str) -> None:
  """Prints one timestamped line to stderr (process 0 only)."""
  if _is_writer():
    print(f"[attnlab {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_config(workdir: str, config: Any) -> str:
  """Writes the full config to WORKDIR/config.json and returns the path."""
  path = os.path.join(workdir, "config.json")
  if _is_writer():
    text = config.to_json_best_effort(indent=2, sort_keys=True) if hasattr(
        config, "to_json_best_effort") else json.dumps(config, indent=2, sort_keys=True, default=str)
    with open(path + ".tmp", "w") as f:
      f.write(text + "\n")
    os.replace(path + ".tmp", path)
  return path


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """Returns the records of WORKDIR/metrics.jsonl in file order ([] if absent)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _scalar(value: Any) -> float:
  return float(np.asarray(value))


class MetricsWriter:
  """Appends records to WORKDIR/metrics.jsonl and mirrors them to TensorBoard."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if _is_writer():
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(logdir=workdir)

  def truncate_after(self, step: int) -> None:
    """Drops records with "step" > `step` (left by a run that died after its last checkpoint),
    and a last line cut short by a kill mid-write."""
    if not _is_writer() or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [line for line in f if line.strip()]
    if lines and not lines[-1].endswith("\n"):  # written without its newline: cut by a kill
      lines.pop()
    kept = [r for r in map(json.loads, lines) if r.get("step", 0) <= step]
    with open(self.path + ".tmp", "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(self.path + ".tmp", self.path)

  def write(self, step: int, scalars: Mapping[str, Any]) -> dict[str, Any]:
    """Appends {"step": step, **scalars} (values as Python floats); returns the record."""
    record = {"step": int(step), **{k: _scalar(v) for k, v in scalars.items()}}
    if _is_writer():
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")
      for key, value in record.items():
        if key != "step" and math.isfinite(value):
          self._tb.add_scalar(key, value, global_step=int(step))
      self._tb.flush()
    return record

  def close(self) -> None:
    """Flushes and closes the TensorBoard writer."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def _format(record: Mapping[str, Any]) -> str:
  parts = []
  for key, value in record.items():
    if key == "step":
      continue
    parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
  return " ".join(parts)


class Progress:
  """A rich progress bar (steps/s, ETA, latest loss) on a terminal; plain log lines otherwise."""

  def __init__(self, total: int, initial: int, *, use_bar: bool | None = None):
    """total: last step; initial: the step training starts from (0, or a resumed step)."""
    self.total = total
    self._bar = None
    self._rate = "-"
    self._shown: dict[str, Any] = {}
    if use_bar is None:
      use_bar = sys.stderr.isatty() and _is_writer()
    if use_bar:
      from rich.console import Console
      from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                 TextColumn, TimeRemainingColumn)
      self._bar = RichProgress(
          BarColumn(bar_width=24), MofNCompleteColumn(), TextColumn("{task.fields[rate]} steps/s"),
          TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
          console=Console(file=sys.stderr), transient=False)
      self._task = self._bar.add_task("train", total=total, completed=initial, rate="-", info="")
      self._bar.start()

  def advance(self, step: int) -> None:
    """Moves the bar to `step` (no-op without a bar)."""
    if self._bar is not None:
      self._bar.update(self._task, completed=step)

  def report(self, record: Mapping[str, Any], steps_per_sec: float | None = None) -> None:
    """Shows a logged record: in the bar's text, or as one plain stderr line."""
    if self._bar is None:
      log(f"step {record['step']}/{self.total} {_format(record)}")
      return
    if steps_per_sec:
      self._rate = f"{steps_per_sec:.1f}"
    self._shown.update({k: v for k, v in record.items() if k.endswith(("/loss", "/accuracy"))})
    self._bar.update(self._task, completed=record["step"], rate=self._rate,
                     info=_format(self._shown))

  def close(self) -> None:
    """Stops the bar (leaves it on screen)."""
    if self._bar is not None:
      self._bar.stop()
      self._bar = None
