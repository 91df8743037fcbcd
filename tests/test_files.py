"""cache/files.py: the one staging name (and the names of earlier versions it still cleans up),
files written whole, folders built aside and swapped in, and the one flock helper."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from skill.cache.files import (
    NEW,
    OLD,
    TEMPORARY,
    LockBusy,
    Staging,
    hold_lock,
    lock_holder,
    make_folder_atomically,
    parse_staging,
    publish_folder,
    remove_dead_staging,
    restore_replaced,
    staging_leftovers,
    staging_name,
    staging_path,
    write_bytes_atomically,
)

REPO = Path(__file__).resolve().parent.parent
DEAD = 2**22 + 7  # above Linux's pid_max: no such process
LOCKS = (".skill.lock", ".skill.layout.lock")


# ---- staging names -----------------------------------------------------------------------------
def test_a_staging_name_records_its_target_kind_and_owner_and_is_unique():
    name = staging_name("store.zarr", TEMPORARY)
    assert name.startswith(f".store.zarr.{TEMPORARY}-{os.getpid()}-")
    assert parse_staging(name) == Staging("store.zarr", TEMPORARY, os.getpid())
    assert parse_staging(staging_name(".checkpoint", OLD, pid=12)) == Staging(
        ".checkpoint", OLD, 12
    )
    assert staging_path(Path("a/b.csv")) != staging_path(Path("a/b.csv"))  # a nonce apart
    assert staging_path(Path("a/b.csv")).parent == Path("a")


@pytest.mark.parametrize(
    "name", ["run", ".notes", "run.new-1-ab", ".run.new-x", ".run.unknown-12", ".run.new-12-XY"]
)
def test_other_names_are_not_staging(name):
    assert parse_staging(name) is None


@pytest.mark.parametrize(
    "name, staging",
    [
        (".s.zarr.creating-12", Staging("s.zarr", "creating", 12)),
        (".run.partial-12-1700000000123", Staging("run", "partial", 12)),
        (".sweep.partial-12", Staging("sweep", "partial", 12)),
        (".e.h5.exporting-12", Staging("e.h5", "exporting", 12)),
        (".i.zarr.importing-12", Staging("i.zarr", "importing", 12)),
        (".f.json.tmp-12", Staging("f.json", "tmp", 12)),
    ],
)
def test_names_of_earlier_versions_are_read_back(name, staging):
    assert parse_staging(name) == staging


def test_only_what_dead_owners_left_is_removed(tmp_path):
    dead_store = staging_name("s.zarr", pid=DEAD)
    (tmp_path / dead_store).mkdir()
    for suffix in LOCKS:  # the lock files beside a staging store
        (tmp_path / f".{dead_store}{suffix}").touch()
    (tmp_path / staging_name("s.zarr", TEMPORARY, pid=DEAD)).write_text("half")
    (tmp_path / f".s.zarr.creating-{DEAD}").mkdir()  # an earlier version's
    (tmp_path / f"..s.zarr.importing-{DEAD}.skill.lock").touch()
    other = staging_name("t.zarr", pid=DEAD)
    live = staging_name("s.zarr")
    for kept in (other, live, "s.zarr", f".s.zarr{LOCKS[0]}"):
        (tmp_path / kept).mkdir()
    removed = remove_dead_staging(tmp_path, "s.zarr", LOCKS)
    assert len(removed) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [other, live, "s.zarr", f".s.zarr{LOCKS[0]}"]
    )
    assert [p.name for p in remove_dead_staging(tmp_path)] == [other]  # every name


# ---- files and folders written whole -----------------------------------------------------------
def test_a_file_written_whole_replaces_the_old_one_with_the_umask_mode(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    os.chmod(target, 0o600)
    old_mask = os.umask(0o027)
    try:
        write_bytes_atomically(target, b"new")
    finally:
        os.umask(old_mask)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_a_folder_built_aside_is_all_or_nothing(tmp_path):
    target = tmp_path / "out"

    def build(folder: Path) -> None:
        (folder / "a").write_text("a")

    def broken(folder: Path) -> None:
        (folder / "a").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        make_folder_atomically(target, broken)
    assert list(tmp_path.iterdir()) == []
    assert make_folder_atomically(target, build) == target and (target / "a").read_text() == "a"
    (target / "b").write_text("b")
    with pytest.raises(OSError):  # an existing folder is only replaced when asked to
        make_folder_atomically(target, build)
    make_folder_atomically(target, lambda f: (f / "c").write_text("c"), replace=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in target.iterdir()) == ["c"]


def test_a_replace_killed_between_its_renames_is_put_back(tmp_path):
    target = tmp_path / ".checkpoint"
    moved = tmp_path / staging_name(target.name, OLD, pid=DEAD)
    moved.mkdir()
    (moved / "state.json").write_text("{}")
    (tmp_path / staging_name(target.name, NEW, pid=DEAD)).mkdir()  # the new one, half written
    incomplete = tmp_path / staging_name(target.name, OLD, pid=DEAD + 1)
    incomplete.mkdir()

    def complete(folder: Path) -> bool:
        return (folder / "state.json").is_file()

    restore_replaced(target, complete)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint"]
    assert (target / "state.json").is_file()
    # with the target in place, a folder moved aside is stale
    staging = tmp_path / staging_name(target.name, OLD, pid=DEAD)
    staging.mkdir()
    restore_replaced(target, complete)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint"]


def test_publishing_renames_into_place(tmp_path):
    staging = tmp_path / staging_name("x")
    staging.mkdir()
    assert publish_folder(staging, tmp_path / "x") == tmp_path / "x"
    assert staging_leftovers(tmp_path) == [] and (tmp_path / "x").is_dir()


# ---- the lock ----------------------------------------------------------------------------------
HOLDER = """
import sys
from skill.cache.files import hold_lock
with hold_lock(sys.argv[1], shared=sys.argv[2] == "shared"):
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process holding the lock ``tmp_path/x.lock`` (exclusive or shared) until the
    test ends; returns (start, lock path)."""
    procs = []
    lock = tmp_path / "x.lock"

    def start(kind: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(lock), kind],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(proc)
        assert proc.stdout.readline() == "held\n"
        return proc

    yield start, lock
    for proc in procs:
        proc.stdin.close()
        proc.wait()


def test_an_exclusive_lock_refuses_a_second_holder_naming_the_first(holder):
    start, lock = holder
    first = start("exclusive")
    where = f"pid {first.pid} on {socket.gethostname()} since "
    assert lock_holder(lock).startswith(where)
    busy = re.escape(f"x.lock: held by another process ({where}")
    with pytest.raises(LockBusy, match=busy), hold_lock(lock):
        pass
    refused = pytest.raises(KeyError, match=re.escape(where))  # the caller's refusal
    with refused, hold_lock(lock, shared=True, refuse=KeyError):
        pass
    first.kill()  # SIGKILL: the kernel releases its lock
    first.wait()
    assert lock_holder(lock) is None
    with hold_lock(lock):
        pass


def test_shared_locks_are_held_together_and_keep_an_exclusive_one_out(holder):
    start, lock = holder
    start("shared")
    with hold_lock(lock, shared=True):
        pass
    with pytest.raises(LockBusy), hold_lock(lock):
        pass


def test_a_lock_file_that_cannot_be_made_is_skipped_only_when_allowed(tmp_path):
    lock = tmp_path / "missing" / "x.lock"
    with hold_lock(lock, missing_ok=True):
        pass
    with pytest.raises(FileNotFoundError), hold_lock(lock):
        pass
