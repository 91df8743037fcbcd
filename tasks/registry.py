"""The registry of tasks: a task file ends in ``register_task(...)``; the package imports
every task file (``tasks/__init__.py``), so every registered task is known once ``skill.tasks``
is imported."""

from __future__ import annotations

from skill.errors import ConfigError, SkillError
from skill.tasks.base import Task

DEFAULT_TASK = "classification"

_TASKS: dict[str, Task] = {}


class UnknownTask(SkillError, KeyError):
    """A task name that no registered task has."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_task(task: Task) -> Task:
    """Make ``task`` known by its name (a later registration of a name replaces it)."""
    _TASKS[task.name] = task
    return task


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown name is refused with the known ones."""
    try:
        return _TASKS[name]
    except KeyError:
        raise UnknownTask(
            f"{name!r} is not a task this skill knows; choose from {', '.join(task_names())}"
        ) from None


def task_record(name: str, schema: dict) -> dict:
    """What a store records of its task: its name, its schema and how it stores targets."""
    task = get_task(name)
    return {"name": name, "schema": schema, "target": task.target_spec(schema).record()}


def store_target(record: dict, value):
    """A manifest's target as a store with task ``record`` holds it."""
    return get_task(record["name"]).encode(value, record["schema"])


def all_monitors() -> tuple[str, ...]:
    """Every validation score some registered task can pick its best epoch by."""
    return tuple(dict.fromkeys(m for name in task_names() for m in get_task(name).monitors))


def resolve_monitor(task: Task, monitor: str | None) -> str:
    """``monitor`` (None: the task's first) checked to be one of ``task``'s."""
    chosen = monitor or task.monitors[0]
    if chosen not in task.monitors:
        raise ConfigError(
            f"--monitor {chosen} is not a validation score of task {task.name}; choose from "
            f"{', '.join(task.monitors)}"
        )
    return chosen
