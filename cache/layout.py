"""Chunk layouts of the store's per-take arrays: the write layout and the packed layout.

*Write layout* (while extracting): one chunk per take (per take and view for ``tokens``),
chunk keys ``c/<take>/...``. Writers of different takes never touch the same file, so any
number of them can write at once and a killed writer loses at most its own take.

*Packed layout* (once a run has finished): many takes per chunk (about
``PACKED_CHUNK_BYTES`` each), chunk keys ``c.<chunk>...``. Thousands of small files cost
thousands of opens and zarr calls to read; a few large files read at disk speed (benchmark
2). Arrays whose single take already fills a chunk keep the write layout.

The two layouts use different chunk-key separators, so both sets of chunk files can sit in
an array's folder at once and the switch is one atomic rename of the array's ``zarr.json``:
a process killed at any point leaves an array whose metadata and chunk files agree (the
other set is unused and deleted by the next relayout or by ``remove_stale_chunks``).
Readers hold a shared lock on the layout lock file while they read; a relayout holds it
exclusively only to swap the metadata and delete the old chunks, so no reader ever sees a
chunk vanish under it. Lock files sit beside the store (``.<store>.skill.layout.lock``), not
in it: zarr reads every file at the root of a hierarchy as a node and warns about any other.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skill.cache.checksum import crc32c, crc32c_extend
from skill.cache.errors import StoreError

WRITE_SEPARATOR, PACKED_SEPARATOR = "/", "."
PACKED_CHUNK_BYTES = 32 << 20
LAYOUT_LOCK = ".skill.layout.lock"
"""Suffix of the layout lock's file name, beside the store (see `lock_file`)."""
STAGING = ".skill-relayout"
# Bytes per element assumed for variable-length strings when sizing packed chunks.
STRING_BYTES = 16


