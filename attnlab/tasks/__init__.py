"""Tasks: data + loss + metrics behind one interface, registered by name in TASKS."""

from attnlab.tasks.base import Task
from attnlab.tasks.registry import TASKS, build_task, default_task_config, register_task
from attnlab.tasks import char_lm as _char_lm  # noqa: F401  (registers char_lm)
from attnlab.tasks import synthetic as _synthetic  # noqa: F401  (registers the synthetic tasks)

__all__ = ["TASKS", "Task", "build_task", "default_task_config", "register_task"]
