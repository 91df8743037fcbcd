"""`skill verify`: check every completed take of a store, name what is damaged, and mark it
to be extracted again.

Checked: the metadata, the take table against its digest, every chunk of every per-take
array, each finished take's records, the pairs of a ranking store against their digest, and
each valid view of each complete take (its token chunk present, of full length, finite, and
the one recorded for its place); docs/store.md,
"Verification", lists the checks and which missing chunks are legitimate. `repair` marks the
damaged takes pending, so that the next `skill extract` with the same manifest redoes exactly
those; it never touches the take table, and refuses a store whose take table or metadata is
damaged: those name no take to redo.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.cache import layout
from skill.cache.checksum import crc32c_extend
from skill.cache.errors import StoreError
from skill.cache.store import (
    FRAME_ARRAYS,
    STATUS_COMPLETE,
    STATUS_PENDING,
    FrameRecords,
    TakeRecords,
    TokenStore,
)


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
    ids = [str(t) for t in store.take_table().ids]
    arrays = _read_small_arrays(store, ids, report)
    status = _check_records(store, ids, arrays, report)
    _check_tokens(store, ids, status, arrays, report)
    _check_pairs(store, report)
    return report


def _check_pairs(store: TokenStore, report: VerifyReport) -> None:
    """The pairs a ranking store records are those committed (`TokenStore.pairs`)."""
    try:
        store.pairs()
    except StoreError as err:
        report.store_problems.append(str(err))


def _read_small_arrays(store, ids, report) -> dict[str, np.ndarray]:
    """Decode every chunk of the per-take arrays but tokens, chunk by chunk, so that one
    damaged chunk names its own takes; returns the arrays with the rows of damaged chunks
    marked in ``arrays["damaged"]``."""
    n = store.n_takes
    arrays: dict[str, np.ndarray] = {"damaged": np.zeros(n, dtype=bool)}
    for name in store.per_take_arrays:
        if name == "tokens":
            continue
        array = store._group[name]
        string = array.metadata.data_type.to_json(zarr_format=3) == "string"
        values = np.full(
            (n, *array.shape[1:]), array.fill_value, dtype=object if string else array.dtype
        )
        for rows, file in _chunks(store.path, name, n):
            standing = _unreadable(Path(file))
            if standing:  # zarr reads a folder in a chunk's place as a missing chunk
                _damage_rows(report, ids, rows, "*", file, standing)
                arrays["damaged"][rows.start : rows.stop] = True
                continue
            try:
                values[rows.start : rows.stop] = np.asarray(array[rows.start : rows.stop])
            except Exception as err:  # any codec or I/O failure of this one chunk
                problem = _unreadable(Path(file)) or f"{name} cannot be read ({err})"
                _damage_rows(report, ids, rows, "*", file, problem)
                arrays["damaged"][rows.start : rows.stop] = True
        arrays[name] = values
    return arrays


def _unreadable(chunk: Path) -> str | None:
    """What stands in a chunk file's place, when it is not a file."""
    if chunk.is_dir():
        return f"a folder stands where the chunk file {chunk} belongs"
    blocking = layout.blocking_file(chunk)
    if blocking != chunk:
        return f"the file {blocking} stands where a folder of chunks belongs"
    return None


def _check_records(store, ids, arrays, report) -> np.ndarray:
    """Each finished take's records against what its row holds (`TokenStore.record_problems`)
    and its frame records against `frames_crc`; returns status with every damaged row
    marked -1 (not checked further)."""
    damaged = arrays["damaged"]
    records = TakeRecords(
        table=store.take_table(),
        status=arrays["status"].astype(np.int8),
        valid=arrays["valid"].astype(bool),
        token_crc=arrays["token_crc"].astype(np.uint32),
    )
    frames = FrameRecords(*(arrays[name] for name in FRAME_ARRAYS))
    problems: dict[int, list[str]] = {}
    for row, take, problem in [
        *store.record_problems(records, arrays["frames_crc"], arrays["row_digest"]),
        *store.frame_problems(frames, arrays["frames_crc"], records.status),
    ]:
        if not damaged[row]:
            problems.setdefault(row, [take]).append(problem)
    for row, (take, *said) in sorted(problems.items()):
        problem = "; ".join(said) + _missing_chunks(store, row)
        report.damage.append(Damage(row, take, "*", "", problem))
        damaged[row] = True
    return np.where(damaged, -1, records.status)


