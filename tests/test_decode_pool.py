"""DecodePool: hung and crashing jobs are killed and reported, the rest of the pool goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from skill.pipeline.decode.errors import DecodeError
from skill.pipeline.decode.pool import DecodePool

REPO_ROOT = Path(__file__).resolve().parents[1]


def behave(kind: str, value: int = 0) -> int:
    """A job that does what it is told; top-level so spawned workers can import it."""
    if kind == "hang":
        time.sleep(3600)
    elif kind == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif kind == "exit":
        os._exit(3)
    elif kind == "raise":
        raise ValueError(f"bad input {value}")
    elif kind == "decode_error":
        raise DecodeError("/videos/x.mp4", "no video stream")
    return value * 10


def worker_pid(_: int) -> int:
    return os.getpid()


def broken_initializer() -> None:
    raise ImportError("no module named 'missing_codec'")


def _pid_gone(pid: int) -> bool:
    """Dead or a zombie waiting to be reaped by whoever adopted it."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.split()[1] == "Z" for line in status if line.startswith("State:"))
    except FileNotFoundError:
        return True


def test_hung_and_crashing_jobs_are_reported_and_the_others_succeed() -> None:
    jobs = {
        "hang": ("hang",),
        "segv": ("segv",),
        "exit": ("exit",),
        "raise": ("raise", 7),
        "decode_error": ("decode_error",),
        **{f"ok{i}": ("ok", i) for i in range(4)},
    }
    with DecodePool(num_workers=2, timeout_s=1.5, job=behave, initializer=None) as pool:
        for job_id, args in jobs.items():
            pool.submit(job_id, *args)
        results = {job_id: (value, error) for job_id, value, error in pool.results()}
        stats = pool.stats

    assert set(results) == set(jobs)
    assert results["hang"] == (None, "timed out after 1.5 s")
    assert results["segv"] == (None, "decoder crashed (killed by signal SIGSEGV)")
    assert results["exit"] == (None, "decoder crashed (exit code 3)")
    assert results["raise"] == (None, "ValueError: bad input 7")
    assert results["decode_error"] == (None, "no video stream")
    for i in range(4):
        assert results[f"ok{i}"] == (i * 10, None)
    assert (stats.timed_out, stats.crashed, stats.succeeded, stats.failed) == (1, 2, 4, 5)


def test_timed_out_worker_is_killed_and_replaced() -> None:
    with DecodePool(num_workers=1, timeout_s=1.0, job=behave, initializer=None) as pool:
        pool.submit("warmup", "ok", 1)
        list(pool.results())
        (hung_pid,) = pool.worker_pids()
        pool.submit("hang", "hang")
        pool.submit("after", "ok", 2)
        results = {job_id: (value, error) for job_id, value, error in pool.results()}
        assert results == {"hang": (None, "timed out after 1 s"), "after": (20, None)}
        assert hung_pid not in pool.worker_pids()
    assert _pid_gone(hung_pid)


def test_workers_are_recycled_after_max_tasks() -> None:
    with DecodePool(
        num_workers=1, timeout_s=30, max_tasks_per_worker=2, job=worker_pid, initializer=None
    ) as pool:
        pids = [value for _, value, _ in pool.map_ordered((i, (i,)) for i in range(3))]
        assert pool.stats.recycled == 1
        assert pool.stats.spawned == 2
    assert pids[0] == pids[1] != pids[2]
    assert os.getpid() not in pids


def test_inline_mode_runs_in_this_process() -> None:
    with DecodePool(num_workers=0, timeout_s=1, job=behave, initializer=None) as pool:
        results = list(pool.imap_unordered([("a", ("ok", 4)), ("b", ("raise", 1))]))
    assert results == [("a", 40, None), ("b", None, "ValueError: bad input 1")]
    with DecodePool(num_workers=0, timeout_s=1, job=worker_pid, initializer=None) as pool:
        assert list(pool.imap_unordered([("p", (0,))])) == [("p", os.getpid(), None)]


def test_lazy_feeding_keeps_outstanding_jobs_bounded_and_map_ordered_keeps_order() -> None:
    drawn = 0

    def jobs():
        nonlocal drawn
        for i in range(12):
            drawn += 1
            yield (i, ("ok", i))

    yielded = 0
    order = []
    with DecodePool(
        num_workers=2, timeout_s=30, job=behave, max_outstanding=3, initializer=None
    ) as pool:
        for job_id, value, error in pool.map_ordered(jobs()):
            yielded += 1
            order.append(job_id)
            assert error is None and value == job_id * 10
            assert drawn - yielded <= 3
    assert order == list(range(12))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_workers_die_when_the_parent_is_killed() -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from skill.pipeline.decode.pool import DecodePool
        pool = DecodePool(num_workers=1, timeout_s=600, job=time.sleep, initializer=None)
        pool.submit("sleep", 600)
        pool.start()  # the worker is ready and sleeping in its task
        print(pool.worker_pids()[0], flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        worker = int(parent.stdout.readline())
        assert not _pid_gone(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not _pid_gone(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _pid_gone(worker), "the worker outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()


def test_workers_that_cannot_start_stop_the_pool_instead_of_respawning_forever() -> None:
    with DecodePool(num_workers=1, timeout_s=5, job=behave, initializer=broken_initializer) as pool:
        pool.submit("a", "ok", 1)
        with pytest.raises(RuntimeError, match="fail to start .*exit code 1"):
            list(pool.results())
        assert pool.stats.spawned == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_workers": -1, "timeout_s": 1},
        {"num_workers": 1, "timeout_s": 0},
        {"num_workers": 1, "timeout_s": 1, "max_tasks_per_worker": 0},
        {"num_workers": 1, "timeout_s": 1, "start_method": "fork"},
    ],
)
def test_bad_pool_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DecodePool(**kwargs)
