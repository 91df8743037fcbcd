"""`skill export`: a store's completed takes as one HDF5 file, or as a folder of per-video
``(K * N, D)`` ``.npy`` files (the layout of feature extractors such as video_features) with
``takes.csv``, ``frames.npz`` and ``skill_export.json``, for tools that read neither Zarr nor
skill. Take and view names become file names through `file_component`, which no two names
share and no name can use to leave the folder; the export is built under a staging name
beside OUT and renamed into place, so nothing is half-written, even when HDF5 cannot write (a
full disk). The layouts are in docs/interop.md."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skill.cache.errors import StoreError
from skill.tasks import get_task
from skill.tasks.columns import UntabledTargets, column_values, target_columns

if TYPE_CHECKING:
    from skill.cache.store import FrameRecords, TakeRecords

EXPORT_FORMATS = ("hdf5", "npy")
EXPORT_FORMAT_VERSION = 3
"""3: the metadata hold the store's task (``task``: name, schema, target) and the take table
its target columns (`skill.tasks.columns`); 2 held class labels only (``labels``, a ``label``
column); 2: npy files are ``<take>/<view>.npy`` (names escaped by `file_component`); 1 wrote
``<take>_<view>.npy`` side by side, which two takes could share."""
TAKES_CSV = "takes.csv"
PAIRS_CSV = "pairs.csv"
PAIR_COLUMNS = ("better", "worse", "split")
"""A store's pairs of takes (a ranking task's) in `pairs.csv` and under the HDF5 file's
``pairs/``: the take showing more skill, the other, the pair's split."""
FRAMES_NPZ = "frames.npz"
EXPORT_JSON = "skill_export.json"
COMPONENT_MAX_BYTES = 255
"""The longest file-name component every common file system takes, in bytes."""
TAKE_COLUMNS = ("take", "uid", "scenario", "participant", "split")
"""The take table's text columns in `takes.csv` and under the HDF5 file's ``takes/`` (``take``
is ``takes/id`` in HDF5); the task's target columns (`skill.tasks.columns`) follow ``uid``."""
TAKES_PER_READ = 64
"""Takes read from the store at a time in the write layout (one chunk per take and view):
bounds memory on a large store. A packed store is read a tokens chunk at a time."""


@dataclass
class ExportConfig:
    """Everything that decides an ``export`` (the field docstrings are its options' help)."""

    store: str
    """The token store to export (a .zarr folder)."""
    out: str
    """Where to write: a file (hdf5) or a folder (npy); it must not exist, or be empty."""
    format: str = "hdf5"
    """hdf5 (one file: tokens, mask, frames, take table, provenance) or npy (one (K*N, D)
    file per take and valid view, <take>/<view>.npy, plus takes.csv and skill_export.json)."""

    def __post_init__(self) -> None:
        from skill.errors import ConfigError

        self.store, self.out = str(self.store), str(self.out)
        if self.format not in EXPORT_FORMATS:
            raise ConfigError(
                f"--format must be {' or '.join(EXPORT_FORMATS)}, not {self.format!r}"
            )


@dataclass
class ExportResult:
    """What an export wrote."""

    out: Path
    takes: int
    files: int  # files written (1 for hdf5)
    pairs: int | None = None  # pairs of takes written (None: the store records none)
    pairs_left_out: int = 0  # recorded pairs naming a take that is not completed


@dataclass
class _Completed:
    """The completed takes of a store: their rows and take table columns."""

    rows: np.ndarray  # (n,) rows of the store's take table
    columns: dict[str, list]  # TAKE_COLUMNS and the target columns -> (n,) values
    valid: np.ndarray  # (n, V) bool
    records: TakeRecords  # the store's take records (status, valid, token_crc)
    frames: FrameRecords  # the store's frame records, every committed take
    pairs: dict[str, list] | None = None  # PAIR_COLUMNS -> (m,): the pairs of completed takes
    pairs_left_out: int = 0  # recorded pairs naming a take that is not completed


