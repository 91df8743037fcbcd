"""`skill verify`: check every completed take of a store, name what is damaged, and mark it
to be extracted again.

Checked: the metadata (geometry and views against every array's shape, `n_takes` within the
arrays), the take table (readable, ids present and unique), every chunk of every per-take
array (decodes; `status` holds known values), and, for each complete take, every valid
view's token chunk (present, of full length, finite). A chunk file missing for a view that
was never written (invalid view, pending take) is legitimate; anywhere else it is damage.
NaN or Inf is damage wherever it is in a chunk that is read, complete take or not: every
read of that chunk refuses it, so the takes and views that hold it are named.

`repair` marks the damaged takes pending (their status chunk rewritten, their token chunks
removed), so that the next `skill extract` with the same manifest redoes exactly those
takes. It never touches the take table (rows keep their takes: nothing is appended again),
and refuses a store whose take table or metadata is damaged: those name no take to redo.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.cache import layout
from skill.cache.errors import StoreError
from skill.cache.store import (
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_PENDING,
    TokenStore,
)

KNOWN_STATUS = (STATUS_PENDING, STATUS_COMPLETE, STATUS_FAILED)


@dataclass(frozen=True)
class Damage:
    """One damaged place: a take (by id, or row when the id is unknown), a view or `*`."""

    row: int
    take: str
    view: str
    file: str
    problem: str


@dataclass
class VerifyReport:
    store: Path
    takes: int = 0
    """Rows of the take table."""
    complete_checked: int = 0
    """Complete takes whose token chunks were checked."""
    damage: list[Damage] = field(default_factory=list)
    store_problems: list[str] = field(default_factory=list)
    """Damage that names no take (metadata, the take table): not repairable here."""

    @property
    def ok(self) -> bool:
        return not self.damage and not self.store_problems

    def damaged_rows(self) -> list[int]:
        return sorted({d.row for d in self.damage})


def verify_store(path: str | Path) -> VerifyReport:
    """Check the store at `path` (see the module docstring); never raises for damage."""
    report = VerifyReport(store=Path(path))
    try:
        store = TokenStore.open(path)
    except StoreError as err:
        report.store_problems.append(str(err))
        return report
    report.takes = store.n_takes
    ids = _take_ids(store, report)
    status, valid = _check_small_arrays(store, ids, report)
    _check_tokens(store, ids, status, valid, report)
    return report


def _take_ids(store: TokenStore, report: VerifyReport) -> list[str]:
    try:
        return [str(t) for t in store.take_table().ids]
    except StoreError as err:
        report.store_problems.append(str(err))
        return [f"(row {i})" for i in range(store.n_takes)]


def _check_small_arrays(store, ids, report) -> tuple[np.ndarray, np.ndarray]:
    """Decode every chunk of the per-take arrays but tokens; returns status and valid with
    rows whose chunks are damaged marked (status -1, valid False)."""
    n = store.n_takes
    status = np.full(n, -1, dtype=np.int16)
    valid = np.zeros((n, len(store.views)), dtype=bool)
    for name in store.per_take_arrays:
        if name == "tokens":
            continue
        array = store._group[name]
        for rows, file in _chunks(store.path, name, n):
            try:
                values = np.asarray(array[rows.start : rows.stop])
            except Exception as err:  # any codec or I/O failure of this one chunk
                _damage_rows(report, ids, rows, "*", file, f"{name} cannot be read ({err})")
                continue
            if name == "status":
                unknown = ~np.isin(values, KNOWN_STATUS)
                for i in np.flatnonzero(unknown) + rows.start:
                    report.damage.append(
                        Damage(int(i), ids[i], "*", file, f"status {values[i - rows.start]}")
                    )
                status[rows.start : rows.stop] = np.where(unknown, -1, values)
            elif name == "valid":
                valid[rows.start : rows.stop] = values
    for d in report.damage:
        status[d.row] = -1  # a take with a damaged array is not checked further
    return status, valid


def _check_tokens(store, ids, status, valid, report) -> None:
    """Each valid view of each complete take: its token chunk present, full, finite. Read
    through the raw reader with the completion record verify itself decoded, so that one
    damaged status chunk does not hide the state of the others. Each chunk file is read
    once: a packed chunk holds hundreds of takes and views, and reading it once per take and
    view made verifying a 2,370-take store take 60 s."""
    meta = layout.array_metadata(store.path, "tokens")
    complete = status == STATUS_COMPLETE
    report.complete_checked += int(complete.sum())
    required = complete[:, None] & valid
    slot_shape = (store.clips, store.tokens, store.dim)
    with store.reading():
        for takes, views in _token_reads(meta, required):
            for row, view, problem in _token_problems(
                store, meta, takes, views, required[np.ix_(takes, views)], slot_shape
            ):
                file = str(store.path / "tokens" / layout.token_chunk_file(meta, row, view))
                report.damage.append(Damage(row, ids[row], store.views[view], file, problem))


def _token_reads(meta: dict, required: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(takes, views) read together, one chunk file each: in the packed layout every take
    and view of a chunk that holds a required slot; in the write layout each required
    (take, view)."""
    if layout.is_packed(meta):
        per_chunk = layout.chunk_shape(meta)[0]
        views = np.arange(required.shape[1])
        for first in range(0, len(required), per_chunk):
            takes = np.arange(first, min(first + per_chunk, len(required)))
            if required[takes].any():
                yield takes, views
    else:
        for row, view in np.argwhere(required).tolist():
            yield np.array([row]), np.array([view])


