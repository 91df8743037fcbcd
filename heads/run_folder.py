"""The run folder: written once, atomically, by ``fit``; read back by ``predict``.

Layout of ``<out_dir>/<name>/`` (name default ``<head>-<views>-s<seed>``)::

    config.json        the RunRecord: resolved FitConfig, the training budget used
                       (``schedule``), store provenance and path, views, classes, head
                       options, package version, take-id hash, split sizes, the training and
                       validation take ids and the training participants
    model.safetensors  the weights of a neural head (model.txt: a LightGBM text model)
    metrics.json       per-split metrics with baselines, split facts, history
    predictions.csv    val/test probabilities
    confusion.png, curve.png   (when plots are on)

The folder is built in a hidden staging folder (``cache.files``) renamed into place at the
end, so a killed fit never leaves a run that looks complete, and an existing run is never
overwritten (the new one gets the first free suffix ``-2``, ``-3``...). ``config.json`` is
read back through :class:`RunRecord` and :func:`check_model`, so an edited file cannot make
skill build an unknown head or read a model file outside the run folder. A write that fails
removes the staging folder and is one line naming the run folder.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skill.cache.files import remove_dead_staging, staging_folder, write_text_atomically
from skill.cache.recovery import write_errors
from skill.cache.store import package_version
from skill.errors import SkillError
from skill.heads.data import Selection, Splits, take_ids_sha256

if TYPE_CHECKING:
    from skill.heads.config import FitConfig
    from skill.heads.interface import TrainableHead
    from skill.tasks import Task

RUN_FORMAT_VERSION = 2
"""2: the run records its task (``task``: name and schema) and what it trained on
(``takes.train_summary``); format 1 assumed four classes (``class_names``)."""


class RunFolderError(SkillError, ValueError):
    """A run folder's config.json is unreadable, too new, or lacks a field (named)."""


class RunConfigError(RunFolderError):
    """A run folder's config.json names a head, head option or file that this skill will not
    load (unknown, or a file outside the run folder); refused wherever a run is read."""


class IncompleteRunError(SkillError, FileNotFoundError):
    """No run folder, or one without config.json or its model file (an interrupted fit)."""


# ---- reading -----------------------------------------------------------------------------


def _field(data: dict, key: str, kind: type | tuple, source: str, prefix: str = ""):
    """``data[key]``, checked to be of ``kind``; RunFolderError naming source and field."""
    if not isinstance(data, dict) or key not in data:
        raise RunFolderError(f"{source}: missing field {prefix}{key}")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise RunFolderError(
            f"{source}: field {prefix}{key} has type {type(value).__name__}, expected "
            + (kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind))
        )
    return value


@dataclass(frozen=True)
class ModelRecord:
    """config.json ``model``: which head, how to rebuild it, where its weights are."""

    kind: str  # "torch" or "lightgbm" (informative: the head name picks the class)
    head: str  # registered head name
    options: dict  # keyword arguments that rebuild the head
    file: str  # model file inside the run folder

    @classmethod
    def from_dict(cls, data: dict, source: str) -> ModelRecord:
        def get(key, kind):
            return _field(data, key, kind, source, "model.")

        file = get("file", str)
        if not is_plain_file_name(file):
            raise RunConfigError(
                f"{source}: model.file {file!r} is not a file name inside the run folder"
            )
        return cls(get("kind", str), get("head", str), get("options", dict), file)