def export_store(cfg: ExportConfig) -> ExportResult:
    """Write the completed takes of `cfg.store` to `cfg.out` in `cfg.format`."""
    from skill.cache.files import remove_dead_staging, staging_path
    from skill.cache.recovery import describe_os_error
    from skill.cache.store import TokenStore

    out = Path(cfg.out)
    _check_out_free(out)
    remove_dead_staging(out.parent, out.name)
    store = TokenStore.open(cfg.store)
    try:
        target_columns(*_task_of(store))
    except UntabledTargets as err:
        raise StoreError(f"{store.path}: cannot export its targets: {err}") from None
    with store.reading():
        completed = _completed_takes(store)
        if not len(completed.rows):
            raise StoreError(f"{store.path}: no completed take to export")
        staging = staging_path(out)
        try:
            if cfg.format == "hdf5":
                _write_hdf5(store, completed, staging)
                files = 1
            else:
                files = _write_npy(store, completed, staging, out)
            _check_out_free(out)  # nobody made it meanwhile
            if out.is_dir():
                out.rmdir()  # empty (checked): replaced by the export
            elif out.exists():
                out.unlink()  # an empty file
            os.rename(staging, out)
        except OSError as err:
            raise StoreError(
                f"{out}: could not write the export: {describe_os_error(err)}; nothing was kept"
            ) from err
        finally:
            _remove(staging)
    pairs = None if completed.pairs is None else len(completed.pairs["split"])
    return ExportResult(out=out, takes=len(completed.rows), files=files, pairs=pairs,
                        pairs_left_out=completed.pairs_left_out)  # fmt: skip


def _check_out_free(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()):
        raise StoreError(f"{out}: exists and is not empty; choose a new path or empty it")
    if out.is_file() and out.stat().st_size:
        raise StoreError(f"{out}: exists; choose a new path or remove it")
    if not out.parent.is_dir():
        raise StoreError(f"{out}: parent folder {out.parent} does not exist")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _task_of(store) -> tuple:
    """The store's task and its schema."""
    return get_task(store.task["name"]), store.task["schema"]


def _completed_takes(store) -> _Completed:
    from skill.cache.store import STATUS_COMPLETE

    records = store.take_records()
    table, status, valid = records.table, records.status, records.valid
    rows = np.flatnonzero(status == STATUS_COMPLETE)
    columns = {
        "take": table.ids[rows].tolist(),
        "uid": table.uid[rows].tolist(),
        **column_values(*_task_of(store), table.target[rows]),
        "scenario": table.scenario[rows].tolist(),
        "participant": table.participant[rows].tolist(),
        "split": table.split[rows].tolist(),
    }
    pairs, left_out = _completed_pairs(store, table.ids, rows)
    return _Completed(
        rows=rows, columns=columns, valid=valid[rows], records=records,
        frames=store.frame_records(), pairs=pairs, pairs_left_out=left_out,
    )  # fmt: skip


def _completed_pairs(store, ids: np.ndarray, rows: np.ndarray) -> tuple[dict | None, int]:
    """The store's recorded pairs (a ranking task's) whose takes are both completed, by take
    name, and how many name a take that is not (None: the store records no pairs)."""
    recorded = store.pairs()
    if recorded is None:
        return None, 0
    pair_rows, splits = recorded
    keep = np.isin(pair_rows, rows).all(axis=1)
    better, worse = ids[pair_rows[keep, 0]], ids[pair_rows[keep, 1]]
    columns = {"better": better.tolist(), "worse": worse.tolist(), "split": splits[keep].tolist()}
    return columns, int((~keep).sum())


def _blocks(store, completed: _Completed):
    """(first row of the block in the export, tokens (b, V, K, N, D)): the completed takes of
    one packed tokens chunk at a time (reading part of a chunk verifies all of it, so a block
    that split a chunk would read it twice), or TAKES_PER_READ takes in the write layout."""
    from skill.cache import layout

    meta = layout.array_metadata(store.path, "tokens")
    per_block = layout.chunk_shape(meta)[0] if layout.is_packed(meta) else TAKES_PER_READ
    views = np.arange(len(store.views))
    block_of = completed.rows // per_block
    starts = np.flatnonzero(np.r_[True, block_of[1:] != block_of[:-1]])  # rows: never empty
    for start, stop in zip(starts, [*starts[1:], len(completed.rows)], strict=True):
        rows = completed.rows[start:stop]
        yield int(start), store.read_tokens(rows, views, records=completed.records)


def export_metadata(store) -> dict:
    """What an export says about where it came from (JSON-able)."""
    from skill.cache.store import package_version

    return {
        "skill_export": {
            "format_version": EXPORT_FORMAT_VERSION,
            "package_version": package_version(),
            "source_store": str(Path(store.path).resolve()),
        },
        "provenance": store.provenance,
        "views": list(store.views),
        "task": store.task,
        # for readers of format 2, which knew class labels only
        **({"labels": list(store.task["schema"]["labels"])} if _has_labels(store.task) else {}),
        "geometry": {
            "clips": store.clips,
            "tokens": store.tokens,
            "dim": store.dim,
            "frames": store.frames,
        },
    }


def _has_labels(task: dict) -> bool:
    labels = task["schema"].get("labels")
    return isinstance(labels, list) and all(isinstance(label, str) for label in labels)


