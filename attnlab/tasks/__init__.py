"""Tasks: data + loss + metrics behind one interface, registered by name in TASKS."""

from attnlab.tasks.base import Task
from attnlab.tasks.registry import TASKS, build_task, default_task_config, register_task
from attnlab.tasks import char_lm as _char_lm  # noqa: F401  (registers char_lm)
from attnlab.tasks import synthetic as _synthetic  # noqa: F401  (registers the synthetic tasks)
from attnlab.tasks import listops as _listops  # noqa: F401  (registers listops)
from attnlab.tasks import text_classification as _text_classification  # noqa: F401  (registers text_classification)
from attnlab.tasks import forecast as _forecast  # noqa: F401  (registers forecast)
from attnlab.tasks import vision as _vision  # noqa: F401  (registers vision)
from attnlab.tasks import icl_regression as _icl_regression  # noqa: F401  (registers icl_regression)

__all__ = ["TASKS", "Task", "build_task", "default_task_config", "register_task"]
