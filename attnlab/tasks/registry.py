"""The task registry: `TASKS`, `register_task` and `build_task(config)`."""

from __future__ import annotations

from typing import Callable, TypeVar

from attnlab.registry import Registry

TASKS = Registry("task")

T = TypeVar("T", bound=type)


def register_task(name: str) -> Callable[[T], T]:
  """Class decorator: registers a Task subclass under `name` and sets `cls.name = name`."""

  def decorator(cls: T) -> T:
    """Sets cls.name and adds cls to TASKS."""
    cls.name = name
    return TASKS.add(name, cls)

  return decorator


def build_task(config):
  """Returns `TASKS.get(config.task.name)(config)` for the full ml_collections config.

  An unknown name raises `attnlab.registry.UnknownNameError` listing the
  registered tasks. Nothing is loaded or checked here: call `task.validate()`.
  """
  return TASKS.get(config.task.name)(config)


def default_task_config(name: str):
  """Returns the ConfigDict of `config.task` defaults (with `name`) for task `name`."""
  return TASKS.get(name).default_config()