class _WriteOnce(io.RawIOBase):
    """The file h5py's ``fileobj`` driver writes the export through. A write that fails (a
    full disk) is recorded in `error` and reported to HDF5 as done, and later writes are
    dropped: HDF5 never sees a failure, so it can still close the file; a file HDF5 could not
    flush stays open in it and crashes the process at exit (SIGSEGV)."""

    def __init__(self, raw: io.FileIO):
        super().__init__()
        self.raw, self.error = raw, None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = self.raw.readinto(view) or 0
        view[done:] = bytes(len(view) - done)  # past what was written: zeros, not old memory
        return len(view)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if self.error is None:
            try:
                while view:  # a short write (a disk filling up) goes on until it raises
                    view = view[self.raw.write(view) :]
            except OSError as err:
                self.error = err
        return size

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self.raw.truncate(size)
            except OSError as err:
                self.error = err
        return self.tell() if size is None else size

    def flush(self) -> None:
        pass

    def check(self) -> None:
        """Raise the first failed write, if there was one."""
        if self.error is not None:
            raise self.error


def _write_hdf5(store, completed: _Completed, path: Path) -> None:
    with open(path, "x+b", buffering=0) as raw:
        sink = _WriteOnce(raw)
        try:
            _fill_hdf5(store, completed, sink)
        finally:
            sink.check()  # after h5py closed the file: a failure during its close counts too


def _fill_hdf5(store, completed: _Completed, sink: _WriteOnce) -> None:
    import h5py

    n, n_views = len(completed.rows), len(store.views)
    text = h5py.string_dtype()
    per_take = (store.clips, store.tokens, store.dim)
    with h5py.File(sink, "w") as f:
        tokens = f.create_dataset(
            "tokens", shape=(n, n_views, *per_take), dtype="float16",
            chunks=(1, n_views, *per_take) if n else None,
        )  # fmt: skip
        for start, block in _blocks(store, completed):
            tokens[start : start + len(block)] = block
            sink.check()  # stop at the first failed write, not after the whole store
        rows = completed.rows
        f.create_dataset("valid", data=completed.valid)
        f.create_dataset("frame_index", data=completed.frames.frame_index[rows])
        f.create_dataset("timestamp", data=completed.frames.timestamp[rows])
        f.create_dataset("clip_time", data=completed.frames.clip_time[rows])
        f.create_dataset("padded_frames", data=completed.frames.padded_frames[rows])
        f.create_dataset("view", data=list(store.views), dtype=text)
        takes = f.create_group("takes")
        numbers = {column.name for column in target_columns(*_task_of(store)) if column.number}
        for column, values in completed.columns.items():
            name = "id" if column == "take" else column
            if column in numbers:
                data = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
                takes.create_dataset(name, data=data, shape=(n,))
            else:
                data = ["" if v is None else v for v in values]
                takes.create_dataset(name, data=data, dtype=text, shape=(n,))
        if completed.pairs is not None:
            pairs = f.create_group("pairs")
            for column, values in completed.pairs.items():
                pairs.create_dataset(column, data=values, dtype=text, shape=(len(values),))
        for key, value in export_metadata(store).items():
            f.attrs[key] = json.dumps(value)


def _write_npy(store, completed: _Completed, folder: Path, out: Path) -> int:
    """Write the npy export into `folder` (its staging name; messages name `out`)."""
    folder.mkdir()
    take_folders, names = _npy_names(store, completed)
    files = 0
    for start, block in _blocks(store, completed):
        for offset, take_tokens in enumerate(block):
            i = start + offset
            if completed.valid[i].any():
                _new_folder(folder, take_folders[i], out, completed.columns["take"][i])
            for v in np.flatnonzero(completed.valid[i]):
                # (K, N, D) -> (K * N, D): the per-video (T, D) layout of feature extractors
                with _new_file(folder, names[i][v], out) as f:
                    np.save(f, take_tokens[v].reshape(-1, store.dim))
                files += 1
    with _new_file(folder, TAKES_CSV, out, text=True) as f:
        writer = csv.writer(f)
        writer.writerow([*completed.columns, *store.views])
        for i in range(len(completed.rows)):
            cells = (_csv_cell(values[i]) for values in completed.columns.values())
            writer.writerow([*cells, *names[i]])
    if completed.pairs is not None:
        with _new_file(folder, PAIRS_CSV, out, text=True) as f:
            writer = csv.writer(f)
            writer.writerow(PAIR_COLUMNS)
            writer.writerows(zip(*(completed.pairs[c] for c in PAIR_COLUMNS), strict=True))
    rows = completed.rows
    with _new_file(folder, FRAMES_NPZ, out) as f:
        np.savez(
            f,
            frame_index=completed.frames.frame_index[rows],
            timestamp=completed.frames.timestamp[rows],
            clip_time=completed.frames.clip_time[rows],
            padded_frames=completed.frames.padded_frames[rows],
        )
    with _new_file(folder, EXPORT_JSON, out, text=True) as f:
        f.write(json.dumps(export_metadata(store), indent=2) + "\n")
    return files


