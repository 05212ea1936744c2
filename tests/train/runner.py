"""Subprocess entry for trainer tests: `python -m tests.train.runner '<json spec>'`.

spec: {"runs": [{"workdir": str, "mesh": {...}, "train": {...}, "task": {...},
                 "report_specs": bool}]}.
Each run trains the stand-in task/model (tests/train/standins.py) with those config
overrides and prints one line `RESULT <json>` holding the returned eval metrics and,
with "report_specs", the parameters' mesh PartitionSpecs (as lists) that train used.
"""

from __future__ import annotations

import json
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


def run_one(run: dict) -> dict:
  """Trains one stand-in run; returns {"result", "devices"} (+ "specs", "array_specs", "shard_shapes")."""
  config = standin_config(**run.get("train", {}))
  config.mesh.update(run.get("mesh", {}))
  config.task.update(run.get("task", {}))
  task, model = build_standins(config)
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
