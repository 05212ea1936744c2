"""The one trainer for every task: mesh/sharding, train/eval steps, checkpoints, metrics.

`train(config, workdir) -> dict` trains (resuming from WORKDIR's latest checkpoint)
and returns the final eval metrics; `evaluate(config, workdir) -> dict` restores the
latest checkpoint and evaluates it.
"""

from attnlab.train.mesh import MESH_AXES, initialize_distributed, make_mesh, mesh_shape
from attnlab.train.sharding import DEFAULT_RULES, logical_rules
from attnlab.train.trainer import evaluate, train

__all__ = ["train", "evaluate", "make_mesh", "mesh_shape", "initialize_distributed", "MESH_AXES",
           "DEFAULT_RULES", "logical_rules"]
