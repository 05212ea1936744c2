"""Test hooks that inject faults into a training run, all read from environment variables.

They exist for the fault tests (tests/train/test_faults*.py, scripts/fault_injection.py)
and do nothing unless set:

  ATTNLAB_TEST_KILL_AFTER_CHECKPOINT=N   SIGKILL once checkpoint N is fully on disk.
  ATTNLAB_TEST_KILL_AT=PHASE:N[:DELAY]   SIGKILL at PHASE of step N, DELAY seconds after
      entering it (default 0, from a timer thread, so the kill lands while that phase
      runs). PHASE: "step" (the train step N was just dispatched and may be computing),
      "eval" (the eval at step N starts), "checkpoint" (the save of step N was started:
      orbax's background write is in flight), "between" (step N's bookkeeping is done,
      the next batch is not fetched yet). Fires once per workdir: it leaves the marker
      file WORKDIR/KILL_MARKER, so a restart with the same command and environment
      runs on.
  ATTNLAB_TEST_INJECT_NAN=loss@K | grad:PATH@K   makes the loss of train step K (K =
      updates done after it) NaN, or only the gradient of the parameter at PATH (a
      `jax.tree_util.keystr` of the params tree, e.g. "['q']"). Read when the train
      step is built; it changes the compiled step only when set.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
import jax.numpy as jnp

KILL_AFTER_CHECKPOINT_ENV = "ATTNLAB_TEST_KILL_AFTER_CHECKPOINT"
KILL_AT_ENV = "ATTNLAB_TEST_KILL_AT"
INJECT_NAN_ENV = "ATTNLAB_TEST_INJECT_NAN"
KILL_MARKER = "test_kill_fired"
PHASES = ("step", "eval", "checkpoint", "between")


def _kill_now() -> None:
  os.kill(os.getpid(), signal.SIGKILL)


class KillAt:
  """The ATTNLAB_TEST_KILL_AT hook of one run (`at(phase, step)` is a no-op unless it matches)."""

  def __init__(self, workdir: str, spec: str | None = None):
    spec = os.environ.get(KILL_AT_ENV) if spec is None else spec
    self.target = None
    if not spec:
      return
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] not in PHASES:
      raise ValueError(f"{KILL_AT_ENV}={spec!r}: expected PHASE:STEP[:DELAY], PHASE one of {PHASES}")
    self.marker = os.path.join(workdir, KILL_MARKER)
    if not os.path.exists(self.marker):
      self.target = (parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0)

  def at(self, phase: str, step: int) -> None:
    """Arms the kill if (phase, step) is the target: now, or after the delay from a timer thread."""
    if self.target is None or self.target[:2] != (phase, step):
      return
    delay = self.target[2]
    self.target = None
    with open(self.marker, "w") as f:
      f.write(f"{phase}:{step}:{delay}\n")
    if delay <= 0:
      _kill_now()
    timer = threading.Timer(delay, _kill_now)
    timer.daemon = True
    timer.start()


def nan_injection() -> tuple[str, int] | None:
  """(target, step) from ATTNLAB_TEST_INJECT_NAN ("loss" or "grad:PATH"), or None if unset."""
  spec = os.environ.get(INJECT_NAN_ENV)
  if not spec:
    return None
  target, _, step = spec.rpartition("@")
  if not step.isdigit() or not (target == "loss" or target.startswith("grad:")):
    raise ValueError(f"{INJECT_NAN_ENV}={spec!r}: expected loss@STEP or grad:PATH@STEP")
  return target, int(step)


def nan_scale(step: jax.Array, target_step: int) -> jax.Array:
  """float32 scalar: NaN when `step` + 1 == target_step (the update that makes it step K), else 1."""
  return jnp.where(step + 1 == target_step, jnp.float32(jnp.nan), jnp.float32(1.0))


def poison_grads(grads: Any, path: str, scale: jax.Array) -> Any:
  """`grads` with the leaf at keystr `path` multiplied by `scale`; ValueError if no leaf has it."""
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  paths = [jax.tree_util.keystr(p) for p, _ in flat]
  if path not in paths:
    raise ValueError(f"{INJECT_NAN_ENV}: no parameter {path!r}; have {paths}")
  return jax.tree_util.tree_map_with_path(
      lambda p, g: g * scale.astype(g.dtype) if jax.tree_util.keystr(p) == path else g, grads)
