"""Progress of long steps (`skill.progress`) as a user sees it: on a stderr that is not a
terminal (nohup, a batch scheduler), lines with done/total, rate and ETA; on a terminal, a
bar; with --quiet, nothing; and stdout, the results, the same either way.

Nothing here depends on the machine's speed: lines are driven by updates (--progress-every
0: a line at every update; an interval no test reaches: a line at each tenth only), and the
rule "a line every N seconds" is checked against a clock the test moves."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import threading

import pytest
from typer.testing import CliRunner

from skill import progress
from skill.cli import app
from tests.extract_helpers import REPO, TINY, cli_command, cli_env, extract_args, make_dataset
from tests.token_store import shared_token_store

# `what: 3/12 takes (25%), 4.1 takes/s, ETA 0:02; 0 failed` (or `2.0 s/take`, `in 0:05`)
LINE = re.compile(
    r"^(?P<what>[^:]+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<percent>\d+)%\), "
    r"(?P<rate>[\d.]+ \w+/s|[\d.]+ s/\w+), (?P<time>ETA \d+:\d\d|in \d+:\d\d)(; (?P<note>.*))?$"
)
NEVER = 1e9  # seconds: an interval no test reaches


@pytest.fixture(autouse=True)
def reporting_off_afterwards():
    yield
    progress.configure(enabled=False)


def progress_lines(text: str, what: str) -> list[re.Match]:
    """The progress lines of step `what` (every one of them well formed)."""
    lines = [line for line in text.splitlines() if line.startswith(f"{what}: ")]
    matches = [LINE.match(line) for line in lines[1:]]  # the first is the start line
    assert all(matches), lines
    return matches


# ---- the reporter -------------------------------------------------------------------------
def test_a_line_at_each_tenth_and_at_the_end(capsys):
    progress.configure(every_s=NEVER)
    with progress.task("step", total=50, unit="unit") as shown:
        for done in range(1, 51):
            shown.update(done, note=f"note {done}")
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "step: 0/50 units (0%)"
    matches = progress_lines(err, "step")
    assert [int(m["done"]) for m in matches] == list(range(5, 51, 5))
    assert [m["note"] for m in matches] == [f"note {d}" for d in range(5, 51, 5)]
    assert all(m["time"].startswith("ETA") for m in matches[:-1])
    assert matches[-1]["time"].startswith("in ") and matches[-1]["percent"] == "100"


def test_a_line_at_every_update_with_an_interval_of_zero(capsys):
    progress.configure(every_s=0)
    with progress.task("step", total=7, unit="take") as shown:
        for done in range(1, 8):
            shown.update(done)
        shown.update(7)  # nothing new: no line
    matches = progress_lines(capsys.readouterr().err, "step")
    assert [int(m["done"]) for m in matches] == list(range(1, 8))


class FakeClock:
    """time.monotonic for the module under test, moved by the test."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_rate_eta_and_the_interval_follow_the_clock(capsys, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(progress, "time", clock)
    progress.configure(every_s=30)
    with progress.task("fit", total=1000, unit="epoch") as shown:
        clock.now += 10
        shown.update(1)  # 10 s since the start line, no tenth crossed: no line
        clock.now += 25
        shown.update(7)  # 35 s: a line
        clock.now += 5
        shown.update(8)  # 5 s since that line: none
        clock.now += 7160
        shown.update(500)  # a tenth crossed (and two hours gone)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "fit: 0/1000 epochs (0%)",
        "fit: 7/1000 epochs (1%), 5.0 s/epoch, ETA 1:22:45",
        "fit: 500/1000 epochs (50%), 14 s/epoch, ETA 2:00:00",
    ]
    with progress.task("fast", total=None, unit="take") as shown:
        clock.now += 2
        shown.update(10)
        clock.now += 40
        shown.update(100)
    assert capsys.readouterr().err.splitlines() == [
        "fast: 0 takes",
        "fast: 100 takes, 2.4 takes/s, ETA -",
    ]


def test_a_step_ended_by_an_exception_prints_nothing_more(capsys):
    progress.configure(every_s=NEVER)
    with progress.task("step", total=100, unit="unit") as shown:
        shown.update(3)  # not due
    (end,) = progress_lines(capsys.readouterr().err, "step")  # ended: where it stopped
    assert (end["done"], end["time"][:3]) == ("3", "in ")
    with pytest.raises(KeyboardInterrupt), progress.task("step", total=100, unit="unit") as shown:
        shown.update(3)
        raise KeyboardInterrupt
    assert capsys.readouterr().err.splitlines() == ["step: 0/100 units (0%)"]


def test_nothing_when_off_or_on_another_rank(capsys, monkeypatch):
    def run() -> str:
        with progress.task("step", total=2, unit="unit") as shown:
            shown.update(1)
            progress.say("run 1 of 2")
            shown.update(2)
        return capsys.readouterr().err

    progress.configure(enabled=False, every_s=0)
    assert run() == ""
    progress.configure(every_s=0)
    assert "run 1 of 2" in run()
    monkeypatch.setenv("RANK", "1")  # torchrun: rank 0 speaks for the run
    assert run() == ""


# ---- the commands -------------------------------------------------------------------------
def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output[-3000:]
    return result


def no_timing(text: str) -> str:
    return re.sub(r"\d+\.\d+ s\b", "N s", text)


