"""crc32c, the checksum of zarr's `crc32c` codec, computed outside the GIL where possible.

The store's token reader checksums chunks from two threads at once, but
`google_crc32c.extend`, which zarr itself uses, holds the GIL while it runs. The same wheel
ships the C library it wraps (`libcrc32c`, hardware CRC32C); called through ctypes, which
releases the GIL, two threads checksum in parallel. Where that library cannot be found
(another platform's wheel layout), the Python binding is used: same values, one thread at a
time.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os

import numpy as np


@functools.cache
def _library() -> ctypes.CDLL | None:
    """google_crc32c's bundled `libcrc32c`, or None where this wheel has none we can load."""
    import google_crc32c

    package = os.path.dirname(google_crc32c.__file__)
    candidates = glob.glob(os.path.join(package + ".libs", "libcrc32c*.so*"))  # Linux wheels
    candidates += glob.glob(os.path.join(package, ".dylibs", "libcrc32c*.dylib"))  # macOS
    for path in candidates:
        try:
            library = ctypes.CDLL(path)
            extend = library.crc32c_extend
        except (OSError, AttributeError):
            continue
        extend.restype = ctypes.c_uint32
        extend.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
        if extend(0, b"123456789", 9) == 0xE3069283:  # the CRC-32C check value
            return library
    return None


def crc32c_extend(value: int, data) -> int:
    """crc32c of `data` (any C-contiguous buffer) continued from `value`."""
    array = np.frombuffer(data, dtype=np.uint8)
    library = _library()
    if library is None:
        import google_crc32c

        return google_crc32c.extend(value, array)
    return library.crc32c_extend(value, array.ctypes.data, array.nbytes)


def crc32c(data) -> bytes:
    """zarr's crc32c codec's checksum of `data`: 4 bytes, little-endian."""
    return np.uint32(crc32c_extend(0, data)).tobytes()
