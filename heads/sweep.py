"""``skill sweep``: every store x head x view set x seed, and a table of mean ± std over seeds.

Each (store, view set) is loaded once, only when one of its fits is still to do, and reused
for all its heads and seeds. Runs go inside the sweep folder ``<out_dir>/<name>/`` as
``<head>-<views>-s<seed>/`` (under ``<backbone>/`` when several stores make the backbone a
sweep axis; every store is first checked against the first, since a comparison is only fair
on the same takes, labels, splits and clip axis). On sequence stores the heads that read
clip sequences run beside the clip heads, which read each view's mean over its valid clips
(sequence vs pooled); on samples stores the default head list leaves them out, with a note.
The table is written last: ``sweep.csv`` and ``sweep.md`` (sample standard deviations over
seeds, with chance and each split's majority baseline beside every result, and top-1 per
scenario, also in ``sweep_scenarios.csv``), and ``sweep.png`` when plots are on. ``sweep.json`` (the resolved SweepConfig and every store's
provenance), written before the first fit, lets the same command resume: complete runs are
kept, the others fitted; a folder of that name with other settings is left alone and the sweep
goes to ``name-2``, ``name-3``... One sweep at a time per ``--out`` and ``--sweep-name``
(``<out_dir>/.<name>.sweep.lock``, an flock; the refusal names the holder), and a write that
fails is one line naming the path, with the completed runs kept.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.cache.files import (
    hold_lock,
    lock_file,
    remove_dead_staging,
    staging_folder,
    write_text_atomically,
)
from skill.cache.recovery import write_errors
from skill.errors import SkillError
from skill.heads.config import FitConfig, SweepConfig
from skill.heads.data import (
    SPLIT_NAMES,
    ClipAxisError,
    SelectionError,
    load_selection,
    resolve_views,
)
from skill.heads.registry import heads_in_order, resolve_head
from skill.heads.run_folder import (
    RunConfigError,
    json_safe,
    publish,
    read_run_metrics,
    read_run_record,
    write_json,
)
from skill.heads.sweep_rows import (
    baseline_key,
    baseline_metrics,
    rows_task,
    seeds_key,
)
from skill.heads.train import FitResult, fit
from skill.progress import say
from skill.progress import task as progress_task
from skill.tasks import Task, get_task

SPLITS = ("val", "test")


class SweepError(SkillError, ValueError):
    """Stores that cannot be swept together (other takes, splits or labels); the message
    names the stores and the difference."""


class SweepBusy(SweepError):
    """Another sweep is writing into the same sweep folder (named with its pid and host)."""


@dataclass
class SweepResult:
    """The table rows (one per store x head x view set), the sweep folder and every fit."""

    rows: list[dict]
    sweep_dir: Path
    fits: list[FitResult] = field(default_factory=list)
    reused: int = 0  # runs found complete in a resumed sweep folder (not fitted again)
    passed_over: list[str] = field(default_factory=list)
    """Sweep folders of the same name not resumed, each with what differs (`a: x vs y`)."""


def table_columns(task: Task, backbone: bool = False) -> list[str]:
    """(backbone,) head, views, seeds, n_val, n_test, ``<split>_<metric>_mean/_std`` of the
    task's table metrics, fit s, chance and each split's baseline of the task's baseline
    metrics (classification: top-1)."""
    metrics = task.table_metrics
    stats = [f"{s}_{m}_{k}" for s in SPLITS for m in metrics for k in ("mean", "std")]
    return [
        *(["backbone"] if backbone else []),
        "head",
        "views",
        "seeds",
        "n_val",
        "n_test",
        *stats,
        "fit_seconds_mean",
        "fit_seconds_std",
        "chance",
        *(f"{s}_{task.baseline_name}_{m}" for s in SPLITS for m in baseline_metrics(task)),
    ]


def extra_columns(rows: list[dict]) -> list[str]:
    """Columns that some tasks' rows have: each split's pair count (pairwise) and the
    Fisher-z mean over groups of the headline (regression's per-group rho)."""
    keys = [f"pairs_{s}" for s in SPLITS]
    keys += [f"{s}_{row['headline']}_fisher_z_{k}" for row in rows[:1] for s in SPLITS
             for k in ("mean", "std")]  # fmt: skip
    return [key for key in keys if any(key in row for row in rows)]


def sweep(cfg: SweepConfig) -> SweepResult:
    """Fit every (store, head, view set, seed) with ``cfg.fit``'s other settings; write the
    table."""
    base, heads, view_sets, seeds = cfg.fit, cfg.heads, cfg.view_sets, cfg.seeds
    paths = cfg.store_paths()
    configs = {
        (p, h, v, s): dataclasses.replace(
            base, store=p, head=h, views=v, seed=s, name="", out_dir=""
        )
        for p in paths
        for v in view_sets
        for h in heads
        for s in seeds
    }  # builds (and so validates) every config before the first fit
    labels, task, clip_axis = check_stores(paths, view_sets)  # refuses stores that differ
    cfg, skipped = heads_for_clip_axis(cfg, clip_axis, paths[0])
    cfg, unfit = heads_for_task(cfg, task["name"], paths[0])
    configs = {key: run for key, run in configs.items() if key[1] in cfg.heads}
    for note in (skipped, unfit):
        if note:
            say(note)
    settings = sweep_settings(cfg, paths)
    with sweep_lock(Path(base.out_dir), cfg.name):
        return _run_grid(cfg, paths, labels, task, configs, settings)


def _run_grid(cfg: SweepConfig, paths: list[str], labels: dict[str, str], task: dict,
              configs: dict, settings: dict) -> SweepResult:  # fmt: skip
    """The sweep itself, with the sweep lock held: reserve the folder, fit what is missing,
    write the table."""
    base, heads, view_sets, seeds = cfg.fit, cfg.heads, cfg.view_sets, cfg.seeds
    several = len(paths) > 1
    passed_over: list[str] = []
    sweep_dir = reserve_sweep_dir(Path(base.out_dir), cfg.name, settings, passed_over)
    fits: dict[tuple, FitResult] = {}
    reused = 0
    with progress_task(f"sweep {sweep_dir}", total=len(configs), unit="run") as shown:
        for path in paths:
            out_dir = sweep_dir / folder_name(labels[path]) if several else sweep_dir
            for views in view_sets:
                selection = None  # loaded when a fit of this view set is still to do
                for head in heads:
                    for seed in seeds:
                        run = dataclasses.replace(
                            configs[(path, head, views, seed)], out_dir=str(out_dir)
                        )
                        done = finished_run(run)
                        reused += done is not None
                        backbone = labels[path] if several else ""
                        title = run_title(len(fits) + 1, len(configs), run, backbone)
                        say(f"{title}: already complete" if done else title)
                        if done is None:
                            if selection is None:
                                selection = load_selection(path, views, run.allow_unfinished)
                            done = fit(run, selection=selection)
                        fits[(path, head, views, seed)] = done
                        shown.update(len(fits))
                del selection  # free this view set's tokens before loading the next
    rows = [
        summary_row(
            h,
            v,
            [fits[(p, h, v, s)] for s in seeds],
            get_task(task["name"]),
            task["schema"],
            backbone=labels[p],
        )  # fmt: skip
        for p in paths
        for v in view_sets
        for h in heads
    ]
    with write_errors(sweep_dir, "the sweep table", kept="Every run is kept"):
        write_table(sweep_dir, rows)
        if base.plots:
            from skill.heads.plots import plot_sweep

            plot_sweep(rows, sweep_dir / "sweep.png", name=sweep_dir.name)
    return SweepResult(
        rows=rows, sweep_dir=sweep_dir, fits=list(fits.values()), reused=reused,
        passed_over=passed_over,
    )  # fmt: skip


def heads_for_task(cfg: SweepConfig, task: str, store: str) -> tuple[SweepConfig, str]:
    """The sweep's heads that learn the stores' task: a per-clip head (``per_clip``) learns a
    per-clip task only, a per-take head a per-take one. The others are left out of the
    default head list, with the note returned, and refused (ConfigError) when --heads names
    them."""
    from skill.errors import ConfigError
    from skill.tasks import get_task

    per_clip = bool(getattr(get_task(task), "per_clip", False))
    unfit = [head for head in cfg.heads if resolve_head(head).per_clip != per_clip]
    if not unfit:
        return cfg, ""
    names = ", ".join(unfit)
    if cfg.heads != heads_in_order():
        raise ConfigError(f"{store}: --heads {names} cannot learn task {task}; leave them out")
    kept = [head for head in cfg.heads if head not in unfit]
    return dataclasses.replace(cfg, heads=kept), f"note: not sweeping {names}: task {task}"


def heads_for_clip_axis(cfg: SweepConfig, clip_axis: str, store: str) -> tuple[SweepConfig, str]:
    """The sweep's heads that can read the stores' clip axis: every head on sequence stores
    (a clip head reads each view's mean over its valid clips, beside the heads that read the
    sequence); on samples stores the heads that read sequences are left out of the default
    head list, with the note returned, and refused (:class:`ClipAxisError`) when --heads
    names them."""
    sequence = [head for head in cfg.heads if resolve_head(head).reads == "sequence"]
    if clip_axis == "sequence" or not sequence:
        return cfg, ""
    names = ", ".join(sequence)
    if cfg.heads != heads_in_order():
        raise ClipAxisError(
            f"{store}: --heads {names} read{'s' if len(sequence) == 1 else ''} ordered clip "
            "sequences, but the store's clip axis is samples; leave "
            f"{'it' if len(sequence) == 1 else 'them'} out, or extract with --sampling "
            "sequence or stride"
        )
    kept = [head for head in cfg.heads if head not in sequence]
    note = (
        f"note: not sweeping {names}: {'it reads' if len(sequence) == 1 else 'they read'} "
        f"ordered clip sequences and {store} samples its clips (extract with --sampling "
        "sequence or stride to sweep sequence and pooled heads side by side)"
    )
    return dataclasses.replace(cfg, heads=kept), note


def run_title(number: int, runs: int, run: FitConfig, backbone: str = "") -> str:
    """``run 3 of 12: cvf on ego,exo, seed 1`` (and the backbone's label with several
    stores): the line a sweep prints before each run."""
    store = f" ({backbone})" if backbone else ""
    return f"run {number} of {runs}: {run.head} on {run.views}, seed {run.seed}{store}"


# ---- several stores: labels and the same-takes check -----------------------------------------
def backbone_label(provenance: dict) -> str:
    """A short name of a store's backbone: its name (the last part of a hub id or folder),
    plus ``+`` and the first 8 hex digits of the adapter's sha256 when there is one."""
    backbone = provenance.get("backbone") or {}
    name = str(backbone.get("name") or "").rstrip("/").rsplit("/", 1)[-1]
    adapter = backbone.get("adapter") or provenance.get("adapter") or {}
    sha = adapter.get("sha256") if isinstance(adapter, dict) else None
    return f"{name}+{sha[:8]}" if name and sha else name


def backbone_labels(paths: list[str], provenances: list[dict]) -> dict[str, str]:
    """Store path -> its backbone label; stores whose labels would be equal (or that have
    none) are named by their folder (``a.zarr`` -> ``a``), or by their path if that is
    taken too."""
    labels = [backbone_label(p) for p in provenances]
    labels = [
        label if label and labels.count(label) == 1 else _store_stem(path)
        for path, label in zip(paths, labels, strict=True)
    ]
    labels = [
        label if labels.count(label) == 1 else path
        for path, label in zip(paths, labels, strict=True)
    ]
    return dict(zip(paths, labels, strict=True))


def _store_stem(path: str) -> str:
    name = Path(path).name
    return name[: -len(".zarr")] if name.endswith(".zarr") and name != ".zarr" else name


def folder_name(label: str) -> str:
    """A label as a plain folder name (a path's separators become ``_``)."""
    name = label.replace(os.sep, "_").replace("/", "_").lstrip(".")
    return name or "store"


@dataclass
class _StoreTakes:
    """The completed takes of one store: id -> (split, target, participant), and its task."""

    path: str
    takes: dict[str, tuple[str, str, str]]
    task: dict  # name and schema
    views: list[str]
    provenance: dict
    clip_axis: str  # samples or sequence


def _read_takes(path: str) -> _StoreTakes:
    from skill.cache.store import STATUS_COMPLETE, TokenStore

    store = TokenStore.open(path)  # a missing or unreadable store: its own one-line error
    with store.reading():
        records = store.take_records()
        table, status = records.table, records.status
    task = {"name": store.task["name"], "schema": store.task["schema"]}
    targets = get_task(task["name"]).decode(table.target, task["schema"])
    takes = {}
    for i in np.flatnonzero(status == STATUS_COMPLETE):
        split = str(table.split[i]).strip()
        takes[str(table.ids[i])] = (
            SPLIT_NAMES.get(split.lower(), split),
            "" if targets[i] is None else str(targets[i]),
            str(table.participant[i]),
        )
    return _StoreTakes(
        path, takes, task, list(store.views), dict(store.provenance), store.clip_axis
    )


def check_stores(paths: list[str], view_sets: list[str]) -> tuple[dict[str, str], dict, str]:
    """Refuse stores that cannot be compared (:class:`SweepError` naming the difference) or
    that lack a view of ``view_sets``; return each store's backbone label, their task (name
    and schema) and their clip axis."""
    stores = [_read_takes(p) for p in paths]
    for store in stores:
        for views in view_sets:
            try:
                resolve_views(views, store.views)
            except SelectionError as err:
                raise SelectionError(f"{store.path}: view set {views!r}: {err}") from None
    first = stores[0]
    for other in stores[1:]:
        if other.clip_axis != first.clip_axis:
            raise SweepError(
                f"{first.path} has clip axis {first.clip_axis}, {other.path} has "
                f"{other.clip_axis} (stores swept together must hold their clips alike: "
                "extract them with the same --sampling)"
            )
        problem = _difference(first, other)
        if problem:
            raise SweepError(
                f"{problem} (stores swept together must hold the same completed takes, with "
                "the same splits and labels: extract them from the same annotations)"
            )
    return backbone_labels(paths, [s.provenance for s in stores]), first.task, first.clip_axis


# What differs when a take's (split, label, participant) differs, in that order.
_TAKE_FIELDS = (
    "put take {} in different splits",
    "give take {} different targets",
    "give take {} different participants",
)


def _difference(a: _StoreTakes, b: _StoreTakes) -> str:
    """The first difference between the completed takes of two stores, or ``""``."""
    if a.task != b.task:
        return f"{a.path} has task {a.task}, {b.path} has {b.task}"
    for one, two in ((b, a), (a, b)):
        extra = sorted(set(one.takes) - set(two.takes))
        if extra:
            first = ", ".join(extra[:3]) + (", ..." if len(extra) > 3 else "")
            return (
                f"{one.path}: {len(extra)} completed takes that {two.path} lacks (first: {first})"
            )
    for index, what in enumerate(_TAKE_FIELDS):
        differ = sorted(t for t in a.takes if a.takes[t][index] != b.takes[t][index])
        if differ:
            take = differ[0]
            values = f"{a.takes[take][index] or '(none)'} vs {b.takes[take][index] or '(none)'}"
            more = f", and {len(differ) - 1} more takes" if len(differ) > 1 else ""
            return f"{a.path} and {b.path} {what.format(take)} ({values}){more}"
    return ""


# ---- the sweep folder: its lock, sweep.json, resuming -----------------------------------------
SWEEP_FORMAT_VERSION = 1
SWEEP_LOCK = ".sweep.lock"


@contextlib.contextmanager
def sweep_lock(out_dir: Path, name: str):
    """Hold the lock of sweep ``name`` in ``out_dir`` (creating the folder); SweepBusy naming
    the holder when another sweep holds it."""
    target = out_dir / name

    def busy(holder: str) -> SweepBusy:
        return SweepBusy(
            f"{target}: another skill sweep is writing this sweep folder ({holder}); wait for "
            "it to finish, or pass another --sweep-name or --out"
        )

    with contextlib.ExitStack() as stack:
        with write_errors(out_dir, "the sweep's lock file", kept="Nothing was changed"):
            out_dir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(hold_lock(lock_file(target, SWEEP_LOCK), refuse=busy))
        yield


def sweep_settings(cfg: SweepConfig, paths: list[str]) -> dict:
    """What sweep.json records and a resumed sweep must match: the resolved SweepConfig and
    each store's resolved path and provenance."""
    from skill.cache.store import TokenStore

    stores = [
        {"path": os.path.realpath(p), "provenance": dict(TokenStore.open(p).provenance)}
        for p in paths
    ]
    return json_safe(
        {
            "skill_sweep_format": SWEEP_FORMAT_VERSION,
            "config": dataclasses.asdict(cfg),
            "stores": stores,
        }
    )


def read_sweep_settings(sweep_dir: Path) -> dict | None:
    """sweep.json of a sweep folder; None when there is none (not a sweep folder);
    SweepError naming the file when it is unreadable."""
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SweepError(f"{path}: not a readable sweep record ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("skill_sweep_format"), int):
        raise SweepError(f"{path}: not a sweep record (no skill_sweep_format field)")
    if data["skill_sweep_format"] > SWEEP_FORMAT_VERSION:
        raise SweepError(
            f"{path}: sweep format {data['skill_sweep_format']} is newer than this skill "
            f"(reads up to {SWEEP_FORMAT_VERSION})"
        )
    return data


def settings_difference(old: dict, new: dict, prefix: str = "") -> str:
    """The first differing field of two settings records (``config.heads: [...] vs [...]``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if key not in old or key not in new or old[key] != new[key]:
                if key in old and key in new:
                    return settings_difference(old[key], new[key], f"{prefix}{key}.")
                return (
                    f"{prefix}{key}: {old.get(key, '(absent)')!r} vs {new.get(key, '(absent)')!r}"
                )
        return ""
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return settings_difference(a, b, f"{prefix}{i}.")
        return ""
    return f"{prefix.rstrip('.')}: {old!r} vs {new!r}" if old != new else ""


def reserve_sweep_dir(
    out_dir: Path, name: str, settings: dict | None = None, passed_over: list[str] | None = None
) -> Path:
    """The sweep folder ``name`` (or ``name-2``...) to write into: the first that records
    the same ``settings`` (a resumed sweep), else a new one created with ``sweep.json``.
    Folders of other settings are noted in ``passed_over`` with what differs."""
    with write_errors(out_dir / name, "the sweep folder", kept="Nothing of it was kept"):
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_dead_staging(out_dir)
    for attempt in range(1, 10_000):
        target = out_dir / (name if attempt == 1 else f"{name}-{attempt}")
        if not target.exists():
            break
        if settings is not None and target.is_dir():
            recorded = read_sweep_settings(target)
            difference = settings_difference(recorded, settings) if recorded is not None else ""
            if recorded is not None and not difference:
                return target
            if passed_over is not None:
                why = difference or "not a sweep folder (no sweep.json)"
                passed_over.append(f"{target.name}: {why}")
    with (
        write_errors(out_dir / name, "the sweep folder", kept="Nothing of it was kept"),
        staging_folder(out_dir / name) as staging,
    ):
        if settings is not None:
            write_json(staging / "sweep.json", settings)
        return publish(staging, out_dir, name)


def finished_run(run: FitConfig) -> FitResult | None:
    """The FitResult of ``run``'s complete run folder (``out_dir/name``), or None when it is
    absent or incomplete (a fit killed before publishing leaves none)."""
    run_dir = Path(run.out_dir) / run.name
    if not (run_dir / "config.json").is_file():
        return None
    try:
        record = read_run_record(run_dir)
        metrics = read_run_metrics(run_dir)
    except RunConfigError:  # a head, option or file it must not load: refused, not refitted
        raise
    except SkillError:
        return None
    if not (run_dir / record.model.file).is_file() or "fit_seconds" not in metrics:
        return None
    return FitResult(run_dir=run_dir, metrics=metrics, config=run)


def summary_row(
    head: str, views: str, fits: list[FitResult], task: Task, schema: dict, backbone: str = ""
) -> dict:
    """Mean and std over seeds of the task's table metrics of one (backbone, head, views),
    each split's baseline, the headline metric per seed (``seeds_key``, for the figure) and
    per scenario (``<split>_per_scenario``: scenario -> n, <headline>_mean, <headline>_std);
    where the task's metrics have them, each split's pair count (``pairs_<split>``) and the
    Fisher-z mean of the headline over groups (``<split>_<headline>_fisher_z_mean``)."""
    headline = task.table_metrics[0]
    row: dict = {"backbone": backbone, "head": head, "views": views, "seeds": len(fits)}
    row.update(task=task.name, headline=headline, baseline=task.baseline_name)
    row["group"] = schema.get("group", "scenario")
    chance = task.chance(schema)
    row["chance"] = math.nan if chance is None else chance
    for split in SPLITS:
        present = [f.metrics[split] for f in fits if split in f.metrics]
        row[f"n_{split}"] = present[0]["n"] if present else 0
        for metric in task.table_metrics:
            mean, std = mean_std([m[metric] for m in present])
            row[f"{split}_{metric}_mean"], row[f"{split}_{metric}_std"] = mean, std
        row[seeds_key(row, split)] = [m[headline] for m in present]
        row[f"{split}_per_scenario"] = scenario_summary(present, headline)
        # The same takes and training targets for every seed: the baselines are the same.
        row[baseline_key(row, split)] = task.baseline(present[0]) if present else math.nan
        for metric in baseline_metrics(task):
            if metric != headline:
                row[baseline_key(row, split, metric)] = _baseline_value(task, present, metric)
        if present and "pairs" in present[0]:
            row[f"pairs_{split}"] = present[0]["pairs"]
        if present and f"{headline}_fisher_z" in present[0]:
            key = f"{split}_{headline}_fisher_z"
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(
                [m[f"{headline}_fisher_z"] for m in present]
            )
    row["fit_seconds_mean"], row["fit_seconds_std"] = mean_std(
        [f.metrics["fit_seconds"] for f in fits]
    )
    return row


def _baseline_value(task: Task, present: list[dict], metric: str) -> float:
    """The baseline's value of ``metric`` on a split (the same for every seed)."""
    if not present:
        return math.nan
    value = present[0].get("baselines", {}).get(task.baseline_name, {}).get(metric)
    return math.nan if value is None else float(value)


def scenario_summary(metrics: list[dict], headline: str) -> dict[str, dict]:
    """Scenario -> {n, <headline>_mean, <headline>_std} over the seeds' metrics of one split."""
    names = sorted({name for m in metrics for name in m.get("per_scenario", {})})
    out = {}
    for name in names:
        scores = [m["per_scenario"][name] for m in metrics if name in m.get("per_scenario", {})]
        mean, std = mean_std([score[headline] for score in scores])
        out[name] = {"n": scores[0]["n"], f"{headline}_mean": mean, f"{headline}_std": std}
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0 for one value; NaN for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def write_table(sweep_dir: Path, rows: list[dict]) -> None:
    """``sweep.csv`` (numbers), ``sweep_scenarios.csv`` (per-scenario top-1, one line per row,
    split and scenario) and ``sweep.md`` (mean ± std, then the per-scenario tables), each
    written atomically; with a backbone column when the rows come from several backbones."""
    backbone, task = several_backbones(rows), rows_task(rows)
    columns = table_columns(task, backbone=backbone) + extra_columns(rows)
    _write_csv(sweep_dir / "sweep.csv", columns, rows)
    _write_csv(
        sweep_dir / "sweep_scenarios.csv",
        scenario_columns(task, backbone),
        scenario_lines(rows),
    )
    write_text_atomically(sweep_dir / "sweep.md", markdown_table(rows) + scenario_markdown(rows))


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row[k]) for k in columns})
    write_text_atomically(path, text.getvalue())


