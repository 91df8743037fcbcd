"""Tasks: what is learned from a take, one registered object per kind (`tasks/base.py`).

Add a task: one file in this package ending in ``register_task(...)``, plus one import line
below; every stage then finds it by the name a store records.
"""

# One line per task: importing its file registers it.
# isort: off
from skill.tasks import classification  # noqa: F401
from skill.tasks import demonstration  # noqa: F401
from skill.tasks import ordinal  # noqa: F401
from skill.tasks import pairwise  # noqa: F401
from skill.tasks import regression  # noqa: F401

# isort: on
from skill.tasks.base import TargetError, TargetSpec, Task, encode_all
from skill.tasks.registry import (
    DEFAULT_TASK,
    UnknownTask,
    all_monitors,
    get_task,
    register_task,
    resolve_monitor,
    store_target,
    task_names,
    task_record,
)

__all__ = [
    "DEFAULT_TASK", "Task", "all_monitors", "resolve_monitor", "TargetError", "TargetSpec", "UnknownTask", "encode_all", "get_task",
    "register_task", "store_target", "task_names", "task_record",
]  # fmt: skip
