"""The token store: a Zarr (format 3) group that holds backbone tokens of many takes.

Per-take arrays (`tokens`, `status`, `valid`, ...) and a take table written only by the
coordinator (the layout is in ARCHITECTURE.md); a take is done when its `status`, written last,
says so, never because a chunk is on disk. One coordinator (a process, or rank 0 under
torchrun) creates the store and appends takes, holding an `flock` beside the store that keeps
a second command out; any number of writers then write *different* takes. Plain zarr and xarray
read the store as a labelled dataset: every array names its dimensions, `take` and `view` are
coordinates and the root attribute `coordinates` names the take table's other columns.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.cache import files, layout, placement, small_arrays
from skill.cache.errors import StoreBusy, StoreError
from skill.cache.per_take import (
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_PENDING,
    create_aside,
    write_status_last,
)

FORMAT_VERSION = 5
"""5: each clip's start and end (`clip_time`) and what the clip axis holds (provenance
`clip_axis`). 4: placement records (the store id, the take table's digest, each take's
`token_crc`, `frames_crc` and `row_digest`, the pack's chunk record; `cache/placement.py`).
Stores of earlier formats lack them and are refused."""
CLIP_AXES = ("samples", "sequence")
"""What a store's clip axis holds (provenance ``clip_axis``; `pipeline.sampling.clip_axis`):
K interchangeable samples of a take, or the take's clips in order."""
LOCK_FILE = ".skill.lock"
"""Suffix of the writer lock's file name, beside the store (`layout.lock_file`)."""
# Seconds a writer keeps trying a lock that is held before it refuses: a reader probing the
# lock (`writer_busy`, used by `skill info`) holds it for an instant and must not make a
# starting writer fail.
LOCK_RETRY_S = 0.5
TAKE_TEXT_COLUMNS = {
    "take_id": "take",  # the xarray dimension
    "scenario": "scenario",
    "participant": "participant",
    "split": "split",
    "uid": "uid",
}
"""The take table's text columns: TakeRow field -> array. The one list of them: the arrays,
their order and the fields of TakeRow and TakeTable follow it."""
TEXT_ARRAYS = tuple(TAKE_TEXT_COLUMNS.values())
"""The take table's text arrays; its last array holds the targets, named by the task
(classification: `label`)."""
VIEW_ARRAY = "view"
TEXT_COORDINATES = ("scenario", "participant", "split", "uid")
"""Take-table columns that xarray shows as coordinates along `take`."""
PAIRS_ARRAY = "pairs"
"""Pairs of takes of a ranking task: ``(m, 2)`` take-table rows, the better take first."""
PAIR_SPLIT_ARRAY = "pair_split"
"""Each pair's split ``(m,)``: train, val or test."""
PAIRS_ATTR = "pairs"
"""The root attribute committing the pairs: ``{"count", "digest"}``."""
PAIR_SPLITS = ("train", "val", "test")
# Take-table chunk while takes are added; packing shrinks it to the table's length (a string
# chunk is decoded whole, and 65,536 mostly empty strings cost more than the table).
TAKE_TABLE_CHUNK = 1 << 16


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("skill")
    except Exception:  # running from a source tree that is not installed
        return "0+unknown"


@dataclass(frozen=True)
class TakeRow:
    """One row of the take table."""

    take_id: str
    target: object
    """The take's target as a manifest states it (classification: a label name; None for
    none); the store's task encodes it (see `tasks`)."""
    scenario: str = ""
    participant: str = ""
    split: str = ""
    uid: str = ""  # the dataset's own id of the take (EgoExo4D's take_uid), "" when none


@dataclass
class TakeTable:
    """The committed take table as arrays; ``target (n, *shape)`` as the task stores it."""

    ids: np.ndarray
    target: np.ndarray
    scenario: np.ndarray
    participant: np.ndarray
    split: np.ndarray
    uid: np.ndarray

    def column(self, field_name: str) -> np.ndarray:
        """The column of a TakeRow field (TAKE_TEXT_COLUMNS' keys)."""
        return self.ids if field_name == "take_id" else getattr(self, field_name)


@dataclass
class TakeResult:
    """Everything extraction writes for one take. Shapes: V views, K clips, N tokens, D dim, T frames."""

    tokens: np.ndarray  # (V, K, N, D) float16; rows of invalid views are ignored
    valid: np.ndarray  # (V,) bool
    frame_index: np.ndarray  # (V, K, T) int, -1 where the view is invalid
    timestamp: np.ndarray  # (V, K, T) float seconds, NaN where the view is invalid
    padded: np.ndarray  # (V,) frames repeated at the end of a video shorter than a clip
    view_error: list[str] = field(default_factory=list)  # (V,) "" = ok
    status: int = STATUS_COMPLETE
    # (V,) what the store says about a view that decoded ("" = nothing; e.g. keyframe sampling
    # that fell back to exact decoding); stores made before view_note existed keep none
    view_note: list[str] = field(default_factory=list)
    # (V, K, 2) float [start, end) seconds of each clip, NaN where the clip is absent (an
    # invalid view, a padded clip); None: unknown (written as NaN)
    clip_time: np.ndarray | None = None

    @property
    def outputs(self) -> np.ndarray:
        """What the clips gave, as the extract loop fills it in: ``(V, K, N, D)`` tokens."""
        return self.tokens


def _zarr():
    import zarr

    return zarr


def diff_provenance(
    stored: dict, wanted: dict, prefix: str = "", wanted_name: str = "requested"
) -> list[str]:
    """Fields where two provenance dicts differ, as 'a.b: store X vs requested Y'."""
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_provenance(a, b, prefix=name + ".", wanted_name=wanted_name)
        elif _jsonish(a) != _jsonish(b):
            out.append(f"{name}: store {_short(a)} vs {wanted_name} {_short(b)}")
    return out


# Fields that say where or when, not what: two stores whose tokens are interchangeable may
# differ in them (an adapter folder that moved, a checkpoint loaded from another path).
_LOCATION_FIELDS = (("created_by",), ("backbone", "adapter", "path"), ("backbone", "source"))


def provenance_identity(provenance: dict) -> dict:
    """The part of a provenance that decides whether tokens are comparable.

    Paths are dropped because the weights and adapter hashes identify the content. Of an
    imported store (`skill import features`) the feature name and token layout count, not
    where the features lay or their bytes (train and test features may come in separate
    files)."""
    identity = json.loads(json.dumps(provenance, default=str))
    for path in _LOCATION_FIELDS:
        node = identity
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and (path[-1] != "source" or node.get("weights_sha256")):
            node.pop(path[-1], None)
    imported = identity.get("imported")
    if isinstance(imported, dict):
        if "backbone" in identity:
            # a skill export imported back: its own provenance says what the tokens are
            identity.pop("imported")
        else:  # foreign features: what they are, not which file or bytes held them
            for key in _IMPORT_LOCATION_FIELDS:
                imported.pop(key, None)
    return identity


_IMPORT_LOCATION_FIELDS = ("kind", "source", "sha256")


def _jsonish(value):
    # tuples and lists compare equal once they went through JSON
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class FrameRecords:
    """Which frames each take's tokens came from, and what was said of each view."""

    frame_index: np.ndarray  # (n, V, K, T) int32, -1 = none
    timestamp: np.ndarray  # (n, V, K, T) float32 seconds, NaN = none
    clip_time: np.ndarray  # (n, V, K, 2) float32 [start, end) seconds, NaN = no clip
    padded_frames: np.ndarray  # (n, V) frames repeated at the end of a short video
    view_error: np.ndarray  # (n, V) str, "" = fine
    view_note: np.ndarray  # (n, V) str, "" = none


FRAME_ARRAYS = (
    "frame_index", "timestamp", "clip_time", "padded_frames", "view_error", "view_note",
)  # fmt: skip
STRING_FRAME_ARRAYS = ("view_error", "view_note")
"""The arrays `frames_crc` covers, in its order; FrameRecords' fields have their names."""
FRAMES_PROBLEM = (
    f"its frame records ({', '.join(FRAME_ARRAYS)}) are not the ones written for it: a chunk "
    "was moved, exchanged, lost or copied from another store"
)


@dataclass(frozen=True)
class TakeRecords:
    """What a reader needs to choose takes and views, read and checked together: the take
    table, ``status (n,)``, ``valid (n, V)`` and ``token_crc (n, V)`` (the crc32c each valid
    view's tokens were written with)."""

    table: TakeTable
    status: np.ndarray
    valid: np.ndarray
    token_crc: np.ndarray


class TokenStore:
    """A token store on disk. Use `create` or `open`; not the constructor."""

    def __init__(self, path: Path, group, writable: bool):
        self.path, self._group, self.writable = path, group, writable
        self._arrays: dict = {}  # opened array handles: a lookup re-reads metadata each time
        self._table: TakeTable | None = None  # the checked take table, read once
        attrs = dict(group.attrs)
        self.attrs = attrs
        self.format_version: int = int(attrs["skill"]["format_version"])
        self.store_id: str = attrs["store_id"]
        self.provenance: dict = attrs["provenance"]
        self.views: list[str] = list(attrs["views"])
        self.task: dict = attrs["task"]
        """The store's task: ``name``, ``schema`` and how targets are stored, ``target``."""
        self.target_array: str = self.task["target"]["array"]
        geometry = attrs["geometry"]
        self.clips, self.tokens, self.dim, self.frames = (
            int(geometry[k]) for k in ("clips", "tokens", "dim", "frames")
        )
        self.clip_axis: str = self.provenance.get("clip_axis", "samples")
        """What the clip axis holds: ``samples`` (K interchangeable samples of a take) or
        ``sequence`` (the take's clips in order, some absent at the end of a shorter take)."""
        self.table_arrays = (*TEXT_ARRAYS, self.target_array)
        self.per_take_arrays = PER_TAKE_ARRAYS
        self.relayout_arrays = (*PER_TAKE_ARRAYS, *self.table_arrays)

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        provenance: dict,
        views: Sequence[str],
        task: dict,
        clips: int,
        tokens: int,
        dim: int,
        frames: int,
    ) -> TokenStore:
        """Create an empty store. It is built beside `path` and renamed into place, so a
        killed create never leaves something that looks like a store."""
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path}: already exists; open it to append, or choose a new path")
        if not path.parent.exists():
            raise StoreError(f"{path}: parent folder {path.parent} does not exist")
        if not os.access(path.parent, os.W_OK):
            raise StoreError(f"{path}: cannot write to {path.parent} (read-only location)")
        geometry = {"clips": clips, "tokens": tokens, "dim": dim, "frames": frames}
        try:
            create_aside(path, functools.partial(_write_empty_store, provenance=provenance,
                                                 views=list(views), task=task,
                                                 geometry=geometry))  # fmt: skip
        except OSError as err:
            raise StoreError(f"{path}: could not create the store: {err.strerror or err}") from err
        with contextlib.suppress(OSError):  # readers lock it even where they cannot create it
            layout.lock_file(path, layout.LAYOUT_LOCK).touch()
        return cls.open(path, mode="a")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> TokenStore:
        """Open an existing store read-only (`r`) or for writing (`a`). Checks that its
        attributes, the arrays' metadata and the take table agree (see `check_metadata`)."""
        path = Path(path)
        _check_is_store(path)
        zarr = _zarr()
        try:
            group = zarr.open_group(str(path), mode="r" if mode == "r" else "r+", zarr_format=3)
        except Exception as err:
            raise StoreError(f"{path}: not a readable skill store ({err})") from err
        _check_attributes(path, dict(group.attrs))
        if mode != "r" and not os.access(path, os.W_OK):
            raise StoreError(f"{path}: the store is read-only here; cannot write to it")
        store = cls(path, group, writable=mode != "r")
        store.check_metadata()
        store.take_table()
        return store

    def is_current(self) -> bool:
        """Whether the store's root attributes are still those it was opened with: a writer
        that opened it before taking the writer lock checks this once it holds the lock
        (another command may have appended takes or recorded a run in between)."""
        try:
            on_disk = json.loads((self.path / "zarr.json").read_text())["attributes"]
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return _jsonish(on_disk) == _jsonish(self.attrs)

    def check_metadata(self) -> None:
        """Every array is what this store's attributes say it is: its data type, dimension
        names and per-take shape (views, geometry), with at least `n_takes` rows, and the
        `view` coordinate lists the `views` attribute in order. Reads only metadata files
        and the one-chunk view coordinate."""
        problems = []
        specs = array_specs(
            len(self.views), self.clips, self.tokens, self.dim, self.frames, self.task["target"]
        )
        for name, spec in specs.items():
            try:
                meta = layout.array_metadata(self.path, name)
            except (OSError, ValueError) as err:
                problems.append(f"{name}/zarr.json cannot be read ({err})")
                continue
            problems += spec.disagreements(name, meta, self.n_takes)
        if not problems:
            problems += self._packed_record_problems()
            view_names = self._view_coordinate()
            if view_names != self.views:
                problems.append(
                    f"the views attribute {self.views} is not the view coordinate {view_names}"
                )
        if problems:
            raise StoreError(
                f"{self.path}: the store's metadata disagree: {'; '.join(problems)}; "
                f"{self.damaged_hint()}"
            )

    def _packed_record_problems(self) -> list[str]:
        """Packed tokens must carry this store's pack record (a tokens folder copied from
        another store carries that store's)."""
        meta = layout.array_metadata(self.path, "tokens")
        if not layout.is_packed(meta):
            return []
        try:
            layout.packed_record(meta, self.store_id, self.path / "tokens")
        except layout.LayoutError as err:
            return [str(err).split(": ", 1)[-1]]
        return []

    def _view_coordinate(self) -> list[str]:
        values = small_arrays.read_whole(self.path, VIEW_ARRAY, len(self.views), unicode=True)
        if values is None:
            with self._read_errors(VIEW_ARRAY):
                values = self._group[VIEW_ARRAY][:]
        return [str(v) for v in np.asarray(values).tolist()]

    # ---- take table (coordinator only) ---------------------------------------------------
    @property
    def n_takes(self) -> int:
        return self.attrs["n_takes"]

    def take_table(self) -> TakeTable:
        """The committed take table, checked against its digest (read once per open)."""
        if self._table is None:
            self._table = self._checked_table(
                self._table_from(self.read_columns(*self.table_arrays))
            )
        return self._table

    def _checked_table(self, table: TakeTable) -> TakeTable:
        """Refuse a take table that is not the one committed (its digest, seeded with this
        store's id, differs: a column edited or copied from another store, the task's schema
        changed, `n_takes` changed), whose ids are empty or repeated (rows would be matched
        to the wrong takes), or whose targets lie outside what the task stores."""
        problems = self._table_digest_problems(table)
        empty = int((table.ids == "").sum())
        if empty:
            problems.append(f"{empty} rows without a take id")
        unique, counts = np.unique(table.ids[table.ids != ""], return_counts=True)
        repeated = unique[counts > 1].tolist()
        if repeated:
            problems.append(f"take ids given twice: {', '.join(map(str, repeated[:5]))}")
        problems += self._target_problems(table)
        if problems:
            raise StoreError(
                f"{self.path}: the take table is damaged ({'; '.join(problems)}); "
                f"{self.damaged_hint()}"
            )
        return table

    def _target_problems(self, table: TakeTable) -> list[str]:
        """Targets outside the bounds the task recorded (besides its fill value)."""
        spec = self.task["target"]
        values = table.target.reshape(len(table.target), int(np.prod(table.target.shape[1:])))
        present = ~np.all(values == spec["fill"], axis=1)
        outside = np.zeros(len(values), dtype=bool)
        if spec["low"] is not None:
            outside |= np.any(values < spec["low"], axis=1)
        if spec["high"] is not None:
            outside |= np.any(values > spec["high"], axis=1)
        bad = np.flatnonzero(present & outside)
        if not len(bad):
            return []
        named = ", ".join(f"{table.ids[i]} ({values[i].tolist()})" for i in bad[:5])
        return [
            f"{spec['array']} values outside {spec['low']}..{spec['high']}: {named}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        ]

    def _table_digest_problems(self, table: TakeTable) -> list[str]:
        recorded = self.attrs.get("take_table")
        if recorded["rows"] != self.n_takes:
            return [f"n_takes is {self.n_takes} but {recorded['rows']} rows were committed"]
        digests = placement.table_digests(
            self.store_id, self.task, self._text_columns(table), self.target_array, table.target
        )
        wrong = [name for name, value in digests.items() if recorded["digest"].get(name) != value]
        if not wrong:
            return []
        what = [f"{name} column" for name in wrong if name != self.target_array]
        if self.target_array in wrong:
            what.append(f"{self.target_array} column or the task's schema")
        return [
            f"the {', '.join(what)} {'is' if len(what) == 1 else 'are'} not what was committed "
            "(edited, or copied from another store)"
        ]

    @staticmethod
    def _text_columns(table: TakeTable) -> dict[str, np.ndarray]:
        return {array: table.column(field_name) for field_name, array in TAKE_TEXT_COLUMNS.items()}

    def take_records(self) -> TakeRecords:
        """The take table, status, valid and token_crc, each complete or failed take's row
        checked against its digest: everything a reader needs to choose takes and views."""
        names = ("status", "valid", "token_crc", "frames_crc", "row_digest")
        status, valid, token_crc, frames_crc, digest = self.read_columns(*names)
        records = TakeRecords(
            table=self.take_table(),
            status=np.asarray(status, dtype=np.int8),
            valid=np.asarray(valid, dtype=bool),
            token_crc=np.asarray(token_crc, dtype=np.uint32),
        )
        problems = self.record_problems(records, np.asarray(frames_crc), np.asarray(digest))
        if problems:
            shown = "; ".join(f"take {take}: {problem}" for _, take, problem in problems[:5])
            more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise StoreError(f"{self.path}: {shown}{more}; {self.damaged_hint()}")
        return records

    def record_problems(
        self, records: TakeRecords, frames_crc: np.ndarray, digest: np.ndarray
    ) -> list[tuple[int, str, str]]:
        """(row, take, problem) for every finished take whose records disagree: an unknown
        status, a complete take without a valid view, a row whose digest is not that of what
        it holds (a per-take chunk moved, exchanged, lost or copied from another store)."""
        status, ids = records.status, records.table.ids
        out = []
        for i in np.flatnonzero(~np.isin(status, (STATUS_PENDING, STATUS_COMPLETE, STATUS_FAILED))):
            out.append((int(i), str(ids[i]), f"status {status[i]} is not a known status"))
        no_view = (status == STATUS_COMPLETE) & ~records.valid.any(axis=1)
        for i in np.flatnonzero(no_view):
            out.append((int(i), str(ids[i]), "status says complete but no view is valid"))
        finished = np.flatnonzero(np.isin(status, (STATUS_COMPLETE, STATUS_FAILED)))
        expected = placement.row_digests(
            self.store_id, finished, status[finished], records.valid[finished],
            records.token_crc[finished], frames_crc[finished],
        )  # fmt: skip
        for i in finished[expected != digest[finished]]:
            out.append((int(i), str(ids[i]), ROW_DIGEST_PROBLEM))
        return sorted(out)

    @staticmethod
    def _table_from(arrays: list[np.ndarray]) -> TakeTable:
        """A TakeTable from the arrays of `table_arrays`, in that order."""
        *strings, target = arrays
        columns = dict(zip(TAKE_TEXT_COLUMNS, map(_strings, strings), strict=True))
        return TakeTable(ids=columns.pop("take_id"), target=np.asarray(target),
                         **columns)  # fmt: skip

    def read_columns(self, *names: str) -> list[np.ndarray]:
        """The committed rows (``[:n_takes]``) of several arrays (strings: numpy unicode, or
        StringDType where zarr read them). A packed one-chunk array is decoded directly
        (`cache.small_arrays`); the others are read through zarr in one
        concurrent trip through its event loop instead of one per array."""
        import asyncio

        import zarr.api.asynchronous as zarr_async
        from zarr.core.sync import sync

        n, path = self.n_takes, str(self.path)
        values = {name: small_arrays.read_whole(self.path, name, n, unicode=True) for name in names}
        through_zarr = [name for name, value in values.items() if value is None]

        async def read(name: str) -> np.ndarray:
            array = await zarr_async.open_array(store=path, path=name, mode="r", zarr_format=3)
            return await array.getitem(slice(0, n))

        async def read_all() -> list[np.ndarray]:
            return list(await asyncio.gather(*(read(name) for name in through_zarr)))

        if through_zarr:
            with self._read_errors(", ".join(through_zarr)):
                values.update(zip(through_zarr, sync(read_all()), strict=True))
        return [values[name] for name in names]

    def add_takes(self, rows: Sequence[TakeRow]) -> list[int]:
        """Register takes (coordinator only) and return their row indices.

        Takes already in the table keep their row; a take whose target or metadata differs
        from the stored one is refused. New takes are appended in the given order."""
        self._require_writable()
        table = self.take_table()
        index = {take_id: i for i, take_id in enumerate(table.ids)}
        new_rows = []
        for row in rows:
            if row.take_id in index:
                self._check_same_take(table, index[row.take_id], row)
            else:
                index[row.take_id] = len(table.ids) + len(new_rows)
                new_rows.append(row)
        if new_rows:
            self._append_rows(table, new_rows)
        return [index[row.take_id] for row in rows]

    def _check_same_take(self, table: TakeTable, i: int, row: TakeRow) -> None:
        from skill.tasks import get_task

        names = (self.target_array, *(name for name in TAKE_TEXT_COLUMNS if name != "take_id"))
        stored_target = get_task(self.task["name"]).decode(
            table.target[i : i + 1], self.task["schema"]
        )[0]
        stored = (stored_target, *(str(table.column(name)[i]) for name in names[1:]))
        given = (row.target, *(getattr(row, name) for name in names[1:]))
        if stored != given:
            as_stored = " ".join(f"{n}={v!r}" for n, v in zip(names, stored, strict=True))
            as_given = " ".join(f"{n}={v!r}" for n, v in zip(names, given, strict=True))
            raise StoreError(
                f"{self.path}: take {row.take_id} is already in the store as {as_stored}, "
                f"but the manifest says {as_given}"
            )

    def _target_values(self, rows: Sequence[TakeRow]) -> np.ndarray:
        """``(n, *shape)`` the rows' targets as the store's task stores them; a target the task
        does not take is refused, naming the take."""
        from skill.tasks import TargetError, get_task

        task, spec = get_task(self.task["name"]), self.task["target"]
        encoded = []
        for row in rows:
            try:
                encoded.append(task.encode(row.target, self.task["schema"]))
            except TargetError as err:
                raise StoreError(f"{self.path}: take {row.take_id}: {err}") from None
        shape = (len(rows), *spec["shape"])
        return np.asarray(encoded, dtype=spec["dtype"]).reshape(shape)

    def _append_rows(self, table: TakeTable, new_rows: Sequence[TakeRow]) -> None:
        n_new = len(table.ids) + len(new_rows)
        for name in PER_TAKE_ARRAYS:
            array = self._group[name]
            array.resize((n_new, *array.shape[1:]))
        columns = {}
        for field_name, array_name in TAKE_TEXT_COLUMNS.items():
            values = [*table.column(field_name), *(getattr(r, field_name) for r in new_rows)]
            columns[array_name] = np.asarray(values, dtype=str)
            self._rewrite_column(array_name, np.asarray(values, dtype=object), str)
        targets = np.concatenate([table.target.astype(self.task["target"]["dtype"]),
                                  self._target_values(new_rows)])  # fmt: skip
        self._rewrite_column(self.target_array, targets, targets.dtype)
        digest = placement.table_digests(
            self.store_id, self.task, columns, self.target_array, targets
        )
        # Rows become visible only now, with their digest, in one write of the attributes: a
        # coordinator killed above leaves them uncommitted.
        committed = {"n_takes": n_new, "take_table": {"rows": n_new, "digest": digest}}
        self._group.attrs.update(committed)
        self.attrs.update(committed)
        self._arrays.clear()  # resized: cached handles hold the old shapes
        self._table = None

    def _rewrite_column(self, name: str, values: np.ndarray, dtype) -> None:
        array = self._group[name]
        array.resize((len(values), *array.shape[1:]))
        if len(values):
            array[:] = values.astype(dtype) if dtype is not str else values

    # ---- pairs of takes (coordinator only) -----------------------------------------------
    def set_pairs(self, rows: np.ndarray, splits: Sequence[str]) -> None:
        """Record pairs of takes (a ranking task's): ``rows (m, 2)`` take-table rows, the take
        that shows more skill first, and each pair's split ``(m,)``; replaces pairs recorded
        before. Their digest, seeded with the store's id, is committed last, as the take
        table's is: arrays edited or copied from another store afterwards are damage."""
        self._require_writable()
        rows = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        splits = np.asarray(list(splits), dtype=str)
        problems = self._pair_problems(rows, splits)
        if problems:
            raise StoreError(f"{self.path}: cannot record the pairs: {'; '.join(problems)}")
        for name, values, dims in (
            (PAIRS_ARRAY, rows, ["pair", "pair_side"]), (PAIR_SPLIT_ARRAY, splits, ["pair"]),
        ):  # fmt: skip
            self._group.create_array(
                name, shape=values.shape, chunks=(max(len(values), 1), *values.shape[1:]),
                dtype=str if values.dtype.kind == "U" else values.dtype,
                fill_value="" if values.dtype.kind == "U" else 0, dimension_names=dims,
                compressors=checksummed(), overwrite=True,
            )  # fmt: skip
            if len(values):
                self._group[name][:] = values.astype(object) if values.dtype.kind == "U" else values
        record = {"count": len(rows), "digest": _pairs_digest(self.store_id, rows, splits)}
        self._group.attrs[PAIRS_ATTR] = record
        self.attrs[PAIRS_ATTR] = record
        self._arrays.clear()

    def pairs(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The recorded pairs, ``(rows (m, 2) int64, splits (m,) str)``, checked against their
        digest and the take table; None when the store records none. StoreError (damaged)
        when the arrays are not those committed or name rows the table does not have."""
        record = self.attrs.get(PAIRS_ATTR)
        if record is None:
            return None
        if not (isinstance(record, dict) and _is_count(record.get("count"))
                and isinstance(record.get("digest"), dict)):  # fmt: skip
            raise StoreError(
                f"{self.path}: the pairs attribute is malformed; {self.damaged_hint()}"
            )
        try:
            rows = np.asarray(self._group[PAIRS_ARRAY][:], dtype=np.int64).reshape(-1, 2)
            splits = np.asarray(_strings(self._group[PAIR_SPLIT_ARRAY][:]), dtype=str)
        except Exception as err:  # a missing or unreadable array of a store that records pairs
            raise StoreError(
                f"{self.path}: the pairs cannot be read ({err}); {self.damaged_hint()}"
            ) from None
        problems = []
        if len(rows) != record["count"] or len(splits) != record["count"]:
            problems.append(f"{record['count']} pairs were committed, {len(rows)} are stored")
        elif _pairs_digest(self.store_id, rows, splits) != record["digest"]:
            problems.append("the pairs are not those committed (edited, or copied from another "
                            "store)")  # fmt: skip
        else:
            problems += self._pair_problems(rows, splits)
        if problems:
            raise StoreError(
                f"{self.path}: the pairs are damaged ({'; '.join(problems)}); {self.damaged_hint()}"
            )
        return rows, splits

    def _pair_problems(self, rows: np.ndarray, splits: np.ndarray) -> list[str]:
        problems = []
        if len(splits) != len(rows):
            problems.append(f"{len(rows)} pairs but {len(splits)} splits")
        outside = np.flatnonzero(((rows < 0) | (rows >= self.n_takes)).any(axis=1))
        if len(outside):
            problems.append(f"pair {outside[0]} names row {rows[outside[0]].tolist()} of a "
                            f"take table of {self.n_takes} rows")  # fmt: skip
        same = np.flatnonzero(rows[:, 0] == rows[:, 1])
        if len(same):
            problems.append(f"pair {same[0]} pairs a take with itself")
        unknown = sorted(set(splits.tolist()) - set(PAIR_SPLITS))
        if unknown:
            problems.append(f"pair splits {unknown} are not {', '.join(PAIR_SPLITS)}")
        return problems

    # ---- per-take data (any writer, one take each) ---------------------------------------
    def empty_take(self) -> TakeResult:
        """A take of this store's geometry with every view invalid, for a writer to fill in."""
        n_views, clips, frames = len(self.views), self.clips, self.frames
        return TakeResult(
            tokens=np.zeros((n_views, clips, self.tokens, self.dim), dtype=np.float16),
            valid=np.zeros(n_views, dtype=bool),
            frame_index=np.full((n_views, clips, frames), -1, dtype=np.int32),
            timestamp=np.full((n_views, clips, frames), np.nan, dtype=np.float32),
            padded=np.zeros(n_views, dtype=np.int16),
            view_error=[""] * n_views,
            status=STATUS_COMPLETE,
            view_note=[""] * n_views,
            clip_time=np.full((n_views, clips, 2), np.nan, dtype=np.float32),
        )

    def write_take(self, i: int, result: TakeResult) -> None:
        """Write one take: see `write_takes`."""
        self.write_takes(i, [result])

    def write_takes(self, start: int, results: Sequence[TakeResult]) -> None:
        """Write the takes of rows ``start...``: their arrays, then their records
        (`cache/placement.py`), then their status, the completion record
        (`cache.per_take.write_status_last`).

        Into the write layout, any number of writers of different takes at once; into a
        packed store (a single writer holding the writer lock, e.g. `skill import features`
        filling a store it created, packed while empty), whole packed token chunks only:
        their checksums join the pack's record."""
        self._require_writable()
        rows = slice(start, start + len(results))
        tokens_meta = layout.array_metadata(self.path, "tokens")
        packed = layout.is_packed(tokens_meta)
        if packed:
            self._check_whole_chunks(tokens_meta, rows)
        block = self._take_block(start, results)
        token_crc = np.stack(
            [
                placement.token_crcs(t, v)
                for t, v in zip(block["tokens"], block["valid"], strict=True)
            ]
        )
        frames_crc = np.array(
            [
                placement.frames_crc(*(block[name][k] for name in FRAME_ARRAYS))
                for k in range(len(results))
            ],
            dtype=np.uint32,
        )
        row_digest = placement.row_digests(
            self.store_id, np.arange(rows.start, rows.stop), block["status"], block["valid"],
            token_crc, frames_crc,
        )  # fmt: skip
        # An invalid view is written as the fill value, which removes any stale chunk.
        tokens = np.where(block["valid"][..., None, None, None], block["tokens"], 0)
        arrays = [("tokens", tokens), *((name, block[name]) for name in ("valid", *FRAME_ARRAYS)),
                  ("token_crc", token_crc), ("frames_crc", frames_crc),
                  ("row_digest", row_digest)]  # fmt: skip
        write_status_last(self._array, rows, arrays, block["status"])
        if packed:
            per_chunk = layout.chunk_shape(tokens_meta)[0]
            tail = ".0" * (len(tokens_meta["shape"]) - 1)
            names = [
                f"c.{k}{tail}" for k in range(rows.start // per_chunk, -(-rows.stop // per_chunk))
            ]
            with layout.layout_lock(self.path, exclusive=True):
                layout.record_packed_chunks(self.path / "tokens", names, self.store_id)
            self._arrays.clear()  # the tokens' metadata changed

    def _check_whole_chunks(self, meta: dict, rows: slice) -> None:
        per_chunk = layout.chunk_shape(meta)[0]
        if rows.start % per_chunk or (rows.stop % per_chunk and rows.stop != self.n_takes):
            raise StoreError(
                f"{self.path}: the store is packed ({per_chunk} takes a chunk); rows "
                f"{rows.start}..{rows.stop - 1} are not whole chunks: unpack it to write takes"
            )

    def _take_block(self, start: int, results: Sequence[TakeResult]) -> dict[str, np.ndarray]:
        """The results stacked per array, checked: a complete take has a valid view, and no
        valid view holds NaN or Inf (the extract loop masks such views)."""
        n_views = len(self.views)
        block = {
            "tokens": np.stack([np.asarray(r.tokens, dtype=np.float16) for r in results]),
            "valid": np.stack([np.asarray(r.valid, dtype=bool) for r in results]),
            "frame_index": np.stack([np.asarray(r.frame_index, dtype=np.int32) for r in results]),
            "timestamp": np.stack([np.asarray(r.timestamp, dtype=np.float32) for r in results]),
            "clip_time": np.stack([self._clip_time_of(r) for r in results]),
            "padded_frames": np.stack([np.asarray(r.padded, dtype=np.int16) for r in results]),
            "view_error": np.array([list(r.view_error) or [""] * n_views for r in results], dtype=object),
            "view_note": np.array([list(r.view_note) or [""] * n_views for r in results], dtype=object),
            "status": np.array([r.status for r in results], dtype=np.int8),
        }  # fmt: skip
        for k, (tokens, valid, status) in enumerate(
            zip(block["tokens"], block["valid"], block["status"], strict=True)
        ):
            if status == STATUS_COMPLETE and not valid.any():
                raise StoreError(
                    f"{self.path}: take row {start + k}: complete, but no view is valid"
                )
            broken = [
                self.views[v] for v in np.flatnonzero(valid) if not np.isfinite(tokens[v]).all()
            ]
            if broken:
                raise StoreError(
                    f"{self.path}: take row {start + k}: NaN or Inf tokens in views {broken}"
                )
            if self.clip_axis == "sequence":
                self._check_clip_times(start + k, valid, block["clip_time"][k])
        return block

    def _clip_time_of(self, result: TakeResult) -> np.ndarray:
        """A take's ``(V, K, 2)`` clip times as stored: NaN where unknown or absent."""
        shape = (len(self.views), self.clips, 2)
        if result.clip_time is None:
            return np.full(shape, np.nan, dtype=np.float32)
        times = np.asarray(result.clip_time, dtype=np.float32)
        if times.shape != shape:
            raise StoreError(f"{self.path}: clip_time of shape {times.shape}, not {shape}")
        return np.where(np.asarray(result.valid, dtype=bool)[:, None, None], times, np.nan)

    def _check_clip_times(self, row: int, valid: np.ndarray, times: np.ndarray) -> None:
        """In a sequence store each valid view holds its clips first and in order: a present
        clip (finite times) never follows an absent one, and starts never go back."""
        for v in np.flatnonzero(valid):
            present = np.isfinite(times[v]).all(axis=1)
            count = int(present.sum())
            if not count or not present[:count].all():
                raise StoreError(
                    f"{self.path}: take row {row} view {self.views[v]}: a sequence store's valid "
                    "view needs its clips first, each with finite clip times"
                )
            if np.any(np.diff(times[v, :count, 0]) < 0):
                raise StoreError(
                    f"{self.path}: take row {row} view {self.views[v]}: clip start times go back"
                )

    def _array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    def status(self) -> np.ndarray:
        """``(n,)`` the completion record of every committed take (checked, `take_records`)."""
        return self.take_records().status

    def valid(self) -> np.ndarray:
        """``(n, V)`` whether each view holds tokens (checked, `take_records`)."""
        return self.take_records().valid

    def frame_records(self) -> FrameRecords:
        """The frame records of every committed take, each finished take's checked against
        its `frames_crc`."""
        *values, frames_crc, status = self.read_columns(*FRAME_ARRAYS, "frames_crc", "status")
        frames = FrameRecords(
            **{
                name: _strings(value) if name in STRING_FRAME_ARRAYS else np.asarray(value)
                for name, value in zip(FRAME_ARRAYS, values, strict=True)
            }
        )
        problems = self.frame_problems(frames, np.asarray(frames_crc), np.asarray(status))
        if problems:
            shown = "; ".join(f"take {take}: {problem}" for _, take, problem in problems[:5])
            more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise StoreError(f"{self.path}: {shown}{more}; {self.damaged_hint()}")
        return frames

    def frame_problems(
        self, frames: FrameRecords, frames_crc: np.ndarray, status: np.ndarray
    ) -> list[tuple[int, str, str]]:
        """(row, take, problem) for each finished take whose frame records are not the ones
        its writer recorded (`frames_crc`)."""
        ids = self.take_table().ids
        out = []
        for i in np.flatnonzero(np.isin(status, (STATUS_COMPLETE, STATUS_FAILED))):
            if (
                placement.frames_crc(*(getattr(frames, f)[i] for f in FRAME_ARRAYS))
                != frames_crc[i]
            ):
                out.append((int(i), str(ids[i]), FRAMES_PROBLEM))
        return out

    def view_errors(self) -> np.ndarray:
        """``(n, V)`` why each view failed ("" = fine)."""
        return self.frame_records().view_error

    def view_notes(self) -> np.ndarray:
        """``(n, V)`` notes on views that decoded ("" = none)."""
        return self.frame_records().view_note

    def frame_index(self) -> np.ndarray:
        return self.frame_records().frame_index

    def padded_frames(self) -> np.ndarray:
        return self.frame_records().padded_frames

    def timestamps(self) -> np.ndarray:
        return self.frame_records().timestamp

    def clip_times(self) -> np.ndarray:
        """``(n, V, K, 2)`` float32 [start, end) seconds of every clip (start: its first
        frame's time; end: its last frame's time plus one frame), NaN where the clip holds no
        tokens (an invalid view, a padded clip of a sequence store) or its times are unknown."""
        return self.frame_records().clip_time

    def clip_mask(
        self, records: TakeRecords | None = None, clip_times: np.ndarray | None = None
    ) -> np.ndarray:
        """``(n, V, K)`` bool, True where the clip holds tokens: every clip of a valid view of a
        samples store; of a sequence store, the clips of a valid view with clip times (the
        ones after them pad a take shorter than the store's ``clips``). ``records`` and
        ``clip_times``: what the caller has read already (`take_records`, `clip_times`)."""
        valid = (records or self.take_records()).valid
        mask = np.repeat(valid[:, :, None], self.clips, axis=2)
        if self.clip_axis == "sequence":
            times = self.clip_times() if clip_times is None else clip_times
            mask &= np.isfinite(times).all(axis=-1)
        return mask

    def _committed(self, name: str) -> np.ndarray:
        """The committed rows of one array; a chunk that cannot be decoded is a StoreError
        naming the array, never a codec's traceback."""
        with self._read_errors(name):
            return self._group[name][: self.n_takes]

    @contextlib.contextmanager
    def _read_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (RuntimeError, ValueError, OSError, KeyError) as err:
            raise StoreError(
                f"{self.path}/{what}: cannot be read ({type(err).__name__}: {err}); "
                f"{self.damaged_hint()}"
            ) from err

    def read_tokens(
        self,
        take_idx: Sequence[int],
        view_idx: Sequence[int],
        records: TakeRecords | None = None,
    ) -> np.ndarray:
        """Tokens of the given takes and views: (n, v, K, N, D) float16, zeros where invalid.

        Read straight from the chunk files into the output (`cache.layout.read_token_slots`),
        each chunk checked against its checksum and against the one recorded for its place.
        `records`: the store's take records when the caller has read them already
        (`take_records`), so that they cost no second read."""
        take_idx = np.asarray(take_idx, dtype=np.int64)
        view_idx = np.asarray(view_idx, dtype=np.int64)
        shape = (len(take_idx), len(view_idx), self.clips, self.tokens, self.dim)
        out = layout.page_aligned_empty(shape, np.float16)
        if not len(take_idx):
            return out
        records = records or self.take_records()
        with layout.layout_lock(self.path, exclusive=False):
            meta = layout.array_metadata(self.path, "tokens")
            rows, views = np.ix_(take_idx, view_idx)
            try:
                layout.read_token_slots(
                    self.path / "tokens", meta, take_idx, view_idx, out,
                    self._token_placement(records, rows, views),
                )  # fmt: skip
            except layout.MissingChunks as err:
                raise self._missing_chunks_error(err, take_idx, view_idx) from None
            except layout.LayoutError as err:
                raise StoreError(f"{self._where(err)}{err}; {self.damaged_hint()}") from err
        return out

    def _token_placement(self, records: TakeRecords, rows, views) -> layout.TokenPlacement:
        """The placement of token slots ``[rows, views]`` (index arrays) by the records:
        valid views of complete takes must hold data, written with their `token_crc`."""
        complete = records.status == STATUS_COMPLETE
        required = (complete[:, None] & records.valid)[rows, views]
        return layout.TokenPlacement(self.store_id, required, records.token_crc[rows, views])

    def _where(self, err: layout.LayoutError) -> str:
        """'take T view V: ' for an error about one write-layout chunk, 'takes A..B: ' for a
        packed one ('' when the file names no chunk)."""
        path = getattr(err, "path", None) or Path(str(err).split(":", 1)[0])
        try:
            relative = Path(path).relative_to(self.path / "tokens")
        except ValueError:
            return ""
        ids = self.take_table().ids
        parts = relative.parts
        if parts[0] == "c" and len(parts) > 2 and parts[1].isdigit() and parts[2].isdigit():
            row, view = int(parts[1]), int(parts[2])
            if row < len(ids) and view < len(self.views):
                return f"take {ids[row]} view {self.views[view]}: "
        elif parts[0].startswith("c.") and parts[0].split(".")[1].isdigit():
            per_chunk = layout.chunk_shape(layout.array_metadata(self.path, "tokens"))[0]
            first = int(parts[0].split(".")[1]) * per_chunk
            last = min(first + per_chunk, len(ids)) - 1
            if first <= last:
                return f"takes {ids[first]}..{ids[last]}: "
        return ""

    def _missing_chunks_error(self, err, take_idx, view_idx) -> StoreError:
        ids = self.take_table().ids
        slots = [
            f"take {ids[take_idx[s // len(view_idx)]]} view {self.views[view_idx[s % len(view_idx)]]}"
            for s in err.slots[:5].tolist()
        ]
        more = f" and {len(err.slots) - 5} more" if len(err.slots) > 5 else ""
        return StoreError(
            f"{self.path}: token chunks of complete takes are missing ({', '.join(slots)}{more}; "
            f"files {', '.join(err.files[:3])}): they were written and are gone; "
            f"{self.damaged_hint()}"
        )

    def damaged_hint(self) -> str:
        return f"the store is damaged: `skill verify {self.path}` names every damaged take"

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Hold the shared layout lock: no relayout changes chunk files until exit, so that
        several reads (status, validity, tokens) see one layout."""
        with layout.layout_lock(self.path, exclusive=False):
            yield

    # ---- chunk layout (see cache/layout.py) ----------------------------------------------
    def layout(self) -> dict[str, str]:
        """Per-take array -> "packed" or "write"."""
        return {
            name: "packed" if layout.is_packed(layout.array_metadata(self.path, name)) else "write"
            for name in self.per_take_arrays
        }

    def is_packed(self) -> bool:
        """Whether any per-take array has the packed layout (then no take may be written)."""
        return "packed" in self.layout().values()

    def pack(self) -> list[str]:
        """Rewrite the per-take arrays into large chunks for fast reads; returns the arrays
        rewritten. Call with the writer lock held and no writer active: a packed chunk holds
        many takes, so two writers of different takes would overwrite each other."""
        self._require_writable()
        wanted = {
            name: layout.packed_chunks(layout.array_metadata(self.path, name), self.n_takes)
            for name in PER_TAKE_ARRAYS
        }
        wanted.update(
            {name: (max(self.n_takes, 1), *self._row_shape(name)) for name in self.table_arrays}
        )
        changed = []
        for name, chunks in wanted.items():
            meta = layout.array_metadata(self.path, name)
            if layout.is_packed(meta) and layout.chunk_shape(meta) != chunks:
                # Packed for another number of takes (takes added through the API): a new
                # packing would reuse the chunk file names in use, so go through the write
                # layout.
                self._relayout(name, self._write_chunks(name), layout.WRITE_SEPARATOR)
            if chunks and self._relayout(name, chunks, layout.PACKED_SEPARATOR):
                changed.append(name)
        self._arrays.clear()
        return changed

    def _relayout(self, name: str, chunks: tuple[int, ...], sep: str) -> bool:
        meta = layout.array_metadata(self.path, name)
        if layout.chunk_shape(meta) == tuple(chunks) and layout.separator(meta) == sep:
            return False
        placement = None
        if name == "tokens":  # its chunks are checked against the take records as they move
            rows = np.arange(int(meta["shape"][0]))
            records = self._all_records(len(rows))
            placement = self._token_placement(records, *np.ix_(rows, np.arange(len(self.views))))
        return layout.relayout_array(self.path, name, chunks, sep, placement)

    def _all_records(self, rows: int) -> TakeRecords:
        """The take records of every row of the per-take arrays (committed or not), unchecked:
        a relayout moves every row."""
        arrays = {
            name: small_arrays.read_whole(self.path, name, rows)
            for name in ("status", "valid", "token_crc")
        }
        arrays = {
            name: self._group[name][:rows] if values is None else values
            for name, values in arrays.items()
        }
        return TakeRecords(
            table=self.take_table(),
            status=np.asarray(arrays["status"], dtype=np.int8),
            valid=np.asarray(arrays["valid"], dtype=bool),
            token_crc=np.asarray(arrays["token_crc"], dtype=np.uint32),
        )

    def _write_chunks(self, name: str) -> tuple[int, ...]:
        if name in self.table_arrays:
            return (TAKE_TABLE_CHUNK, *self._row_shape(name))
        return layout.write_chunks(name, tuple(layout.array_metadata(self.path, name)["shape"]))

    def _row_shape(self, name: str) -> tuple[int, ...]:
        return tuple(layout.array_metadata(self.path, name)["shape"][1:])

    def unpack(self) -> list[str]:
        """Back to one chunk per take (per take and view for tokens), the layout writers
        need; returns the arrays rewritten. Call with the writer lock held."""
        self._require_writable()
        changed = [
            name
            for name in self.relayout_arrays
            if self._relayout(name, self._write_chunks(name), layout.WRITE_SEPARATOR)
        ]
        self._arrays.clear()
        return changed

    def failures(self) -> list[tuple[str, str, str]]:
        """(take, view or '*', reason) for every failed take and every failed view."""
        ids, status, errors = self.take_table().ids, self.status(), self.view_errors()
        out = []
        for i, take_id in enumerate(ids):
            for v, reason in enumerate(errors[i]):
                if reason:
                    out.append((str(take_id), self.views[v], str(reason)))
            if status[i] == STATUS_FAILED and not any(errors[i]):
                out.append((str(take_id), "*", "failed"))
        return out

    def set_attr(self, key: str, value) -> None:
        self._require_writable()
        self._group.attrs[key] = value

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path}: opened read-only")

    # ---- writer lock ---------------------------------------------------------------------
    def writer_lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the exclusive writer lock; a second holder gets StoreBusy at once (after
        LOCK_RETRY_S). The kernel releases it when the holder dies, even by SIGKILL."""
        lock = layout.lock_file(self.path, LOCK_FILE)
        return files.hold_lock(lock, patience_s=LOCK_RETRY_S, refuse=self.busy_error)

    def writer_busy(self) -> str | None:
        """Who holds the writer lock ("pid N on host since T"), or None when nobody does.

        Creates and writes nothing (works on a read-only store); it takes a shared lock for
        an instant, which a starting writer waits out (LOCK_RETRY_S)."""
        return files.lock_holder(layout.lock_file(self.path, LOCK_FILE))

    def run_state(self, pending: int) -> tuple[str, str | None]:
        """(state, writer): "in progress" while a writer holds the lock (writer: who);
        "interrupted" when work is unfinished without one (``pending`` takes, or a run record
        that never reached "finished", e.g. killed while packing); "finished" otherwise."""
        writer = self.writer_busy()
        record = self.attrs.get("extract_run")
        unfinished = pending > 0 or (isinstance(record, dict) and record.get("state") != "finished")
        state = "in progress" if writer is not None else "interrupted" if unfinished else "finished"
        return state, writer

    def busy_error(self, holder: str) -> StoreBusy:
        """The refusal a second writer gets while `holder` writes."""
        return StoreBusy(
            f"{self.path}: another skill extract is writing to this store ({holder}); "
            "wait for it to finish, or use another store"
        )


PER_TAKE_ARRAYS = (
    "tokens",
    "valid",
    "frame_index",
    "timestamp",
    "clip_time",
    "padded_frames",
    "view_error",
    "view_note",
    "token_crc",
    "frames_crc",
    "row_digest",
    "status",
)
"""Arrays with one row per take, written by the take's writer (`status` last)."""
ROW_DIGEST_PROBLEM = (
    "its records (status, valid, token_crc, frames_crc) are not the ones written for it: "
    "a per-take chunk was moved, exchanged, lost or copied from another store"
)


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store: what `create` makes and `check_metadata` expects of it."""

    dtype: str  # zarr's data_type
    dims: tuple[str, ...]  # dimension names
    shape: tuple[int, ...]  # past the take dimension (the whole shape for `view`)
    fill: object
    compress: bool = True  # zstd before the checksum; tokens are raw (read in bulk)

    @property
    def per_take(self) -> bool:
        return self.dims[:1] == ("take",)

    def codecs(self) -> list[str]:
        first = "vlen-utf8" if self.dtype == "string" else "bytes"
        return [first, "zstd", "crc32c"] if self.compress else [first, "crc32c"]

    def disagreements(self, name: str, meta: dict, n_takes: int) -> list[str]:
        """What in the array's metadata is not this spec (plain zarr and xarray read the
        store by them; skill's readers rely on them)."""
        out = []
        if meta.get("data_type") != self.dtype:
            out.append(f"{name} has data type {meta.get('data_type')}, not {self.dtype}")
        if tuple(meta.get("dimension_names") or ()) != self.dims:
            out.append(
                f"{name} has dimensions {meta.get('dimension_names')}, not {list(self.dims)}"
            )
        if [c.get("name") for c in meta.get("codecs", [])] != self.codecs():
            out.append(f"{name} has codecs {[c.get('name') for c in meta.get('codecs', [])]}")
        shape = tuple(meta.get("shape", ()))
        tail = shape[1:] if self.per_take else shape
        if tail != self.shape:
            what = "per take" if self.per_take else ""
            out.append(
                f"{name} has shape {tail} {what}, the store's attributes (views, geometry) say "
                f"{self.shape}".replace("  ", " ")
            )
        elif self.per_take and shape[0] < n_takes:
            out.append(f"n_takes is {n_takes} but {name} has {shape[0]} rows")
        return out


def array_specs(
    views: int, clips: int, tokens: int, dim: int, frames: int, target: dict
) -> dict[str, ArraySpec]:
    """Every array of a store of this geometry, by name; ``target``: how the task stores its
    targets (the store's ``task.target``)."""
    frame_dims, frame_shape = ("take", "view", "clip", "frame"), (views, clips, frames)
    per_view = ("take", "view"), (views,)
    specs = {
        "tokens": ArraySpec("float16", ("take", "view", "clip", "token", "dim"),
                            (views, clips, tokens, dim), 0, compress=False),
        "valid": ArraySpec("bool", *per_view, False),
        "frame_index": ArraySpec("int32", frame_dims, frame_shape, -1),
        "timestamp": ArraySpec("float32", frame_dims, frame_shape, float("nan")),
        "clip_time": ArraySpec("float32", ("take", "view", "clip", "edge"), (views, clips, 2),
                               float("nan")),
        "padded_frames": ArraySpec("int16", *per_view, 0),
        "view_error": ArraySpec("string", *per_view, ""),
        "view_note": ArraySpec("string", *per_view, ""),
        "token_crc": ArraySpec("uint32", *per_view, 0),
        "frames_crc": ArraySpec("uint32", ("take",), (), 0),
        "row_digest": ArraySpec("uint64", ("take",), (), 0),
        "status": ArraySpec("int8", ("take",), (), STATUS_PENDING),
    }  # fmt: skip
    specs.update(
        {name: ArraySpec("string", ("take",), (), "") for name in TAKE_TEXT_COLUMNS.values()}
    )
    target_shape = tuple(target["shape"])
    target_dims = ("take", *(f"{target['array']}_{i}" for i in range(len(target_shape))))
    specs[target["array"]] = ArraySpec(target["dtype"], target_dims, target_shape, target["fill"])
    specs[VIEW_ARRAY] = ArraySpec("string", ("view",), (views,), "")
    return specs


def _strings(values) -> np.ndarray:
    """zarr returns numpy StringDType arrays; plain unicode arrays are easier to use."""
    values = np.asarray(values)
    if values.dtype.kind == "U":
        return values
    if values.dtype.kind == "T":  # StringDType: a fixed width is needed to cast
        width = int(np.strings.str_len(values).max(initial=0))
        return values.astype(f"U{max(width, 1)}")
    return np.array(values.tolist(), dtype=str).reshape(values.shape)


def _pairs_digest(store_id: str, rows: np.ndarray, splits: np.ndarray) -> dict[str, str]:
    """The pairs' digests, by the take table's scheme (`placement.table_digests`)."""
    return placement.table_digests(
        store_id, {"pairs": "better, worse"}, {PAIR_SPLIT_ARRAY: splits}, PAIRS_ARRAY,
        np.asarray(rows, dtype="<i8"),
    )  # fmt: skip


def _check_is_store(path: Path) -> None:
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    if not path.is_dir() or not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not a skill store (no zarr.json in a folder)")


def _check_attributes(path: Path, attrs: dict) -> None:
    """The root attributes a store is read by: its format, and values of the right types."""
    meta = attrs.get("skill")
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise StoreError(f"{path}: a Zarr group, but not a skill store (no 'skill' attributes)")
    version = meta["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format version {version} is newer than this skill "
            f"({package_version()}) can read (up to {FORMAT_VERSION}); upgrade skill"
        )
    if version == 4:
        raise StoreError(
            f"{path}: store format 4 was written by an older skill and records no clip times "
            f"(format {FORMAT_VERSION} does); extract into a new store"
        )
    if version < FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format {version} was written by an older skill and records no "
            f"placement of its data (format {FORMAT_VERSION} does); extract into a new store"
        )
    provenance = attrs.get("provenance")
    axis = provenance.get("clip_axis", "samples") if isinstance(provenance, dict) else "samples"
    if axis not in CLIP_AXES:
        raise StoreError(
            f"{path}/zarr.json: the provenance's clip_axis is {_short(axis)}, not one of "
            f"{', '.join(CLIP_AXES)}; the store is damaged"
        )
    missing = [k for k in _ROOT_ATTRIBUTES if k not in attrs]
    if missing:
        raise StoreError(f"{path}: store attributes are missing {', '.join(missing)}")
    wrong = [
        f"{key} ({_short(attrs[key])})"
        for key, ok in _ROOT_ATTRIBUTES.items()
        if not ok(attrs[key])
    ]
    if wrong:
        raise StoreError(
            f"{path}/zarr.json: store attributes of the wrong type or value: {', '.join(wrong)}; "
            f"the store is damaged: `skill verify {path}` names every damaged take"
        )


def _is_names(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_ROOT_ATTRIBUTES = {
    "store_id": lambda v: isinstance(v, str) and bool(v),
    "provenance": lambda v: isinstance(v, dict),
    "views": _is_names,
    "task": lambda v: (
        isinstance(v, dict)
        and isinstance(v.get("name"), str)
        and isinstance(v.get("schema"), dict)
        and isinstance(v.get("target"), dict)
    ),
    "geometry": lambda v: (
        isinstance(v, dict)
        and all(_is_count(v.get(k)) for k in ("clips", "tokens", "dim", "frames"))
    ),
    "n_takes": _is_count,
    "take_table": lambda v: (
        isinstance(v, dict) and _is_count(v.get("rows")) and isinstance(v.get("digest"), dict)
    ),
}
"""Root attributes every store has, and what each must be."""


def checksummed(compress: bool = True) -> list:
    """The bytes-to-bytes codecs of every array: zstd (as zarr's default, except for the
    tokens, which compress poorly and are read in bulk), then a crc32c checksum of the chunk,
    which zarr and the raw token reader verify on every read."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=0, checksum=False), Crc32cCodec()] if compress else [Crc32cCodec()]


def _write_empty_store(path, provenance, views, task: dict, geometry: dict) -> None:
    zarr = _zarr()
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    target = task["target"]
    specs = array_specs(len(views), **geometry, target=target)
    for name, spec in specs.items():
        shape = (0, *spec.shape) if spec.per_take else spec.shape
        if name in (*TEXT_ARRAYS, target["array"]):
            chunks = (TAKE_TABLE_CHUNK, *spec.shape)
        elif spec.per_take:
            chunks = layout.write_chunks(name, shape)
        else:
            chunks = (max(shape[0], 1),)
        group.create_array(
            name, shape=shape, chunks=chunks, dtype=str if spec.dtype == "string" else spec.dtype,
            fill_value=spec.fill, dimension_names=list(spec.dims),
            compressors=checksummed(spec.compress),
        )  # fmt: skip
    group[target["array"]].attrs.update(target.get("attrs") or {})
    if views:
        group[VIEW_ARRAY][:] = np.asarray(list(views), dtype=object)
    store_id = placement.new_store_id()
    columns = {name: np.zeros(0, dtype="U1") for name in TEXT_ARRAYS}
    empty = np.zeros((0, *target["shape"]), dtype=target["dtype"])
    group.attrs.update(
        {
            # xarray's CF decoding: these arrays are coordinates, not data variables
            "coordinates": " ".join((target["array"], *TEXT_COORDINATES)),
            "skill": {"format_version": FORMAT_VERSION, "package_version": package_version()},
            "store_id": store_id,
            "provenance": provenance,
            "views": list(views),
            "task": task,
            "geometry": dict(geometry),
            "n_takes": 0,
            "take_table": {
                "rows": 0,
                "digest": placement.table_digests(store_id, task, columns, target["array"], empty),
            },
        }
    )
