"""SIGKILL soak: `skill extract` killed at random moments, re-run each time, ends with the
store of an uninterrupted run.

Kills land in three kinds of moment: during start-up (imports, backbone, store creation),
shortly after a take completed, and inside a take's write (between its chunk writes; the
SKILL_TEST_SLOW_WRITE hook of cache/store.py stretches that window). After every kill the
store must open, every completed take must equal the uninterrupted run's bit for bit, no take
may be failed, completed takes are never lost, `skill info` must say "interrupted", and no
decode worker may outlive its parent. Temporary files like the ones a kill inside a file
write leaves are planted along the way: they must never be read, and the next run deletes
them. Set SKILL_SOAK_SEED to replay a schedule.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest

from cache.info import store_summary
from cache.store import STATUS_COMPLETE, STATUS_FAILED, TokenStore
from pipeline.extract import run_extract
from tests.extract_helpers import (
    REPO,
    assert_same_stores,
    by_take,
    cli_command,
    cli_env,
    extract_args,
    extract_config,
    make_dataset,
    snapshot,
    temp_files,
    wait_for,
)

pytestmark = pytest.mark.slow

TAKES = 24
KILLS = 12
VIEWS = 4  # ego + 3 exo (tests.extract_helpers.SMALL)
SLOW_WRITE_S = 0.12  # per token chunk: a take's write lasts about 0.5 s
START_TIMEOUT_S = 120.0  # longest wait for a run to reach the moment it is killed in


@dataclass
class Soak:
    """What the soak saw so far."""

    manifest: Path
    store: Path
    reference: dict
    log: Path
    rng: random.Random
    completed: set[str] = field(default_factory=set)
    kills: list[str] = field(default_factory=list)
    cut_writes: int = 0
    """Kills after which a take had token chunks on disk but no completion record."""
    planted: int = 0
    workers_seen: int = 0
    """Decode workers alive at a kill (each must then die with its parent)."""


def status_rows(store: Path) -> set[int]:
    """Rows with a status chunk on disk (complete or failed; pending is not written)."""
    folder = store / "status" / "c"
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.is_dir() else set()


def token_rows(store: Path) -> dict[int, int]:
    """Row -> number of token chunks on disk."""
    folder = store / "tokens" / "c"
    if not folder.is_dir():
        return {}
    return {
        int(row.name): sum(1 for view in row.iterdir() if view.name.isdigit())
        for row in folder.iterdir()
        if row.name.isdigit()
    }


def start_run(soak: Soak, workers: int) -> subprocess.Popen:
    args = extract_args(soak.manifest, soak.store, "--workers", str(workers))
    with open(soak.log, "a") as log:
        log.write(f"\n==== run {len(soak.kills) + 1} (workers {workers})\n")
        return subprocess.Popen(
            cli_command(*args),
            cwd=REPO,
            env=cli_env(SKILL_TEST_SLOW_WRITE=str(SLOW_WRITE_S)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_for_moment(soak: Soak, proc: subprocess.Popen, mode: str) -> None:
    """Return at the moment to kill `proc` in (it may have exited on its own meanwhile)."""
    alive = lambda: proc.poll() is None  # noqa: E731
    if mode == "startup":
        time.sleep(soak.rng.uniform(0.2, 9.0))
    elif mode == "after-take":
        goal = len(status_rows(soak.store)) + soak.rng.randint(1, 2)
        wait_for(lambda: not alive() or len(status_rows(soak.store)) >= goal, START_TIMEOUT_S)
        time.sleep(soak.rng.uniform(0.0, 0.3))
    else:  # in-write: some take's token chunks are being written in this run
        before = token_rows(soak.store)

        def writing() -> bool:
            # judged by the token chunks alone, not by the status the store writes last
            return any(
                0 < count < VIEWS and count != before.get(row)
                for row, count in token_rows(soak.store).items()
            )

        wait_for(lambda: not alive() or writing(), START_TIMEOUT_S, interval=0.01)
        time.sleep(soak.rng.uniform(0.0, SLOW_WRITE_S * VIEWS))


def kill(proc: subprocess.Popen) -> list[psutil.Process]:
    """SIGKILL `proc` (only it: its decode workers must go by themselves); returns them."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return children


def assert_no_orphans(children: list[psutil.Process]) -> None:
    def all_gone() -> bool:
        for child in children:
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    assert wait_for(all_gone, 10.0, interval=0.1), [c.pid for c in children if c.is_running()]


