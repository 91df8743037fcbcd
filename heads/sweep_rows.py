"""The keys of a sweep's table rows that depend on the task: its headline metric per seed and
its baseline (classification: ``val_top1_seeds``, ``val_majority_top1``)."""

from __future__ import annotations

from skill.tasks import DEFAULT_TASK, Task, get_task


def seeds_key(row: dict, split: str) -> str:
    """The row's key of the headline metric per seed (classification: ``val_top1_seeds``)."""
    return f"{split}_{row['headline']}_seeds"


def baseline_key(row: dict, split: str) -> str:
    """The row's key of the baseline's headline metric (``val_majority_top1``)."""
    return f"{split}_{row['baseline']}_{row['headline']}"


def rows_task(rows: list[dict]) -> Task:
    """The task of a sweep's rows (every row has the same)."""
    return get_task(rows[0]["task"]) if rows else get_task(DEFAULT_TASK)
