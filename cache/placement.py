"""What binds a store's data to its place: the store's id, the take table's digest, and each
take's records.

A chunk checksum proves that a chunk's bytes are the bytes written, not that they are where
they were written (two takes' token chunks exchanged, a chunk copied in from another store of
the same geometry, a take-table column taken from another store all pass it). So every piece
of data is also recorded against its place when it is written: the store's random
``store_id``, a digest of each take-table column, each take's ``token_crc``, ``frames_crc``
and ``row_digest`` (before its status), and the crc32c of each chunk a pack writes. Readers
compare what they read against these records, which guard against data in the wrong place, not
against edits crafted to match them (docs/store.md, "Placement records").
"""

from __future__ import annotations

import json
import math
import uuid

import numpy as np

from skill.cache.checksum import crc32c_extend

# FNV-1a over 32-bit words, vectorised over rows, then splitmix64's finaliser: fast enough
# to check every row of a store on each load.
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def new_store_id() -> str:
    return uuid.uuid4().hex


def _seed(store_id: str) -> np.uint64:
    return np.uint64(crc32c_extend(0, store_id.encode()) | (len(store_id) << 32))


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit reaches every output bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _words(*columns: np.ndarray) -> np.ndarray:
    """``(n, m)`` uint32 words holding each row's bytes of every column (zero-padded)."""
    parts = [
        np.ascontiguousarray(c).reshape(len(c), math.prod(c.shape[1:])).view(np.uint8)
        for c in columns
    ]
    data = np.concatenate(parts, axis=1)
    pad = -data.shape[1] % 4
    if pad:
        data = np.concatenate([data, np.zeros((len(data), pad), dtype=np.uint8)], axis=1)
    return np.ascontiguousarray(data).view("<u4")


def row_digests(
    store_id: str,
    rows: np.ndarray,
    status: np.ndarray,
    valid: np.ndarray,
    token_crc: np.ndarray,
    frames_crc: np.ndarray,
) -> np.ndarray:
    """``(n,)`` uint64 digests of take rows: ``rows (n,)`` row numbers, ``status (n,)``,
    ``valid (n, V)``, ``token_crc (n, V)``, ``frames_crc (n,)``."""
    words = _words(
        np.asarray(rows, dtype="<i8"),
        np.asarray(status, dtype=np.int8),
        np.asarray(valid, dtype=bool),
        np.asarray(token_crc, dtype="<u4"),
        np.asarray(frames_crc, dtype="<u4"),
    )
    h = np.full(len(words), _seed(store_id), dtype=np.uint64)
    for column in words.T:
        h ^= column.astype(np.uint64)
        h *= _FNV_PRIME
    return _mix(h ^ _FNV_OFFSET)


def token_crcs(tokens: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(V,)`` uint32: crc32c of each valid view's tokens ``(V, K, N, D)`` as stored
    (float16, little-endian), 0 for an invalid view (nothing stored)."""
    out = np.zeros(len(valid), dtype=np.uint32)
    for v in np.flatnonzero(valid):
        out[v] = crc32c_extend(0, np.ascontiguousarray(tokens[v], dtype="<f2"))
    return out


def frames_crc(
    frame_index: np.ndarray,
    timestamp: np.ndarray,
    clip_time: np.ndarray,
    padded: np.ndarray,
    view_error,
    view_note,
) -> int:
    """crc32c of one take's frame records: ``frame_index``, ``timestamp (V, K, T)``,
    ``clip_time (V, K, 2)``, ``padded (V,)``, and the view errors and notes ``(V,)`` as a
    JSON list."""
    crc = 0
    for values, dtype in (
        (frame_index, "<i4"), (timestamp, "<f4"), (clip_time, "<f4"), (padded, "<i2"),
    ):  # fmt: skip
        crc = crc32c_extend(crc, np.ascontiguousarray(values, dtype=dtype))
    text = json.dumps([[str(e) for e in view_error], [str(n) for n in view_note]])
    return crc32c_extend(crc, text.encode())


def table_digests(
    store_id: str, task: dict, columns: dict[str, np.ndarray], target_array: str,
    targets: np.ndarray,
) -> dict[str, str]:  # fmt: skip
    """{array: digest} of each take-table column over its committed rows: text ``columns``
    (array name -> (n,) unicode) and the targets ``(n, *shape)`` (whose digest covers the
    store's ``task``: its schema and how it stores targets)."""
    n = len(targets)
    out = {}
    for name, values in columns.items():
        out[name] = _digest(store_id, name, n, _text_bytes(values))
    target_bytes = (
        np.ascontiguousarray(targets).tobytes() + json.dumps(task, sort_keys=True).encode()
    )
    out[target_array] = _digest(store_id, target_array, n, target_bytes)
    return out


def _text_bytes(values: np.ndarray) -> bytes:
    """The column's strings, one fixed width (the same content read through zarr or directly
    may come back at different widths)."""
    values = np.asarray(values)
    width = int(np.strings.str_len(values).max(initial=0)) if values.size else 0
    return np.ascontiguousarray(values, dtype=f"<U{max(width, 1)}").tobytes()


def _digest(store_id: str, name: str, n: int, data: bytes) -> str:
    crc = crc32c_extend(0, f"{store_id}/{name}/{n}".encode())
    return f"{crc32c_extend(crc, data):08x}"
