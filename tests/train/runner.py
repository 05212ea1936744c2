"""Subprocess entry for trainer tests: `python -m tests.train.runner '<json spec>'`.

spec: {"runs": [{"workdir": str, "mesh": {...}, "train": {...}, "task": {...},
                 "report_specs": bool, "enospc_at": int}]}.
Each run trains the stand-in task/model (tests/train/standins.py) with those config
overrides and prints one line `RESULT <json>` holding the returned eval metrics and,
with "report_specs", the parameters' mesh PartitionSpecs (as lists) that train used.
With "enospc_at": K, every file write into checkpoint K's directory fails with ENOSPC
(`enospc_during_save`), as on a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys

import jax

from attnlab.train import trainer
from attnlab.train.state import init_state
from tests.train.standins import build_standins, standin_config


def _spec_lists(shardings) -> dict[str, list]:
  """{param path: PartitionSpec as a list of None / str / [str]}."""
  flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
  return {jax.tree_util.keystr(p): [list(a) if isinstance(a, tuple) else a for a in s.spec]
          for p, s in flat}


@contextlib.contextmanager
def enospc_during_save(step: int):
  """Within the block, opening any file for writing inside checkpoint `step`'s directory
  (orbax's temporary `<step>.orbax-checkpoint-tmp-*` or the final `<step>`) raises
  OSError(ENOSPC): etils' epath `open`, through which orbax's JSON metadata and grain's
  iterator state are written, is patched."""
  from etils.epath import gpath
  original = gpath._GPath.open  # pylint: disable=protected-access

  def guarded(self, mode="r", *args, **kwargs):
    parts = os.fspath(self).split(os.sep)
    if any(c in mode for c in "wax") and any(
        p == str(step) or p.startswith(f"{step}.orbax-checkpoint-tmp") for p in parts):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))
    return original(self, mode, *args, **kwargs)

  gpath._GPath.open = guarded  # pylint: disable=protected-access
  try:
    yield
  finally:
    gpath._GPath.open = original  # pylint: disable=protected-access


def run_one(run: dict) -> dict:
  """Trains one stand-in run; returns {"result", "devices"} (+ "specs", "array_specs", "shard_shapes")."""
  config = standin_config(**run.get("train", {}))
  config.mesh.update(run.get("mesh", {}))
  config.task.update(run.get("task", {}))
  task, model = build_standins(config)
  full_disk = enospc_during_save(run["enospc_at"]) if run.get("enospc_at") else contextlib.nullcontext()
  with full_disk:
    result = trainer.train(config, run["workdir"], task=task, model=model)
  if not run.get("report_specs"):
    return {"result": result, "devices": jax.device_count()}
  setup = trainer.setup(config, task, model)  # the shardings train() used
  state = init_state(setup.init_fn, setup.shardings, setup.rules)
  return {"result": result, "specs": _spec_lists(setup.shardings.params),
          "array_specs": _spec_lists(jax.tree.map(lambda x: x.sharding, state.params)),
          "shard_shapes": {jax.tree_util.keystr(p): list(x.sharding.shard_shape(x.shape))
                           for p, x in jax.tree_util.tree_flatten_with_path(state.params)[0]},
          "devices": jax.device_count()}


def main(argv: list[str]) -> None:
  """Runs every run of the JSON spec in argv[1], printing one RESULT line each."""
  spec = json.loads(argv[1])
  for run in spec["runs"]:
    print("RESULT " + json.dumps(run_one(run)), flush=True)


if __name__ == "__main__":
  main(sys.argv)
