"""What killed writers leave behind, and write errors a user can act on.

zarr's LocalStore writes `<name>.<uuid4 hex>.partial` and renames it into place; a process
killed in between leaves that file behind. Nothing reads such a file: `skill info` counts
them and the next `skill extract` deletes them, both by the one rule here (`temp_files`).
A killed create leaves a staging folder `.<store>.creating-<pid>` beside the store, and a
killed relayout leaves stale chunks (`cache.layout.remove_stale_chunks`).

Files skill writes itself go through `write_bytes_atomically`: a temporary name beside the
file, renamed into place, removed when the write fails (a full disk leaves nothing behind),
with the mode the umask gives like any other output. `write_errors` turns a failed write
(a full disk, a read-only folder) into one line naming the path; `exclusive_lock` keeps a
second command out of a folder another one is writing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from skill.cache.errors import StoreError
from skill.cache.layout import remove_stale_chunks
from skill.errors import SkillError

TEMP_FILE = re.compile(r"\.[0-9a-f]{32}\.partial$")
"""zarr's temporary file name: `<name>.<uuid4 hex>.partial`."""


class WriteError(SkillError):
    """A file or folder skill could not write (a full disk, a read-only or vanished folder);
    the message names the path, what is kept, and that the same command resumes."""


def write_text_atomically(path: Path, text: str) -> None:
    """Write a whole file or none: ``text`` goes to ``.<name>.tmp-<pid>`` beside ``path`` and is
    renamed over it, so a reader (or a run killed mid-write) never sees half a file."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write a whole file or none (as :func:`write_text_atomically`); the temporary is removed
    when the write fails. The file is created 0666 less the umask, as every other output."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)  # a leftover of this pid keeps its old mode under O_CREAT
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def follow_umask(path: Path) -> None:
    """Give a file another library created private (0600, e.g. through mkstemp) the mode of
    every other output: 0666 less the umask."""
    os.chmod(path, 0o666 & ~current_umask())


def current_umask() -> int:
    """This process's umask (from /proc where there is one: setting it to read it is racy)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, refuse: Callable[[str], SkillError]) -> Iterator[None]:
    """Hold an exclusive flock on `lock_path` (created if needed), recording who holds it;
    while another process holds it, raise ``refuse(holder)`` at once ("pid N on host since T").

    The kernel releases an flock when its holder dies, even by SIGKILL: no stale lock."""
    from skill.cache.store import _lock_holder, _read_lock_holder, _try_flock

    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_flock(fd, fcntl.LOCK_EX, 0.0):
            raise refuse(_read_lock_holder(lock_path))
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_lock_holder()).encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock
