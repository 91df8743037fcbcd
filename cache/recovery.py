"""What killed writers leave behind in and beside a store, and write errors a user can act on.

zarr's LocalStore writes `<name>.<uuid4 hex>.partial` and renames it into place; a process
killed in between leaves that file behind. Nothing reads such a file: `skill info` counts
them and the next `skill extract` deletes them, both by the one rule here (`temp_files`).
A killed create leaves a staging folder beside the store (`cache.files`, which names every
staging file and folder), and a killed relayout leaves stale chunks
(`cache.layout.remove_stale_chunks`). `write_errors` turns a failed write (a full disk, a
read-only folder) into one line naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from skill.cache.errors import StoreError
from skill.cache.files import remove_dead_staging
from skill.cache.layout import remove_stale_chunks
from skill.errors import SkillError

TEMP_FILE = re.compile(r"\.[0-9a-f]{32}\.partial$")
"""zarr's temporary file name: `<name>.<uuid4 hex>.partial`."""


class WriteError(SkillError):
    """A file or folder skill could not write (a full disk, a read-only or vanished folder);
    the message names the path, what is kept, and that the same command resumes."""


def temp_files(path: Path) -> list[Path]:
    """zarr's temporary files under the store `path`."""
    return [
        Path(folder) / name
        for folder, _, files in os.walk(path)
        for name in files
        if TEMP_FILE.search(name)
    ]


def remove_leftovers(path: Path, relayout_arrays: tuple[str, ...]) -> int:
    """Delete what killed writers left: temporary files inside the store, stale chunks of a
    killed relayout, and staging folders of a killed create beside it. Call with the writer
    lock held (no other writer can be between a temp file and its rename). Returns the count."""
    removed = 0
    for temp in temp_files(path):
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
            removed += 1
    removed += remove_stale_chunks(path, relayout_arrays)
    return removed + len(remove_dead_staging(path.parent, path.name))


def store_write_errors(path: Path, what: str) -> contextlib.AbstractContextManager[None]:
    """An OSError while writing `what` (a full disk, a read-only or vanished location)
    becomes a StoreError naming the store, what was written, and what is kept."""
    return write_errors(path, what, StoreError)


@contextlib.contextmanager
def write_errors(
    path: Path,
    what: str,
    error: type[SkillError] = WriteError,
    kept: str = "What was completed before is kept",
) -> Iterator[None]:
    """A failed write of `what` at `path` (an OSError, or a library's error that carries one)
    becomes one line: `error` naming the path, what was written, why, and what is kept."""
    try:
        yield
    except SkillError:
        raise
    except Exception as err:
        cause = as_os_error(err)
        if cause is None:
            raise
        raise error(
            f"{path}: could not write {what}: {describe_os_error(cause)}. {kept}; fix this and "
            "run the same command to resume"
        ) from err


_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")


def as_os_error(err: BaseException) -> OSError | None:
    """The OSError behind `err`: itself, or the one safetensors only names in its message
    (`SafetensorError: ... No space left on device (os error 28)`); None for anything else."""
    if isinstance(err, OSError):
        return err
    match = _OS_ERROR_CODE.search(str(err))
    if type(err).__name__ == "SafetensorError" and match:
        code = int(match.group(1))
        return OSError(code, os.strerror(code))
    return None


def describe_os_error(err: OSError) -> str:
    reason = err.strerror or str(err)
    hints = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the location is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EFBIG: "the file is too large for this location",
    }
    hint = hints.get(err.errno)
    return f"{hint} ({reason})" if hint else reason
