"""`config.train.stop_at`: stop training once an eval metric reaches a threshold.

Zoology's MQAR protocol trains each cell "until 99% accuracy": `stop_at="eval/accuracy>=0.99"`.
The spec is `METRIC>=VALUE` or `METRIC<=VALUE` (METRIC one of the task's eval metrics, e.g.
eval/accuracy, eval/loss); "" trains for train.steps. When an eval meets it, the trainer
checkpoints that step, writes WORKDIR/stopped.json, and returns; a rerun of the same workdir
finds the marker and returns that step's eval again instead of training further.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

STOPPED_FILE = "stopped.json"
_SPEC = re.compile(r"^\s*(eval/[\w./-]+)\s*(>=|<=)\s*([-+0-9.eE]+)\s*$")


@dataclasses.dataclass(frozen=True)
class StopAt:
  """A parsed `train.stop_at`: `metric` `op` (">=" / "<=") `value`."""
  metric: str
  op: str
  value: float

  def met(self, evals: dict) -> bool:
    """Whether the eval results `evals` ({"eval/accuracy": ...}) meet the threshold; a
    ValueError naming the metrics there are when `metric` is not one of them."""
    if self.metric not in evals:
      raise ValueError(f"config.train.stop_at: the task has no metric {self.metric!r}; "
                       f"it reports {', '.join(sorted(k for k in evals if k.startswith('eval/')))}")
    x = float(evals[self.metric])
    return x >= self.value if self.op == ">=" else x <= self.value

  def __str__(self) -> str:
    return f"{self.metric}{self.op}{self.value:g}"


def parse(spec) -> StopAt | None:
  """`train.stop_at` -> StopAt, None for "" / None; one-line ValueError for anything else."""
  if spec in (None, ""):
    return None
  m = _SPEC.match(str(spec))
  if not m:
    raise ValueError(f"config.train.stop_at must look like 'eval/accuracy>=0.99' or "
                     f"'eval/loss<=0.1', got {spec!r}")
  try:
    value = float(m.group(3))
  except ValueError:
    raise ValueError(f"config.train.stop_at: {m.group(3)!r} is not a number") from None
  return StopAt(m.group(1), m.group(2), value)


def mark(workdir: str, step: int, stop: StopAt, evals: dict) -> None:
  """Writes WORKDIR/stopped.json: the step the criterion was met at and that eval."""
  with open(os.path.join(workdir, STOPPED_FILE), "w") as f:
    json.dump({"step": int(step), "stop_at": str(stop), "eval": {k: float(v) for k, v in evals.items()}}, f)


def stopped_step(workdir: str) -> int | None:
  """The step of WORKDIR/stopped.json, None if the run has not stopped early."""
  path = os.path.join(workdir, STOPPED_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return int(json.load(f)["step"])