def test_extract_lines_on_a_log_and_none_with_quiet(tmp_path):
    manifest = make_dataset(tmp_path / "data", takes=4)
    shown = invoke("--progress-every", "0", *extract_args(manifest, tmp_path / "a.zarr"))
    matches = progress_lines(shown.stderr, "extracting")
    assert [(m["done"], m["total"], m["unit"]) for m in matches] == [
        (str(done), "4", "takes") for done in range(1, 5)
    ]
    assert all(m["note"] == "0 failed" for m in matches)
    quiet = invoke("--quiet", *extract_args(manifest, tmp_path / "b.zarr"))
    assert quiet.stderr == ""
    assert no_timing(quiet.stdout).replace("b.zarr", "a.zarr") == no_timing(shown.stdout)
    assert "extracting" not in shown.stdout


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return shared_token_store(tmp_path_factory).path  # read only: the session's store


def test_fit_reports_epochs_with_the_validation_score(store, tmp_path):
    args = ["fit", store, "--out", tmp_path / "runs", "--epochs", "4", "--patience", "0",
            "--no-plots"]  # fmt: skip
    shown = invoke("--progress-every", "0", *args, "--name", "a")
    matches = progress_lines(shown.stderr, "fit cvf on all")
    assert [int(m["done"]) for m in matches] == [1, 2, 3, 4]
    assert all(m["total"] == "4" and m["unit"] == "epochs" for m in matches)
    assert all(
        re.match(
            r"loss [\d.]+, top1 [\d.]+, balanced_accuracy [\d.]+; best epoch \d "
            r"\(balanced_accuracy [\d.]+\)",
            m["note"],
        )
        for m in matches
    )
    quiet = invoke("-q", *args, "--name", "b")
    assert quiet.stderr == ""
    # the results are the same, to the digit: progress changes nothing on stdout
    assert quiet.stdout.replace("runs/b", "runs/a") == shown.stdout


def test_sweep_says_which_run_of_how_many(store, tmp_path):
    args = ["sweep", store, "--heads", "cvf,mean", "--view-sets", "all", "--seeds", "0",
            "--out", tmp_path / "runs", "--epochs", "2", "--no-plots"]  # fmt: skip
    shown = invoke("--progress-every", "0", *args, "--sweep-name", "a")
    lines = shown.stderr.splitlines()
    runs = [line for line in lines if line.startswith("run ")]
    assert runs == ["run 1 of 2: cvf on all, seed 0", "run 2 of 2: mean on all, seed 0"]
    sweep = progress_lines(shown.stderr, f"sweep {tmp_path / 'runs' / 'a'}")
    assert [(m["done"], m["total"], m["unit"]) for m in sweep] == [("1", "2", "runs"),
                                                                    ("2", "2", "runs")]  # fmt: skip
    # each run's fit reports its epochs between its run line and the next
    first_fit = lines[lines.index(runs[0]) : lines.index(runs[1])]
    assert len(progress_lines("\n".join(first_fit), "fit cvf on all")) == 2
    assert len(progress_lines(shown.stderr, "fit mean on all")) == 2
    quiet = invoke("--quiet", *args, "--sweep-name", "b")
    assert quiet.stderr == ""
    assert not any(line in shown.stdout for line in lines)


def test_adapt_reports_frames_and_training_steps(tmp_path, capsys):
    from skill.adapt.train import run_adapt
    from tests.test_adapt import adapt_config

    manifest = make_dataset(tmp_path / "data", takes=8)
    progress.configure(every_s=0)
    cfg = adapt_config(manifest, tmp_path / "out", epochs=2, clips=1, batch_size=1)
    result = run_adapt(cfg)
    assert result.finished
    err = capsys.readouterr().err
    frames = progress_lines(err, "decoding frames")
    assert [int(m["done"]) for m in frames] == list(range(1, 9))
    steps = progress_lines(err, "adapting")
    done = [int(m["done"]) for m in steps]
    total = int(steps[0]["total"])
    assert total >= 4 and total % 2 == 0  # two epochs of several optimiser steps
    assert done == sorted(set(done)) and done[-1] == total, done
    assert steps[-1]["time"].startswith("in ")
    assert [m["note"].split(":")[0] for m in steps][-1] == "epoch 2/2"


def test_adapt_with_quiet_says_nothing_on_stderr(tmp_path):
    manifest = make_dataset(tmp_path / "data", takes=6)
    quiet = invoke("--quiet", "adapt", manifest, "--out", tmp_path / "out", "--backbone", TINY,
                   "--frames", "4", "--clips", "1", "--epochs", "1", "--device", "cpu",
                   "--workers", "0", "--threads", "1", "--no-plots")  # fmt: skip
    assert quiet.stderr == ""
    assert "adapter:" in quiet.stdout


# ---- a terminal -------------------------------------------------------------------------------
# A fit process on a pseudo-terminal; the default run checks the line form (tests above).
@pytest.mark.slow
def test_on_a_terminal_a_bar_instead_of_lines(store, tmp_path):
    """stderr a pseudo-terminal: rich draws a bar (redrawn in place), no progress lines."""
    controller, terminal = pty.openpty()
    env = cli_env(TERM="xterm-256color", COLUMNS="160")
    args = ["--progress-every", "0", "fit", str(store), "--out", str(tmp_path / "runs"),
            "--epochs", "8", "--patience", "0", "--no-plots"]  # fmt: skip
    proc = subprocess.Popen(cli_command(*args), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=terminal, text=True)  # fmt: skip
    os.close(terminal)
    chunks: list[bytes] = []

    def drain() -> None:  # the terminal's buffer is small: read it while the fit runs
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # the command closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    stdout, _ = proc.communicate(timeout=600)
    reader.join(timeout=60)
    os.close(controller)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen[-3000:]
    assert "━" in screen and "8/8 epochs (100%)" in screen, screen[-3000:]
    assert "fit cvf on all: " not in screen  # the line form is for logs only
    assert "run folder:" in stdout and "━" not in stdout
