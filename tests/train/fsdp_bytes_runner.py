"""Subprocess entry: `python -m tests.train.fsdp_bytes_runner '<json list of meshes>'`.

Each entry is {"mesh": {...}, "rules": optional logical-rule override}; for each it prints
`RESULT <json>` with the stand-in model's compiled per-device and total state bytes
(`attnlab.train.memory.state_bytes`) on that mesh.
"""

from __future__ import annotations

import json
import sys

from attnlab.train.memory import state_bytes
from tests.train.standins import build_standins, standin_config


def main(argv: list[str]) -> None:
  """Prints one RESULT line per mesh of the JSON list in argv[1]."""
  for entry in json.loads(argv[1]):
    config = standin_config()
    config.model.update(d_model=64, mlp_dim=128)  # the replicated norm scales stay a small part
    config.mesh.update(entry["mesh"])
    if entry.get("rules") is not None:
      config.mesh.rules = entry["rules"]
    task, model = build_standins(config)
    print("RESULT " + json.dumps(dict(entry, **state_bytes(config, task, model))), flush=True)


if __name__ == "__main__":
  main(sys.argv)
