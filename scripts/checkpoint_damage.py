"""Damages to a finished orbax checkpoint, for scripts/fault_injection.py's corrupt/* cases.

Each takes a checkpoint's step directory (CHECKPOINTS/STEP with items state/ and data/) and
damages it in place: a bit flip orbax restores silently (to different values), a truncated
array file orbax refuses, a missing item. Returns the damaged path.
"""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np


def _restored_bytes(state_dir: str) -> dict[str, bytes] | None:
  """{leaf: bytes} of orbax's StandardCheckpointer restore of `state_dir`; None if it raises."""
  import orbax.checkpoint as ocp
  try:
    return {k: v.tobytes() for k, v in flat_leaves(ocp.StandardCheckpointer().restore(state_dir)).items()}
  except Exception:  # noqa: BLE001  (any failure to restore counts)
    return None


def _damage_one_file(step_dir: str, damages, wanted) -> str:
  """Applies each of `damages` (bytes -> bytes) to the data files under `step_dir`/state/,
  largest first, until `wanted(before, after)` holds for orbax's raw restore (`before`,
  `after`: `_restored_bytes`), putting the original bytes back otherwise. OCDBT files also
  hold bytes no array reads, so not every file and offset qualifies. Returns the path."""
  state_dir = os.path.join(step_dir, "state")
  before = _restored_bytes(state_dir)
  files = [f for f in glob.glob(os.path.join(state_dir, "**", "d", "*"), recursive=True) if os.path.isfile(f)]
  for path in sorted(files, key=os.path.getsize, reverse=True):
    with open(path, "rb") as f:
      original = f.read()
    for damage in damages:
      with open(path, "wb") as f:
        f.write(damage(original))
      if wanted(before, _restored_bytes(state_dir)):
        return path
      with open(path, "wb") as f:
        f.write(original)
  raise RuntimeError(f"no data file in {state_dir} can be damaged that way")


def _flip_bit_at(frac: float):
  """bytes -> the same bytes with bit 4 of the byte at `frac` of the length flipped."""
  def damage(b: bytes) -> bytes:
    i = int(len(b) * frac)
    return b[:i] + bytes([b[i] ^ 0x10]) + b[i + 1:]
  return damage


def silently_corrupt(step_dir: str) -> str:
  """Flips one bit of one array file of checkpoint `step_dir` such that orbax's
  StandardCheckpointer still restores it without error, to different values; returns its path.

  Measured on the stand-in's checkpoints: array bytes sit in the first half of OCDBT data
  files (flips at 1/16 .. 7/16 of a file go unnoticed, the rest hits unread bytes or a
  checksummed b-tree node), so positions 1/32 .. 16/32 are tried."""
  return _damage_one_file(step_dir, [_flip_bit_at(i / 32) for i in range(1, 17)],
                          lambda before, after: after is not None and after != before)


def flat_leaves(tree) -> dict[str, np.ndarray]:
  """{jax key path: numpy array} of every leaf of `tree`."""
  import jax
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def truncate_array_file(step_dir: str) -> str:
  """Truncates one data file of checkpoint `step_dir` (to an eighth, else to nothing) such that
  orbax's StandardCheckpointer fails to restore it; returns its path."""
  return _damage_one_file(step_dir, [lambda b: b[:len(b) // 8], lambda b: b""],
                          lambda before, after: after is None)


def remove_item(step_dir: str, item: str = "data") -> str:
  """Deletes the item directory `item` (default the data iterator's) of a checkpoint."""
  path = os.path.join(step_dir, item)
  shutil.rmtree(path)
  return path


CORRUPTIONS = {"garbage_bytes": silently_corrupt, "truncated_file": truncate_array_file,
               "missing_item": remove_item}
