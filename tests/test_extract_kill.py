"""SIGKILL soak: `skill extract` killed at chosen moments, re-run each time, ends with the
store of an uninterrupted run.

Kill moments follow events the process reports (tests/kill_points.py), never the clock: the
run freezes itself at its event and is killed there, so the schedule is the same on an idle
machine and on a saturated one. Moments: start-up steps (manifest read, backbone loaded, store
open), a batch through the backbone, a take's completion record, between the token chunks of
a take's write, and at the end inside the pack. After every kill the store must open, every
completed take must equal the uninterrupted run's bit for bit, no take may be failed,
completed takes are never lost, `skill info` must say "interrupted", and no decode worker may
outlive its parent. Temporary files like the ones a kill inside a file write leaves are
planted along the way: they must never be read, and the next run deletes them. Set
SKILL_SOAK_SEED to replay a schedule.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import pytest

from skill.cache.files import staging_leftovers
from skill.cache.info import store_summary
from skill.cache.store import STATUS_COMPLETE, STATUS_FAILED, TokenStore
from skill.pipeline.extract import run_extract
from tests import kill_points
from tests.extract_helpers import (
    REPO,
    assert_same_stores,
    by_take,
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
CLIPS_PER_BATCH = 8  # --batch-size of extract_args; one clip per view
RUN_TIMEOUT_S = 600.0  # guard against a hung run only: no run comes near it
STARTUP_EVENTS = ("manifest", "backbone", "store")


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
    """The event each landed kill froze the run at."""
    replanned: int = 0
    """Runs that ended before their event (their kill is planned again)."""
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


def plan_stop(soak: Soak, mode: str) -> str:
    """The event (`name:count`, counted in the coming run) at which to kill a run of `mode`.
    Counts stay inside the work left, so the run is still going when it reaches them."""
    pending = TAKES - len(status_rows(soak.store))
    rng = soak.rng
    if mode == "in-write" and pending >= 1:
        # between two token chunks of one of the next takes (never after a take's last one)
        inside = [n for n in range(1, min(pending, 2) * VIEWS) if n % VIEWS]
        return f"chunk:{rng.choice(inside)}"
    if mode == "after-take" and pending >= 2:
        return f"take:{rng.randint(1, min(2, pending - 1))}"
    if mode == "encode" and pending >= 4:
        return f"encode:{rng.randint(1, 2)}"  # a batch holds the clips of two takes
    if mode == "in-pack":
        return f"relayout:{rng.randint(1, 4)}"  # the pack relayouts a dozen arrays
    return f"{rng.choice(STARTUP_EVENTS)}:1"


def start_run(soak: Soak, workers: int, stop_at: str) -> subprocess.Popen:
    args = extract_args(soak.manifest, soak.store, "--workers", str(workers))
    events = soak.log.with_suffix(".events")
    events.unlink(missing_ok=True)
    with open(soak.log, "a") as log:
        log.write(f"\n==== run {len(soak.kills) + soak.replanned + 1} (workers {workers}, "
                  f"stop at {stop_at})\n")  # fmt: skip
        return subprocess.Popen(
            kill_points.command(events, stop_at, *args),
            cwd=REPO,
            env=cli_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


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
    """KILLS moments, shuffled: 3 in start-up, 4 inside a take's write, 3 after a take,
    2 after a backbone batch (a mode whose work is used up becomes a start-up kill); then
    one inside the final pack."""
    modes = ["startup"] * 3 + ["in-write"] * 4 + ["after-take"] * 3 + ["encode"] * 2
    rng.shuffle(modes)
    return [*modes, "in-pack"]


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
    schedule = kill_schedule(soak.rng)
    while schedule:
        assert soak.replanned <= KILLS, f"seed {seed}: {soak.replanned} runs ended early"
        mode = schedule[0]
        number = len(soak.kills)
        before = dict(token_rows(soak.store))
        stop_at = plan_stop(soak, mode)
        proc = start_run(soak, workers=1 if number % 3 else 0, stop_at=stop_at)
        if not kill_points.stopped_or_exited(proc, RUN_TIMEOUT_S):
            # It ended before its event: plan the same kind of kill again on what is left.
            assert proc.returncode == 0, soak.log.read_text()[-3000:]
            soak.replanned += 1
            continue
        schedule.pop(0)
        children = kill(proc)
        soak.kills.append(stop_at)
        soak.workers_seen += len(children)
        assert_no_orphans(children)
        check_store(soak)
        soak.cut_writes += cut_a_write(soak.store, before)
        if number in (3, 7):
            plant_temp_files(soak)

    print(f"soak seed {seed}: kills {soak.kills}, re-planned {soak.replanned}, cut writes "
          f"{soak.cut_writes}, workers {soak.workers_seen}, completed before the last run "
          f"{len(soak.completed)}/{TAKES}")  # fmt: skip
    final = start_run(soak, workers=1, stop_at="none")
    assert final.wait(timeout=RUN_TIMEOUT_S) == 0, soak.log.read_text()[-3000:]
    assert len(soak.kills) >= 10 and soak.cut_writes >= 1, (seed, soak.kills, soak.cut_writes)
    assert soak.kills[-1].startswith("relayout:"), soak.kills
    assert soak.planted > 0 and soak.workers_seen > 0
    assert_same_stores(soak.store, reference)
    assert temp_files(soak.store) == []
    assert not staging_leftovers(tmp_path, "store.zarr")
    info = store_summary(soak.store)
    assert (info["state"], info["completed"], info["leftover_temp_files"]) == ("finished", TAKES, 0)
    assert TokenStore.open(soak.store).n_takes == TAKES
