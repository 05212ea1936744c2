"""Checkpoints in WORKDIR/checkpoints: train state and data-iterator state, together.

One orbax `CheckpointManager` step directory `checkpoints/<step>/` holds three items:

  state/        the TrainState (params, opt_state, step), saved asynchronously by orbax's
                StandardCheckpointHandler (each process writes its own shards);
  data/         the grain iterator's state, `process_<i>-of-<n>.json` per process, via
                grain's orbax handler (`grain.checkpoint.CheckpointSave`). It is written
                synchronously inside `save`, so it is the state *at* this step even though
                the arrays finish writing in the background;
  fingerprint/  a per-leaf checksum of the state (`attnlab.train.fingerprint`), compared
                after restoring: orbax stores array chunks without one.

Orbax writes into a temporary directory and renames it when every item is complete,
so a run killed mid-save leaves the previous checkpoint as the latest one; the partial
temporary directory is deleted when the next run opens the manager.

`restore_latest` falls back: if the newest checkpoint does not restore (a truncated or
garbage file, a missing item, a fingerprint mismatch), it logs a warning naming the step
and the exception and tries the next older one; the unreadable newer steps are then moved
to WORKDIR/checkpoints_unreadable/. A failed write (e.g. a full disk) raises `CheckpointWriteError` naming the
step and the directory; the checkpoints written before it are untouched.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import grain
import grain.checkpoint  # noqa: F401  (registers grain's orbax handler)
import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from attnlab.train import metrics as mt
from attnlab.train.fingerprint import fingerprint, first_mismatch
from attnlab.train.state import TrainState

UNREADABLE_DIR = "checkpoints_unreadable"


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (the message names the step and the directory)."""


class CheckpointCorruptError(ValueError):
  """A checkpoint restored, but its fingerprint does not match what was saved."""


class NoRestorableCheckpointError(RuntimeError):
  """Every checkpoint in the directory failed to restore."""


def _one_line(e: BaseException, limit: int = 300) -> str:
  """`ExceptionClass: first 300 characters of the message, on one line`."""
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


class Checkpointer:
  """Saves and restores (TrainState, grain iterator) pairs under `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int | None = 3, async_save: bool = True,
               read_only: bool = False):
    """keep: how many most recent checkpoints to keep (None or <= 0 keeps all).

    Unless `read_only`, temporary directories left by a save that never finished (a
    killed run) are deleted here.
    """
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep if keep and keep > 0 else None, create=not read_only,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only,
        read_only=read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options)
    self._pending: int | None = None  # the step whose save may still be in flight
    self._failed = False

  def latest_step(self) -> int | None:
    """Returns the step of the newest complete checkpoint, or None if there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Every complete checkpoint's step, ascending."""
    return sorted(self._manager.all_steps())

  def _write_error(self, step: int, e: BaseException) -> CheckpointWriteError:
    self._failed = True
    done = [s for s in self.all_steps() if s != step]
    previous = f"step {max(done)}" if done else "none"
    return CheckpointWriteError(
        getattr(e, "errno", None),
        f"could not write checkpoint step {step} to {self.directory} ({_one_line(e)}); "
        f"the previous checkpoint ({previous}) is intact; free space and rerun to resume from it")

  def _settle(self) -> None:
    """Waits for the in-flight save; a failure in it becomes a CheckpointWriteError."""
    step, self._pending = self._pending, None
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:  # orbax re-raises the background thread's error here
      if step is None:
        raise
      raise self._write_error(step, e) from e

  def save(self, step: int, state: TrainState, iterator: Any | None) -> None:
    """Starts saving `state` (and the iterator's current state) as checkpoint `step`.

    The array write continues in the background; `wait()` blocks until it is done.
    Raises CheckpointWriteError if this save, or the previous one still in flight, fails.
    """
    self._settle()
    items = {"state": ocp.args.StandardSave(state),
             "fingerprint": ocp.args.JsonSave(fingerprint(state))}
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(iterator)
    self._pending = step
    try:
      self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    except Exception as e:
      self._pending = None
      raise self._write_error(step, e) from e

  def restore(self, abstract: TrainState, iterator: Any | None = None,
              step: int | None = None) -> TrainState:
    """Returns the TrainState of checkpoint `step` (default: latest), placed as `abstract`.

    abstract: tree of ShapeDtypeStructs carrying the target shardings. If
    `iterator` is given, its position is restored in place from the same step.
    Raises whatever orbax raises on an unreadable checkpoint, or CheckpointCorruptError
    if the restored state's fingerprint differs from the saved one.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {"state": ocp.args.StandardRestore(abstract)}
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    checked = os.path.isdir(os.path.join(self.directory, str(step), "fingerprint"))
    if checked:  # checkpoints written before fingerprints existed restore unchecked
      items["fingerprint"] = ocp.args.JsonRestore()
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    if checked:
      bad = first_mismatch(restored["fingerprint"], fingerprint(restored["state"]))
      if bad is not None:
        raise CheckpointCorruptError(
            f"checkpoint step {step}: {bad} restored with a different checksum than was saved")
    return restored["state"]

  def restore_latest(self, abstract: TrainState, iterator: Any | None = None, *,
                     fallback: bool = True) -> tuple[int | None, TrainState | None]:
    """(step, state) of the newest checkpoint that restores; (None, None) if there is none.

    With `fallback`, a checkpoint that fails to restore is reported (a warning naming
    its step and the exception) and the next older one is tried; once one restores, the
    newer unreadable ones are moved to WORKDIR/checkpoints_unreadable/<step>-<time>, so
    the run can write those steps again. If none restores (e.g. the config no longer
    matches them), nothing is moved and NoRestorableCheckpointError lists them. Without
    `fallback`, the first error is raised.
    """
    failed, failures = [], []
    for step in reversed(self.all_steps()):
      try:
        state = self.restore(abstract, iterator, step=step)
      except Exception as e:
        if not fallback:
          raise
        failed.append(step)
        failures.append(f"step {step} ({type(e).__name__})")
        mt.log(f"WARNING: checkpoint step {step} in {self.directory} could not be restored "
               f"({_one_line(e)}); trying the previous one")
        continue
      for bad in failed:
        self._set_aside(bad)
      return step, state
    if failures:
      raise NoRestorableCheckpointError(
          f"no checkpoint in {self.directory} could be restored: {', '.join(failures)}; "
          f"nothing was moved (see the warnings above for each error)")
    return None, None

  def _set_aside(self, step: int) -> None:
    """Moves checkpoint `step` to WORKDIR/checkpoints_unreadable/ (process 0) and forgets it."""
    if jax.process_index() == 0:
      target = os.path.join(self.workdir, UNREADABLE_DIR, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"attnlab-set-aside-{step}")
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until every pending save is on disk; raises CheckpointWriteError if one failed."""
    self._settle()

  def close(self) -> None:
    """Waits for pending saves and releases the manager's resources.

    Raises CheckpointWriteError for a failed save not reported yet; after one was
    reported it only releases resources.
    """
    try:
      if not self._failed:
        self._settle()
    finally:
      try:
        self._manager.close()
      except Exception:  # a write error already raised above or before
        if not self._failed:
          raise
