"""The device mesh, made from config data: `config.mesh.{data, fsdp, tensor}`.

Axis order is always (data, fsdp, tensor); one entry may be -1, meaning "all the
devices the other axes leave". Meshes use `AxisType.Auto` so that Flax's logical
axis rules (not explicit-sharding types) decide where arrays live.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(mesh_config: Any, num_devices: int) -> tuple[int, int, int]:
  """Returns the (data, fsdp, tensor) sizes for `num_devices` devices.

  `mesh_config` has optional int fields `data` (default -1), `fsdp` (default 1)
  and `tensor` (default 1); at most one may be -1 and is filled with the rest.
  Raises a one-line ValueError if the sizes are invalid or their product is not
  `num_devices`.
  """
  get = mesh_config.get if hasattr(mesh_config, "get") else lambda k, d: getattr(mesh_config, k, d)
  sizes = [int(get(name, -1 if name == "data" else 1)) for name in MESH_AXES]
  fill = [i for i, s in enumerate(sizes) if s == -1]
  bad = [(n, s) for n, s in zip(MESH_AXES, sizes) if s == 0 or s < -1]
  if bad or len(fill) > 1:
    raise ValueError(
        f"config.mesh: sizes must be positive with at most one -1, got "
        f"{dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if fill:
    if num_devices % known:
      raise ValueError(
          f"config.mesh: {dict(zip(MESH_AXES, sizes))} cannot fill {num_devices} devices "
          f"({num_devices} is not divisible by {known})")
    sizes[fill[0]] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(
        f"config.mesh: data*fsdp*tensor = {math.prod(sizes)} "
        f"({dict(zip(MESH_AXES, sizes))}) but there are {num_devices} devices")
  return tuple(sizes)


def make_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Returns a `Mesh` with axes (data, fsdp, tensor), all `AxisType.Auto`.

  Uses every device of `jax.devices()` unless `devices` is given. With the
  default devices it goes through `jax.make_mesh` (topology-aware device order);
  with explicit devices it lays them out in the order given.
  """
  if devices is None:
    shape = mesh_shape(mesh_config, jax.device_count())
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
  devices = list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  return Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))


def initialize_distributed() -> bool:
  """Starts `jax.distributed` for a multi-process launch; returns whether it did.

  Call it first thing in a launcher (before any other JAX call). It acts when
  `JAX_COORDINATOR_ADDRESS` (host:port of process 0) is set, with `JAX_NUM_PROCESSES`
  and `JAX_PROCESS_ID` (jax itself reads only the address; these two are read here,
  as `scripts/launch_local.sh` sets them), or when `ATTNLAB_MULTIHOST=1` (cluster
  auto-detection: TPU pods, SLURM, ...). Otherwise it is a no-op, so single-process
  runs need nothing. CPU processes exchange collectives over gloo (on GPU/TPU the
  setting is unused). Raises a one-line ValueError if only one of the two counts is set.
  """
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not address and os.environ.get("ATTNLAB_MULTIHOST") != "1":
    return False
  counts = {k: os.environ.get(k) for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID")}
  if (counts["JAX_NUM_PROCESSES"] is None) != (counts["JAX_PROCESS_ID"] is None):
    raise ValueError(f"multi-process launch: set both JAX_NUM_PROCESSES and JAX_PROCESS_ID, got {counts}")
  kwargs = {}
  if counts["JAX_NUM_PROCESSES"] is not None:
    kwargs = dict(num_processes=int(counts["JAX_NUM_PROCESSES"]),
                  process_id=int(counts["JAX_PROCESS_ID"]))
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(address or None, **kwargs)
  return True
