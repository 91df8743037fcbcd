"""The token store: a Zarr (format 3) group that holds backbone tokens of many takes.

Layout (see ARCHITECTURE.md): per-take arrays (`tokens`, `status`, `valid`, ...), a take
table written only by the coordinator, and an explicit per-take `status` written last. A
chunk on disk is never taken as proof that a take is done. While takes are written the
per-take arrays have one chunk per take (per take and view for `tokens`); a finished run
packs them into large chunks, which read at disk speed (`cache/layout.py`).

Concurrency rules: one coordinator (a single process, or rank 0 under torchrun) creates the
store and appends takes; any number of writers then write *different* takes. An `flock` on
`.<store>.skill.lock`, beside the store, keeps a second independent command out while one is
writing.

Plain zarr and xarray read the store as a labelled dataset: every array names its dimensions,
`take` and `view` are coordinate arrays at the root and the take table's other columns are
coordinates along `take` (the root attribute `coordinates`, xarray's CF convention).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.cache import layout, small_arrays
from skill.cache.errors import StoreBusy, StoreError

FORMAT_VERSION = 3
"""3: the take table (`take`, `label`, `scenario`, `participant`, `split`, `uid`) and `view`
are arrays at the root, coordinates for xarray; 2: every chunk ends with its crc32c checksum
(zarr's `crc32c` codec), checked on every read. Stores of formats 1 and 2 (the take table in
`takes/`, no uid) are still read, but no longer written to."""
APPENDABLE_FORMAT = 3
STATUS_PENDING, STATUS_COMPLETE, STATUS_FAILED = 0, 1, 2
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
"""The take table's text columns: TakeRow field -> array (format 3). The one list of them:
the arrays, their order and the fields of TakeRow and TakeTable follow it."""
TAKE_TABLE_ARRAYS = (*TAKE_TEXT_COLUMNS.values(), "label")
"""The take table's arrays (format 3): the text columns, then `label`."""
LEGACY_TAKE_TABLE_ARRAYS = (
    *(f"takes/{name}" for name in ("id", "scenario", "participant", "split")),
    "takes/label",
)
"""The take table of formats 1 and 2 (no uid column)."""
VIEW_ARRAY = "view"
TAKE_COORDINATES = ("label", "scenario", "participant", "split", "uid")
"""Take-table columns that xarray shows as coordinates along `take`."""
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
    label: str | None
    scenario: str = ""
    participant: str = ""
    split: str = ""
    uid: str = ""  # the dataset's own id of the take (EgoExo4D's take_uid), "" when none


@dataclass
class TakeTable:
    """The committed take table as arrays; `label` indexes `labels`, -1 = unlabelled."""

    ids: np.ndarray
    label: np.ndarray
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