def _csv_cell(value) -> str:
    """A take table value as takes.csv holds it: a number by its shortest exact text."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def _npy_names(store, completed: _Completed) -> tuple[list[str], list[list[str]]]:
    """Each take's folder, and takes.csv's file cells: ``<take>/<view>.npy`` per valid view,
    "" for the others. Every name is checked before anything is written."""
    views = [_component(store, "view", view, ".npy", frozenset()) for view in store.views]
    folders, names = [], []
    for i, take in enumerate(completed.columns["take"]):
        folders.append(_component(store, "take", take, "", _TOP_LEVEL))
        valid = completed.valid[i]
        names.append([f"{folders[i]}/{views[v]}" if ok else "" for v, ok in enumerate(valid)])
    return folders, names


def npy_file(take: str, view: str) -> str:
    """Where an npy export keeps one take's view, relative to the export (as takes.csv names
    it); ValueError for a name no file can have."""
    return f"{file_component(take, reserved=_TOP_LEVEL)}/{file_component(view, '.npy')}"


def _component(store, what: str, name: str, suffix: str, reserved: frozenset[str]) -> str:
    try:
        return file_component(name, suffix, reserved)
    except ValueError as err:
        raise StoreError(
            f"{store.path}: {what} {name[:60]!r} cannot name a file: {err}; export it as "
            "hdf5, which keeps names as text"
        ) from None


def _new_folder(folder: Path, name: str, out: Path, take: str) -> None:
    """Make the folder of one take's files; refuses one that exists (another take's)."""
    path = _inside(folder, name, out)
    try:
        path.mkdir()
    except FileExistsError:
        raise StoreError(
            f"{out}: take {take!r} would share the folder {name!r} with another take (names "
            "that differ only in case, on a file system that ignores case?); nothing was kept"
        ) from None


def _new_file(folder: Path, name: str, out: Path, text: bool = False):
    """Open `name` inside `folder` for writing; refuses to overwrite a file."""
    path = _inside(folder, name, out)
    try:
        return open(path, "x", newline="") if text else open(path, "xb")
    except FileExistsError:
        raise StoreError(
            f"{out}: {name!r} would be written twice (names that differ only in case, on a "
            "file system that ignores case?); nothing was kept"
        ) from None


def _inside(folder: Path, name: str, out: Path) -> Path:
    """`folder / name`, checked to lie inside `folder` (links followed); messages name the
    export by `out`, the name it will have."""
    path = folder / name
    base, real = os.path.realpath(folder), os.path.realpath(path)
    if real == base or os.path.commonpath([base, real]) != base:
        raise StoreError(f"{out}: {name!r} would be written outside the export; nothing was kept")
    return path


_TOP_LEVEL = frozenset(name.casefold() for name in (TAKES_CSV, PAIRS_CSV, FRAMES_NPZ, EXPORT_JSON))
_ESCAPED = re.compile(r'[%/\\<>:"|?*\x00-\x1f\x7f-\x9f\ud800-\udfff]')
_WINDOWS_DEVICE = re.compile(r"(?i)(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?")


def file_component(name: str, suffix: str = "", reserved: frozenset[str] = frozenset()) -> str:
    """`name` + `suffix` as one file-name component that no other name gives and that every
    common file system takes: ``%``, path separators, control characters and the characters
    Windows forbids become ``%XX`` (UTF-8 bytes, as in URLs); so do a leading ``.`` (hidden
    files, ``..``), a trailing ``.`` or space, the first character of a Windows device name
    (``CON``) or of a name in `reserved` (compared ignoring case). ValueError for an empty
    name or one longer than `COMPONENT_MAX_BYTES`."""
    if not name:
        raise ValueError("the name is empty")
    encoded = _ESCAPED.sub(lambda m: _percent(m.group()), name)
    if (
        encoded.startswith(".")
        or _WINDOWS_DEVICE.fullmatch(encoded)
        or (encoded + suffix).casefold() in reserved
    ):
        encoded = _percent(encoded[0]) + encoded[1:]
    if encoded.endswith((".", " ")):
        encoded = encoded[:-1] + _percent(encoded[-1])
    component = encoded + suffix
    size = len(component.encode("utf-8"))
    if size > COMPONENT_MAX_BYTES:
        raise ValueError(
            f"it becomes a file name of {size} bytes, longer than the {COMPONENT_MAX_BYTES} "
            "file systems take"
        )
    return component


def _percent(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
