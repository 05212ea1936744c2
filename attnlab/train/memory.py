"""Per-device bytes of the train state, read from the compiled train step.

FSDP's promise is that each device holds 1/N of the parameters and optimizer state under
fsdp=N. `state_bytes(config)` checks it where it is decided: it lowers and compiles the
trainer's own jitted train step at abstract shapes (nothing runs, no array is allocated)
and reads the shardings the compiled program takes its state in.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from attnlab.train.trainer import jitted_train_step, setup


def tree_bytes(abstract: Any, shardings: Any) -> tuple[int, int]:
  """(bytes one device holds, bytes of the whole tree) for matching trees of
  ShapeDtypeStructs (or arrays) and Shardings; per device is the largest shard's bytes
  (shards are even, so every device holds as much)."""
  leaves = jax.tree.leaves(abstract)
  shard_leaves = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
  if len(leaves) != len(shard_leaves):
    raise ValueError(f"tree_bytes: {len(leaves)} arrays but {len(shard_leaves)} shardings")
  per_device = total = 0
  for leaf, sharding in zip(leaves, shard_leaves):
    itemsize = np.dtype(leaf.dtype).itemsize
    per_device += math.prod(sharding.shard_shape(tuple(leaf.shape))) * itemsize
    total += math.prod(leaf.shape) * itemsize
  return per_device, total


def state_bytes(config: Any, task: Any = None, model: nn.Module | None = None) -> dict[str, int]:
  """Compiles `config`'s train step on its mesh and returns the train state's bytes.

  Returns {"params_per_device", "params_total", "opt_state_per_device", "opt_state_total",
  "arguments_per_device"}: the first four from the compiled program's input shardings of
  `state.params` and `state.opt_state` (per device: what one device holds; total: the
  unsharded size), the last from XLA's `memory_analysis()` (every argument of the step on
  one device: state and batch). `task` / `model` as in `trainer.setup`.
  """
  run = setup(config, task, model)
  batch = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=run.batch_sharding),
                       run.input_spec)
  with jax.set_mesh(run.mesh), nn.logical_axis_rules(run.rules):
    compiled = jitted_train_step(run).lower(run.abstract, batch).compile()
  state_shardings = compiled.input_shardings[0][0]
  params = tree_bytes(run.abstract.params, state_shardings.params)
  opt_state = tree_bytes(run.abstract.opt_state, state_shardings.opt_state)
  return {"params_per_device": params[0], "params_total": params[1],
          "opt_state_per_device": opt_state[0], "opt_state_total": opt_state[1],
          "arguments_per_device": int(compiled.memory_analysis().argument_size_in_bytes)}
