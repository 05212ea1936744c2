"""Logical axis rules and the shardings of parameters, optimizer state and batches.

Modules name their array axes logically ("batch", "embed", "heads", ...) with
`nn.with_logical_partitioning` / `nn.with_logical_constraint`; the rules here map
those names onto the mesh axes (data, fsdp, tensor). `config.mesh.rules`, when
present, replaces the models' defaults (`attnlab.models.partitioning.DEFAULT_RULES`): a list
of `(logical_name, mesh_axis_or_axes_or_None)`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from attnlab.models.partitioning import DEFAULT_RULES

BATCH_AXES = ("data", "fsdp")


def _as_mesh_axes(value: Any) -> Any:
  """Normalises one rule's right-hand side to None, a str or a tuple of str."""
  if value is None or isinstance(value, str):
    return value
  return tuple(value)


def logical_rules(config: Any) -> tuple[tuple[str, Any], ...]:
  """Returns the logical axis rules: `config.mesh.rules` if set, else DEFAULT_RULES.

  Each rule is `(logical_name, mesh_axes)` with mesh_axes None, one mesh axis name
  or a tuple of them. Raises a one-line ValueError on a malformed override.
  """
  mesh_cfg = config.get("mesh", None) if hasattr(config, "get") else None
  rules = mesh_cfg.get("rules", None) if mesh_cfg is not None else None
  if rules is None:
    return DEFAULT_RULES
  out = []
  for rule in rules:
    if len(rule) != 2 or not isinstance(rule[0], str):
      raise ValueError(f"config.mesh.rules: each rule must be (logical_name, mesh_axes), got {rule!r}")
    out.append((rule[0], _as_mesh_axes(rule[1])))
  return tuple(out)


def tree_shardings(abstract_boxed: Any, mesh: Mesh, rules) -> Any:
  """Returns NamedShardings (unboxed structure) for a tree of boxed abstract arrays.

  `abstract_boxed` is the `jax.eval_shape` of an init function whose params are
  `nn.LogicallyPartitioned`; unannotated leaves are replicated.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def fit_shardings(abstract: Any, shardings: Any, logical: Any = None) -> tuple[Any, list[str]]:
  """Replicates array dims that their mesh axes do not divide; returns (shardings, notes).

  `abstract` is an unboxed tree of ShapeDtypeStructs, `shardings` the matching tree
  of NamedShardings and `logical` (optional) the matching logical PartitionSpecs.
  JAX needs evenly divisible shardings, so a dim like MQA's single kv head under
  tensor=2 (or an output layer of 37 units under tensor=2) is kept whole on every device
  instead, which is the standard layout (Megatron replicates kv heads when
  kv_heads < tensor). Each such change is described in one line of `notes`, for the
  trainer to log; nothing is dropped silently.
  """
  is_spec = lambda x: isinstance(x, (NamedSharding, P))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  shard_leaves = jax.tree.leaves(shardings, is_leaf=is_spec)
  logical_leaves = (jax.tree.leaves(logical, is_leaf=is_spec) if logical is not None
                    else [None] * len(leaves))
  fitted, notes = [], []
  for (path, leaf), sharding, names in zip(leaves, shard_leaves, logical_leaves):
    spec = list(tuple(sharding.spec) + (None,) * (len(leaf.shape) - len(sharding.spec)))
    for dim, (size, axes) in enumerate(zip(leaf.shape, list(spec))):
      if axes is None:
        continue
      parts = math.prod(sharding.mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
      if size % parts:
        spec[dim] = None
        name = names[dim] if names is not None and dim < len(names) else None
        notes.append(
            f"replicating dim {dim} of {jax.tree_util.keystr(path)} {tuple(leaf.shape)}"
            + (f" (logical axis {name!r})" if name else "")
            + f": {size} is not divisible by mesh axes {axes} ({parts})")
    fitted.append(NamedSharding(sharding.mesh, P(*spec)) if spec != list(
        tuple(sharding.spec) + (None,) * (len(leaf.shape) - len(sharding.spec))) else sharding)
  return jax.tree_util.tree_unflatten(treedef, fitted), notes


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Returns the sharding of a batch: leading (batch) dim split over (data, fsdp)."""
  return NamedSharding(mesh, P(BATCH_AXES))


def batch_shards(mesh: Mesh) -> int:
  """Returns how many ways the batch dim is split (data * fsdp)."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def put_batch(batch: Any, sharding: NamedSharding) -> Any:
  """Places a host batch on the mesh: a pytree of numpy [B, ...] -> the same of global jax.Arrays.

  Each process passes its own rows (with one process, the whole global batch);
  `jax.make_array_from_process_local_data` assembles the global arrays.
  """
  return jax.tree.map(lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)), batch)