def _missing_chunks(store, row: int) -> str:
    """'; missing chunk files: ...' for the take's write-layout chunks of arrays that every
    finished take writes (the likely cause of records that disagree), or ''."""
    missing = []
    for name in ("valid", *FRAME_ARRAYS[:3], "token_crc", "frames_crc", "row_digest"):
        meta = layout.array_metadata(store.path, name)
        if layout.is_packed(meta):
            continue
        chunk = store.path / name / "/".join(["c", str(row), *("0" * (len(meta["shape"]) - 1))])
        if not chunk.is_file():
            missing.append(str(chunk))
    return f"; missing chunk files: {', '.join(missing)}" if missing else ""


def _check_tokens(store, ids, status, arrays, report) -> None:
    """Each valid view of each complete take: its token chunk present, full, finite and in
    its place. Read through the raw reader with the records verify itself decoded, so that
    one damaged status chunk does not hide the state of the others. Each chunk file is read
    once: a packed chunk holds hundreds of takes and views, and reading it once per take and
    view made verifying a 2,370-take store take 60 s."""
    meta = layout.array_metadata(store.path, "tokens")
    complete = status == STATUS_COMPLETE
    report.complete_checked += int(complete.sum())
    required = complete[:, None] & arrays["valid"].astype(bool)
    token_crc = arrays["token_crc"].astype(np.uint32)
    slot_shape = (store.clips, store.tokens, store.dim)
    with store.reading():
        for takes, views in _token_reads(meta, required):
            part = layout.TokenPlacement(
                store.store_id, required[np.ix_(takes, views)], token_crc[np.ix_(takes, views)]
            )
            for row, view, problem in _token_problems(store, meta, takes, views, part, slot_shape):
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
    store, meta, takes: np.ndarray, views: np.ndarray, part: layout.TokenPlacement, slot_shape
) -> list[tuple[int, int, str]]:
    """(row, view, problem) of every damaged slot of one chunk file: a file that is missing,
    short, fails its checksum or is not the one recorded for its place damages every
    required slot in it; NaN or Inf damages the slots that hold it (the bytes passed their
    checksum, so they are what was written); a slot whose tokens are not those its take
    recorded (`token_crc`) is damaged alone."""
    out = np.empty((len(takes), len(views), *slot_shape), dtype=np.float16)
    required = part.required
    try:
        layout.read_token_slots(store.path / "tokens", meta, takes, views, out, part)
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
    except layout.MisplacedChunk:
        problem = "token chunk is not the one written here (moved, exchanged or copied from another store)"
    except layout.LayoutError as err:
        problem = _layout_problem(err)
    else:
        return [
            (int(takes[i]), int(views[j]), "tokens are not the ones written for this take and view")
            for i, j in np.argwhere(required).tolist()
            if crc32c_extend(0, out[i, j]) != int(part.slot_crc[i, j])
        ]
    return [(int(takes[i]), int(views[j]), problem) for i, j in np.argwhere(required).tolist()]


def _layout_problem(err: layout.LayoutError) -> str:
    text = str(err)
    if "short" in text:
        return "token chunk truncated"
    if "fails its checksum" in text:
        return "token chunk fails its checksum"
    return text.split(": ", 1)[-1]


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
    rows to extract again. A damaged chunk file is removed, or whatever stands in its place
    (a folder, or a file where its folder belongs): it then reads as fill values (status
    pending, views invalid); in a packed store a chunk holds many takes, so every complete
    take of a removed chunk is extracted again too. Holds the writer lock."""
    if report.store_problems:
        raise StoreError(
            f"{path}: cannot repair: {report.store_problems[0]} (no take to extract again "
            "can be named: extract into a new store)"
        )
    if not report.damage:
        return []
    store = TokenStore.open(path, mode="a")
    with store.writer_lock():
        files = sorted({d.file for d in report.damage if d.file})
        rows = set(report.damaged_rows())
        for file in files:
            rows.update(_rows_of_chunk(store, file))
            _remove_chunk(store.path, Path(file))
        pending = sorted(rows)
        status = store._group["status"]
        for row in pending:
            status[row] = np.int8(STATUS_PENDING)
    return pending


def _remove_chunk(store_path: Path, chunk: Path) -> None:
    """Remove a damaged chunk file, the folder standing in its place, or the file standing
    where one of its folders belongs; never anything outside the store's array folders."""
    blocking = layout.blocking_file(chunk)
    target = blocking if blocking != chunk else chunk
    if not target.resolve().is_relative_to(Path(store_path).resolve()) or target == store_path:
        raise StoreError(f"{store_path}: will not remove {target}, which is not a chunk of it")
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)


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
