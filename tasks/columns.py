"""A task's targets as columns of a table: an export's take table, `skill info`'s counts, a
prediction file's truth. The columns come from how the task states a target in a manifest
(`Task.decode`), so that no stage needs to know the task: a target stated as one value is one
column named by the task's target array (classification's ``label``), one stated as an object
is a column ``<array>_<key>`` per entry (regression's ``score_<name>``, as the csv manifest
format names them). A column holds text (levels: counted) or numbers (scores: ranged).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from skill.errors import SkillError
from skill.tasks.base import Task

UNLABELLED = "(unlabelled)"


class UntabledTargets(SkillError, ValueError):
    """A task whose targets are stated as something no column holds (a list, a nested
    object)."""


@dataclass(frozen=True)
class TargetColumn:
    """One column holding (part of) each take's target."""

    name: str
    """The column's name (``label``, ``score_<name>``)."""
    key: str | None
    """The entry of a target stated as an object (a score's name); None: the whole target."""
    number: bool
    """Numbers (None where a take has none), else text."""


def target_columns(task: Task, schema: dict) -> list[TargetColumn]:
    """The columns of ``task``'s targets of ``schema`` (see the module docstring), read from
    how the task states a target that is present (its stored lower bound, else 0)."""
    spec = task.target_spec(schema)
    low = spec.low if spec.low is not None else 0
    stated = task.decode(np.full((1, *spec.shape), low, dtype=spec.dtype), schema)[0]
    if isinstance(stated, dict):
        columns = [
            TargetColumn(f"{spec.array}_{key}", key, _is_number(value))
            for key, value in stated.items()
        ]
    else:
        columns = [TargetColumn(spec.array, None, _is_number(stated))]
    if not all(_is_number(v) or isinstance(v, str) for v in _values(stated)):
        raise UntabledTargets(
            f"task {task.name} states a target as {stated!r}, which no column holds; a table "
            "holds targets stated as one value or an object of values"
        )
    return columns


def column_values(task: Task, schema: dict, stored: np.ndarray) -> dict[str, list]:
    """Column name -> ``(n,)`` values of the stored targets ``(n, *shape)``: text or number,
    None where a take has none."""
    stated = task.decode(stored, schema)
    return {
        column.name: [
            None if value is None else value if column.key is None else value.get(column.key)
            for value in stated
        ]
        for column in target_columns(task, schema)
    }


def stated_target(task: Task, schema: dict, cells: dict[str, object]):
    """A take's target as a manifest states it from its cells (column name -> text or number,
    None where empty): what `column_values` took apart."""
    columns = target_columns(task, schema)
    if len(columns) == 1 and columns[0].key is None:
        return cells[columns[0].name]
    values = {column.key: cells[column.name] for column in columns}
    return None if all(value is None for value in values.values()) else values


def truth_columns(task: Task, schema: dict, stored: np.ndarray) -> dict[str, list]:
    """A prediction file's columns of the true targets: a column per entry of a target stated
    as an object, ``true_<key>`` (beside the task's ``score_<key>``), else the one column
    (classification's ``label``)."""
    values = column_values(task, schema, stored)
    return {
        (column.name if column.key is None else f"true_{column.key}"): values[column.name]
        for column in target_columns(task, schema)
    }


def column_summary(task: Task, schema: dict, stored: np.ndarray) -> dict[str, dict]:
    """Column name -> what `skill info` says of it: ``counts`` by value (``(unlabelled)``
    counted too) for text; ``labelled`` (takes with a value), ``takes``, ``min``, ``mean`` and
    ``max`` (None without a value) for numbers."""
    out: dict[str, dict] = {}
    every = column_values(task, schema, stored)
    for column in target_columns(task, schema):
        values = every[column.name]
        if not column.number:
            counts = Counter(UNLABELLED if v is None else str(v) for v in values)
            out[column.name] = {"counts": dict(sorted(counts.items()))}
            continue
        known = np.array([v for v in values if v is not None and math.isfinite(v)], float)
        out[column.name] = {
            "labelled": int(len(known)),
            "takes": len(values),
            **{
                key: float(reduce(known)) if len(known) else None
                for key, reduce in (("min", np.min), ("mean", np.mean), ("max", np.max))
            },
        }
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _values(stated) -> list:
    return list(stated.values()) if isinstance(stated, dict) else [stated]
