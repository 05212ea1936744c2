"""Checks a run's config before anything compiles, so bad input is one clear line."""

from __future__ import annotations


def validate_run(config):
  """Builds and checks everything a run needs, compiling nothing; returns the prepared run.

  Raises a one-line ValueError / KeyError / FileNotFoundError for: an unknown task or
  variant (listing registered names), heads that do not divide, a missing data file,
  variant hyperparameters no layer takes, a mesh that does not fit the devices, a batch
  the mesh cannot split. (The model's init is traced by `jax.eval_shape`, not compiled.)
  """
  from attnlab.train.trainer import setup
  return setup(config)
