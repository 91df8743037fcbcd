"""The keys of a sweep's table rows that depend on the task: its headline metric per seed and
its baseline (classification: ``val_top1_seeds``, ``val_majority_top1``), and the words a
baseline is printed with."""

from __future__ import annotations

from skill.tasks import DEFAULT_TASK, Task, get_task

BASELINE_WORDS = {
    "majority": "majority baseline (most common training label)",
    "mean": "mean baseline (the training mean predicted for every take; its rho is undefined)",
    "chance": "chance (a coin flip per pair)",
}
"""How the console names a baseline; a baseline not listed is named as its task names it."""


def seeds_key(row: dict, split: str) -> str:
    """The row's key of the headline metric per seed (classification: ``val_top1_seeds``)."""
    return f"{split}_{row['headline']}_seeds"


def baseline_key(row: dict, split: str, metric: str | None = None) -> str:
    """The row's key of the baseline's value of ``metric`` (default: the headline;
    ``val_majority_top1``)."""
    return f"{split}_{row['baseline']}_{metric or row['headline']}"


def baseline_metrics(task: Task) -> tuple[str, ...]:
    """The metrics a sweep shows the baseline's value of: those the task names among its table
    metrics (a subclass may inherit names it does not table), else the headline."""
    named = getattr(task, "baseline_metrics", ())
    return tuple(m for m in named if m in task.table_metrics) or task.table_metrics[:1]


def metric_label(task: Task, metric: str) -> str:
    """A metric's short name in tables (``rel_l2`` -> ``rel-L2x100``)."""
    return getattr(task, "metric_labels", {}).get(metric, metric)


def rows_task(rows: list[dict]) -> Task:
    """The task of a sweep's rows (every row has the same)."""
    return get_task(rows[0]["task"]) if rows else get_task(DEFAULT_TASK)


def baselines_text(rows: list[dict]) -> str:
    """The task's baseline (classification: the most common training label predicted for
    every take of a split) and chance, the line below a sweep's table: the baseline's value of
    each of the task's baseline metrics (the headline's unnamed) per split, or per view set
    when view sets select different takes (a take with none of the set's views is left out)."""
    task = rows_task(rows)
    headline = rows[0]["headline"] if rows else task.table_metrics[0]

    def figures(row: dict) -> str:
        parts = []
        for metric in baseline_metrics(task):
            values = ", ".join(
                f"{split} {_number(row.get(baseline_key(row, split, metric)))}"
                for split in ("train", "val", "test")
                if row.get(f"n_{split}")
            )
            parts.append(values if metric == headline else f"{metric_label(task, metric)} {values}")
        return "; ".join(parts)

    by_views: dict[str, str] = {}
    for row in rows:  # every head of a view set is scored on the same takes
        by_views.setdefault(row["views"], figures(row))
    if len(set(by_views.values())) == 1:
        shown = next(iter(by_views.values()), "-")
    else:
        shown = "; ".join(f"{text} on {views}" for views, text in by_views.items())
    chance = rows[0].get("chance") if rows else None
    name = rows[0]["baseline"] if rows else task.baseline_name
    what = BASELINE_WORDS.get(name, name)
    if chance is None or chance != chance or name == "chance":  # said once
        return f"{what}: {shown}"
    return f"{what}: {shown}; chance {_number(chance)}"


def _number(value) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"
