"""The run folder: written once, atomically, by ``fit``; read back by ``predict``.

Layout of ``<out_dir>/<name>/`` (name default ``<head>-<views>-s<seed>``)::

    config.json        resolved FitConfig, the training budget used (``schedule``: steps,
                       epochs, patience, how many were run), store provenance and path, views,
                       classes, head options, package version, take-id hash, split sizes, the
                       training and
                       validation take ids and the training participants (RunRecord)
    model.safetensors  the weights of a neural head (model.txt: a LightGBM text model)
    metrics.json       per-split metrics with baselines, split facts, history
    predictions.csv    val/test probabilities
    confusion.png, curve.png   (when plots are on)

Everything is written in a hidden staging folder that is renamed into place at the end, so
a killed fit never leaves a run that looks complete. The staging folder's name,
``.<name>.partial-<pid>-<ns>``, records its owner: every fit first removes the staging
folders of owners that are no longer alive (:func:`remove_stale_staging`), never one of a
live process. An existing run is never overwritten:
the new run gets the first free suffix ``-2``, ``-3``, ... ``config.json`` is read back
through one typed record, :class:`RunRecord`, which checks the format version and the fields
``predict`` needs, and :func:`check_model`: the head and its options must be ones this skill
builds, and the model file a plain name that stays inside the run folder (no absolute path,
``..`` or symlink out of it), so an edited config.json cannot make skill read anything else.
A write that fails (a full disk, a read-only folder) removes the staging folder and is one
line naming the run folder.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skill.cache.recovery import write_errors, write_text_atomically
from skill.cache.store import package_version
from skill.errors import SkillError
from skill.heads.data import Selection, Splits, take_ids_sha256

if TYPE_CHECKING:
    from skill.heads.config import FitConfig
    from skill.heads.interface import TrainableHead

RUN_FORMAT_VERSION = 1


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
    class_names: list[str]
    train_class_counts: list[int]  # takes.train_class_counts: the training baselines
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
        if version < 1:
            raise RunFolderError(
                f"{source}: run format {version} is not a format this skill reads "
                f"(1 to {RUN_FORMAT_VERSION})"
            )
        takes = _field(data, "takes", dict, source)
        return cls(
            format=version,
            model=ModelRecord.from_dict(_field(data, "model", dict, source), source),
            store=StoreRecord.from_dict(_field(data, "store", dict, source), source),
            view_names=list(_field(data, "view_names", list, source)),
            class_names=list(_field(data, "class_names", list, source)),
            train_class_counts=list(_field(takes, "train_class_counts", list, source, "takes.")),
            fit=dict(data.get("fit") or {}),
            takes=takes,
            package_version=str(data.get("package_version", "")),
            created=str(data.get("created", "")),
        )


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
        remove_stale_staging(out_dir)
        staging = out_dir / f".{cfg.name}.partial-{os.getpid()}-{time.time_ns()}"
        staging.mkdir()
        try:
            head.save(staging)
            write_json(staging / "metrics.json", metrics)
            write_predictions_csv(staging / "predictions.csv", predictions, sel.class_names)
            if cfg.plots:
                write_plots(staging, sel, head, metrics, cfg)
            write_json(staging / "config.json", run_config(cfg, sel, splits, head))
            return publish(staging, out_dir, cfg.name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


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
        "class_names": sel.class_names,
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
            "train_class_counts": np.bincount(
                sel.labels[splits.train], minlength=sel.num_classes
            ).tolist(),
            "dropped_no_valid_view": sel.dropped_take_ids,
            # what predict's leakage guards compare against
            "train_ids": [str(t) for t in sel.take_ids[splits.train]],
            "val_ids": [str(t) for t in sel.take_ids[splits.val]],
            "train_participants": sorted({str(p) for p in sel.participant[splits.train]}),
        },
    }


def write_plots(
    folder: Path, sel: Selection, head: TrainableHead, metrics: dict, cfg: FitConfig
) -> None:
    from skill.heads.plots import plot_confusion, plot_curve, run_title

    title = run_title(cfg.out_dir, cfg.name, cfg.head, cfg.views, cfg.seed)
    panels = [
        (name, np.array(metrics[name]["confusion"])) for name in ("val", "test") if name in metrics
    ]
    plot_confusion(panels, sel.class_names, folder / "confusion.png", title=title)
    takes = {name: metrics[name]["n"] for name in ("train", "val") if name in metrics}
    plot_curve(head.history, folder / "curve.png", head.step, head.best, title, takes)


def write_predictions_csv(path: Path, predictions: dict, class_names: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["take", "split", "predicted", *(f"p_{c}" for c in class_names)])
        for split, (take_ids, probs) in predictions.items():
            for take, row in zip(take_ids, probs, strict=True):
                writer.writerow(
                    [take, split, class_names[int(row.argmax())], *(f"{p:.6f}" for p in row)]
                )


_STAGING = re.compile(r"^\..+\.partial-(\d+)(?:-\d+)?$")


def staging_owner(path: Path) -> int | None:
    """The pid recorded in a staging folder's name, or None for any other name."""
    match = _STAGING.match(path.name)
    return int(match.group(1)) if match else None


def remove_stale_staging(out_dir: Path) -> list[Path]:
    """Remove the staging folders in ``out_dir`` whose owner process is dead (a killed fit
    or sweep); a live owner's folder is kept. Returns the removed folders."""
    from skill.cache.recovery import process_alive

    removed = []
    try:
        entries = list(out_dir.iterdir())
    except OSError:
        return removed
    for path in entries:
        pid = staging_owner(path)
        if pid is None or pid == os.getpid() or process_alive(pid) or not path.is_dir():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


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