class LayoutError(StoreError):
    """A chunk file shorter than its chunk; the message names the file."""


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
were slower (per-call overhead under the GIL: 256 KiB blocks 0.040 s against 0.032 s for
291 MB on two threads, benchmark 2)."""


_READ_PIECE = 1 << 20
"""Bytes read at a time from a checksummed chunk: small enough to be scanned from the cache."""


def has_non_finite_float16(data: memoryview) -> bool:
    """Whether raw float16 bytes hold a NaN or an Inf."""
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
def lock_file(store_path: Path, suffix: str) -> Path:
    """The lock file `suffix` of a store: beside it, ``<parent>/.<store name><suffix>``.

    Outside the hierarchy because zarr (and xarray through it) warns about every file at a
    group's root that is not a node. The real path is used, so that every name of one store
    (a symlink, a relative path) locks the same file."""
    real = Path(store_path).resolve()
    return real.parent / f".{real.name}{suffix}"


@contextlib.contextmanager
def layout_lock(store_path: Path, exclusive: bool) -> Iterator[None]:
    """Hold the layout lock: shared to read chunks, exclusive to swap a layout.

    A store on a read-only location without a lock file is read without it: nothing can
    relayout a store that nobody can write."""
    lock_path = lock_file(store_path, LAYOUT_LOCK)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:
            fd = os.open(lock_path, os.O_RDONLY)
        except OSError:
            yield
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
def relayout_array(store_path: Path, name: str, chunks: tuple[int, ...], sep: str) -> bool:
    """Rewrite array ``name`` with chunk shape ``chunks`` and key separator ``sep``.

    The new chunks are written to a staging folder first (the old layout stays in use and
    readable), moved in beside the old ones, and made current by one atomic rename of the
    metadata. Returns False when the array already has this layout."""
    folder = Path(store_path) / name
    meta = array_metadata(store_path, name)
    if chunk_shape(meta) == tuple(chunks) and separator(meta) == sep:
        return False
    if separator(meta) == sep:
        # The new chunk files would take the names of the files in use before the swap.
        raise ValueError(f"{folder}: relayout needs the other key separator than {sep!r}")
    staging = Path(store_path) / STAGING / name
    shutil.rmtree(staging, ignore_errors=True)
    new_meta = {
        **meta,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": sep}},
    }
    _copy_data(folder, staging, new_meta)
    with layout_lock(store_path, exclusive=True):
        _remove_chunk_files(folder, sep)  # stale files of a relayout killed earlier
        _move_chunk_files(staging, folder, sep)
        os.replace(staging / "zarr.json", folder / "zarr.json")
        _remove_chunk_files(folder, separator(meta))
    shutil.rmtree(Path(store_path) / STAGING, ignore_errors=True)
    return True


def _copy_data(source: Path, staging: Path, new_meta: dict) -> None:
    """Write every element of the array at ``source`` into a new array at ``staging``,
    a block of whole chunks at a time (bounded memory)."""
    import zarr

    staging.mkdir(parents=True)
    (staging / "zarr.json").write_text(json.dumps(new_meta, indent=2))
    old_meta = json.loads((source / "zarr.json").read_text())
    if source.name == "tokens" and raw_token_chunks(old_meta):
        _copy_raw_tokens(source, old_meta, staging, new_meta)
        return
    old = zarr.open_array(str(source), mode="r")
    new = zarr.open_array(str(staging), mode="r+")
    # Whole chunks of both layouts per call: zarr then reads and writes them concurrently,
    # and no chunk is read or written twice.
    step = math.lcm(old.chunks[0], new.chunks[0])
    for start in range(0, old.shape[0], step):
        new[start : start + step] = old[start : start + step]


def _copy_raw_tokens(source: Path, old_meta: dict, staging: Path, new_meta: dict) -> None:
    """``_copy_data`` for raw token chunks, without zarr: its per-chunk cost (milliseconds)
    made a relayout of thousands of (take, view) chunks take minutes."""
    shape = tuple(old_meta["shape"])
    step = math.lcm(chunk_shape(old_meta)[0], chunk_shape(new_meta)[0])
    views = np.arange(shape[1])
    for start in range(0, shape[0], step):
        takes = np.arange(start, min(start + step, shape[0]))
        block = np.zeros((len(takes), *shape[1:]), dtype=np.float16)  # (t, V, K, N, D)
        read_token_slots(source, old_meta, takes, views, block)
        _write_raw_tokens(staging, new_meta, start, block)


def _write_raw_tokens(folder: Path, meta: dict, start: int, block: np.ndarray) -> None:
    """Write takes ``start...`` of ``block (t, V, K, N, D)`` as chunk files of ``meta``'s
    layout, as zarr would: full-size edge chunks, no file for a chunk of fill values."""
    per_chunk = chunk_shape(meta)[0]
    if is_packed(meta):
        tail = ".0" * (block.ndim - 1)
        for first in range(0, len(block), per_chunk):
            chunk = np.zeros((per_chunk, *block.shape[1:]), dtype="<f2")
            rows = block[first : first + per_chunk]
            chunk[: len(rows)] = rows
            data = chunk.tobytes()
            (folder / f"c.{(start + first) // per_chunk}{tail}").write_bytes(
                data + crc32c(data) if has_checksum(meta) else data
            )
        return
    tail = "/".join("0" * (block.ndim - 2))
    for row, take in enumerate(block):
        for view, tokens in enumerate(take):
            if tokens.any():
                path = folder / "c" / str(start + row) / str(view) / tail
                path.parent.mkdir(parents=True, exist_ok=True)
                data = tokens.astype("<f2").tobytes()
                path.write_bytes(data + crc32c(data) if has_checksum(meta) else data)


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
    """True when token chunks are plain little-endian bytes with default keys, optionally
    followed by their crc32c checksum (format 2): then a take and view is a byte range of a
    known file and can be read without zarr."""
    codecs = meta.get("codecs", [])
    return (
        meta["chunk_key_encoding"].get("name") == "default"
        and 1 <= len(codecs) <= 2
        and codecs[0].get("name") == "bytes"
        and codecs[0].get("configuration", {}).get("endian", "little") == "little"
        and all(codec.get("name") == "crc32c" for codec in codecs[1:])
    )


def has_checksum(meta: dict) -> bool:
    """Whether each chunk file ends with the crc32c of its bytes (4 bytes, little-endian)."""
    return any(codec.get("name") == "crc32c" for codec in meta.get("codecs", []))


def page_aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised array whose data starts on a 4 KiB page boundary.

    Reading a file into memory is a kernel copy from page-aligned page-cache pages. On the
    AMD EPYC of benchmark 2 that copy runs 3-4x slower when the destination sits 8-16 bytes
    past a page boundary relative to the source (4K aliasing), which is exactly where glibc
    puts the data of a large fresh allocation (a 16-byte header). Page-aligned output keeps
    chunk reads at memory-copy speed."""
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
# in flight; more threads than cores only take turns (291 MB of fresh chunk files on 2 cores,
# by hand: 18 ms with 2 threads, 23 ms with 4, 30 ms with one; BENCHMARKS.md, benchmark 2).
READ_THREADS = max(1, min(4, _usable_cores()))
_reader_pool_lock = threading.Lock()
_reader_pool: tuple[int, ThreadPoolExecutor] | None = None


