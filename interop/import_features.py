"""`skill import features`: tokens made elsewhere become a store that `skill fit` reads. The
source is a `skill export` (HDF5 or npy; its take table and provenance come with it, checked
before anything is written) or per-video ``(T, D)`` features (video_features ``.npy`` files or
HDF5 datasets named ``<video stem>_<feature>``) matched to a manifest's takes and views by file
stem and cut into ``clips`` clips of equal runs of rows. Every file that disagrees is refused
by name, the store is written under a staging name and renamed into place once every take is
in, and its provenance records what was imported (``imported``), so that stores of the same
features are comparable. The sources and rules are in docs/interop.md."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skill.cache.store import TakeRow
from skill.errors import ConfigError, SkillError
from skill.pipeline.manifest.common import (
    SPLITS,
    DuplicateKeyError,
    loads_unique,
    shown_name,
)
from skill.pipeline.manifest.common import kind as json_kind
from skill.pipeline.takes import name_problem
from skill.tasks import TargetError, UnknownTask, get_task, task_record
from skill.tasks.columns import UntabledTargets, stated_target, target_columns


class FeatureImportError(SkillError, ValueError):
    """Features that cannot become a store; the message names the file and the problem."""


@dataclass
class ImportFeaturesConfig:
    """Everything that decides an ``import features`` (the field docstrings are its options'
    help)."""

    features: str
    """An HDF5 file or a folder of .npy files: a skill export, or per-video features."""
    store: str
    """The store to create (must not exist)."""
    manifest: str | None = None
    """The takes and their videos (any manifest format); needed for per-video features, which
    are matched to each take's view videos by file stem. Default: none (a skill export needs
    none)."""
    feature: str | None = None
    """Feature type in the file names (<stem>_<feature>.npy, such as i3d's rgb). Default: the
    only one found (or plain <stem>.npy)."""
    clips: int = 1
    """Per-video features: clips per view (T rows are split into this many clips)."""
    tokens: int | None = None
    """Per-video features: tokens per clip, each the mean of an equal run of rows (so videos
    of any length agree). Default: every row a token, and every video must have the same T."""
    manifest_format: str = "auto"
    """Manifest format: auto (told by the file), skill, egoexo4d or skillformer."""

    def __post_init__(self) -> None:
        self.features, self.store = str(self.features), str(self.store)
        if self.manifest is not None:
            self.manifest = str(self.manifest)
        if self.clips < 1:
            raise ConfigError(f"--clips must be at least 1, not {self.clips}")
        if self.tokens is not None and self.tokens < 1:
            raise ConfigError(f"--tokens must be at least 1, not {self.tokens}")


@dataclass
class TakeData:
    """One take's arrays. Shapes: V views, K clips, N tokens, D width, T frames."""

    tokens: np.ndarray  # (V, K, N, D) float16
    valid: np.ndarray  # (V,) bool
    frame_index: np.ndarray | None = None  # (V, K, T) from a skill export, else unknown
    timestamp: np.ndarray | None = None
    padded: np.ndarray | None = None
    clip_time: np.ndarray | None = None  # (V, K, 2) from a skill export that has it


@dataclass
class ImportPlan:
    """What the store will hold: views, its task (`tasks.task_record`), layout, provenance, its
    takes (targets as the store holds them), and their arrays, read one take at a time
    (`data()` yields them in the order of `takes`) so that memory holds one batch of takes,
    not the dataset."""

    views: list[str]
    task: dict
    clips: int
    tokens: int
    dim: int
    frames: int
    provenance: dict
    takes: list[TakeRow]
    data: Callable[[], Iterator[TakeData]]
    pairs: tuple[list[tuple[str, str]], list[str]] | None = None
    """Pairs of takes to record (a ranking task's): (better, worse) take names and each pair's
    split; None: none recorded."""


@dataclass
class ImportResult:
    store: Path
    takes: int
    views: int
    source_kind: str


def import_features(cfg: ImportFeaturesConfig) -> ImportResult:
    """Build the store `cfg.store` from `cfg.features` (see the module docstring). The store
    is written under a temporary name, renamed into place once every take is in: a file
    refused half way leaves nothing."""
    from skill.cache.files import staging_path
    from skill.cache.store import TokenStore

    source, store_path = Path(cfg.features), Path(cfg.store)
    if not source.exists():
        raise FeatureImportError(f"{source}: no such file or folder")
    if store_path.exists():
        raise FeatureImportError(f"{store_path}: already exists; choose a new store path")
    plan = _plan(cfg, source)
    if not plan.takes:
        raise FeatureImportError(f"{source}: holds no take to import")
    _remove_dead_imports(store_path)
    staging = staging_path(store_path)
    try:
        store = TokenStore.create(
            staging, provenance=plan.provenance, views=plan.views, task=plan.task,
            clips=plan.clips, tokens=plan.tokens, dim=plan.dim, frames=plan.frames,
        )  # fmt: skip
        _write_takes(store, plan)
        os.rename(staging, store_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_lock_files(staging)
    kind = plan.provenance["imported"]["kind"]
    return ImportResult(store_path, len(plan.takes), len(plan.views), kind)


def _remove_dead_imports(store_path: Path) -> None:
    """What imports into ``store_path`` that were killed left: their staging stores and the
    lock files beside them (`.<staging name><suffix>`)."""
    from skill.cache import layout
    from skill.cache.files import remove_dead_staging
    from skill.cache.store import LOCK_FILE

    companions = (LOCK_FILE, layout.LAYOUT_LOCK)
    remove_dead_staging(store_path.parent, store_path.name, companions)


def _remove_lock_files(store_path: Path) -> None:
    from skill.cache import layout
    from skill.cache.store import LOCK_FILE

    for suffix in (LOCK_FILE, layout.LAYOUT_LOCK):
        layout.lock_file(store_path, suffix).unlink(missing_ok=True)


WRITE_BATCH_BYTES = 64 << 20
"""Tokens per `TokenStore.write_takes` call: a call costs a round of writes per array, so
takes go in batches, not one by one; memory holds one batch."""


def _write_takes(store, plan: ImportPlan) -> None:
    """Every take of the plan, a batch of consecutive rows per `write_takes`. The new store is
    packed while it is empty (a metadata change) and written a packed token chunk at a time:
    no chunk per take is written, then copied and deleted."""
    from skill.cache import layout

    take_bytes = len(plan.views) * plan.clips * plan.tokens * plan.dim * 2  # float16
    batch = max(1, WRITE_BATCH_BYTES // max(take_bytes, 1))
    with store.writer_lock():
        indices = store.add_takes(plan.takes)
        if plan.pairs is not None:
            row_of = {take.take_id: i for take, i in zip(plan.takes, indices, strict=True)}
            named, splits = plan.pairs
            store.set_pairs(np.array([[row_of[b], row_of[w]] for b, w in named]), splits)
        store.pack()
        tokens = layout.array_metadata(store.path, "tokens")
        if layout.is_packed(tokens):
            batch = layout.chunk_shape(tokens)[0]
        results = (_take_result(plan, take) for take in plan.data())
        pending: list = []
        for i, result in zip(indices, results, strict=True):
            if pending and (len(pending) == batch or i != pending[-1][0] + 1):
                store.write_takes(pending[0][0], [r for _, r in pending])
                pending = []
            pending.append((i, result))
        if pending:
            store.write_takes(pending[0][0], [r for _, r in pending])
        store.pack()


def _take_result(plan: ImportPlan, take: TakeData):
    """A take's arrays as the store records a complete take; frames unknown where the source
    has none."""
    from skill.cache.store import STATUS_COMPLETE, TakeResult

    n_views = len(plan.views)
    frames = take.frame_index
    if frames is None:
        frames = np.full((n_views, plan.clips, plan.frames), -1, dtype=np.int32)
    times = take.timestamp if take.timestamp is not None else np.full(frames.shape, np.nan)
    return TakeResult(
        tokens=take.tokens, valid=take.valid, frame_index=frames, timestamp=times,
        padded=take.padded if take.padded is not None else np.zeros(n_views, dtype=int),
        view_error=["" if ok else "no features" for ok in take.valid],
        status=STATUS_COMPLETE, clip_time=take.clip_time,
    )  # fmt: skip


# ---- planning: which source, which takes -------------------------------------------------
def _plan(cfg: ImportFeaturesConfig, source: Path) -> ImportPlan:
    export = _export_metadata(source)
    if export is not None:
        return _plan_from_export(cfg, source, export)
    if cfg.manifest is None:
        raise FeatureImportError(
            f"{source}: per-video features need --manifest, which names each take's videos "
            "(features are matched to them by video file stem)"
        )
    return _plan_from_videos(cfg, source)


def _export_metadata(source: Path) -> dict | None:
    """The metadata of a `skill export`, checked (`_check_export_metadata`), or None when
    `source` is not one."""
    from skill.interop.export import EXPORT_JSON

    if source.is_dir():
        path = source / EXPORT_JSON
        if not path.is_file():
            return None
        meta = _json_text(path.read_bytes(), str(path))
        if not isinstance(meta, dict):
            raise FeatureImportError(f"{path}: expected a JSON object, got {json_kind(meta)}")
        _check_export_metadata(str(path), "field", meta)
        return meta
    with _open_hdf5(source) as f:
        if "skill_export" not in f.attrs:
            return None
        meta = {
            key: _json_attribute(source, key, f.attrs[key])
            for key in EXPORT_METADATA
            if key in f.attrs
        }
    _check_export_metadata(str(source), "attribute", meta)
    return meta


EXPORT_METADATA = {"skill_export": dict, "provenance": dict, "views": list, "labels": list,
                   "task": dict, "geometry": dict}  # fmt: skip
"""The metadata a skill export holds (fields of skill_export.json, HDF5 root attributes holding
JSON text) and the JSON type of each; `OPTIONAL_METADATA` may be absent."""
OPTIONAL_METADATA = ("labels", "task")
"""``task`` (name, schema, target) from format 3; class ``labels`` before it (and beside it
from 3 where the task has labels)."""
EXPORT_VERSIONS = (1, 2, 3)
"""The export format versions this skill reads (`skill.interop.export.EXPORT_FORMAT_VERSION`)."""
TASK_FROM_VERSION = 3
"""The first format whose metadata hold the task; earlier exports held class labels."""


def _json_attribute(source: Path, key: str, value) -> object:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if not isinstance(value, (str, bytes)):
        raise FeatureImportError(
            f"{source}: attribute {key!r} must be JSON text, got {type(value).__name__}"
        )
    return _json_text(value, f"{source}: attribute {key!r}")


def _json_text(data: str | bytes, where: str) -> object:
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return loads_unique(text)
    except UnicodeDecodeError as err:
        raise FeatureImportError(f"{where}: not UTF-8 text ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise FeatureImportError(f"{where}: invalid JSON at line {err.lineno} column "
                                 f"{err.colno}: {err.msg}") from None  # fmt: skip
    except DuplicateKeyError as err:
        raise FeatureImportError(f"{where}: {err.problem()}") from None


def _check_export_metadata(where: str, noun: str, meta: dict) -> None:
    """Every metadata entry is there with its JSON type; versions, names and geometry are
    sound. `noun`: what `where` calls an entry ("field", "attribute")."""
    for key, expected in EXPORT_METADATA.items():
        if key not in meta and key in OPTIONAL_METADATA:
            continue
        if key not in meta:
            raise FeatureImportError(f"{where}: no {noun} {key!r}: not a complete skill export")
        if not isinstance(meta[key], expected):
            wanted = "an object" if expected is dict else "a list"
            raise FeatureImportError(
                f"{where}: {noun} {key!r} must be {wanted}, got {json_kind(meta[key])}"
            )
    version = meta["skill_export"].get("format_version")
    if isinstance(version, bool) or version not in EXPORT_VERSIONS:
        shown = f"{', '.join(map(str, EXPORT_VERSIONS[:-1]))} and {EXPORT_VERSIONS[-1]}"
        raise FeatureImportError(
            f"{where}: {noun} 'skill_export' has format_version {json_kind(version)}; this skill "
            f"reads {shown} (was it written by a newer skill?)"
        )
    needed = "task" if version >= TASK_FROM_VERSION else "labels"
    if needed not in meta:
        raise FeatureImportError(f"{where}: no {noun} {needed!r}: not a complete skill export")
    _check_name_list(where, noun, "views", meta["views"], view_names=True)
    if "labels" in meta:
        _check_name_list(where, noun, "labels", meta["labels"], view_names=False)
    for key in ("clips", "tokens", "dim", "frames"):
        value = meta["geometry"].get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise FeatureImportError(
                f"{where}: {noun} 'geometry' needs {key!r} as a positive integer, got "
                f"{json_kind(value)}"
            )


def export_task(where: str, noun: str, meta: dict) -> dict:
    """The exported store's task record (`tasks.task_record`): its ``task`` from format 3,
    classification of its ``labels`` before; refused naming the entry when the task is not
    one this skill knows or its schema or target record is not what the task makes of it."""
    if meta["skill_export"]["format_version"] < TASK_FROM_VERSION:
        return task_record("classification", {"labels": list(meta["labels"])})
    given = meta["task"]
    name = given.get("name")
    try:
        task = get_task(name) if isinstance(name, str) else None
    except UnknownTask as err:
        raise FeatureImportError(f"{where}: {noun} 'task': {err}") from None
    if task is None or not isinstance(given.get("schema"), dict):
        raise FeatureImportError(
            f"{where}: {noun} 'task' needs a task 'name' and its 'schema' (an object)"
        )
    try:
        record = task_record(name, task.schema(given["schema"]))
    except TargetError as err:
        raise FeatureImportError(f"{where}: {noun} 'task': {err}") from None
    if record != {key: given.get(key) for key in record}:
        raise FeatureImportError(
            f"{where}: {noun} 'task' records the schema or target {given}, which task {name} "
            f"states as {record} (written by another skill?)"
        )
    try:
        target_columns(task, record["schema"])
    except UntabledTargets as err:
        raise FeatureImportError(f"{where}: {noun} 'task': {err}") from None
    return record


def _check_name_list(where: str, noun: str, key: str, names: list, view_names: bool) -> None:
    if not names:
        raise FeatureImportError(f"{where}: {noun} {key!r} is empty")
    seen = set()
    for name in names:
        if not isinstance(name, str) or not name:
            raise FeatureImportError(
                f"{where}: {noun} {key!r} holds {json_kind(name)}, not a non-empty name"
            )
        problem = name_problem(name) if view_names else ""
        if problem:
            raise FeatureImportError(f"{where}: {noun} {key!r}: view name {shown_name(name)} "
                                     f"{problem}")  # fmt: skip
        if name in seen:
            raise FeatureImportError(f"{where}: {noun} {key!r} names {shown_name(name)} twice")
        seen.add(name)


def _open_hdf5(path: Path):
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise FeatureImportError(f"{path}: not a readable HDF5 file ({err})") from err


def _provenance(source: Path, kind: str, layout: dict, feature: str, base: dict | None) -> dict:
    """The imported store's provenance; `base`: an export's provenance, kept beside it."""
    imported = {
        "kind": kind,
        "source": str(source.resolve()),
        "sha256": content_sha256(source),
        "feature": feature,
        "token_layout": layout,
    }
    return {**(base or {}), "imported": imported, "dtype": "float16"}


def content_sha256(source: Path) -> str:
    """sha256 of a file, or of a folder's files (names and bytes, in sorted order)."""
    digest = hashlib.sha256()
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        if source.is_dir():
            digest.update(str(path.relative_to(source)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _manifest_takes(cfg: ImportFeaturesConfig, task: str | None = None):
    """The manifest's takes, their targets read for ``task`` (default: the default task);
    their videos need not be here (only their names are used: features are often made on
    another machine)."""
    from skill.pipeline.manifest import read_takes
    from skill.tasks import DEFAULT_TASK

    return read_takes(cfg.manifest, fmt=cfg.manifest_format, missing_videos="keep",
                      task=task or DEFAULT_TASK)  # fmt: skip


# ---- a skill export ----------------------------------------------------------------------
def _plan_from_export(cfg: ImportFeaturesConfig, source: Path, meta: dict) -> ImportPlan:
    from skill.interop.export import EXPORT_JSON

    views, geometry = list(meta["views"]), meta["geometry"]
    where = str(source / EXPORT_JSON) if source.is_dir() else str(source)
    task = export_task(where, "field" if source.is_dir() else "attribute", meta)
    shape = (geometry["clips"], geometry["tokens"], geometry["dim"])
    sequence = meta["provenance"].get("clip_axis") == "sequence"
    if source.is_dir():
        version = meta["skill_export"]["format_version"]
        exported, read = _npy_export(source, views, task, shape, version, sequence)
    else:
        geometry_t = (*shape, geometry["frames"])
        exported, read = _hdf5_export(source, views, task, geometry_t, sequence)
    pairs = _export_pairs(source, exported)
    takes = exported
    if cfg.manifest is not None:
        takes = _manifest_rows_in(cfg, source, exported, task)
        pairs = _pairs_among(pairs, {take.take_id for take in takes})
    row_of = {t.take_id: i for i, t in enumerate(exported)}
    kind = "skill export (npy)" if source.is_dir() else "skill export (hdf5)"
    layout = {"clips": shape[0], "tokens": shape[1], "dim": shape[2], "from": "skill export"}
    provenance = _provenance(source, kind, layout, "skill export", meta["provenance"])
    return ImportPlan(views, task, *shape, geometry["frames"], provenance, takes,
                      lambda: read([row_of[t.take_id] for t in takes]), pairs)  # fmt: skip


def _export_pairs(source: Path, takes: list[TakeRow]):
    """The export's pairs of takes (``pairs.csv``, or HDF5's ``pairs/``), checked: both takes
    exported and distinct, a known split; None when it has none."""
    from skill.cache.store import PAIR_SPLITS
    from skill.interop.export import PAIR_COLUMNS, PAIRS_CSV

    if source.is_dir():
        path = source / PAIRS_CSV
        if not path.is_file():
            return None
        rows, lines = _read_csv_table(path, PAIR_COLUMNS)
        places = [f"{path}:{line}" for line in lines]
    else:
        with _open_hdf5(source) as f:
            if "pairs" not in f:
                return None
            columns = {c: [_text(v) for v in _hdf5_dataset(source, f, f"pairs/{c}")[()]]
                       for c in PAIR_COLUMNS}  # fmt: skip
        if len({len(values) for values in columns.values()}) != 1:
            raise FeatureImportError(f"{source}: pairs/better, pairs/worse and pairs/split "
                                     "differ in length")  # fmt: skip
        rows = [dict(zip(PAIR_COLUMNS, cells, strict=True))
                for cells in zip(*columns.values(), strict=True)]  # fmt: skip
        places = [f"{source}: pairs/better[{i}]" for i in range(len(rows))]
    known = {take.take_id for take in takes}
    for row, place in zip(rows, places, strict=True):
        unknown = [row[side] for side in ("better", "worse") if row[side] not in known]
        if unknown:
            raise FeatureImportError(f"{place}: the pair names take {unknown[0]!r}, which the "
                                     "export does not hold")  # fmt: skip
        if row["better"] == row["worse"]:
            raise FeatureImportError(f"{place}: the pair pairs take {row['better']} with itself")
        if row["split"] not in PAIR_SPLITS:
            raise FeatureImportError(
                f"{place}: pair split {row['split']!r} is not {', '.join(PAIR_SPLITS)}"
            )
    return [(row["better"], row["worse"]) for row in rows], [row["split"] for row in rows]


def _pairs_among(pairs, names: set[str]):
    """The pairs both of whose takes are among ``names`` (the manifest's)."""
    if pairs is None:
        return None
    kept = [i for i, (better, worse) in enumerate(pairs[0]) if better in names and worse in names]
    return [pairs[0][i] for i in kept], [pairs[1][i] for i in kept]


def _check_take_table(takes: list[TakeRow], task: dict, place: Callable[[int], str]):
    """Take names fit to be names (`name_problem`) and unique, targets ones the export's
    ``task`` (its record) takes, splits known. `place(i)`: how a message names row i (a csv
    line...)."""
    seen: set[str] = set()
    for i, take in enumerate(takes):
        problem = name_problem(take.take_id)
        if problem:
            raise FeatureImportError(f"{place(i)}: take name {shown_name(take.take_id)} {problem}")
        if take.take_id in seen:
            raise FeatureImportError(f"{place(i)}: take {take.take_id} is listed twice")
        seen.add(take.take_id)
        _check_target(task, take, f"{place(i)}: take {take.take_id}")
        if take.split not in SPLITS:
            raise FeatureImportError(
                f"{place(i)}: take {take.take_id}: split {take.split!r} is not train, val, test "
                "or empty"
            )


def _check_target(task: dict, take: TakeRow, where: str) -> None:
    """Refuse a target the export's task (its record) does not take, naming ``where``."""
    try:
        get_task(task["name"]).encode(take.target, task["schema"])
    except TargetError as err:
        raise FeatureImportError(
            f"{where}: not a target of the export's task {task['name']}: {err}"
        ) from None


HDF5_TAKE_COLUMNS = ("id", "uid", "scenario", "participant", "split")
"""The take table's text columns under an HDF5 export's ``takes/``; the task's target columns
(`skill.tasks.columns`) are there too."""
HDF5_TAKE_RECORDS = ("valid", "frame_index", "timestamp", "padded_frames")
"""An HDF5 export's per-take datasets besides the tokens (and `clip_time`, which exports
of stores before clip times lack)."""
SEQUENCE_WITHOUT_TIMES = (
    "the export's provenance says its clip axis is a sequence, but it has no clip_time: its "
    "padded clips cannot be told from the others"
)


def _hdf5_export(source: Path, views, task: dict, geometry, sequence: bool = False):
    """The export's take table, checked, and a reader of the given rows' arrays."""
    targets = target_columns(get_task(task["name"]), task["schema"])
    with _open_hdf5(source) as f:
        _check_hdf5_layout(source, f, views, geometry, [c.name for c in targets])
        has_times = "clip_time" in f
        if sequence and not has_times:
            raise FeatureImportError(f"{source}: {SEQUENCE_WITHOUT_TIMES}")
        table = {name: [_text(v) for v in f["takes"][name][()]] for name in HDF5_TAKE_COLUMNS}
        cells = {c.name: _hdf5_target_column(source, f, c) for c in targets}
    takes = [
        TakeRow(take_id, _stated(task, {name: cells[name][i] for name in cells}),
                table["scenario"][i], table["participant"][i], table["split"][i],
                table["uid"][i])
        for i, take_id in enumerate(table["id"])
    ]  # fmt: skip
    _check_take_table(takes, task, lambda i: f"{source}: takes/id[{i}]")

    def read(rows: list[int]) -> Iterator[TakeData]:
        with _open_hdf5(source) as f:
            # the per-take records are small: read whole, once (a lookup per take and dataset
            # cost more than the tokens' reads)
            records = {name: f[name][()] for name in HDF5_TAKE_RECORDS}
            times = f["clip_time"][()] if has_times else None
            tokens_of = f["tokens"]
            for i in rows:
                tokens, valid = np.asarray(tokens_of[i], dtype=np.float16), records["valid"][i]
                _check_finite(tokens[valid], f"{source}:tokens[{i}] (take {takes[i].take_id})")
                yield TakeData(tokens, valid.astype(bool), records["frame_index"][i],
                               records["timestamp"][i], records["padded_frames"][i],
                               None if times is None else times[i])  # fmt: skip

    return takes, read


def _hdf5_target_column(source: Path, f, column) -> list:
    """One target column of an HDF5 export's take table: text ("" read as none), or numbers
    (NaN read as none)."""
    data = f["takes"][column.name][()]
    if not column.number:
        return [_text(v) or None for v in data]
    if data.dtype.kind not in "fiu":
        raise FeatureImportError(
            f"{source}: takes/{column.name} must hold numbers, got dtype {data.dtype}"
        )
    return [float(v) if np.isfinite(v) else None for v in data.astype(np.float64)]


def _check_hdf5_layout(
    source: Path, f, views: list[str], geometry, target_names: list[str]
) -> None:
    """Every dataset an HDF5 export has is there, with the shape its metadata give."""
    clips, tokens, dim, frames = geometry
    n = _hdf5_dataset(source, f, "tokens").shape[:1]  # () for a scalar, refused below
    v = len(views)
    want = {
        "tokens": (*n, v, clips, tokens, dim),
        "valid": (*n, v),
        "frame_index": (*n, v, clips, frames),
        "timestamp": (*n, v, clips, frames),
        "padded_frames": (*n, v),
        **{f"takes/{name}": n for name in (*HDF5_TAKE_COLUMNS, *target_names)},
    }
    if "clip_time" in f:
        want["clip_time"] = (*n, v, clips, 2)
    for name, shape in want.items():
        dataset = _hdf5_dataset(source, f, name)
        if dataset.shape != shape or not n:
            shown = ("n", *shape[len(n) :])
            raise FeatureImportError(
                f"{source}: {name} has shape {dataset.shape}, its metadata say "
                f"({', '.join(map(str, shown))})"
            )
    if "view" in f:
        stored = [_text(name) for name in _hdf5_dataset(source, f, "view")[()]]
        if stored != views:
            raise FeatureImportError(
                f"{source}: dataset 'view' names {stored}, attribute 'views' {views}"
            )


def _hdf5_dataset(source: Path, f, name: str):
    import h5py

    try:
        dataset = f.get(name)
    except (KeyError, TypeError, ValueError):  # a path through something not a group
        dataset = None
    if not isinstance(dataset, h5py.Dataset):
        raise FeatureImportError(f"{source}: no dataset {name!r}: not a complete skill export")
    return dataset


def _npy_export(source: Path, views, task: dict, shape, version: int, sequence: bool = False):
    """The export's take table (takes.csv), checked with every file it names, and a reader of
    the given rows' arrays."""
    from skill.interop.export import TAKES_CSV

    csv_path = source / TAKES_CSV
    targets = target_columns(get_task(task["name"]), task["schema"])
    rows, lines = _read_takes_csv(csv_path, [*(c.name for c in targets), *views])
    takes = [
        TakeRow(r["take"], _csv_target(task, targets, r, f"{csv_path}:{line}"), r["scenario"],
                r["participant"], r["split"], r["uid"])
        for r, line in zip(rows, lines, strict=True)
    ]  # fmt: skip
    _check_take_table(takes, task, lambda i: f"{csv_path}:{lines[i]}")
    files = _export_files(source, csv_path, rows, lines, views, version)
    clips, tokens, dim = shape
    frames = _export_frames(source, (len(rows), len(views), clips))
    if sequence and (frames is None or frames[3] is None):
        raise FeatureImportError(f"{source}: {SEQUENCE_WITHOUT_TIMES}")

    def read(wanted: list[int]) -> Iterator[TakeData]:
        for i in wanted:
            data = np.zeros((len(views), clips, tokens, dim), dtype=np.float16)
            valid = np.zeros(len(views), dtype=bool)
            for v, path in enumerate(files[i]):
                if path is not None:
                    values = _load_2d(path, expected_dim=dim)
                    if values.shape[0] != clips * tokens:
                        raise FeatureImportError(
                            f"{path}: {values.shape[0]} rows, the export says {clips} clips x "
                            f"{tokens} tokens"
                        )
                    data[v], valid[v] = values.reshape(clips, tokens, dim), True
            if frames is None:
                yield TakeData(data, valid)
            else:
                index, times, padded, clip_time = frames
                clip_time = None if clip_time is None else clip_time[i]
                yield TakeData(data, valid, index[i], times[i], padded[i], clip_time)

    return takes, read


def _csv_target(task: dict, targets: list, row: dict[str, str], where: str):
    """A row's target as a manifest states it, from its target cells (an empty cell: none)."""
    cells: dict[str, object] = {}
    for column in targets:
        text = row[column.name]
        cells[column.name] = text or None
        if text and column.number:
            try:
                cells[column.name] = float(text)
            except ValueError:
                raise FeatureImportError(
                    f"{where}: take {row['take']}: {column.name} {text!r} is not a number"
                ) from None
    return _stated(task, cells)


def _stated(task: dict, cells: dict[str, object]):
    """A target as a manifest states it from its cells, for the export's task (its record)."""
    return stated_target(get_task(task["name"]), task["schema"], cells)


def _read_takes_csv(path: Path, views: list[str]) -> tuple[list[dict[str, str]], list[int]]:
    """takes.csv's rows (column -> text) and the line each starts on; every column of the
    take table and every one of ``views`` (the target columns among them) must be in its
    header, and every row must fill it."""
    from skill.interop.export import TAKE_COLUMNS

    return _read_csv_table(path, (*TAKE_COLUMNS, *views))


def _read_csv_table(path: Path, needed) -> tuple[list[dict[str, str]], list[int]]:
    """A CSV file's rows (column -> text) and the line each starts on; every column of
    ``needed`` must be in its header, and every row must fill it."""
    records, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            for record in reader:
                if record:
                    records.append(record)
                    lines.append(reader.line_num)
    except FileNotFoundError:
        raise FeatureImportError(f"{path}: missing; an npy export lists its takes there") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise FeatureImportError(f"{path}: not a readable CSV file ({err})") from None
    missing = [column for column in needed if column not in header]
    if missing:
        raise FeatureImportError(f"{path}:1: the header lacks the column(s) {', '.join(missing)}")
    if len(set(header)) != len(header):
        raise FeatureImportError(f"{path}:1: the header names a column twice")
    for record, line in zip(records, lines, strict=True):
        if len(record) != len(header):
            raise FeatureImportError(
                f"{path}:{line}: {len(record)} fields, the header has {len(header)}"
            )
    return [dict(zip(header, record, strict=True)) for record in records], lines


def _export_files(source, csv_path, rows, lines, views, version) -> list[list[Path | None]]:
    """Each row's file per view (None where the view is invalid): named the way the export
    names it, inside the export, there, and no file named twice."""
    named: dict[str, int] = {}
    files = []
    for row, line in zip(rows, lines, strict=True):
        where = f"{csv_path}:{line}"
        paths: list[Path | None] = []
        for view in views:
            cell = row[view]
            if not cell:
                paths.append(None)
                continue
            _check_file_cell(where, row["take"], view, cell, version)
            if cell in named:
                raise FeatureImportError(
                    f"{where}: take {row['take']} view {view}: the file {cell} is named on "
                    f"line {named[cell]} too"
                )
            named[cell] = line
            paths.append(_file_inside(source, where, row["take"], view, cell))
        files.append(paths)
    return files


def _check_file_cell(where: str, take: str, view: str, cell: str, version: int) -> None:
    """A file cell names the file an export of `version` writes for this take and view:
    ``<take>/<view>.npy`` (escaped) from version 2, a bare file name in version 1."""
    from skill.interop.export import npy_file

    if version >= 2:
        expected = npy_file(take, view)
        if cell != expected:
            raise FeatureImportError(
                f"{where}: take {take} view {view} names the file {shown_name(cell)}; the "
                f"export names it {shown_name(expected)}"
            )
        return
    problem = name_problem(cell)
    if problem:
        raise FeatureImportError(
            f"{where}: take {take} view {view}: the file name {shown_name(cell)} {problem}; "
            "takes.csv names files of the export folder by bare name"
        )


def _file_inside(source: Path, where: str, take: str, view: str, cell: str) -> Path:
    path = source / cell
    base, real = os.path.realpath(source), os.path.realpath(path)
    if os.path.commonpath([base, real]) != base:
        raise FeatureImportError(
            f"{where}: take {take} view {view}: {path} leads outside the export (a link?)"
        )
    if not os.path.isfile(real):
        raise FeatureImportError(f"{where}: take {take} view {view}: {path} is missing")
    return path


def _export_frames(source: Path, rows_views_clips: tuple[int, int, int]):
    """(frame_index, timestamp, padded_frames, clip_time) of an npy export's frames.npz
    (clip_time None where the export predates it), or None for an export written before it
    had one (its frames are then unknown, as for foreign features). Arrays of other shapes
    than takes.csv and the metadata say are refused."""
    from skill.interop.export import FRAMES_NPZ

    path = source / FRAMES_NPZ
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = tuple(data[k] for k in ("frame_index", "timestamp", "padded_frames"))
            clip_time = data["clip_time"] if "clip_time" in data.files else None
    except (OSError, ValueError, KeyError) as err:
        raise FeatureImportError(f"{path}: not the export's frame records ({err})") from err
    index, times, padded = arrays
    if (
        index.shape[:3] != rows_views_clips
        or times.shape != index.shape
        or (padded.shape != rows_views_clips[:2])
        or (clip_time is not None and clip_time.shape != (*rows_views_clips, 2))
    ):
        shown = "" if clip_time is None else f", clip_time {clip_time.shape}"
        raise FeatureImportError(
            f"{path}: frame_index {index.shape}, timestamp {times.shape}, padded_frames "
            f"{padded.shape}{shown} do not fit {rows_views_clips[0]} takes x "
            f"{rows_views_clips[1]} views x {rows_views_clips[2]} clips"
        )
    return (*arrays, clip_time)


def _manifest_rows_in(cfg, source: Path, exported: list[TakeRow], task: dict) -> list[TakeRow]:
    """The manifest's takes (their metadata, their targets read for the export's task), each
    of which the export must hold."""
    dataset = _manifest_takes(cfg, task["name"])
    have = {t.take_id for t in exported}
    missing = [t.take_id for t in dataset.takes if t.take_id not in have]
    if missing:
        raise FeatureImportError(
            f"{source}: {len(missing)} take(s) of {cfg.manifest} are not in the export: "
            f"{', '.join(missing[:5])}"
        )
    from skill.pipeline.extract import take_row

    rows = [take_row(take) for take in dataset.takes]
    for row in rows:
        _check_target(task, row, f"{cfg.manifest}: take {row.take_id}")
    return rows


# ---- per-video features ------------------------------------------------------------------
class _FeatureFiles:
    """Per-video arrays by key (a relative path without ``.npy``, or an HDF5 dataset name)."""

    def __init__(self, source: Path):
        self.source = source
        self._hdf5 = None  # the open HDF5 source inside `opened`
        if source.is_dir():
            self.keys = {
                str(p.relative_to(source))[: -len(".npy")]: p for p in source.rglob("*.npy")
            }
        else:
            with _open_hdf5(source) as f:
                names: list[str] = []
                f.visititems(lambda name, obj: names.append(name) if _is_dataset(obj) else None)
            self.keys = {name: name for name in names}

    def where(self, key: str) -> str:
        """How a message names one array: its file, or the HDF5 file and dataset."""
        return str(self.keys[key]) if self.source.is_dir() else f"{self.source}:{key}"

    @contextlib.contextmanager
    def opened(self) -> Iterator[None]:
        """Keep an HDF5 source open for the reads inside: one open for all its videos, not
        one each (an open per video more than doubled an import's reads)."""
        if self.source.is_dir() or self._hdf5 is not None:
            yield
            return
        with _open_hdf5(self.source) as f:
            self._hdf5 = f
            try:
                yield
            finally:
                self._hdf5 = None

    def read(self, key: str) -> np.ndarray:
        if self.source.is_dir():
            return _load_2d(self.keys[key], expected_dim=None)
        with self.opened():
            return _checked_2d(self._hdf5[key][()], self.where(key), expected_dim=None)


def _is_dataset(obj) -> bool:
    import h5py

    return isinstance(obj, h5py.Dataset)


@dataclass
class _Agreed:
    """What every video must agree on, and the file that set it (for messages)."""

    dim: int
    rows: int
    first: str


def _plan_from_videos(cfg: ImportFeaturesConfig, source: Path) -> ImportPlan:
    dataset = _manifest_takes(cfg)
    files = _FeatureFiles(source)
    keys, feature = _match_videos(cfg, dataset, files)
    first = next(iter(keys.values()))  # every take has a video (the manifest checks it)
    sample = files.read(first)
    agreed = _Agreed(dim=sample.shape[1], rows=sample.shape[0], first=files.where(first))
    n_tokens = cfg.tokens if cfg.tokens is not None else sample.shape[0] // cfg.clips
    views = list(dataset.views)

    def read() -> Iterator[TakeData]:
        with files.opened():
            for take in dataset.takes:
                tokens = np.zeros((len(views), cfg.clips, n_tokens, agreed.dim), np.float16)
                valid = np.zeros(len(views), dtype=bool)
                for v, view in enumerate(views):
                    key = keys.get((take.take_id, view))
                    if key is not None:  # None: the manifest has no video for this view
                        tokens[v] = _video_tokens(files, key, cfg, agreed)
                        valid[v] = True
                yield TakeData(tokens, valid)

    layout = {
        "clips": cfg.clips,
        "tokens": n_tokens,
        "dim": agreed.dim,
        "from": "per-video (T, D), "
        + (f"mean-pooled to {cfg.clips} x {cfg.tokens} tokens" if cfg.tokens else "rows as tokens"),
    }
    kind = "per-video npy" if source.is_dir() else "per-video hdf5"
    provenance = _provenance(source, kind, layout, feature, None)
    from skill.pipeline.extract import take_row

    task = task_record(dataset.task, dataset.schema)
    takes = [take_row(take) for take in dataset.takes]
    return ImportPlan(views, task, cfg.clips, n_tokens, agreed.dim, 1, provenance,
                      takes, read)  # fmt: skip


def _video_tokens(files: _FeatureFiles, key: str, cfg, agreed: _Agreed) -> np.ndarray:
    """One video's (clips, N, D) float16, checked against what the other videos have."""
    where, rows = files.where(key), files.read(key)
    if rows.shape[1] != agreed.dim:
        raise FeatureImportError(
            f"{where}: feature width {rows.shape[1]}, but {agreed.first} has {agreed.dim}: "
            "every video must have the same width"
        )
    if cfg.tokens is None and rows.shape[0] != agreed.rows:
        raise FeatureImportError(
            f"{where}: {rows.shape[0]} rows, but {agreed.first} has {agreed.rows}: pass "
            "--tokens-per-clip N to pool every video to N tokens per clip"
        )
    return _to_clips(rows, cfg.clips, cfg.tokens, where)


def _match_videos(cfg, dataset, files: _FeatureFiles) -> tuple[dict[tuple[str, str], str], str]:
    """((take, view) -> the key of its features, the feature name); an error naming the
    first video without features."""
    wanted = {}
    for take in dataset.takes:
        for view, video in take.videos.items():
            if video is not None:
                wanted[(take.take_id, view)] = Path(video).stem
    feature = cfg.feature if cfg.feature is not None else _only_feature(wanted, files)
    suffix = f"_{feature}" if feature else ""
    stems: dict[str, set[str]] = {}
    for (take_id, _), stem in wanted.items():
        stems.setdefault(stem, set()).add(take_id)
    keys, missing = {}, []
    for (take_id, view), stem in wanted.items():
        nested, flat = f"{take_id}/{stem}{suffix}", f"{stem}{suffix}"
        if nested in files.keys:
            keys[(take_id, view)] = nested
        elif flat in files.keys:
            if len(stems[stem]) > 1:
                raise FeatureImportError(
                    f"{files.source}: {flat} could be the video {stem} of takes "
                    f"{', '.join(sorted(stems[stem])[:3])}: put each take's files in a "
                    "folder (or HDF5 group) named by the take"
                )
            keys[(take_id, view)] = flat
        else:
            missing.append((take_id, view, flat))
    if missing:
        take_id, view, flat = missing[0]
        raise FeatureImportError(
            f"{files.source}: no features for take {take_id} view {view} (looked for "
            f"{take_id}/{flat} and {flat}{'.npy' if files.source.is_dir() else ''}); "
            f"{len(missing)} video(s) of {cfg.manifest} have none"
        )
    return keys, feature


def _only_feature(wanted: dict, files: _FeatureFiles) -> str:
    """The feature name when the files of the manifest's videos have exactly one."""
    stems = set(wanted.values())
    found = set()
    for key in files.keys:
        name = key.rsplit("/", 1)[-1]
        if name in stems:
            found.add("")
        # `<stem>_<feature>`: a stem may hold "_" itself, so try every "_" as the split
        for cut in (i for i, c in enumerate(name) if c == "_"):
            if name[:cut] in stems:
                found.add(name[cut + 1 :])
    if len(found) > 1:
        raise FeatureImportError(
            f"{files.source}: several feature types per video ({', '.join(sorted(found))}); "
            "pass --feature to choose one"
        )
    return found.pop() if found else ""


def _to_clips(rows: np.ndarray, clips: int, tokens: int | None, where: str) -> np.ndarray:
    """(T, D) -> (clips, N, D) float16: rows as tokens, or mean-pooled to `tokens` per clip."""
    if tokens is None:
        if rows.shape[0] % clips:
            raise FeatureImportError(
                f"{where}: {rows.shape[0]} rows do not split into {clips} clips"
            )
        out = rows.reshape(clips, rows.shape[0] // clips, rows.shape[1])
    else:
        n = clips * tokens
        if rows.shape[0] < n:
            raise FeatureImportError(
                f"{where}: {rows.shape[0]} rows, fewer than {clips} clips x {tokens} tokens"
            )
        pooled = np.stack([part.mean(axis=0) for part in np.array_split(rows, n)])
        out = pooled.reshape(clips, tokens, rows.shape[1])
    half = out.astype(np.float16)
    _check_finite(half, f"{where} (in float16)")
    return half


# ---- reading one array -------------------------------------------------------------------
def _load_2d(path: Path, expected_dim: int | None) -> np.ndarray:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise FeatureImportError(f"{path}: not a readable .npy file ({err})") from err
    return _checked_2d(data, str(path), expected_dim)


def _checked_2d(data, where: str, expected_dim: int | None) -> np.ndarray:
    data = np.asarray(data)
    if data.ndim != 2:
        raise FeatureImportError(
            f"{where}: features must be (T, D), one row per time step; got shape {data.shape}"
        )
    if data.dtype.kind not in "fiu":
        raise FeatureImportError(f"{where}: features must be numbers, got dtype {data.dtype}")
    if data.shape[0] == 0:
        raise FeatureImportError(f"{where}: no rows (T = 0)")
    if expected_dim is not None and data.shape[1] != expected_dim:
        raise FeatureImportError(f"{where}: width {data.shape[1]}, expected {expected_dim}")
    _check_finite(data, where)
    return data


def _check_finite(data: np.ndarray, where: str) -> None:
    if not np.isfinite(data).all():
        raise FeatureImportError(f"{where}: holds NaN or Inf values")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
