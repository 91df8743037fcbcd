"""`skill export`: a store's completed takes as HDF5 or as per-video `.npy` files.

For tools that read neither Zarr nor skill. Only completed takes are written.

*hdf5*: one file. ``tokens (n, V, K, N, D)`` float16, chunked one take per chunk;
``valid (n, V)``; ``frame_index``, ``timestamp (n, V, K, T)``; ``padded_frames (n, V)``;
``view`` (names) and the take table under ``takes/`` (``id``, ``uid``, ``label`` as class
names, "" = unlabelled, ``scenario``, ``participant``, ``split``). Root attributes, JSON
strings: ``skill_export`` (format, package version, source store), ``provenance``,
``views``, ``labels``, ``geometry``.

*npy*: a folder. ``<take>_<view>.npy`` of shape ``(K * N, D)`` float16 per *valid* view (the
per-video ``(T, D)`` layout of feature extractors such as video_features), ``takes.csv`` (the
take table, one column per view holding its file name, "" where the view is invalid),
``frames.npz`` (``frame_index`` and ``timestamp (n, V, K, T)``, ``padded_frames (n, V)``, rows
in takes.csv's order: which frames every token row came from) and ``skill_export.json``
(provenance, views, labels, geometry: clips K and tokens N per view).

Nothing half-written: the export is built under a temporary name beside OUT and renamed
into place; an OUT that exists and is not empty is refused.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skill.cache.errors import StoreError

EXPORT_FORMATS = ("hdf5", "npy")
EXPORT_FORMAT_VERSION = 1
TAKES_CSV = "takes.csv"
FRAMES_NPZ = "frames.npz"
EXPORT_JSON = "skill_export.json"
TAKE_COLUMNS = ("take", "uid", "label", "scenario", "participant", "split")
"""The take table's columns in `takes.csv` and under the HDF5 file's ``takes/``, in order
(``take`` is ``takes/id`` in HDF5)."""
TAKES_PER_READ = 64
"""Takes read from the store at a time in the write layout (one chunk per take and view):
bounds memory on a large store. A packed store is read a tokens chunk at a time."""


@dataclass
class ExportConfig:
    """Everything that decides an ``export``."""

    store: str
    """The token store (``*.zarr``) to export."""
    out: str
    """Where to write: a file (hdf5) or a folder (npy); it must not exist, or be empty."""
    format: str = "hdf5"
    """hdf5 (one file: tokens, mask, frames, take table, provenance) or npy (one (K*N, D)
    file per take and valid view, plus takes.csv and skill_export.json)."""

    def __post_init__(self) -> None:
        from skill.errors import ConfigError

        self.store, self.out = str(self.store), str(self.out)
        if self.format not in EXPORT_FORMATS:
            raise ConfigError(
                f"format: unknown format {self.format!r}; choose from {', '.join(EXPORT_FORMATS)}"
            )


@dataclass
class ExportResult:
    """What an export wrote."""

    out: Path
    takes: int
    files: int  # files written (1 for hdf5)


@dataclass
class _Completed:
    """The completed takes of a store: their rows and take table columns."""

    rows: np.ndarray  # (n,) rows of the store's take table
    columns: dict[str, list[str]]  # TAKE_COLUMNS -> (n,) text
    valid: np.ndarray  # (n, V) bool
    records: tuple[np.ndarray, np.ndarray]  # the store's status (N,) and valid (N, V)


def export_store(cfg: ExportConfig) -> ExportResult:
    """Write the completed takes of `cfg.store` to `cfg.out` in `cfg.format`."""
    from skill.cache.recovery import remove_dead_staging
    from skill.cache.store import TokenStore

    out = Path(cfg.out)
    _check_out_free(out)
    remove_dead_staging(out.parent, f".{out.name}.exporting-")
    store = TokenStore.open(cfg.store)
    with store.reading():
        completed = _completed_takes(store)
        if not len(completed.rows):
            raise StoreError(f"{store.path}: no completed take to export")
        staging = out.parent / f".{out.name}.exporting-{os.getpid()}"
        _remove(staging)
        try:
            if cfg.format == "hdf5":
                _write_hdf5(store, completed, staging)
                files = 1
            else:
                files = _write_npy(store, completed, staging)
            _check_out_free(out)  # nobody made it meanwhile
            if out.is_dir():
                out.rmdir()  # empty (checked): replaced by the export
            elif out.exists():
                out.unlink()  # an empty file
            os.rename(staging, out)
        except OSError as err:
            raise StoreError(f"{out}: could not write the export: {err.strerror or err}") from err
        finally:
            _remove(staging)
    return ExportResult(out=out, takes=len(completed.rows), files=files)


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


def _completed_takes(store) -> _Completed:
    from skill.cache.store import STATUS_COMPLETE

    table, status, valid = store.take_records()
    rows = np.flatnonzero(status == STATUS_COMPLETE)
    labels = [store.labels[i] if i >= 0 else "" for i in table.label[rows].tolist()]
    columns = {
        "take": table.ids[rows].tolist(),
        "uid": table.uid[rows].tolist(),
        "label": labels,
        "scenario": table.scenario[rows].tolist(),
        "participant": table.participant[rows].tolist(),
        "split": table.split[rows].tolist(),
    }
    return _Completed(rows=rows, columns=columns, valid=valid[rows], records=(status, valid))


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
        "labels": list(store.labels),
        "geometry": {
            "clips": store.clips,
            "tokens": store.tokens,
            "dim": store.dim,
            "frames": store.frames,
        },
    }


def _write_hdf5(store, completed: _Completed, path: Path) -> None:
    import h5py

    n, n_views = len(completed.rows), len(store.views)
    text = h5py.string_dtype()
    per_take = (store.clips, store.tokens, store.dim)
    with h5py.File(path, "w") as f:
        tokens = f.create_dataset(
            "tokens", shape=(n, n_views, *per_take), dtype="float16",
            chunks=(1, n_views, *per_take) if n else None,
        )  # fmt: skip
        for start, block in _blocks(store, completed):
            tokens[start : start + len(block)] = block
        rows = completed.rows
        f.create_dataset("valid", data=completed.valid)
        f.create_dataset("frame_index", data=store.frame_index()[rows])
        f.create_dataset("timestamp", data=store.timestamps()[rows])
        f.create_dataset("padded_frames", data=store.padded_frames()[rows])
        f.create_dataset("view", data=list(store.views), dtype=text)
        takes = f.create_group("takes")
        for column, values in completed.columns.items():
            name = "id" if column == "take" else column
            takes.create_dataset(name, data=values, dtype=text, shape=(n,))
        for key, value in export_metadata(store).items():
            f.attrs[key] = json.dumps(value)


def _write_npy(store, completed: _Completed, folder: Path) -> int:
    folder.mkdir()
    files = 0
    names: list[list[str]] = [[""] * len(store.views) for _ in completed.rows]
    for start, block in _blocks(store, completed):
        for offset, take_tokens in enumerate(block):
            i = start + offset
            take = completed.columns["take"][i]
            for v, view in enumerate(store.views):
                if not completed.valid[i, v]:
                    continue
                names[i][v] = npy_name(take, view)
                # (K, N, D) -> (K * N, D): the per-video (T, D) layout of feature extractors
                np.save(folder / names[i][v], take_tokens[v].reshape(-1, store.dim))
                files += 1
    with open(folder / TAKES_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*TAKE_COLUMNS, *store.views])
        for i in range(len(completed.rows)):
            writer.writerow([*(completed.columns[c][i] for c in TAKE_COLUMNS), *names[i]])
    rows = completed.rows
    np.savez(
        folder / FRAMES_NPZ,
        frame_index=store.frame_index()[rows],
        timestamp=store.timestamps()[rows],
        padded_frames=store.padded_frames()[rows],
    )
    (folder / EXPORT_JSON).write_text(json.dumps(export_metadata(store), indent=2) + "\n")
    return files


def npy_name(take: str, view: str) -> str:
    """The file of one take and view in an npy export."""
    return f"{take}_{view}.npy"