def reader_pool() -> ThreadPoolExecutor:
    """The process's pool of chunk-reading threads, started once: starting READ_THREADS
    threads for every read cost 4 ms of a 60 ms load (benchmark 2). A forked child (it has
    none of its parent's threads) starts its own."""
    global _reader_pool
    with _reader_pool_lock:
        if _reader_pool is None or _reader_pool[0] != os.getpid():
            pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="skill-chunk-read")
            _reader_pool = (os.getpid(), pool)
        return _reader_pool[1]


def read_token_slots(
    folder: Path,
    meta: dict,
    take_idx: np.ndarray,
    view_idx: np.ndarray,
    out: np.ndarray,
    required: np.ndarray | None = None,
) -> None:
    """Read tokens of (take, view) pairs straight from raw chunk files into ``out``.

    ``out (n, v, K, N, D)`` float16, may be uninitialised (see ``page_aligned_empty``):
    every slot is either read or, where there is no chunk file, zeroed (zarr's fill value:
    an invalid view in the write layout, takes added but never written in a packed one).
    ``required (n, v)`` marks slots that must have a chunk file (valid views of complete
    takes): a missing one raises ``MissingChunks`` naming them, never zeros. Values that are
    NaN or Inf raise ``NonFiniteTokens``. Runs of pairs that are contiguous both in a chunk
    file and in ``out`` are read with one ``preadv`` each: a whole packed chunk is one read.
    Packed chunk files are read by a few threads at once (the reads release the GIL); the
    write layout's thousands of small files are read in one thread, where a pool only adds
    overhead."""
    if out.size == 0:
        return  # nothing selected (no take, or no view)
    slot_bytes = out[0, 0].nbytes
    buffer = memoryview(out.reshape(-1)).cast("B")
    files, offsets = _slot_locations(folder, meta, take_idx, view_idx, slot_bytes)
    if required is not None:
        _check_required_files(folder, files, np.asarray(required, dtype=bool).reshape(-1))
    starts = np.flatnonzero(
        np.r_[True, (files[1:] != files[:-1]) | (offsets[1:] != offsets[:-1] + slot_bytes)]
    )
    ends = np.r_[starts[1:], len(files)]
    runs_by_file: dict[str, list[tuple[memoryview, int]]] = {}
    for first, stop in zip(starts.tolist(), ends.tolist(), strict=True):
        target = buffer[first * slot_bytes : stop * slot_bytes]
        runs_by_file.setdefault(str(files[first]), []).append((target, int(offsets[first])))

    chunk = _ChunkFormat(
        data_bytes=slot_bytes * math.prod(chunk_shape(meta)[:2]), checksum=has_checksum(meta)
    )

    if is_packed(meta):
        _read_packed({folder / name: runs for name, runs in runs_by_file.items()}, chunk)
    else:
        for name, runs in runs_by_file.items():
            _read_runs(folder / name, runs, chunk)


def _read_packed(runs_by_path: dict[Path, list[tuple[memoryview, int]]], chunk) -> None:
    """Read packed chunk files on the reader pool, one task per file. A file is read front to
    back by one thread: split between threads, a cold read loses the kernel's readahead (291 MB
    from disk, by hand: 0.25-0.27 s in 8 MiB segments, 0.19-0.22 s a file per thread, for
    1-7 ms gained warm). Every task has finished before an error is raised (the first in
    file order)."""
    pool = reader_pool()
    tasks = [pool.submit(_read_runs, path, runs, chunk) for path, runs in runs_by_path.items()]
    futures_wait(tasks)
    for task in tasks:
        task.result()


def _covers(runs: list[tuple[memoryview, int]], data_bytes: int) -> bool:
    """Whether the runs read the whole chunk, in file order from its first byte."""
    position = 0
    for target, offset in runs:
        if offset != position:
            return False
        position += len(target)
    return position == data_bytes


