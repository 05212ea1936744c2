"""Saving and restoring a grain training iterator, with orbax or as plain JSON.

grain 0.2.18 ships an orbax handler, `grain.checkpoint.CheckpointHandler`, with
the orbax args `grain.checkpoint.CheckpointSave(item=iterator)` and
`grain.checkpoint.CheckpointRestore(item=iterator)` registered for it, so an
orbax `CheckpointManager` can hold the iterator beside the train state:

  mngr.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=iterator_save_args(it)))
  restored = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=iterator_restore_args(it)))
  it = restored[DATA_ITEM]   # the same object, its state set in place

The handler writes `<step>/data/process_<i>-of-<n>.json` (one file per host, the
JSON of `it.get_state()`, e.g. `{"next_index": 1234}`). Restore sets the state
on the iterator you pass (build it first with `task.train_iterator()`).
"""

from __future__ import annotations

import json
from typing import Any

import grain

DATA_ITEM = "data"  # suggested name of the iterator's item in an orbax Composite


def iterator_save_args(iterator: grain.DatasetIterator) -> Any:
  """orbax save args for `iterator`: `grain.checkpoint.CheckpointSave(item=iterator)`."""
  return grain.checkpoint.CheckpointSave(item=iterator)


def iterator_restore_args(iterator: grain.DatasetIterator) -> Any:
  """orbax restore args that set the saved state on `iterator` in place."""
  return grain.checkpoint.CheckpointRestore(item=iterator)


def iterator_state_json(iterator: grain.DatasetIterator) -> str:
  """The iterator's state as a JSON string (what the orbax handler writes)."""
  return json.dumps(iterator.get_state())


def restore_iterator_state_json(iterator: grain.DatasetIterator, state: str) -> grain.DatasetIterator:
  """Sets a state from `iterator_state_json` on `iterator` and returns it."""
  iterator.set_state(json.loads(state))
  return iterator