class TokenStore:
    """A token store on disk. Use `create`, `open` or `open_or_create`; not the constructor."""

    def __init__(self, path: Path, group, writable: bool):
        self.path, self._group, self.writable = path, group, writable
        self._arrays: dict = {}  # opened array handles: a lookup re-reads metadata each time
        attrs = dict(group.attrs)
        self.attrs = attrs
        self.format_version: int = int(attrs["skill"]["format_version"])
        self.table_arrays = (
            TAKE_TABLE_ARRAYS if self.format_version >= 3 else LEGACY_TAKE_TABLE_ARRAYS
        )
        self.provenance: dict = attrs["provenance"]
        self.views: list[str] = list(attrs["views"])
        self.labels: list[str] = list(attrs["labels"])
        geometry = attrs["geometry"]
        self.clips, self.tokens, self.dim, self.frames = (
            int(geometry[k]) for k in ("clips", "tokens", "dim", "frames")
        )

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        provenance: dict,
        views: Sequence[str],
        labels: Sequence[str],
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
        staging = path.parent / f".{path.name}.creating-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            _write_empty_store(staging, provenance, views, labels, clips, tokens, dim, frames)
            os.rename(staging, path)
        except OSError as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(f"{path}: could not create the store: {err.strerror or err}") from err
        with contextlib.suppress(OSError):  # readers lock it even where they cannot create it
            layout.lock_file(path, layout.LAYOUT_LOCK).touch()
        return cls.open(path, mode="a")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> TokenStore:
        """Open an existing store read-only (`r`) or for writing (`a`), checking its format."""
        path = Path(path)
        _check_is_store(path)
        zarr = _zarr()
        try:
            group = zarr.open_group(str(path), mode="r" if mode == "r" else "r+", zarr_format=3)
        except Exception as err:
            raise StoreError(f"{path}: not a readable skill store ({err})") from err
        _check_format(path, dict(group.attrs))
        if mode != "r":
            _check_appendable(path, dict(group.attrs))
        if mode != "r" and not os.access(path, os.W_OK):
            raise StoreError(f"{path}: the store is read-only here; cannot write to it")
        store = cls(path, group, writable=mode != "r")
        store.check_shapes()
        return store

    def check_shapes(self) -> None:
        """The root attributes agree with the arrays: geometry with the token array's shape,
        views with every per-take array, `n_takes` within every array's length. Reads only
        the arrays' metadata files."""
        problems = []
        want = {
            "tokens": (len(self.views), self.clips, self.tokens, self.dim),
            "valid": (len(self.views),),
            "frame_index": (len(self.views), self.clips, self.frames),
            "timestamp": (len(self.views), self.clips, self.frames),
        }
        for name in (*self.per_take_arrays, *self.table_arrays):
            try:
                shape = tuple(layout.array_metadata(self.path, name)["shape"])
            except (OSError, ValueError, KeyError) as err:
                problems.append(f"{name}/zarr.json cannot be read ({err})")
                continue
            if name in want and shape[1:] != want[name]:
                problems.append(
                    f"{name} has shape {shape[1:]} per take, the store's attributes (views, "
                    f"geometry) say {want[name]}"
                )
            if shape[0] < self.n_takes:
                problems.append(f"n_takes is {self.n_takes} but {name} has {shape[0]} rows")
        if problems:
            raise StoreError(
                f"{self.path}: the store's metadata disagree: {'; '.join(problems)}; "
                f"{self.damaged_hint()}"
            )

    # ---- take table (coordinator only) ---------------------------------------------------
    @property
    def n_takes(self) -> int:
        return int(self._group.attrs.get("n_takes", 0))

    def take_table(self) -> TakeTable:
        return self._checked_table(self._table(self.read_columns(*self.table_arrays)))

    def _checked_table(self, table: TakeTable) -> TakeTable:
        """Refuse a take table whose ids are empty or repeated: rows would be matched to the
        wrong takes (and an extract would append every take again)."""
        empty = int((table.ids == "").sum())
        unique, counts = np.unique(table.ids[table.ids != ""], return_counts=True)
        repeated = unique[counts > 1].tolist()
        if empty or repeated:
            problems = [f"{empty} rows without a take id"] if empty else []
            if repeated:
                problems.append(f"take ids given twice: {', '.join(map(str, repeated[:5]))}")
            raise StoreError(
                f"{self.path}/{self.table_arrays[0]}: the take table is damaged ({'; '.join(problems)}); "
                f"{self.damaged_hint()}"
            )
        return table

    def take_records(self) -> tuple[TakeTable, np.ndarray, np.ndarray]:
        """The take table, ``status (n,)`` and ``valid (n, V)``, read in one concurrent trip:
        everything a reader needs to choose takes and views."""
        *columns, status, valid = self.read_columns(*self.table_arrays, "status", "valid")
        table = self._checked_table(self._table(columns))
        return table, np.asarray(status, dtype=np.int8), np.asarray(valid, dtype=bool)

    @staticmethod
    def _table(arrays: list[np.ndarray]) -> TakeTable:
        """A TakeTable from the arrays of `table_arrays`, in that order (a store of format 2
        or older has no uid column: its uids are empty)."""
        *strings, label = arrays
        strings = [_strings(values) for values in strings]
        if len(strings) < len(TAKE_TEXT_COLUMNS):
            strings.append(np.full(len(label), "", dtype="U1"))
        columns = dict(zip(TAKE_TEXT_COLUMNS, strings, strict=True))
        return TakeTable(ids=columns.pop("take_id"), label=np.asarray(label).astype(np.int64),
                         **columns)  # fmt: skip

    def read_columns(self, *names: str) -> list[np.ndarray]:
        """The committed rows (``[:n_takes]``) of several arrays (strings: numpy unicode, or
        StringDType where zarr read them). A packed one-chunk array is decoded directly
        (`cache.small_arrays`); the others are read through zarr in one
        concurrent trip through its event loop instead of one per array (2-3 ms each)."""
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

        Takes already in the table keep their row; a take whose label or metadata differs
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
        names = ("label", *(name for name in TAKE_TEXT_COLUMNS if name != "take_id"))
        stored_label = self.labels[table.label[i]] if table.label[i] >= 0 else None
        stored = (stored_label, *(str(table.column(name)[i]) for name in names[1:]))
        given = tuple(getattr(row, name) for name in names)
        if stored != given:
            as_stored = " ".join(f"{n}={v!r}" for n, v in zip(names, stored, strict=True))
            as_given = " ".join(f"{n}={v!r}" for n, v in zip(names, given, strict=True))
            raise StoreError(
                f"{self.path}: take {row.take_id} is already in the store as {as_stored}, "
                f"but the manifest says {as_given}"
            )

    def _append_rows(self, table: TakeTable, new_rows: Sequence[TakeRow]) -> None:
        n_new = len(table.ids) + len(new_rows)
        for name in self.per_take_arrays:
            array = self._group[name]
            array.resize((n_new, *array.shape[1:]))
        label_of = {name: i for i, name in enumerate(self.labels)}
        for field_name, array_name in TAKE_TEXT_COLUMNS.items():
            values = [*table.column(field_name), *(getattr(r, field_name) for r in new_rows)]
            self._rewrite_column(array_name, np.asarray(values, dtype=object), str)
        labels = [*table.label, *(label_of[r.label] if r.label else -1 for r in new_rows)]
        self._rewrite_column("label", np.asarray(labels, dtype=np.int8), np.int8)
        # Rows become visible only now: a coordinator killed above leaves them uncommitted.
        self._group.attrs["n_takes"] = n_new
        self._arrays.clear()  # resized: cached handles hold the old shapes

    def _rewrite_column(self, name: str, values: np.ndarray, dtype) -> None:
        array = self._group[name]
        array.resize((len(values),))
        if len(values):
            array[:] = values.astype(dtype) if dtype is not str else values

    # ---- per-take data (any writer, one take each) ---------------------------------------
    def write_take(self, i: int, result: TakeResult) -> None:
        """Write one take's arrays, then its status: the status is the completion record."""
        self._require_writable()
        if layout.is_packed(self._array("status").metadata.to_dict()):
            raise StoreError(f"{self.path}: the store is packed; unpack it before writing takes")
        g, n_views = self._array, len(self.views)
        # Rewriting a take (a failed take retried) first withdraws its old record, so that a
        # write cut short is never read as the old record over a mix of old and new arrays.
        g("status")[i] = np.int8(STATUS_PENDING)
        tokens = np.asarray(result.tokens, dtype=np.float16)
        broken = [
            self.views[v]
            for v in range(n_views)
            if result.valid[v] and not np.isfinite(tokens[v]).all()
        ]
        if broken:  # the extract loop masks such views; nothing non-finite is ever stored
            raise StoreError(f"{self.path}: take row {i}: NaN or Inf tokens in views {broken}")
        for v in range(n_views):
            # An invalid view is written as the fill value, which removes any stale chunk.
            g("tokens")[i, v] = tokens[v] if result.valid[v] else 0
        g("valid")[i] = np.asarray(result.valid, dtype=bool)
        g("frame_index")[i] = np.asarray(result.frame_index, dtype=np.int32)
        g("timestamp")[i] = np.asarray(result.timestamp, dtype=np.float32)
        g("padded_frames")[i] = np.asarray(result.padded, dtype=np.int16)
        errors = list(result.view_error) or [""] * n_views
        g("view_error")[i] = np.asarray(errors, dtype=object)
        notes = list(result.view_note) or [""] * n_views
        if "view_note" in self.per_take_arrays:
            g("view_note")[i] = np.asarray(notes, dtype=object)
        elif any(notes):
            raise StoreError(
                f"{self.path}: take row {i}: this store predates view notes and cannot record "
                f"{notes}"
            )
        g("status")[i] = np.int8(result.status)

    def _array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    def status(self) -> np.ndarray:
        return np.asarray(self._committed("status"), dtype=np.int8)

    def valid(self) -> np.ndarray:
        return np.asarray(self._committed("valid"), dtype=bool)

    def view_errors(self) -> np.ndarray:
        return _strings(self._committed("view_error"))

    def view_notes(self) -> np.ndarray:
        """(take, view) notes on views that decoded ("" = none; all "" in older stores)."""
        if "view_note" not in self.per_take_arrays:
            return np.full((self.n_takes, len(self.views)), "", dtype="U1")
        return _strings(self._committed("view_note"))

    @property
    def per_take_arrays(self) -> tuple[str, ...]:
        """The per-take arrays this store has (stores older than an optional one lack it)."""
        if not hasattr(self, "_per_take_arrays"):
            self._per_take_arrays = tuple(
                name
                for name in PER_TAKE_ARRAYS
                if name not in OPTIONAL_PER_TAKE_ARRAYS
                or (self.path / name / "zarr.json").is_file()
            )
        return self._per_take_arrays

    @property
    def relayout_arrays(self) -> tuple[str, ...]:
        """Every array of this store that `pack` and `unpack` may rewrite."""
        return (*self.per_take_arrays, *self.table_arrays)

    def frame_index(self) -> np.ndarray:
        return np.asarray(self._committed("frame_index"))

    def padded_frames(self) -> np.ndarray:
        return np.asarray(self._committed("padded_frames"))

    def timestamps(self) -> np.ndarray:
        return np.asarray(self._committed("timestamp"))

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
        records: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Tokens of the given takes and views: (n, v, K, N, D) float16, zeros where invalid.

        Raw (uncompressed) chunks, the store's own kind, are read straight from their files
        into the output (see `cache.layout.read_token_slots`); others go through zarr.
        `records`: the store's (status, valid) when the caller has read them already, so that
        the check of which chunks must exist costs no second read."""
        take_idx = np.asarray(take_idx, dtype=np.int64)
        view_idx = np.asarray(view_idx, dtype=np.int64)
        shape = (len(take_idx), len(view_idx), self.clips, self.tokens, self.dim)
        out = layout.page_aligned_empty(shape, np.float16)
        meta = layout.array_metadata(self.path, "tokens")
        with layout.layout_lock(self.path, exclusive=False):
            if layout.raw_token_chunks(meta):
                required = self._written_slots(take_idx, view_idx, records)
                try:
                    layout.read_token_slots(
                        self.path / "tokens", meta, take_idx, view_idx, out, required
                    )
                except layout.MissingChunks as err:
                    raise self._missing_chunks_error(err, take_idx, view_idx) from None
                except layout.LayoutError as err:
                    raise StoreError(f"{err}; {self.damaged_hint()}") from err
            elif len(take_idx):
                out[:] = self._group["tokens"].get_orthogonal_selection((take_idx, view_idx))
        return out

    def _written_slots(self, take_idx, view_idx, records=None) -> np.ndarray:
        """(n, v) True where a token chunk must exist: valid views of complete takes.
        `records` is (status, valid) when the caller has read them (take_records)."""
        if not len(take_idx):
            return np.zeros((0, len(view_idx)), dtype=bool)
        status, valid = records if records is not None else self.read_columns("status", "valid")
        complete = np.asarray(status)[take_idx] == STATUS_COMPLETE
        return complete[:, None] & np.asarray(valid, dtype=bool)[take_idx][:, view_idx]

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
            for name in self.per_take_arrays
        }
        wanted.update({name: (max(self.n_takes, 1),) for name in TAKE_TABLE_ARRAYS})
        changed = []
        for name, chunks in wanted.items():
            meta = layout.array_metadata(self.path, name)
            if layout.is_packed(meta) and layout.chunk_shape(meta) != chunks:
                # Packed for another number of takes (takes added through the API): a new
                # packing would reuse the chunk file names in use, so go through the write
                # layout.
                layout.relayout_array(
                    self.path, name, self._write_chunks(name), layout.WRITE_SEPARATOR
                )
            if chunks and layout.relayout_array(self.path, name, chunks, layout.PACKED_SEPARATOR):
                changed.append(name)
        self._arrays.clear()
        return changed

    def _write_chunks(self, name: str) -> tuple[int, ...]:
        if name in TAKE_TABLE_ARRAYS:
            return (TAKE_TABLE_CHUNK,)
        return layout.write_chunks(name, tuple(layout.array_metadata(self.path, name)["shape"]))

    def unpack(self) -> list[str]:
        """Back to one chunk per take (per take and view for tokens), the layout writers
        need; returns the arrays rewritten. Call with the writer lock held."""
        self._require_writable()
        changed = [
            name
            for name in self.relayout_arrays
            if layout.relayout_array(
                self.path, name, self._write_chunks(name), layout.WRITE_SEPARATOR
            )
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
    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the exclusive writer lock; a second holder gets StoreBusy at once.

        flock is released by the kernel when the holder dies, even by SIGKILL, so a
        killed run never leaves a stale lock behind."""
        lock_path = layout.lock_file(self.path, LOCK_FILE)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_flock(fd, fcntl.LOCK_EX, LOCK_RETRY_S):
                raise self.busy_error(_read_lock_holder(lock_path))
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(_lock_holder()).encode())
            yield
        finally:
            os.close(fd)

    def writer_busy(self) -> str | None:
        """Who holds the writer lock ("pid N on host since T"), or None when nobody does.

        Creates and writes nothing (works on a read-only store); it takes a shared lock for
        an instant, which a starting writer waits out (LOCK_RETRY_S)."""
        lock_path = layout.lock_file(self.path, LOCK_FILE)
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except OSError:  # no lock file: nobody ever held the lock here
            return None
        try:
            if _try_flock(fd, fcntl.LOCK_SH, 0.0):
                return None
            return _read_lock_holder(lock_path)
        finally:
            os.close(fd)  # closing releases the shared lock

    def busy_error(self, holder: str) -> StoreBusy:
        """The refusal a second writer gets while `holder` writes."""
        return StoreBusy(
            f"{self.path}: another skill extract is writing to this store ({holder}); "
            "wait for it to finish, or use another store"
        )