def _check_required_files(folder: Path, files: np.ndarray, required: np.ndarray) -> None:
    """Raise MissingChunks for required slots whose chunk file does not exist."""
    wanted = np.unique(files[required]) if required.any() else np.array([], dtype=files.dtype)
    missing = {str(name) for name in wanted.tolist() if not (folder / str(name)).is_file()}
    if missing:
        slots = np.flatnonzero(required & np.isin(files, list(missing)))
        raise MissingChunks(slots, sorted(str(folder / name) for name in missing))


@dataclass(frozen=True)
class _ChunkFormat:
    """How one token chunk file is laid out: its data, then (format 2) a crc32c."""

    data_bytes: int
    checksum: bool


def _read_runs(path: Path, runs: list[tuple[memoryview, int]], chunk: _ChunkFormat) -> None:
    """Read each ``(target, offset)`` run of one chunk file into its target; no file = zarr's
    fill value (an invalid view, or takes added but never written in a packed layout). A
    checksummed chunk is verified whole: when the runs do not cover it, it is read into a
    scratch buffer first. The values are then checked while they are in the cache: NaN or
    Inf is an error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        for target, _ in runs:
            np.frombuffer(target, dtype=np.uint8)[:] = 0
        return
    try:
        if chunk.checksum:
            _read_checksummed(fd, path, runs, chunk.data_bytes)
            return
        for target, offset in runs:
            _pread_exactly(fd, path, target, offset)
    finally:
        os.close(fd)
    for target, _ in runs:
        if has_non_finite_float16(target):
            raise NonFiniteTokens(path)


def _read_checksummed(fd: int, path: Path, runs, data_bytes: int) -> None:
    size = os.fstat(fd).st_size
    if size != data_bytes + 4:
        got = max(size - 4, 0)
        raise LayoutError(f"{path}: token chunk short ({got} of {data_bytes} bytes and checksum)")
    stored = bytearray(4)
    _pread_exactly(fd, path, memoryview(stored), data_bytes)
    non_finite = False
    if _covers(runs, data_bytes):
        # The usual case, a whole packed chunk: read in place, each piece scanned while it
        # is still in the CPU's cache from the read.
        value = 0
        for target, offset in runs:
            for start in range(0, len(target), _READ_PIECE):
                piece = target[start : start + _READ_PIECE]
                _pread_exactly(fd, path, piece, offset + start)
                value, bad = _scan(piece, checksum=True, crc=value)
                non_finite |= bad
    else:  # a part of the chunk: the checksum covers all of it
        scratch = np.empty(data_bytes, dtype=np.uint8)
        _pread_exactly(fd, path, memoryview(scratch), 0)
        value = crc32c_extend(0, scratch)
        for target, offset in runs:
            np.frombuffer(target, dtype=np.uint8)[:] = scratch[offset : offset + len(target)]
            non_finite |= has_non_finite_float16(target)
    if np.uint32(value).tobytes() != bytes(stored):
        raise LayoutError(f"{path}: token chunk fails its checksum (its bytes changed on disk)")
    if non_finite:
        raise NonFiniteTokens(path)


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
    files, _ = _slot_locations(Path("."), meta, np.array([take]), np.array([view]), 0)
    return str(files[0])


def _slot_locations(
    folder: Path, meta: dict, take_idx: np.ndarray, view_idx: np.ndarray, slot_bytes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Chunk file (relative to ``folder``) and byte offset of every output slot, in the
    output's order (take-major)."""
    takes = np.repeat(take_idx, len(view_idx))  # (n*v,)
    views = np.tile(view_idx, len(take_idx))  # (n*v,)
    if not is_packed(meta):
        tail = "/".join("0" * (len(meta["shape"]) - 2))
        files = np.array([f"c/{t}/{v}/{tail}" for t, v in zip(takes, views, strict=True)])
        return files, np.zeros(len(files), dtype=np.int64)
    per_chunk, n_views = chunk_shape(meta)[0], meta["shape"][1]
    tail = ".".join("0" * (len(meta["shape"]) - 1))
    names = np.array([f"c.{c}.{tail}" for c in range(int(takes.max(initial=0)) // per_chunk + 1)])
    files = names[takes // per_chunk]
    offsets = ((takes % per_chunk) * n_views + views).astype(np.int64) * slot_bytes
    return files, offsets
