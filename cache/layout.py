"""Chunk layouts of the store's per-take arrays: the write layout and the packed layout.

While extracting, one chunk per take (per take and view for ``tokens``, keys
``c/<take>/...``), so that writers of different takes never share a file; once a run has
finished, many takes per chunk (about ``PACKED_CHUNK_BYTES``, keys ``c.<chunk>...``), because a
few large files read at disk speed where thousands of small ones cost an open each. The
separators differ, so both key sets can sit in an array's folder and a relayout switches with
one atomic rename of ``zarr.json``; readers hold a shared lock beside the store that a relayout
takes exclusively only to swap and delete (docs/store.md, "Chunk layouts").
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skill.cache.checksum import crc32c, crc32c_extend
from skill.cache.errors import StoreError
from skill.cache.files import hold_lock, lock_file, write_text_atomically

WRITE_SEPARATOR, PACKED_SEPARATOR = "/", "."
PACKED_CHUNK_BYTES = 32 << 20
LAYOUT_LOCK = ".skill.layout.lock"
"""Suffix of the layout lock's file name, beside the store (`cache.files.lock_file`)."""
STAGING = ".skill-relayout"
PACKED_RECORD = "skill_packed"
"""Attribute of a packed token array, written by the pack: ``{"store_id": ..., "crc32c":
{chunk file name: crc32c}, "finite": [chunk file names]}``. Every packed chunk must carry its
recorded checksum (a chunk moved, exchanged or copied in from elsewhere does not), and one
listed as finite was scanned for NaN/Inf when it was written, so a read skips that scan (a
fifth of a warm load, benchmark 2)."""
# Bytes per element assumed for variable-length strings when sizing packed chunks.
STRING_BYTES = 16


class LayoutError(StoreError):
    """A chunk file shorter than its chunk; the message names the file."""


@dataclass(frozen=True)
class TokenPlacement:
    """What the token chunks of a selection must be: `store_id` must be the packed record's;
    ``required (n, v)`` marks the slots that must hold data (valid views of complete takes)
    and ``slot_crc (n, v)`` the crc32c each was written with (checked in the write layout,
    where a chunk is one slot; a pack checks its chunks against its own record)."""

    store_id: str
    required: np.ndarray
    slot_crc: np.ndarray


class MisplacedChunk(LayoutError):
    """A chunk file whose checksum is not the one recorded for its place."""

    def __init__(self, path: Path, found: int, recorded: int | None):
        self.path = path
        what = f"the recorded {recorded:08x}" if recorded is not None else "recorded by the pack"
        super().__init__(
            f"{path}: token chunk is not the one written here (its checksum {found:08x} is not "
            f"{what}: moved, exchanged or copied from another store)"
        )


class MissingChunks(LayoutError):
    """Chunk files that must exist (they hold valid views of complete takes) do not."""

    def __init__(self, slots: np.ndarray, files: list[str]):
        self.slots, self.files = slots, files
        super().__init__(f"{len(files)} token chunk files are missing: {', '.join(files[:5])}")


