"""What killed writers leave behind, and write errors a user can act on.

zarr's LocalStore writes `<name>.<uuid4 hex>.partial` and renames it into place; a process
killed in between leaves that file behind. Nothing reads such a file: `skill info` counts
them and the next `skill extract` deletes them, both by the one rule here (`temp_files`).
A killed create leaves a staging folder `.<store>.creating-<pid>` beside the store, and a
killed relayout leaves stale chunks (`cache.layout.remove_stale_chunks`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from skill.cache.errors import StoreError
from skill.cache.layout import remove_stale_chunks

TEMP_FILE = re.compile(r"\.[0-9a-f]{32}\.partial$")
"""zarr's temporary file name: `<name>.<uuid4 hex>.partial`."""


def write_text_atomically(path: Path, text: str) -> None:
    """Write a whole file or none: ``text`` goes to ``.<name>.tmp-<pid>`` beside ``path`` and is
    renamed over it, so a reader (or a run killed mid-write) never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    for staging in path.parent.glob(f".{path.name}.creating-*"):
        pid = staging.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)
            removed += 1
    return removed


def remove_dead_staging(folder: Path, prefix: str, suffix: str = "") -> int:
    """Delete ``<folder>/<prefix><pid><suffix>`` files and folders whose process is gone
    (what a killed export or import left); returns the count."""
    removed = 0
    for staging in folder.glob(f"{prefix}*{suffix}"):
        pid = staging.name[len(prefix) : len(staging.name) - len(suffix)]
        if pid.isdigit() and not process_alive(int(pid)):
            if staging.is_dir():
                shutil.rmtree(staging, ignore_errors=True)
            else:
                staging.unlink(missing_ok=True)
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def store_write_errors(path: Path, what: str) -> Iterator[None]:
    """An OSError while writing `what` (a full disk, a read-only or vanished location)
    becomes a StoreError naming the store, what was written, and what is kept."""
    try:
        yield
    except OSError as err:
        raise StoreError(
            f"{path}: could not write {what}: {describe_os_error(err)}. What was completed "
            "before is kept; fix this and run the same command to resume"
        ) from err


def describe_os_error(err: OSError) -> str:
    reason = err.strerror or str(err)
    hints = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the location is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
    }
    hint = hints.get(err.errno)
    return f"{hint} ({reason})" if hint else reason
