"""Shared fixtures for task tests."""

import ml_collections
import pytest

from attnlab.tasks import default_task_config


def _make_config(name, batch_size=4, eval_batches=2, **task):
  """A minimal full config for task `name`: seed, task (defaults + overrides), train."""
  return ml_collections.ConfigDict({
      "seed": 0,
      "task": {**default_task_config(name).to_dict(), **task},
      "train": {"batch_size": batch_size, "eval_batches": eval_batches},
  })


@pytest.fixture
def make_config():
  """`make_config(name, batch_size=4, eval_batches=2, **task_overrides) -> ConfigDict`."""
  return _make_config