def scenario_columns(task: Task, backbone: bool = False) -> list[str]:
    """Columns of ``sweep_scenarios.csv``."""
    first = ["backbone"] if backbone else []
    headline = task.table_metrics[0]
    return [*first, "head", "views", "split", "scenario", "n", f"{headline}_mean",
            f"{headline}_std"]  # fmt: skip


def scenario_lines(rows: list[dict]) -> list[dict]:
    """One dict per (row, split, scenario): the lines of ``sweep_scenarios.csv``."""
    lines = []
    for row in rows:
        for split in SPLITS:
            for name, score in row.get(f"{split}_per_scenario", {}).items():
                lines.append({
                    "backbone": row.get("backbone", ""), "head": row["head"],
                    "views": row["views"], "split": split, "scenario": name, **score,
                })  # fmt: skip
    return lines


def _csv_value(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def several_backbones(rows: list[dict]) -> bool:
    """Whether the rows come from more than one store (so the table needs a backbone column)."""
    return len({row.get("backbone", "") for row in rows}) > 1


def markdown_table(rows: list[dict]) -> str:
    """A markdown table, one line per ((backbone,) head, views), cells ``mean ± std``; with one
    seed, the score alone under a line that says so (a std of one value says nothing)."""
    spread = not one_seed(rows)
    splits = [s for s in SPLITS if any(r[f"n_{s}"] for r in rows)]
    backbone, task = several_backbones(rows), rows_task(rows)
    metrics = task.table_metrics
    baselines = baseline_metrics(task)
    paired = [s for s in splits if any(f"pairs_{s}" in r for r in rows)]
    header = ["backbone"] * backbone + ["head", "views", "seeds"]
    header += [f"{s} pairs" for s in paired]
    header += [f"{s} {m}" for s in splits for m in metrics] + ["fit s"]
    header += [f"{s} {task.baseline_name} {m}" for s in splits for m in baselines] + ["chance"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.get("backbone", "")] * backbone
        cells += [row["head"], row["views"], str(row["seeds"])]
        cells += [str(row.get(f"pairs_{s}", "-")) for s in paired]
        cells += [format_mean_std(row, f"{s}_{m}", spread=spread) for s in splits for m in metrics]
        cells.append(format_mean_std(row, "fit_seconds", digits=1, spread=spread))
        cells += [
            format_number(row.get(baseline_key(row, s, m))) for s in splits for m in baselines
        ]
        cells.append(format_number(row.get("chance")))
        lines.append("| " + " | ".join(cells) + " |")
    return ("" if spread else ONE_SEED_NOTE) + "\n".join(lines) + "\n"


ONE_SEED_NOTE = (
    "One seed: each cell is that seed's score; there is no spread over seeds to show "
    "(`--seeds 0,1,2` gives the mean and std over three).\n\n"
)


def one_seed(rows: list[dict]) -> bool:
    """Whether every row rests on a single seed (so a std over seeds would be a bare 0)."""
    return all(row.get("seeds") == 1 for row in rows)


def format_number(value, digits: int = 3) -> str:
    """A table cell: the value to ``digits`` decimals, '-' for None or NaN."""
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def scenario_markdown(rows: list[dict]) -> str:
    """Per split with scenarios (the task's groups): a heading and a table of the headline
    metric per scenario (mean ± std over seeds), one line per ((backbone,) head, views), and
    the Fisher-z mean over groups where the task has one (regression's rho). A scenario's take
    count is in its column header when every line has the same, else in each cell."""
    backbone = several_backbones(rows)
    spread = not one_seed(rows)
    text = ""
    for split in SPLITS:
        names = sorted({n for r in rows for n in r.get(f"{split}_per_scenario", {})})
        if not names:
            continue
        scores = [r.get(f"{split}_per_scenario", {}) for r in rows]
        counts = {n: {s[n]["n"] for s in scores if n in s} for n in names}
        header = ["backbone"] * backbone + ["head", "views"]
        header += [f"{n} (n={min(counts[n])})" if len(counts[n]) == 1 else n for n in names]
        headline = rows[0]["headline"]
        fisher = f"{split}_{headline}_fisher_z"
        with_fisher = any(f"{fisher}_mean" in r for r in rows)
        header += ["Fisher-z mean"] * with_fisher
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row, score in zip(rows, scores, strict=True):
            cells = [row.get("backbone", "")] * backbone + [row["head"], row["views"]]
            cells += [
                _scenario_cell(score.get(n), row["headline"], len(counts[n]) > 1, spread)
                for n in names
            ]
            if with_fisher:
                cells.append(format_mean_std(row, fisher, spread=spread) if f"{fisher}_mean"
                             in row else "-")  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        what = "mean ± std over seeds" if spread else "one seed"
        group = rows[0].get("group", "scenario")
        text += f"\n{split} {headline} per {group} ({what}):\n\n" + "\n".join(lines)
        text += "\n"
    return text


def _scenario_cell(score: dict | None, headline: str, with_count: bool, spread: bool) -> str:
    if score is None:
        return "-"
    cell = format_mean_std(score, headline, spread=spread)
    return f"{cell} (n={score['n']})" if with_count and cell != "-" else cell


def format_mean_std(row: dict, key: str, digits: int = 3, spread: bool = True) -> str:
    """``0.612 ± 0.021`` for ``row[key_mean]``, ``row[key_std]`` (``0.612`` without
    ``spread``); ``-`` when missing."""
    mean, std = row[f"{key}_mean"], row[f"{key}_std"]
    if mean is None or math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if spread else f"{mean:.{digits}f}"