def check_store(soak: Soak) -> None:
    """What a killed run must leave: see the module docstring."""
    if not (soak.store / "zarr.json").exists():
        assert not soak.completed, "a store with completed takes disappeared"
        return
    snap = by_take(snapshot(soak.store))
    completed = {take for take, arrays in snap.items() if arrays["status"] == STATUS_COMPLETE}
    assert not any(arrays["status"] == STATUS_FAILED for arrays in snap.values())
    assert soak.completed <= completed, f"completed takes lost: {soak.completed - completed}"
    for take in completed:
        for name, expected in soak.reference[take].items():
            np.testing.assert_array_equal(snap[take][name], expected, err_msg=f"{take} {name}")
    soak.completed = completed
    info = store_summary(soak.store)
    assert info["completed"] == len(completed) and info["failed"] == 0
    assert info["pending"] == info["takes"] - len(completed)
    assert info["state"] == "interrupted" and info["writer"] is None


def cut_a_write(store: Path, chunks_before: dict[int, int]) -> bool:
    """The last run left a take with new token chunks but no completion record."""
    done = status_rows(store)
    return any(
        row not in done and count != chunks_before.get(row)
        for row, count in token_rows(store).items()
    )


def plant_temp_files(soak: Soak) -> None:
    """What a kill between zarr's temp file and its rename leaves: a temp status chunk
    that says "complete" for a pending take, garbage tokens, half a metadata file."""
    pending = sorted(set(range(TAKES)) - status_rows(soak.store))
    if not pending or not (soak.store / "status" / "c").is_dir() or not status_rows(soak.store):
        return
    complete = (soak.store / "status" / "c" / str(min(status_rows(soak.store)))).read_bytes()
    row = pending[-1]
    planted = {
        soak.store / "status" / "c" / f"{row}.{uuid.uuid4().hex}.partial": complete,
        soak.store / "valid" / "c" / str(row) / f"0.{uuid.uuid4().hex}.partial": b"\x01" * 9,
        soak.store / f"zarr.{uuid.uuid4().hex}.partial": b'{"node_type": "gr',
    }
    for path, data in planted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    soak.planted += len(planted)


def kill_schedule(rng: random.Random) -> list[str]:
    """KILLS moments: 4 during start-up, 4 inside a take's write, 4 after a take, shuffled
    (an after-take kill turns into an in-write kill when few takes are left)."""
    modes = ["startup"] * 4 + ["in-write"] * 4 + ["after-take"] * 4
    rng.shuffle(modes)
    return modes


def test_sigkill_at_random_moments_gives_the_store_of_an_uninterrupted_run(tmp_path):
    seed = int(os.environ.get("SKILL_SOAK_SEED", "20261122"))
    manifest = make_dataset(tmp_path / "data", takes=TAKES)
    reference = tmp_path / "reference.zarr"
    run_extract(extract_config(manifest, reference))
    soak = Soak(
        manifest=manifest,
        store=tmp_path / "store.zarr",
        reference=by_take(snapshot(reference)),
        log=tmp_path / "runs.log",
        rng=random.Random(seed),
    )
    for number, mode in enumerate(kill_schedule(soak.rng)):
        if mode == "after-take" and TAKES - len(status_rows(soak.store)) < 6:
            mode = "in-write"
        before = dict(token_rows(soak.store))
        proc = start_run(soak, workers=1 if number % 3 else 0)
        wait_for_moment(soak, proc, mode)
        assert proc.poll() is None, f"seed {seed}: run {number} finished before its kill"
        children = kill(proc)
        soak.kills.append(mode)
        soak.workers_seen += len(children)
        assert_no_orphans(children)
        check_store(soak)
        soak.cut_writes += cut_a_write(soak.store, before)
        if number in (3, 7):
            plant_temp_files(soak)

    print(f"soak seed {seed}: kills {soak.kills}, cut writes {soak.cut_writes}, workers "
          f"{soak.workers_seen}, completed before the last run {len(soak.completed)}/{TAKES}")  # fmt: skip
    final = start_run(soak, workers=1)
    assert final.wait(timeout=300) == 0, soak.log.read_text()[-3000:]
    assert len(soak.kills) >= 10 and soak.cut_writes >= 1, (seed, soak.kills, soak.cut_writes)
    assert soak.planted > 0 and soak.workers_seen > 0
    assert_same_stores(soak.store, reference)
    assert temp_files(soak.store) == []
    assert not list(tmp_path.glob(".store.zarr.creating-*"))
    info = store_summary(soak.store)
    assert (info["state"], info["completed"], info["leftover_temp_files"]) == ("finished", TAKES, 0)
    assert TokenStore.open(soak.store).n_takes == TAKES
