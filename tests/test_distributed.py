"""Several writers: torchrun ranks share the takes and write the store one process would;
two independent commands on one store never both write (the second refuses).

The torchrun and concurrent-command tests start real processes and are marked slow."""

from __future__ import annotations

import itertools
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skill.cache.info import store_summary
from skill.pipeline.distributed import balance_by_cost, current_rank
from skill.pipeline.extract import VIEW_OVERHEAD_BYTES, run_extract, take_cost
from skill.pipeline.takes import Take
from tests import kill_points
from tests.extract_helpers import (
    REPO,
    assert_same_stores,
    cli_env,
    extract_args,
    extract_config,
    flat,
    make_dataset,
)


# ---- balancing ---------------------------------------------------------------------------
def best_makespan(costs: list[float], world: int) -> float:
    """The smallest possible largest load, by trying every assignment."""
    best = float("inf")
    for owners in itertools.product(range(world), repeat=len(costs)):
        loads = [0.0] * world
        for cost, owner in zip(costs, owners, strict=True):
            loads[owner] += cost
        best = min(best, max(loads))
    return best


@pytest.mark.parametrize("world", [2, 3])
def test_balance_by_cost_is_within_the_lpt_bound_of_the_best_split(world):
    rng = random.Random(world)
    for _ in range(30):
        costs = [rng.choice([1.0, 2.0, 3.0, 5.0, 8.0, 13.0]) for _ in range(rng.randint(1, 8))]
        shares = balance_by_cost(costs, world)
        assert len(shares) == world
        assert sorted(i for share in shares for i in share) == list(range(len(costs)))
        assert all(share == sorted(share) for share in shares)
        largest = max(sum(costs[i] for i in share) for share in shares)
        # Graham's bound for longest-processing-time-first
        assert largest <= (4 / 3 - 1 / (3 * world)) * best_makespan(costs, world) + 1e-9
        assert balance_by_cost(costs, world) == shares  # every rank computes the same plan


def test_balance_by_cost_separates_the_two_expensive_takes():
    costs = [100.0, 1.0, 1.0, 100.0, 1.0, 1.0]
    shares = balance_by_cost(costs, 2)
    assert {0, 3} not in [set(share) & {0, 3} for share in shares]
    assert balance_by_cost([], 3) == [[], [], []]
    assert balance_by_cost([1.0], 3) == [[0], [], []]
    with pytest.raises(ValueError):
        balance_by_cost([1.0], 0)


def _video(path: Path, frames: int) -> str:
    """A real encoded 32x32 noise video of `frames` frames."""
    import av

    rng = np.random.default_rng(frames)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=15)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return str(path)


def test_take_cost_grows_with_video_length_and_views(tmp_path):
    short, long = _video(tmp_path / "short.mp4", 10), _video(tmp_path / "long.mp4", 60)
    one_short = take_cost(Take("a", {"ego": short, "exo1": None}))
    one_long = take_cost(Take("b", {"ego": long, "exo1": None}))
    two_long = take_cost(Take("c", {"ego": long, "exo1": long}))
    assert one_short < one_long < two_long
    assert two_long == pytest.approx(2 * one_long)
    assert take_cost(Take("d", {"ego": str(tmp_path / "gone.mp4")})) == VIEW_OVERHEAD_BYTES


def test_current_rank_reads_torchrun_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert current_rank().world == 1 and current_rank().is_coordinator
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    rank = current_rank()
    assert (rank.rank, rank.world, rank.distributed, rank.is_coordinator) == (2, 4, True, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK=4 WORLD_SIZE=4"):
        current_rank()


# ---- real processes ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset_and_reference(tmp_path_factory) -> tuple[Path, Path]:
    """12 synthetic takes and the store of one in-process run over them."""
    manifest = make_dataset(tmp_path_factory.mktemp("data"), takes=12)
    reference = tmp_path_factory.mktemp("ref") / "ref.zarr"
    run_extract(extract_config(manifest, reference))
    return manifest, reference


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_with_two_ranks_writes_the_store_of_one_process(dataset_and_reference, tmp_path):
    manifest, reference = dataset_and_reference
    store = tmp_path / "s.zarr"
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "skill",
    ]  # fmt: skip
    args = extract_args(manifest, store, "--workers", "1")
    done = subprocess.run(
        torchrun + args,
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert_same_stores(store, reference)
    info = store_summary(store)
    assert info["state"] == "finished" and info["last_run"]["world"] == 2
    shares = info["last_run"]["takes_per_rank"]
    assert len(shares) == 2 and sum(shares) == 12 and min(shares) >= 4  # both ranks wrote
    # the counts are summed over ranks, and only rank 0 prints them
    assert flat(done.stdout).count("12 takes extracted, 0 failed") == 1
    assert "on 2 ranks" in flat(done.stdout)


@pytest.mark.slow
def test_two_commands_started_together_on_one_store_one_refuses(dataset_and_reference, tmp_path):
    """We chose refusal over cooperation: exactly one command writes, the other exits 2
    naming the writer; the store is that of one run.

    Both start at once and both would freeze once they hold the writer lock (the `store`
    event of tests/kill_points.py), so the two overlap whatever the machine's speed: the one
    that got the lock waits frozen while the other must refuse, then is let go."""
    manifest, reference = dataset_and_reference
    store = tmp_path / "s.zarr"
    procs = [
        subprocess.Popen(
            kill_points.command(
                tmp_path / f"events-{i}",
                "store:1",
                *extract_args(manifest, store, "--workers", "0"),
            ),
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    frozen = [kill_points.stopped_or_exited(proc, timeout=300) for proc in procs]
    assert sorted(frozen) == [False, True], [proc.returncode for proc in procs]
    writer, refused = (procs[0], procs[1]) if frozen[0] else (procs[1], procs[0])
    refused_out, refused_err = refused.communicate(timeout=60)
    assert refused.returncode == 2, (refused_out, refused_err)
    assert f"error: {store}: another skill extract is writing to this store (pid" in flat(
        refused_err
    )
    writer.send_signal(signal.SIGCONT)
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, (out, err)
    assert_same_stores(store, reference)
    assert store_summary(store)["state"] == "finished"
