"""Checks a run's config before anything compiles, so bad input is one clear line."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def validate_run(config):
  """Builds the task and model and traces (not compiles) the model's init.

  Raises a one-line ValueError / KeyError / FileNotFoundError for: an unknown task or
  variant (listing registered names), heads that do not divide, a missing data file,
  variant hyperparameters no layer takes, a mesh that does not fit the devices.
  Returns (task, model).
  """
  from attnlab.models import build_model
  from attnlab.tasks import build_task

  task = build_task(config)
  task.validate()
  model = build_model(config.model, vocab_size=task.vocab_size, max_len=task.seq_len)
  check_mesh(config.mesh, jax.device_count())
  tokens = jax.ShapeDtypeStruct((1, task.seq_len), jnp.int32)
  jax.eval_shape(lambda t: model.init(jax.random.key(0), t), tokens)
  return task, model


def check_mesh(mesh_cfg, num_devices: int) -> None:
  """config.mesh (data, fsdp, tensor; one may be -1) must multiply to the device count."""
  sizes = {k: int(mesh_cfg[k]) for k in ("data", "fsdp", "tensor")}
  unknown = sorted(set(mesh_cfg.keys()) - set(sizes) - {"rules"})
  if unknown:
    raise ValueError(f"unknown mesh axes {unknown}; config.mesh has data, fsdp, tensor")
  free = [k for k, v in sizes.items() if v == -1]
  fixed = 1
  for k, v in sizes.items():
    if v != -1:
      if v < 1:
        raise ValueError(f"config.mesh.{k} must be >= 1 or -1, got {v}")
      fixed *= v
  if len(free) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {free}")
  if (free and num_devices % fixed) or (not free and fixed != num_devices):
    raise ValueError(f"mesh {sizes} does not fit {num_devices} device(s)")