class NonFiniteTokens(LayoutError):
    """Tokens read from a chunk file hold NaN or Inf."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(f"{path}: token chunk holds NaN or Inf values")


# float16 with every exponent bit set is Inf or NaN. As unsigned 16-bit integers the negative
# ones are exactly those >= 0xFC00 (the top of the range); as signed, the positive ones are
# exactly those >= 0x7C00. Two integer maxima over the same bytes, no float math, no temporary.
_NEGATIVE_NON_FINITE = np.uint16(0xFC00)
_POSITIVE_NON_FINITE = np.int16(0x7C00)


_SCAN_BLOCK = 1 << 19
"""float16 values scanned at a time (1 MiB, one read piece): checksum and finiteness of a block
are computed while it is in the CPU's cache, one pass over memory for both. Smaller blocks
are slower (per-call overhead under the GIL, benchmark 2)."""


_READ_PIECE = 1 << 20
"""Bytes read at a time from a checksummed chunk: small enough to be scanned from the cache."""


def has_non_finite_float16(data) -> bool:
    """Whether raw float16 bytes (any C-contiguous buffer) hold a NaN or an Inf."""
    return _scan(data, checksum=False)[1]


def _scan(data, checksum: bool, crc: int = 0) -> tuple[int, bool]:
    """(crc32c of `data` extended from `crc` (when `checksum`), whether it holds a non-finite
    float16), block by block (see _NEGATIVE_NON_FINITE)."""
    bits = np.frombuffer(data, dtype=np.uint16)
    non_finite = False
    for start in range(0, len(bits), _SCAN_BLOCK):
        block = bits[start : start + _SCAN_BLOCK]
        if checksum:
            crc = crc32c_extend(crc, block)
        if not non_finite and len(block):
            non_finite = bool(
                block.max() >= _NEGATIVE_NON_FINITE
                or block.view(np.int16).max() >= _POSITIVE_NON_FINITE
            )
            if non_finite and not checksum:
                break  # the answer is known; a checksum needs every block
    return crc, non_finite


# ---- locking -----------------------------------------------------------------------------
def layout_lock(store_path: Path, exclusive: bool) -> contextlib.AbstractContextManager[None]:
    """Hold the layout lock: shared to read chunks, exclusive to swap a layout; waits for it.

    A store on a read-only location without a lock file is read without it: nothing can
    relayout a store that nobody can write."""
    lock = lock_file(store_path, LAYOUT_LOCK)
    return hold_lock(lock, shared=not exclusive, patience_s=None, missing_ok=True)


# ---- describing an array's layout --------------------------------------------------------
def array_metadata(store_path: Path, name: str) -> dict:
    return json.loads((Path(store_path) / name / "zarr.json").read_text())


def chunk_shape(meta: dict) -> tuple[int, ...]:
    return tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])


def separator(meta: dict) -> str:
    return meta["chunk_key_encoding"].get("configuration", {}).get("separator", WRITE_SEPARATOR)


def is_packed(meta: dict) -> bool:
    return separator(meta) == PACKED_SEPARATOR


def write_chunks(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Write-layout chunk shape: one take (``tokens``: one take and one view)."""
    if name == "tokens":
        return (1, 1, *shape[2:])
    return (1, *shape[1:])


