"""``skill fit --sweep``: every head x view set x seed, and a table of mean ± std over seeds.

Each view set is loaded from the store once and reused for all its heads and seeds. Runs are
written inside the sweep folder ``<out_dir>/<name>/`` (``sweep``, or ``sweep-2``... when
taken) as ``<head>-<views>-s<seed>/``; the table is written last as ``sweep.csv`` and
``sweep.md``. Standard deviations are sample standard deviations over seeds (ddof = 1),
0 for a single seed; a metric missing for a split (no test split) is NaN / empty.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.heads.config import FitConfig, SweepConfig
from skill.heads.data import load_selection
from skill.heads.run_folder import publish
from skill.heads.train import FitResult, fit

METRICS = ("top1", "balanced_accuracy", "macro_f1")
SPLITS = ("val", "test")


@dataclass
class SweepResult:
    """The table rows (one per head x view set), the sweep folder and every fit."""

    rows: list[dict]
    sweep_dir: Path
    fits: list[FitResult] = field(default_factory=list)


def table_columns() -> list[str]:
    """head, views, seeds, n_val, n_test, then ``<split>_<metric>_mean/_std``, fit seconds."""
    stats = [f"{s}_{m}_{k}" for s in SPLITS for m in METRICS for k in ("mean", "std")]
    return [
        "head",
        "views",
        "seeds",
        "n_val",
        "n_test",
        *stats,
        "fit_seconds_mean",
        "fit_seconds_std",
    ]


def sweep(
    cfg: SweepConfig | FitConfig,
    heads: list[str] | None = None,
    view_sets: list[str] | None = None,
    seeds: list[int] | None = None,
    name: str = "sweep",
) -> SweepResult:
    """Fit every (head, view set, seed) with ``cfg.fit``'s other settings; write the table.

    The keyword form ``sweep(base_fit_config, heads=..., view_sets=..., seeds=...)`` builds
    the SweepConfig.
    """
    if not isinstance(cfg, SweepConfig):
        grid = {"heads": heads, "view_sets": view_sets, "seeds": seeds}
        cfg = SweepConfig(fit=cfg, name=name, **{k: v for k, v in grid.items() if v is not None})
    base, heads, view_sets, seeds = cfg.fit, cfg.heads, cfg.view_sets, cfg.seeds
    configs = {
        (h, v, s): dataclasses.replace(base, head=h, views=v, seed=s, name="", out_dir="")
        for v in view_sets
        for h in heads
        for s in seeds
    }  # builds (and so validates) every config before the first fit
    sweep_dir = reserve_sweep_dir(Path(base.out_dir), cfg.name)
    fits: dict[tuple, FitResult] = {}
    for views in view_sets:
        selection = load_selection(base.store, views)
        for head in heads:
            for seed in seeds:
                cfg = dataclasses.replace(configs[(head, views, seed)], out_dir=str(sweep_dir))
                fits[(head, views, seed)] = fit(cfg, selection=selection)
        del selection  # free this view set's tokens before loading the next
    rows = [summary_row(h, v, [fits[(h, v, s)] for s in seeds]) for v in view_sets for h in heads]
    write_table(sweep_dir, rows)
    return SweepResult(rows=rows, sweep_dir=sweep_dir, fits=list(fits.values()))


def reserve_sweep_dir(out_dir: Path, name: str) -> Path:
    """Create a new, empty sweep folder ``name`` (or ``name-2``...) and return it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{name}.partial-{os.getpid()}"
    staging.mkdir(exist_ok=True)
    return publish(staging, out_dir, name)


def summary_row(head: str, views: str, fits: list[FitResult]) -> dict:
    """Mean and std over seeds of every metric of one (head, views)."""
    row: dict = {"head": head, "views": views, "seeds": len(fits)}
    for split in SPLITS:
        present = [f.metrics[split] for f in fits if split in f.metrics]
        row[f"n_{split}"] = present[0]["n"] if present else 0
        for metric in METRICS:
            mean, std = mean_std([m[metric] for m in present])
            row[f"{split}_{metric}_mean"], row[f"{split}_{metric}_std"] = mean, std
    row["fit_seconds_mean"], row["fit_seconds_std"] = mean_std(
        [f.metrics["fit_seconds"] for f in fits]
    )
    return row


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0 for one value; NaN for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def write_table(sweep_dir: Path, rows: list[dict]) -> None:
    """``sweep.csv`` (numbers) and ``sweep.md`` (mean ± std), each written atomically."""
    columns = table_columns()
    tmp = sweep_dir / f".sweep.csv.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row[k]) for k in columns})
    os.replace(tmp, sweep_dir / "sweep.csv")
    tmp = sweep_dir / f".sweep.md.tmp-{os.getpid()}"
    tmp.write_text(markdown_table(rows))
    os.replace(tmp, sweep_dir / "sweep.md")


def _csv_value(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def markdown_table(rows: list[dict]) -> str:
    """A markdown table, one line per (head, views), cells ``mean ± std``."""
    splits = [s for s in SPLITS if any(r[f"n_{s}"] for r in rows)]
    header = ["head", "views", "seeds"]
    header += [f"{s} {m}" for s in splits for m in METRICS] + ["fit s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["head"], row["views"], str(row["seeds"])]
        cells += [format_mean_std(row, f"{s}_{m}") for s in splits for m in METRICS]
        cells.append(format_mean_std(row, "fit_seconds", digits=1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_mean_std(row: dict, key: str, digits: int = 3) -> str:
    """``0.612 ± 0.021`` for ``row[key_mean]``, ``row[key_std]``; ``-`` when missing."""
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