def _try_flock(fd: int, kind: int, patience_s: float) -> bool:
    """flock `kind` without blocking, retrying for `patience_s`; False if it stays held."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


PER_TAKE_ARRAYS = (
    "tokens",
    "valid",
    "frame_index",
    "timestamp",
    "padded_frames",
    "view_error",
    "view_note",
    "status",
)
# Per-take arrays added after format 2 stores were first written: absent from older stores.
OPTIONAL_PER_TAKE_ARRAYS = ("view_note",)
# Every array that `pack` and `unpack` may rewrite.
RELAYOUT_ARRAYS = (*PER_TAKE_ARRAYS, *TAKE_TABLE_ARRAYS)


def _strings(values) -> np.ndarray:
    """zarr returns numpy StringDType arrays; plain unicode arrays are easier to use."""
    values = np.asarray(values)
    if values.dtype.kind == "U":
        return values
    if values.dtype.kind == "T":  # StringDType: a fixed width is needed to cast
        width = int(np.strings.str_len(values).max(initial=0))
        return values.astype(f"U{max(width, 1)}")
    return np.array(values.tolist(), dtype=str).reshape(values.shape)


def _lock_holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%FT%T")}


def _read_lock_holder(lock_path: Path) -> str:
    try:
        holder = json.loads(lock_path.read_text() or "{}")
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"


def _check_is_store(path: Path) -> None:
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    if not path.is_dir() or not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not a skill store (no zarr.json in a folder)")


def _check_format(path: Path, attrs: dict) -> None:
    meta = attrs.get("skill")
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise StoreError(f"{path}: a Zarr group, but not a skill store (no 'skill' attributes)")
    version = meta["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format version {version} is newer than this skill "
            f"({package_version()}) can read (up to {FORMAT_VERSION}); upgrade skill"
        )
    missing = [k for k in ("provenance", "views", "labels", "geometry") if k not in attrs]
    if missing:
        raise StoreError(f"{path}: store attributes are missing {', '.join(missing)}")


def _check_appendable(path: Path, attrs: dict) -> None:
    """Stores older than format 3 are read, not written: their take table lives elsewhere."""
    version = attrs["skill"]["format_version"]
    if version < APPENDABLE_FORMAT:
        raise StoreError(
            f"{path}: store format {version} was written by an older skill; it can still be "
            f"read (fit, predict, export) but not written to: extract into a new store "
            f"(format {FORMAT_VERSION}), or `skill export` it and `skill import features` the "
            "export"
        )


def checksummed(compress: bool = True) -> list:
    """The bytes-to-bytes codecs of every array: zstd (as zarr's default, except for the
    tokens, which compress poorly and are read in bulk), then a crc32c checksum of the chunk,
    which zarr and the raw token reader verify on every read."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(level=0, checksum=False), Crc32cCodec()] if compress else [Crc32cCodec()]