def _token_problems(
    store, meta, takes: np.ndarray, views: np.ndarray, required: np.ndarray, slot_shape
) -> list[tuple[int, int, str]]:
    """(row, view, problem) of every damaged slot of one chunk file: a file that is missing,
    short or fails its checksum damages every required slot in it; NaN or Inf damages the
    slots that hold it (the bytes passed their checksum, so they are what was written)."""
    out = np.empty((len(takes), len(views), *slot_shape), dtype=np.float16)
    try:
        layout.read_token_slots(store.path / "tokens", meta, takes, views, out, required)
    except layout.MissingChunks:
        problem = "token chunk missing"
    except layout.NonFiniteTokens:
        problem = "token chunk holds NaN or Inf values"
        holding = [
            (i, j)
            for i, j in np.ndindex(*required.shape)
            if layout.has_non_finite_float16(out[i, j])
        ]
        if holding:
            return [(int(takes[i]), int(views[j]), problem) for i, j in holding]
    except layout.LayoutError as err:
        if "short" in str(err):
            problem = "token chunk truncated"
        else:
            problem = "token chunk fails its checksum" if "checksum" in str(err) else str(err)
    else:
        return []
    return [(int(takes[i]), int(views[j]), problem) for i, j in np.argwhere(required).tolist()]


def _damage_rows(report, ids, rows: range, view: str, file: str, problem: str) -> None:
    for i in rows:
        report.damage.append(Damage(i, ids[i], view, file, problem))


def _chunks(store_path: Path, name: str, n_takes: int) -> Iterator[tuple[range, str]]:
    """(rows, chunk file) of every chunk of per-take array `name` over the committed rows."""
    meta = layout.array_metadata(store_path, name)
    n = min(int(meta["shape"][0]), n_takes)
    per_chunk = layout.chunk_shape(meta)[0]
    tail_dims = len(meta["shape"]) - 1
    for k in range(math.ceil(n / per_chunk) if per_chunk else 0):
        rows = range(k * per_chunk, min(n, (k + 1) * per_chunk))
        sep = layout.separator(meta)
        key = sep.join(["c", str(k), *(["0"] * tail_dims)])
        yield rows, str(Path(store_path) / name / key)


def repair_store(path: str | Path, report: VerifyReport) -> list[int]:
    """Mark the damaged takes of `report` pending (see the module docstring); returns the
    rows to extract again. A damaged chunk file is removed (it then reads as fill values:
    status pending, views invalid); in a packed store a chunk holds many takes, so every
    complete take of a removed chunk is extracted again too. Holds the writer lock."""
    if report.store_problems:
        raise StoreError(
            f"{path}: cannot repair: {report.store_problems[0]} (no take to extract again "
            "can be named: extract into a new store)"
        )
    if not report.damage:
        return []
    store = TokenStore.open(path, mode="a")
    with store.writer_lock():
        files = sorted({d.file for d in report.damage})
        rows = set(report.damaged_rows())
        for file in files:
            rows.update(_rows_of_chunk(store, file))
            Path(file).unlink(missing_ok=True)
        pending = sorted(rows)
        status = store._group["status"]
        for row in pending:
            status[row] = np.int8(STATUS_PENDING)
    return pending


def _rows_of_chunk(store: TokenStore, file: str) -> range:
    """The take rows a chunk file holds."""
    relative = Path(file).relative_to(store.path)
    meta = layout.array_metadata(store.path, relative.parts[0])  # a per-take array
    per_chunk = layout.chunk_shape(meta)[0]
    if layout.is_packed(meta):
        k = int(relative.name.split(".")[1])
    else:
        k = int(relative.parts[relative.parts.index("c") + 1])
    return range(k * per_chunk, min(store.n_takes, (k + 1) * per_chunk))
