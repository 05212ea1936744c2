"""Checkpoints in WORKDIR/checkpoints: train state and data-iterator state, together.

One orbax `CheckpointManager` step directory `checkpoints/<step>/` holds two items:

  state/  the TrainState (params, opt_state, step), saved asynchronously by orbax's
          StandardCheckpointHandler (each process writes its own shards);
  data/   the grain iterator's state, `process_<i>-of-<n>.json` per process, via
          grain's orbax handler (`grain.checkpoint.CheckpointSave`). It is written
          synchronously inside `save`, so it is the state *at* this step even though
          the arrays finish writing in the background.

Orbax writes into a temporary directory and renames it when every item is complete,
so a run killed mid-save leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import grain.checkpoint  # noqa: F401  (registers grain's orbax handler)
import orbax.checkpoint as ocp

from attnlab.train.state import TrainState


class Checkpointer:
  """Saves and restores (TrainState, grain iterator) pairs under `workdir/checkpoints`."""

  def __init__(self, workdir: str, *, keep: int | None = 3, async_save: bool = True):
    """keep: how many most recent checkpoints to keep (None or <= 0 keeps all)."""
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep if keep and keep > 0 else None, create=True,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """Returns the step of the newest complete checkpoint, or None if there is none."""
    return self._manager.latest_step()

  def save(self, step: int, state: TrainState, iterator: Any | None) -> None:
    """Starts saving `state` (and the iterator's current state) as checkpoint `step`.

    The array write continues in the background; `wait()` blocks until it is done.
    """
    items = {"state": ocp.args.StandardSave(state)}
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract: TrainState, iterator: Any | None = None,
              step: int | None = None) -> TrainState:
    """Returns the TrainState of checkpoint `step` (default: latest), placed as `abstract`.

    abstract: tree of ShapeDtypeStructs carrying the target shardings. If
    `iterator` is given, its position is restored in place from the same step.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    items = {"state": ocp.args.StandardRestore(abstract)}
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def wait(self) -> None:
    """Blocks until every pending save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager's resources."""
    self._manager.wait_until_finished()
    self._manager.close()