def packed_chunks(meta: dict, n_takes: int) -> tuple[int, ...] | None:
    """Packed chunk shape (whole takes, about PACKED_CHUNK_BYTES), or None when a chunk
    would hold fewer than two takes: packing such an array gains nothing."""
    shape = tuple(meta["shape"])
    dtype = meta["data_type"]
    item = STRING_BYTES if dtype == "string" else np.dtype(dtype).itemsize
    take_bytes = item * math.prod(shape[1:])
    takes = min(max(1, PACKED_CHUNK_BYTES // max(take_bytes, 1)), n_takes)
    return (takes, *shape[1:]) if takes >= 2 else None


# ---- changing the layout -----------------------------------------------------------------
def relayout_array(
    store_path: Path,
    name: str,
    chunks: tuple[int, ...],
    sep: str,
    placement: TokenPlacement | None = None,
) -> bool:
    """Rewrite array ``name`` with chunk shape ``chunks`` and key separator ``sep``.

    The new chunks are written to a staging folder first (the old layout stays in use and
    readable), moved in beside the old ones, and made current by one atomic rename of the
    metadata. ``placement``: for ``tokens``, the store's records over all its rows; every
    chunk read is checked against them, and a pack records the chunks it writes
    (PACKED_RECORD). Returns False when the array already has this layout."""
    folder = Path(store_path) / name
    meta = array_metadata(store_path, name)
    if chunk_shape(meta) == tuple(chunks) and separator(meta) == sep:
        return False
    if separator(meta) == sep:
        # The new chunk files would take the names of the files in use before the swap.
        raise ValueError(f"{folder}: relayout needs the other key separator than {sep!r}")
    new_meta = {
        **meta,
        "attributes": _without_packed_record(meta),
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": sep}},
    }
    if not _chunk_files(folder, separator(meta)):  # nothing written yet: only the metadata
        if name == "tokens" and sep == PACKED_SEPARATOR and placement is not None:
            new_meta["attributes"][PACKED_RECORD] = _empty_record(placement.store_id)
        with layout_lock(store_path, exclusive=True):
            _remove_chunk_files(folder, sep)  # stale files of a relayout killed earlier
            _write_metadata(folder, new_meta)
        return True
    staging = Path(store_path) / STAGING / name
    shutil.rmtree(staging, ignore_errors=True)
    _copy_data(folder, staging, new_meta, placement)
    with layout_lock(store_path, exclusive=True):
        _remove_chunk_files(folder, sep)  # stale files of a relayout killed earlier
        _move_chunk_files(staging, folder, sep)
        os.replace(staging / "zarr.json", folder / "zarr.json")
        _remove_chunk_files(folder, separator(meta))
    shutil.rmtree(Path(store_path) / STAGING, ignore_errors=True)
    return True


def _empty_record(store_id: str) -> dict:
    return {"store_id": store_id, "crc32c": {}, "finite": []}


def _write_metadata(folder: Path, meta: dict) -> None:
    """Replace an array's ``zarr.json`` in one atomic rename."""
    write_text_atomically(folder / "zarr.json", json.dumps(meta, indent=2))


def record_packed_chunks(folder: Path, names: list[str], store_id: str) -> None:
    """Add chunk files a single writer wrote into packed tokens (through zarr, finite: the
    writer refuses NaN and Inf) to the pack's record, with the checksums they end with."""
    meta = json.loads((folder / "zarr.json").read_text())
    record = dict(meta.get("attributes", {}).get(PACKED_RECORD) or _empty_record(store_id))
    crcs, finite = dict(record["crc32c"]), set(record["finite"])
    for name in names:
        with open(folder / name, "rb") as chunk:
            chunk.seek(-4, os.SEEK_END)
            crcs[name] = int.from_bytes(chunk.read(4), "little")
        finite.add(name)
    record.update(crc32c=crcs, finite=sorted(finite))
    _write_metadata(
        folder, {**meta, "attributes": {**meta.get("attributes", {}), PACKED_RECORD: record}}
    )


def _without_packed_record(meta: dict) -> dict:
    """The array's attributes less PACKED_RECORD: a relayout writes new chunk files, and only
    the writer of a chunk may record it."""
    return {k: v for k, v in meta.get("attributes", {}).items() if k != PACKED_RECORD}


def _copy_data(
    source: Path, staging: Path, new_meta: dict, placement: TokenPlacement | None
) -> None:
    """Write every element of the array at ``source`` into a new array at ``staging``,
    a block of whole chunks at a time (bounded memory)."""
    import zarr

    staging.mkdir(parents=True)
    (staging / "zarr.json").write_text(json.dumps(new_meta, indent=2))
    old_meta = json.loads((source / "zarr.json").read_text())
    if source.name == "tokens":
        if placement is None or not raw_token_chunks(old_meta):
            raise ValueError(f"{source}: tokens are relaid out only as raw chunks, with placement")
        _copy_raw_tokens(source, old_meta, staging, new_meta, placement)
        return
    old = zarr.open_array(str(source), mode="r")
    new = zarr.open_array(str(staging), mode="r+")
    # Whole chunks of both layouts per call: zarr then reads and writes them concurrently,
    # and no chunk is read or written twice.
    step = math.lcm(old.chunks[0], new.chunks[0])
    for start in range(0, old.shape[0], step):
        new[start : start + step] = old[start : start + step]


def _copy_raw_tokens(
    source: Path, old_meta: dict, staging: Path, new_meta: dict, placement: TokenPlacement
) -> None:
    """``_copy_data`` for raw token chunks, without zarr: its per-chunk cost (milliseconds)
    made a relayout of thousands of (take, view) chunks take minutes."""
    shape = tuple(old_meta["shape"])
    step = math.lcm(chunk_shape(old_meta)[0], chunk_shape(new_meta)[0])
    views = np.arange(shape[1])
    crcs: dict[str, int] = {}
    finite: list[str] = []
    for start in range(0, shape[0], step):
        takes = np.arange(start, min(start + step, shape[0]))
        block = np.zeros((len(takes), *shape[1:]), dtype=np.float16)  # (t, V, K, N, D)
        rows = slice(start, start + len(takes))
        part = TokenPlacement(
            placement.store_id, placement.required[rows], placement.slot_crc[rows]
        )
        read_token_slots(source, old_meta, takes, views, block, part)
        written = _write_raw_tokens(staging, new_meta, start, block)
        crcs.update({name: crc for name, (crc, _) in written.items()})
        finite += [name for name, (_, is_finite) in written.items() if is_finite]
    if is_packed(new_meta):
        record = {"store_id": placement.store_id, "crc32c": crcs, "finite": finite}
        recorded = {**new_meta, "attributes": {**new_meta["attributes"], PACKED_RECORD: record}}
        (staging / "zarr.json").write_text(json.dumps(recorded, indent=2))


def _write_raw_tokens(
    folder: Path, meta: dict, start: int, block: np.ndarray
) -> dict[str, tuple[int, bool]]:
    """Write takes ``start...`` of ``block (t, V, K, N, D)`` as chunk files of ``meta``'s
    layout, as zarr would: full-size edge chunks, no file for a chunk of fill values.
    Returns {file name: (crc32c, finite)} of the packed chunks written (for PACKED_RECORD)."""
    per_chunk = chunk_shape(meta)[0]
    written: dict[str, tuple[int, bool]] = {}
    if is_packed(meta):
        tail = ".0" * (block.ndim - 1)
        for first in range(0, len(block), per_chunk):
            chunk = np.zeros((per_chunk, *block.shape[1:]), dtype="<f2")
            rows = block[first : first + per_chunk]
            chunk[: len(rows)] = rows
            name = f"c.{(start + first) // per_chunk}{tail}"
            # Scanned here rather than trusted from the caller (whose reads do refuse NaN):
            # the record vouches for these very bytes. One pass gives the checksum too.
            value, non_finite = _scan(chunk, checksum=True)
            (folder / name).write_bytes(chunk.tobytes() + np.uint32(value).tobytes())
            written[name] = (value, not non_finite)
        return written
    tail = "/".join("0" * (block.ndim - 2))
    for row, take in enumerate(block):
        for view, tokens in enumerate(take):
            if tokens.any():
                path = folder / "c" / str(start + row) / str(view) / tail
                path.parent.mkdir(parents=True, exist_ok=True)
                data = tokens.astype("<f2").tobytes()
                path.write_bytes(data + crc32c(data))
    return written


def _chunk_files(folder: Path, sep: str) -> list[Path]:
    if sep == WRITE_SEPARATOR:
        return [folder / "c"] if (folder / "c").is_dir() else []
    return [p for p in folder.glob("c.*") if p.is_file()]


def _move_chunk_files(staging: Path, folder: Path, sep: str) -> None:
    for path in _chunk_files(staging, sep):
        os.rename(path, folder / path.name)


def _remove_chunk_files(folder: Path, sep: str) -> None:
    for path in _chunk_files(folder, sep):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def remove_stale_chunks(store_path: Path, names: tuple[str, ...]) -> int:
    """Delete relayout staging and the chunk files of the layout an array does not use
    (what a relayout killed half way leaves). Call with the writer lock held."""
    removed = 0
    staging = Path(store_path) / STAGING
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
        removed += 1
    for name in names:
        folder = Path(store_path) / name
        unused = PACKED_SEPARATOR if not is_packed(array_metadata(store_path, name)) else "/"
        stale = _chunk_files(folder, unused)
        if stale:
            with layout_lock(store_path, exclusive=True):
                _remove_chunk_files(folder, unused)
            removed += len(stale)
    return removed


# ---- reading tokens ----------------------------------------------------------------------
def raw_token_chunks(meta: dict) -> bool:
    """True when token chunks are plain little-endian bytes with default keys followed by
    their crc32c checksum: then a take and view is a byte range of a known file and can be
    read without zarr (the store's own token chunks are)."""
    codecs = meta.get("codecs", [])
    return (
        meta["chunk_key_encoding"].get("name") == "default"
        and [codec.get("name") for codec in codecs] == ["bytes", "crc32c"]
        and codecs[0].get("configuration", {}).get("endian", "little") == "little"
    )


def page_aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a 4 KiB page boundary.

    Reading a file into memory is a kernel copy from page-aligned page-cache pages, several
    times slower when the destination sits 8-16 bytes past a page boundary relative to the
    source (4K aliasing, benchmark 2), which is exactly where glibc puts the data of a large
    fresh allocation (a 16-byte header). Page-aligned output keeps chunk reads at memory-copy
    speed."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 4096, dtype=np.uint8)
    start = -raw.ctypes.data % 4096
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# Threads reading packed chunk files at once: up to 4, never more than the cores this process
# may run on. Two cores copy from the page cache faster than one, and cold reads keep several
# in flight; more threads than cores only take turns (benchmark 2).
READ_THREADS = max(1, min(4, _usable_cores()))
_reader_pool_lock = threading.Lock()
_reader_pool: tuple[int, ThreadPoolExecutor] | None = None


def reader_pool() -> ThreadPoolExecutor:
    """The process's pool of chunk-reading threads, started once, not on every read
    (benchmark 2). A forked child (it has none of its parent's threads) starts its own."""
    global _reader_pool
    with _reader_pool_lock:
        if _reader_pool is None or _reader_pool[0] != os.getpid():
            pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="skill-chunk-read")
            _reader_pool = (os.getpid(), pool)
        return _reader_pool[1]


Runs = list[tuple[memoryview, int]]
"""``(target, offset)`` pairs of one chunk file: read ``len(target)`` bytes at ``offset``."""


def read_token_slots(
    folder: Path,
    meta: dict,
    take_idx: np.ndarray,
    view_idx: np.ndarray,
    out: np.ndarray,
    placement: TokenPlacement,
) -> None:
    """Read tokens of (take, view) pairs straight from raw chunk files into ``out``.

    ``out (n, v, K, N, D)`` float16, may be uninitialised (see ``page_aligned_empty``):
    every slot is either read or, where there is no chunk file, zeroed (zarr's fill value:
    an invalid view in the write layout, takes added but never written in a packed one).
    ``placement`` says which slots must hold data and what they were written with: a missing
    chunk of a required slot raises ``MissingChunks`` naming them, never zeros; a chunk whose
    checksum is not the recorded one raises ``MisplacedChunk``; NaN or Inf raises
    ``NonFiniteTokens``. Runs of pairs that are contiguous both in a chunk file and in ``out``
    are read with one ``preadv`` each: a whole packed chunk is one read. Packed chunk files
    are read by a few threads at once (the reads release the GIL); the write layout's
    thousands of small files are read in one thread, where a pool only adds overhead."""
    if out.size == 0:
        return  # nothing selected (no take, or no view)
    slot_bytes = out[0, 0].nbytes
    buffer = memoryview(out.reshape(-1)).cast("B")
    names, file_of_slot, offsets = _slot_locations(meta, take_idx, view_idx, slot_bytes)
    required = np.asarray(placement.required, dtype=bool).reshape(-1)
    _check_required_files(folder, names, file_of_slot, required)
    starts = np.flatnonzero(
        np.r_[
            True,
            (file_of_slot[1:] != file_of_slot[:-1]) | (offsets[1:] != offsets[:-1] + slot_bytes),
        ]
    )
    ends = np.r_[starts[1:], len(file_of_slot)]
    runs_by_file: dict[str, Runs] = {}
    for first, stop in zip(starts.tolist(), ends.tolist(), strict=True):
        target = buffer[first * slot_bytes : stop * slot_bytes]
        name = names[file_of_slot[first]]
        runs_by_file.setdefault(name, []).append((target, int(offsets[first])))
    data_bytes = slot_bytes * math.prod(chunk_shape(meta)[:2])

    if is_packed(meta):
        record = packed_record(meta, placement.store_id, folder)
        finite = set(record["finite"])
        reads = [
            (folder / name, runs, _Expected(record["crc32c"].get(name), name in finite))
            for name, runs in runs_by_file.items()
        ]
        _read_packed(reads, data_bytes)
    else:
        crc = np.asarray(placement.slot_crc).reshape(-1)
        for slot, name in enumerate(names):
            if name in runs_by_file:
                expected = _Expected(int(crc[slot]) if required[slot] else _ANY, False)
                _read_runs(folder / name, runs_by_file.pop(name), data_bytes, expected)


def packed_record(meta: dict, store_id: str, folder: Path) -> dict:
    """The pack's record of a packed token array (PACKED_RECORD), checked to be this store's."""
    record = meta.get("attributes", {}).get(PACKED_RECORD)
    if not isinstance(record, dict) or not isinstance(record.get("crc32c"), dict):
        raise LayoutError(f"{folder}/zarr.json: packed tokens without the pack's chunk record")
    if record.get("store_id") != store_id:
        raise LayoutError(
            f"{folder}: the packed tokens were packed for store {record.get('store_id')}, not "
            f"this store ({store_id}): copied in from another store"
        )
    return record


_ANY = -1
"""An `_Expected` crc that accepts any chunk (a slot that need not hold data)."""


@dataclass(frozen=True)
class _Expected:
    """What one chunk file must be: its recorded crc32c (None: no record, so no chunk may be
    there; _ANY: no requirement), and whether it was recorded finite (its scan is skipped)."""

    crc: int | None
    finite: bool


def _read_packed(reads: list[tuple[Path, Runs, _Expected]], data_bytes: int) -> None:
    """Read packed chunk files on the reader pool, one task per file. A file is read front to
    back by one thread: split between threads, a cold read loses the kernel's readahead
    (benchmark 2). Every task has finished before an error is raised (the first in file
    order)."""
    pool = reader_pool()
    tasks = [pool.submit(_read_runs, path, runs, data_bytes, want) for path, runs, want in reads]
    futures_wait(tasks)
    for task in tasks:
        task.result()


def _check_required_files(
    folder: Path, names: list[str], file_of_slot: np.ndarray, required: np.ndarray
) -> None:
    """Raise MissingChunks for required slots whose chunk file does not exist."""
    wanted = np.unique(file_of_slot[required]).tolist()
    missing = [k for k in wanted if not (folder / names[k]).exists()]
    for k in missing:
        blocking = blocking_file(folder / names[k])
        if blocking != folder / names[k]:
            raise LayoutError(f"{folder / names[k]}: {blocking} is a file where a folder belongs")
    if missing:
        slots = np.flatnonzero(required & np.isin(file_of_slot, missing))
        # A take asked for twice names its write-layout file twice: list each file once.
        raise MissingChunks(slots, sorted({str(folder / names[k]) for k in missing}))


def _read_runs(path: Path, runs: Runs, data_bytes: int, expected: _Expected) -> None:
    """Read each ``(target, offset)`` run of one chunk file into its target; no file = zarr's
    fill value (an invalid view, or takes added but never written in a packed layout). The
    chunk is verified whole (see `_read_checksummed`)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        for target, _ in runs:
            np.frombuffer(target, dtype=np.uint8)[:] = 0
        return
    except NotADirectoryError:
        raise LayoutError(
            f"{path}: {blocking_file(path)} is a file where a folder belongs"
        ) from None
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise LayoutError(f"{path}: a folder where a token chunk file belongs")
        _read_checksummed(fd, path, runs, data_bytes, expected)
    finally:
        os.close(fd)


def blocking_file(path: Path) -> Path:
    """The nearest ancestor of ``path`` that is a file (what makes it unreachable)."""
    for parent in path.parents:
        if parent.is_file():
            return parent
    return path


def _read_checksummed(
    fd: int, path: Path, runs: Runs, data_bytes: int, expected: _Expected
) -> None:
    """Read the runs of a chunk file and verify its checksum, which covers every byte, and
    that the checksum is the one recorded for the chunk's place: the file is read front to
    back in pieces of at most _READ_PIECE, each checksummed (and, if it is a run's, scanned)
    while it is in the CPU's cache. Pieces of a run are read straight into its target; bytes
    no run wants (the rows past the last take of an edge chunk, the views not selected) pass
    through one small scratch buffer."""
    size = os.fstat(fd).st_size
    if size != data_bytes + 4:
        got = max(size - 4, 0)
        raise LayoutError(f"{path}: token chunk short ({got} of {data_bytes} bytes and checksum)")
    stored = bytearray(4)
    _pread_exactly(fd, path, memoryview(stored), data_bytes)
    found = int.from_bytes(stored, "little")
    # A chunk recorded finite whose bytes (once they pass the checksum below) are the ones
    # recorded was scanned when it was written.
    scan = not (expected.finite and expected.crc == found)
    in_order = sorted(runs, key=lambda run: run[1])
    if any(a[1] + len(a[0]) > b[1] for a, b in zip(in_order[:-1], in_order[1:], strict=True)):
        value, non_finite = _read_whole(fd, path, runs, data_bytes, scan)
    else:
        value, non_finite = 0, False
        scratch = None
        for offset, length, target in _file_pieces(in_order, data_bytes):
            if target is None:  # bytes no run wants: checksummed only
                scratch = scratch or memoryview(bytearray(_READ_PIECE))
                _pread_exactly(fd, path, scratch[:length], offset)
                value = crc32c_extend(value, scratch[:length])
                continue
            _pread_exactly(fd, path, target, offset)
            if scan:
                value, bad = _scan(target, checksum=True, crc=value)
                non_finite |= bad
            else:
                value = crc32c_extend(value, target)
    if value != found:
        raise LayoutError(f"{path}: token chunk fails its checksum (its bytes changed on disk)")
    if non_finite:
        raise NonFiniteTokens(path)
    if expected.crc != _ANY and expected.crc != found:
        raise MisplacedChunk(path, found, expected.crc)


def _file_pieces(
    runs_in_order: Runs, data_bytes: int
) -> Iterator[tuple[int, int, memoryview | None]]:
    """(offset, length, target) of every piece of a chunk file, front to back, each at most
    _READ_PIECE bytes: the part of a run's target that receives those bytes, or None where no
    run reads them. ``runs_in_order``: sorted by offset, not overlapping."""
    position = 0
    for target, offset in [*runs_in_order, (None, data_bytes)]:
        while position < offset:
            length = min(_READ_PIECE, offset - position)
            yield position, length, None
            position += length
        if target is not None:
            for start in range(0, len(target), _READ_PIECE):
                piece = target[start : start + _READ_PIECE]
                yield offset + start, len(piece), piece
            position = offset + len(target)


def _read_whole(fd: int, path: Path, runs: Runs, data_bytes: int, scan: bool) -> tuple[int, bool]:
    """(crc32c, non-finite) for runs that overlap (a take asked for twice): the whole chunk
    is read into a scratch buffer and copied out to each target."""
    scratch = np.empty(data_bytes, dtype=np.uint8)
    _pread_exactly(fd, path, memoryview(scratch), 0)
    non_finite = False
    for target, offset in runs:
        np.frombuffer(target, dtype=np.uint8)[:] = scratch[offset : offset + len(target)]
        non_finite |= scan and has_non_finite_float16(target)
    return crc32c_extend(0, scratch), non_finite


def _pread_exactly(fd: int, path: Path, target: memoryview, offset: int) -> None:
    got = 0
    while got < len(target):
        n = os.preadv(fd, [target[got:]], offset + got)
        if n == 0:
            raise LayoutError(
                f"{path}: token chunk short ({got} of {len(target)} bytes at {offset})"
            )
        got += n


def token_chunk_file(meta: dict, take: int, view: int) -> str:
    """The chunk file (relative to the tokens folder) that holds one take and view."""
    names, file_of_slot, _ = _slot_locations(meta, np.array([take]), np.array([view]), 0)
    return names[file_of_slot[0]]


def _slot_locations(
    meta: dict, take_idx: np.ndarray, view_idx: np.ndarray, slot_bytes: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Where every output slot (in the output's order, take-major) is: (chunk file names
    relative to the tokens folder, index into them of each slot's file, byte offset of each
    slot in its file)."""
    takes = np.repeat(take_idx, len(view_idx))  # (n*v,)
    views = np.tile(view_idx, len(take_idx))  # (n*v,)
    if not is_packed(meta):
        tail = "/".join("0" * (len(meta["shape"]) - 2))
        names = [f"c/{t}/{v}/{tail}" for t, v in zip(takes.tolist(), views.tolist(), strict=True)]
        return names, np.arange(len(names)), np.zeros(len(names), dtype=np.int64)
    per_chunk, n_views = chunk_shape(meta)[0], meta["shape"][1]
    tail = ".".join("0" * (len(meta["shape"]) - 1))
    names = [f"c.{c}.{tail}" for c in range(int(takes.max(initial=0)) // per_chunk + 1)]
    offsets = ((takes % per_chunk) * n_views + views).astype(np.int64) * slot_bytes
    return names, takes // per_chunk, offsets