def is_plain_file_name(name: str) -> bool:
    """A name of a file directly in a folder: no separator, not empty, ``.``, ``..`` or NUL."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


@dataclass(frozen=True)
class StoreRecord:
    """config.json ``store``: the store the run was trained on."""

    path: str
    provenance: dict
    geometry: dict  # clips, tokens, dim
    views: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict, source: str) -> StoreRecord:
        geometry = _field(data, "geometry", dict, source, "store.")
        for key in ("tokens", "dim"):
            _field(geometry, key, int, source, "store.geometry.")
        return cls(
            path=_field(data, "path", str, source, "store."),
            provenance=_field(data, "provenance", dict, source, "store."),
            geometry=geometry,
            views=list(data.get("views") or []),
        )


@dataclass(frozen=True)
class RunRecord:
    """A run's config.json, typed: everything ``predict`` reads from it."""

    format: int  # skill_run_format
    model: ModelRecord
    store: StoreRecord
    view_names: list[str]
    task: dict  # name and schema: the store's task the run learned
    train_summary: dict  # takes.train_summary: what the task records of the training targets
    fit: dict = field(default_factory=dict)  # the resolved FitConfig as written
    takes: dict = field(default_factory=dict)
    package_version: str = ""
    created: str = ""

    @classmethod
    def from_json(cls, path: str | Path) -> RunRecord:
        """Read and check a config.json; RunFolderError naming the file and the field."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunFolderError(f"{path}: not a readable run config ({err})") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str) -> RunRecord:
        if not isinstance(data, dict):
            raise RunFolderError(f"{source}: expected a JSON object")
        version = _field(data, "skill_run_format", int, source)
        if version > RUN_FORMAT_VERSION:
            raise RunFolderError(
                f"{source}: run format {version} is newer than this skill "
                f"(reads up to {RUN_FORMAT_VERSION})"
            )
        if version < RUN_FORMAT_VERSION:
            raise RunFolderError(
                f"{source}: run format {version} was written by an older skill that recorded "
                f"no task; refit the run with this version"
            )
        takes = _field(data, "takes", dict, source)
        return cls(
            format=version,
            model=ModelRecord.from_dict(_field(data, "model", dict, source), source),
            store=StoreRecord.from_dict(_field(data, "store", dict, source), source),
            view_names=list(_field(data, "view_names", list, source)),
            task=_task_field(data, source),
            train_summary=dict(_field(takes, "train_summary", dict, source, "takes.")),
            fit=dict(data.get("fit") or {}),
            takes=takes,
            package_version=str(data.get("package_version", "")),
            created=str(data.get("created", "")),
        )


def _task_field(data: dict, source: str) -> dict:
    """config.json's ``task``: a registered task's name and a schema it accepts."""
    from skill.tasks import TargetError, UnknownTask, get_task

    task = _field(data, "task", dict, source)
    try:
        get_task(str(task.get("name"))).schema(task.get("schema"))
    except (UnknownTask, TargetError) as err:
        raise RunFolderError(f"{source}: task: {err}") from None
    return {"name": task["name"], "schema": dict(task.get("schema") or {})}


def read_run_record(run_dir: str | Path) -> RunRecord:
    """The RunRecord of a complete run folder (a clear error for anything else)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise IncompleteRunError(f"{run_dir}: no such run folder")
    path = run_dir / "config.json"
    if not path.is_file():
        raise IncompleteRunError(f"{run_dir}: not a complete run folder (no config.json)")
    record = RunRecord.from_json(path)
    check_model(run_dir, record.model)
    return record


def check_model(run_dir: str | Path, model: ModelRecord) -> Path:
    """Refuse (RunConfigError naming config.json) a head this skill does not know, options
    that head does not take, and a model file outside the run folder; returns the file."""
    from skill.heads.registry import head_names, option_problem

    source = Path(run_dir) / "config.json"
    if model.head not in head_names():
        raise RunConfigError(
            f"{source}: model.head {model.head!r} is not a head this skill knows "
            f"(it knows {', '.join(head_names())})"
        )
    problem = option_problem(model.head, model.options)
    if problem:
        raise RunConfigError(f"{source}: model.options: {problem}")
    if not is_plain_file_name(model.file):
        raise RunConfigError(
            f"{source}: model.file {model.file!r} is not a file name inside the run folder"
        )
    folder = Path(run_dir).resolve()
    path = (folder / model.file).resolve()
    if path.parent != folder:
        raise RunConfigError(
            f"{source}: model.file {model.file!r} leads out of the run folder (to {path})"
        )
    return Path(run_dir) / model.file


def read_run_metrics(run_dir: str | Path) -> dict:
    """A run folder's metrics.json; RunFolderError naming the file and what is wrong."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise IncompleteRunError(f"{path}: missing (not a complete run folder)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{path}: not readable run metrics ({err})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def load_head(run_dir: str | Path, model: ModelRecord) -> TrainableHead:
    """The trained head of a run folder, through its registered kind's ``load``."""
    from skill.heads.interface import head_type

    path = check_model(run_dir, model)
    if not path.is_file():
        raise IncompleteRunError(f"{run_dir}: model file {path.name} is missing")
    return head_type(model.head).load(model.head, Path(run_dir), model.file, model.options)


# ---- writing -----------------------------------------------------------------------------


def write_run(
    cfg: FitConfig,
    sel: Selection,
    splits: Splits,
    head: TrainableHead,
    metrics: dict,
    predictions: dict,
) -> Path:
    """Write the run folder in a staging folder, then rename it into place; returns its path.
    A failed write (full disk, read-only folder) leaves nothing and is one line (WriteError)."""
    out_dir = Path(cfg.out_dir)
    with write_errors(out_dir / cfg.name, "the run folder", kept="Nothing of this run was kept"):
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_dead_staging(out_dir)
        with staging_folder(out_dir / cfg.name) as staging:
            head.save(staging)
            write_json(staging / "metrics.json", metrics)
            write_predictions_csv(staging / "predictions.csv", predictions, sel.task, sel.schema)
            if cfg.plots:
                write_plots(staging, sel, head, metrics, cfg, predictions)
            write_json(staging / "config.json", run_config(cfg, sel, splits, head))
            return publish(staging, out_dir, cfg.name)