def _write_empty_store(path, provenance, views, labels, clips, tokens, dim, frames) -> None:
    zarr = _zarr()
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    n_views = len(views)

    def per_take(name, shape, chunks, dtype, fill, dims, compress=True):
        kwargs = {"compressors": checksummed(compress)}
        group.create_array(
            name,
            shape=(0, *shape),
            chunks=(1, *chunks),
            dtype=dtype,
            fill_value=fill,
            dimension_names=["take", *dims],
            **kwargs,
        )

    # Tokens compress poorly and are read in bulk: raw chunks keep reads at disk speed.
    per_take("tokens", (n_views, clips, tokens, dim), (1, clips, tokens, dim), "float16", 0,
             ["view", "clip", "token", "dim"], compress=False)  # fmt: skip
    per_take("valid", (n_views,), (n_views,), "bool", False, ["view"])
    per_take("frame_index", (n_views, clips, frames), (n_views, clips, frames), "int32", -1,
             ["view", "clip", "frame"])  # fmt: skip
    per_take("timestamp", (n_views, clips, frames), (n_views, clips, frames), "float32",
             float("nan"), ["view", "clip", "frame"])  # fmt: skip
    per_take("padded_frames", (n_views,), (n_views,), "int16", 0, ["view"])
    per_take("view_error", (n_views,), (n_views,), str, "", ["view"])
    per_take("view_note", (n_views,), (n_views,), str, "", ["view"])
    per_take("status", (), (), "int8", STATUS_PENDING, [])
    for name in TAKE_TEXT_COLUMNS.values():
        group.create_array(name, shape=(0,), chunks=(TAKE_TABLE_CHUNK,), dtype=str, fill_value="",
                           dimension_names=["take"], compressors=checksummed())  # fmt: skip
    label = group.create_array("label", shape=(0,), chunks=(TAKE_TABLE_CHUNK,), dtype="int8",
                               fill_value=-1, dimension_names=["take"],
                               compressors=checksummed())  # fmt: skip
    # CF's way to name categories, so that xarray users see what the index means.
    label.attrs.update(
        {"flag_values": list(range(len(labels))), "flag_meanings": " ".join(
            name.replace(" ", "_") for name in labels), "missing": -1}
    )  # fmt: skip
    view = group.create_array(VIEW_ARRAY, shape=(n_views,), chunks=(max(n_views, 1),), dtype=str,
                              fill_value="", dimension_names=["view"],
                              compressors=checksummed())  # fmt: skip
    if n_views:
        view[:] = np.asarray(list(views), dtype=object)
    group.attrs.update(
        {
            # xarray's CF decoding: these arrays are coordinates, not data variables
            "coordinates": " ".join(TAKE_COORDINATES),
            "skill": {"format_version": FORMAT_VERSION, "package_version": package_version()},
            "provenance": provenance,
            "views": list(views),
            "labels": list(labels),
            "geometry": {"clips": clips, "tokens": tokens, "dim": dim, "frames": frames},
            "n_takes": 0,
        }
    )
