"""Files written whole or not at all, folders built aside and renamed into place, the one name
every staging file or folder takes, and the one file lock.

A staging file or folder sits beside what it becomes, hidden, named
``.<name>.<kind>-<pid>-<nonce>`` (:func:`staging_path`), so that no listing takes it for an
output and cleanup removes only what a dead process left (:func:`remove_dead_staging`). Locks
are ``flock`` s (:func:`hold_lock`), which the kernel releases when their holder dies, even by
SIGKILL, so no lock is ever stale; a process refused a lock names its holder (docs/store.md,
"Staging names and locks").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from skill.errors import SkillError

TEMPORARY, NEW, OLD = "tmp", "new", "old"
"""Kinds of staging: a file being written, a file or folder being built, a folder replaced."""
_EARLIER_KINDS = ("creating", "partial", "exporting", "importing", "building")
"""Kinds that names of earlier versions carry (``.<name>.<kind>-<pid>``): parsed so that
their leftovers are removed like the others."""
_STAGING = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>{kinds})-(?P<pid>\d+)(?:-(?P<nonce>[0-9a-f]+))?$".format(
        kinds="|".join((TEMPORARY, NEW, OLD, *_EARLIER_KINDS))
    )
)


class LockBusy(SkillError):
    """A lock another process holds; the message names the lock file and the holder."""


# ---- staging names -------------------------------------------------------------------------
@dataclass(frozen=True)
class Staging:
    """What a staging name records: the name of what it becomes, its kind and its owner."""

    name: str
    kind: str
    pid: int


def staging_name(name: str, kind: str = NEW, pid: int | None = None) -> str:
    """The staging name of ``name``: ``.<name>.<kind>-<pid>-<nonce>`` (pid: this process's)."""
    owner = os.getpid() if pid is None else pid
    return f".{name}.{kind}-{owner}-{secrets.token_hex(4)}"


def staging_path(target: Path, kind: str = NEW) -> Path:
    """A fresh staging path for ``target``, beside it (nothing is created)."""
    target = Path(target)
    return target.with_name(staging_name(target.name, kind))


def parse_staging(name: str) -> Staging | None:
    """What the staging name ``name`` records; None for any other name."""
    match = _STAGING.match(name)
    if match is None:
        return None
    return Staging(match["name"], match["kind"], int(match["pid"]))


def staging_leftovers(
    folder: Path, name: str | None = None, companions: tuple[str, ...] = ()
) -> list[tuple[Path, Staging]]:
    """The staging files and folders in ``folder`` (of ``name`` only, when given), whatever
    their owner, with what their names record. ``companions``: suffixes of files named
    ``.<staging name><suffix>`` that belong to one (the lock files beside a staging store)."""
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return []
    found = []
    for path in entries:
        staging = _staging_of(path.name, companions)
        if staging is not None and (name is None or staging.name == name):
            found.append((path, staging))
    return found


def _staging_of(entry: str, companions: tuple[str, ...]) -> Staging | None:
    """The staging an entry is or belongs to (as a companion file), or None."""
    staging = parse_staging(entry)
    if staging is not None:
        return staging
    for suffix in companions:
        if entry.startswith("..") and entry.endswith(suffix):
            staging = parse_staging(entry[1 : len(entry) - len(suffix)])
            if staging is not None:
                return staging
    return None


def remove_dead_staging(
    folder: Path, name: str | None = None, companions: tuple[str, ...] = ()
) -> list[Path]:
    """Delete the staging files and folders in ``folder`` (of ``name`` only, when given)
    whose owner process is gone: what killed writers left. A live owner's are kept. Returns
    what was removed."""
    removed = []
    for path, staging in staging_leftovers(folder, name, companions):
        if staging.pid != os.getpid() and not process_alive(staging.pid):
            remove_path(path)
            removed.append(path)
    return removed


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree, if there is one."""
    if Path(path).is_dir() and not Path(path).is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- writing files and folders whole -------------------------------------------------------
def write_text_atomically(path: Path, text: str) -> None:
    """Write a whole file or none (as :func:`write_bytes_atomically`), UTF-8."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write a whole file or none: ``data`` goes to a staging file beside ``path``, renamed over
    it, so a reader (or a run killed mid-write) never sees half a file; the staging file is
    removed when the write fails. Created 0666 less the umask, as every other output."""
    path = Path(path)
    staging = staging_path(path, TEMPORARY)
    try:
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(staging, path)
    except BaseException:
        with contextlib.suppress(OSError):
            staging.unlink()
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


@contextlib.contextmanager
def staging_folder(target: Path, kind: str = NEW, create: bool = True) -> Iterator[Path]:
    """A staging path beside ``target`` to build it in (a new, empty folder unless ``create``
    is False, for a writer that makes its own); whatever is still there on leaving (after a
    failure, or when it was not published) is removed."""
    staging = staging_path(target, kind)
    if create:
        staging.mkdir()
    try:
        yield staging
    finally:
        remove_path(staging)


def publish_folder(staging: Path, target: Path, replace: bool = False) -> Path:
    """Rename ``staging`` to ``target``. With ``replace``, a ``target`` already there is first
    moved aside (an ``old`` staging name) and deleted once the new one is in; a process killed
    between the two renames leaves it for :func:`restore_replaced`."""
    target = Path(target)
    old = staging_path(target, OLD)
    if replace and target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    remove_path(old)
    return target


def make_folder_atomically(
    target: Path, build: Callable[[Path], None], replace: bool = False
) -> Path:
    """Build the folder ``target`` whole or not at all: ``build(staging)`` fills a staging
    folder beside it, which is then renamed into place (see :func:`publish_folder`)."""
    with staging_folder(target) as staging:
        build(staging)
        return publish_folder(staging, target, replace)


def restore_replaced(target: Path, complete: Callable[[Path], bool] = Path.exists) -> None:
    """Tidy what a publish killed half way left of ``target``: every staging of it is deleted,
    except that a ``complete`` folder moved aside is put back when ``target`` is missing (the
    kill fell between the two renames of a replace). Call with the writer's lock held: no
    other writer's staging is in use."""
    target = Path(target)
    for path, staging in staging_leftovers(target.parent, target.name):
        if staging.kind == OLD and not target.exists() and complete(path):
            os.rename(path, target)
        else:
            remove_path(path)


# ---- locks ---------------------------------------------------------------------------------
def lock_file(path: Path, suffix: str) -> Path:
    """The lock file ``suffix`` of ``path``: beside it, ``<parent>/.<name><suffix>``.

    Beside, not inside: zarr (and xarray through it) warns about every file at a group's root
    that is not a node. The real path is used, so that every name of one thing (a symlink, a
    relative path) locks the same file."""
    real = Path(path).resolve()
    return real.parent / f".{real.name}{suffix}"


@contextlib.contextmanager
def hold_lock(
    path: Path,
    shared: bool = False,
    patience_s: float | None = 0.0,
    refuse: Callable[[str], BaseException] | None = None,
    missing_ok: bool = False,
) -> Iterator[None]:
    """Hold an flock on the file ``path`` (created if needed), exclusive or ``shared``.

    ``patience_s``: how long to keep trying while another process holds it (None: as long as
    it takes); then ``refuse(holder)`` is raised, holder being "pid N on host since T"
    (default: LockBusy naming the file), and an exclusive holder records itself in the file.
    ``missing_ok``: a lock file that cannot be created or opened (a read-only location) is
    not locked: nothing can change what nobody can write."""
    fd, writable = _open_lock(Path(path), missing_ok)
    if fd is None:
        yield
        return
    try:
        kind = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not _flock(fd, kind, patience_s):
            raise (refuse or _busy(path))(read_holder(path))
        if writable and not shared and patience_s is not None:  # a waiter never asks who
            _record_holder(fd)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _open_lock(path: Path, missing_ok: bool) -> tuple[int | None, bool]:
    """(descriptor, writable) of the lock file: read-write (created if needed), else, with
    ``missing_ok``, read-only, or None when there is none to open."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644), True
    except OSError:
        if not missing_ok:
            raise
    try:
        return os.open(path, os.O_RDONLY), False
    except OSError:
        return None, False


def _flock(fd: int, kind: int, patience_s: float | None) -> bool:
    """flock ``kind``, retrying for ``patience_s`` (None: blocking); False if it stays held."""
    if patience_s is None:
        fcntl.flock(fd, kind)
        return True
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def _record_holder(fd: int) -> None:
    """Who holds the lock, written into its file."""
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%FT%T")}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(holder).encode())


def _busy(path: Path) -> Callable[[str], LockBusy]:
    return lambda holder: LockBusy(f"{path}: held by another process ({holder})")


def read_holder(path: Path) -> str:
    """The holder a lock file records: "pid N on host since T", or "holder unknown"."""
    try:
        holder = json.loads(Path(path).read_text() or "{}")
        return f"pid {holder['pid']} on {holder['host']} since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def lock_holder(path: Path) -> str | None:
    """Who holds the lock ``path`` exclusively ("pid N on host since T"), or None when nobody
    does. Creates and writes nothing; takes a shared lock for an instant."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: nobody ever held the lock here
        return None
    try:
        return None if _flock(fd, fcntl.LOCK_SH, 0.0) else read_holder(path)
    finally:
        os.close(fd)  # closing releases the shared lock