def run_config(cfg: FitConfig, sel: Selection, splits: Splits, head: TrainableHead) -> dict:
    """config.json: all a later ``predict`` needs to rebuild the head and check the store."""
    used = np.concatenate([splits.train, splits.val, splits.test])
    return {
        "skill_run_format": RUN_FORMAT_VERSION,
        "package_version": package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fit": dataclasses.asdict(cfg),
        "schedule": head.schedule,
        "model": {
            "kind": head.kind,
            "head": cfg.head,
            "options": head.options,
            "file": head.model_file,
        },
        "store": {
            "path": sel.store_path,
            "provenance": sel.provenance,
            "views": sel.store_views,
            "geometry": sel.geometry,
        },
        "view_names": sel.view_names,
        "task": {"name": sel.task_name, "schema": sel.schema},
        "takes": {
            "take_ids_sha256": take_ids_sha256(sel.take_ids[np.sort(used)]),
            "splits_sha256": take_ids_sha256(
                [
                    f"{sel.take_ids[r]}\t{name}"
                    for name, rows in splits.as_dict().items()
                    for r in rows
                ]
            ),
            "n": {name: int(len(rows)) for name, rows in splits.as_dict().items()},
            "split_source": splits.source,
            "train_summary": sel.task.train_summary(sel.schema, sel.targets[splits.train]),
            "dropped_no_valid_view": sel.dropped_take_ids,
            # what predict's leakage guards compare against
            "train_ids": [str(t) for t in sel.take_ids[splits.train]],
            "val_ids": [str(t) for t in sel.take_ids[splits.val]],
            "train_participants": sorted({str(p) for p in sel.participant[splits.train]}),
        },
    }


def write_plots(
    folder: Path, sel: Selection, head: TrainableHead, metrics: dict, cfg: FitConfig,
    predictions: dict | None = None,
) -> None:  # fmt: skip
    from skill.heads.plots import plot_curve, run_title

    title = run_title(cfg.out_dir, cfg.name, cfg.head, cfg.views, cfg.seed)
    sel.task.plot_run(folder, metrics, sel.schema, title)
    # A task that plots its predictions themselves (regression's scatter) gets them, with
    # each take's target and group.
    plot_predictions = getattr(sel.task, "plot_predictions", None)
    if plot_predictions is not None and predictions:
        plot_predictions(folder, predicted_targets(sel, predictions), metrics, sel.schema, title)
    takes = {name: metrics[name]["n"] for name in ("train", "val") if name in metrics}
    plot_curve(head.history, folder / "curve.png", head.step, head.best, title, takes)


def predicted_targets(sel: Selection, predictions: dict) -> dict[str, dict]:
    """Split -> ``targets``, ``scores`` and ``groups`` of its predicted takes."""
    row_of = {str(take): row for row, take in enumerate(sel.take_ids)}
    out = {}
    for split, (take_ids, scores) in predictions.items():
        rows = np.array([row_of[str(take)] for take in take_ids], dtype=np.int64)
        out[split] = {
            "targets": sel.targets[rows], "scores": np.asarray(scores),
            "groups": sel.scenario[rows],
        }  # fmt: skip
    return out


def write_predictions_csv(path: Path, predictions: dict, task: Task, schema: dict) -> None:
    """predictions.csv: ``take``, ``split`` and the task's prediction columns (classification:
    ``predicted`` and ``p_<class>``), numbers to 6 decimals."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = None
        for split, (take_ids, scores) in predictions.items():
            columns = task.prediction_columns(scores, schema)
            if header is None:
                header = list(columns)
                writer.writerow(["take", "split", *header])
            for i, take in enumerate(take_ids):
                writer.writerow([take, split, *(_cell(columns[name][i]) for name in header)])


def _cell(value) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def publish(staging: Path, out_dir: Path, name: str) -> Path:
    """Rename the staging folder to ``name``, or ``name-2``, ``name-3``... if taken."""
    for attempt in range(1, 10_000):
        target = out_dir / (name if attempt == 1 else f"{name}-{attempt}")
        if target.exists():
            continue
        try:
            os.rename(staging, target)
        except OSError:  # created by someone else between the check and the rename
            continue
        return target
    raise RuntimeError(f"{out_dir}: no free run folder name for {name!r}")


def write_json(path: Path, payload: dict, indent: int | None = 2) -> None:
    """Strict JSON (NaN -> null), written whole or not at all."""
    write_text_atomically(
        path, json.dumps(json_safe(payload), indent=indent, allow_nan=False) + "\n"
    )


def json_safe(value):
    """numpy scalars/arrays to Python, NaN/inf floats to None, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
