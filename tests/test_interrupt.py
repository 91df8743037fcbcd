"""Ctrl-C at any moment of `skill extract`: one line on stderr, exit code 130, no decode
worker left behind, and a store that the same command completes.

A terminal's Ctrl-C reaches the whole foreground process group: the command and its decode
workers. The test does the same, at moments chosen by event, never by the clock: the command
runs in a process group of its own under tests/kill_points.py, freezes itself at its event,
gets SIGINT sent to its whole group (its workers, which are not frozen, receive theirs at
once, even while they are still loading their modules) and is then let go with SIGCONT, so
the interrupt lands exactly there, on an idle machine or a saturated one.
"""

from __future__ import annotations

import os
import signal
import subprocess

import psutil
import pytest

from skill.cache.info import store_summary
from skill.cache.store import STATUS_COMPLETE, TokenStore
from skill.pipeline.extract import run_extract
from tests import kill_points
from tests.extract_helpers import (
    REPO,
    assert_same_stores,
    cli_env,
    extract_args,
    extract_config,
    make_dataset,
    wait_for,
)

TAKES = 4
RUN_TIMEOUT_S = 600.0  # guard against a hung run only: no run comes near it
RESUMABLE = "interrupted: completed work is kept; run the same command to resume"


def interrupt_at(tmp_path, stop_at: str, *skill_args: str) -> tuple[int, str, list]:
    """Run `skill <skill_args>`, Ctrl-C it at event `stop_at`; (exit code, stderr, the
    processes of its group alive at the interrupt)."""
    events = tmp_path / f"{stop_at.replace(':', '-')}.events"
    proc = subprocess.Popen(
        kill_points.command(events, stop_at, *skill_args),
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        assert kill_points.stopped_or_exited(proc, RUN_TIMEOUT_S), (
            f"the run ended before {stop_at}: {proc.communicate()[1][-3000:]}"
        )
        children = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole group
        os.kill(proc.pid, signal.SIGCONT)
        _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stderr, children


def assert_all_gone(processes: list) -> None:
    def gone() -> bool:
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    assert wait_for(gone, 30.0, interval=0.1), [p.pid for p in processes if p.is_running()]


# Every stop point of a whole run; the default run interrupts one (the test below).
@pytest.mark.slow
def test_ctrl_c_at_any_moment_is_one_line_and_the_store_resumes(tmp_path):
    manifest = make_dataset(tmp_path / "data", takes=TAKES)
    reference = tmp_path / "reference.zarr"
    run_extract(extract_config(manifest, reference))
    store = tmp_path / "store.zarr"
    args = ["--quiet", *extract_args(manifest, store, "--workers", "2")]
    moments = {
        "import:1": "interrupted",  # while the command's modules load
        "manifest:1": RESUMABLE,  # start-up, before the store exists
        "spawn:2": RESUMABLE,  # decode workers started, still loading their modules
        "take:1": RESUMABLE,  # mid-run: a take written, workers decoding the next
    }
    for stop_at, line in moments.items():
        code, stderr, processes = interrupt_at(tmp_path, stop_at, *args)
        assert (code, stderr) == (130, line + "\n"), (stop_at, code, stderr[-3000:])
        assert_all_gone(processes)
        if stop_at in ("import:1", "manifest:1"):
            assert not store.exists(), stop_at
        else:
            assert store_summary(store)["state"] == "interrupted", stop_at
        if stop_at == "spawn:2":
            assert processes, "no decode worker was starting at the interrupt"
    assert (TokenStore.open(store).status() == STATUS_COMPLETE).sum() >= 1

    summary = run_extract(extract_config(manifest, store, workers=2))
    assert summary.completed + summary.skipped == TAKES and summary.failed == 0
    assert_same_stores(store, reference)
    assert store_summary(store)["state"] == "finished"


# A whole extract process stopped by SIGINT; the tests below meet the one line in-process.
@pytest.mark.slow
def test_progress_lines_then_the_one_line_of_the_interrupt(tmp_path):
    """Without --quiet, on a log: the progress lines come first, the interrupt's line last,
    and nothing else (the other moments are checked with --quiet above)."""
    manifest = make_dataset(tmp_path / "data", takes=TAKES)
    args = ["--progress-every", "0", *extract_args(manifest, tmp_path / "s.zarr", "--workers", "1")]
    code, stderr, _ = interrupt_at(tmp_path, "take:2", *args)
    *progress, last = stderr.splitlines()
    assert (code, last) == (130, RESUMABLE), stderr[-3000:]
    assert progress and all(line.startswith("extracting: ") for line in progress), stderr
    # the second take's record was being written: the first is the last one reported
    assert progress[-1].startswith("extracting: 1/4 takes (25%), "), stderr


# ---- the entry point, in this process: moments no event can reach ---------------------------
def run_entry_point(monkeypatch, *args: str) -> int:
    from skill.__main__ import main

    monkeypatch.setattr("sys.argv", ["skill", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return stop.value.code


def test_ctrl_c_while_the_arguments_are_read_is_one_line(monkeypatch, capsys):
    """Ctrl-C after the modules load but before a command runs (typer alone would exit 130
    saying nothing): the entry point says `interrupted`."""
    from skill import progress

    def interrupt(**settings):  # the first thing the `skill` callback does
        raise KeyboardInterrupt

    monkeypatch.setattr(progress, "configure", interrupt)
    assert run_entry_point(monkeypatch, "info", "nowhere.zarr") == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_a_command_that_reported_its_interrupt_gets_no_second_line(monkeypatch, capsys, tmp_path):
    import skill.cache.info

    def interrupt(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(skill.cache.info, "store_summary", interrupt)
    assert run_entry_point(monkeypatch, "--quiet", "info", str(tmp_path / "s.zarr")) == 130
    assert capsys.readouterr().err == RESUMABLE + "\n"
