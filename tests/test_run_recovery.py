"""Run and sweep folders that survive kills: a killed fit's staging folder is removed by the
next fit (a live one's is kept), a killed sweep resumes, and every run- or sweep-folder
problem is one line naming the file."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import skill.heads.sweep
from skill.cache.files import parse_staging, remove_dead_staging, staging_name
from skill.heads.config import FitConfig, SweepConfig
from skill.heads.lgbm import LightGBMSettings
from skill.heads.run_folder import RunFolderError, read_run_metrics, read_run_record
from skill.heads.sweep import SweepError, sweep
from skill.heads.train import fit
from tests.extract_helpers import invoke_cli
from tests.token_store import shared_token_store

REPO = Path(__file__).resolve().parent.parent
QUICK = dict(epochs=2, batch_size=16, hidden=16, patience=0, plots=False,
             lightgbm=LightGBMSettings(lgbm_rounds=20, lgbm_threads=1))  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return shared_token_store(tmp_path_factory)


def start_stopped_fit(store, out_dir: Path, name: str, *, sweep_at: int = 0) -> subprocess.Popen:
    """A fit (or, with ``sweep_at``, a sweep) in a subprocess, waited for until it has
    stopped itself with its staging folder written (an observed event, no sleeps)."""
    args = (
        ["--sweep", str(store.path), str(out_dir), str(sweep_at)]
        if sweep_at
        else [str(store.path), str(out_dir), name]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stop_at_publish", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    process = psutil.Process(proc.pid)
    while True:
        try:
            if process.status() == psutil.STATUS_STOPPED:
                return proc
        except psutil.NoSuchProcess:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"runner exited early: {proc.stderr.read().decode()}")
        psutil.wait_procs([process], timeout=0.05)  # until it stops or exits


def staging_of(out_dir: Path, pid: int) -> list[Path]:
    return [p for p in out_dir.iterdir() if getattr(parse_staging(p.name), "pid", None) == pid]


# Kills fit processes; the default run checks the staging rule itself (test below).
@pytest.mark.slow
def test_next_fit_removes_a_killed_fits_staging_and_keeps_a_live_ones(store, tmp_path):
    out = tmp_path / "runs"
    killed = start_stopped_fit(store, out, "killed")
    live = start_stopped_fit(store, out, "live")
    try:
        (stale,) = staging_of(out, killed.pid)
        (kept,) = staging_of(out, live.pid)
        assert (stale / "config.json").is_file()  # written, not yet published
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert stale.exists()  # a kill leaves it behind...
        result = fit(FitConfig(store=str(store.path), out_dir=str(out), head="mean", **QUICK))
        assert not stale.exists()  # ...and the next fit removes it
        assert kept.is_dir()  # the live (stopped) process keeps its own
        assert not (out / "killed").exists() and (result.run_dir / "config.json").is_file()
        hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
        assert hidden == [kept.name]
    finally:
        for proc in (killed, live):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()


def test_staging_cleanup_leaves_other_names_alone(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [staging_name("run", pid=dead.pid), staging_name("sweep", pid=dead.pid)]
    live = staging_name("run", pid=os.getpid())  # this process: alive
    for name in (*stale, live):
        (tmp_path / name).mkdir()
    (tmp_path / live[1:]).mkdir()  # not hidden: not a staging folder
    (tmp_path / ".notes").mkdir()
    removed = remove_dead_staging(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live, live[1:], ".notes"])


# ---- a killed sweep resumes ------------------------------------------------------------------
def metric_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "sweep.csv", newline="") as f:
        return [
            {k: v for k, v in row.items() if not k.startswith("fit_seconds")}
            for row in csv.DictReader(f)
        ]


@pytest.fixture
def counted_fits(monkeypatch):
    calls = []
    real = skill.heads.sweep.fit

    def counting(cfg, selection=None):
        calls.append((cfg.head, cfg.views, cfg.seed))
        return real(cfg, selection=selection)

    monkeypatch.setattr(skill.heads.sweep, "fit", counting)
    return calls


def sweep_config(store, out: Path, **grid) -> SweepConfig:
    base = FitConfig(store=str(store.path), out_dir=str(out), **QUICK)
    grid = {"heads": ["mean", "lightgbm"], "view_sets": ["ego", "all"], "seeds": [0], **grid}
    return SweepConfig(fit=base, **grid)


def test_a_sweep_run_again_fits_only_what_is_missing(store, tmp_path, counted_fits):
    out = tmp_path / "out"
    first = sweep(sweep_config(store, out))
    assert len(counted_fits) == 4
    settings = json.loads((first.sweep_dir / "sweep.json").read_text())
    assert settings["config"]["heads"] == ["mean", "lightgbm"]
    assert settings["stores"][0]["provenance"]["backbone"]["name"] == "synthetic"
    uninterrupted = metric_rows(first.sweep_dir)
    shutil.rmtree(first.sweep_dir / "lightgbm-all-s0")  # killed before it was published
    (first.sweep_dir / "sweep.csv").unlink()
    counted_fits.clear()
    again = sweep(sweep_config(store, out))
    assert again.sweep_dir == first.sweep_dir  # resumed, not sweep-2
    assert counted_fits == [("lightgbm", "all", 0)] and again.reused == 3
    assert metric_rows(again.sweep_dir) == uninterrupted
    counted_fits.clear()
    code, output = invoke_cli(
        "sweep", str(store.path), "--heads", "mean,lightgbm", "--view-sets", "ego;all",
        "--epochs", "2", "--batch-size", "16", "--hidden", "16", "--patience", "0",
        "--no-plots", "--lgbm-rounds", "20", "--lgbm-threads", "1", "--out", str(out),
    )  # fmt: skip
    assert code == 0, output
    assert counted_fits == [] and f"sweep folder: {first.sweep_dir} " in output
    assert "resumed: 4 of 4 runs were already complete" in output


# Kills a sweep process; the default run resumes a sweep run again (test above).
@pytest.mark.slow
def test_a_killed_sweep_resumes(store, tmp_path, counted_fits):
    from tests.stop_at_publish import sweep_config as runner_config

    out = tmp_path / "out"
    killed = start_stopped_fit(store, out, "", sweep_at=3)  # stopped publishing its 3rd run
    try:
        sweep_dir = out / "sweep"
        (stale,) = staging_of(sweep_dir, killed.pid)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    finally:
        if killed.poll() is None:
            killed.send_signal(signal.SIGKILL)
            killed.wait()
    assert not (sweep_dir / "sweep.csv").exists()
    done = sorted(p.name for p in sweep_dir.iterdir() if not p.name.startswith("."))
    assert done == ["lightgbm-ego-s0", "mean-ego-s0", "sweep.json"]
    result = sweep(runner_config(str(store.path), str(out)))
    assert result.sweep_dir == sweep_dir and not stale.exists()
    assert sorted(counted_fits) == [("lightgbm", "all", 0), ("mean", "all", 0)]
    assert len(result.rows) == 4 and (sweep_dir / "sweep.csv").is_file()
    assert not [p for p in sweep_dir.iterdir() if p.name.startswith(".")]


def test_other_settings_start_a_new_sweep_folder(store, tmp_path, counted_fits):
    out = tmp_path / "out"
    sweep(sweep_config(store, out, heads=["mean"], view_sets=["ego"]))
    other = sweep(sweep_config(store, out, heads=["mean"], view_sets=["ego"], seeds=[1]))
    assert other.sweep_dir.name == "sweep-2" and len(counted_fits) == 2
    # the first settings again: the first folder, nothing fitted
    counted_fits.clear()
    assert sweep(sweep_config(store, out, heads=["mean"], view_sets=["ego"])).sweep_dir.name == (
        "sweep"
    )
    assert counted_fits == []


def test_a_folder_without_sweep_json_is_not_resumed(store, tmp_path, counted_fits):
    out = tmp_path / "out"
    (out / "sweep").mkdir(parents=True)
    (out / "sweep" / "notes.txt").write_text("mine")
    result = sweep(sweep_config(store, out, heads=["mean"], view_sets=["ego"]))
    assert result.sweep_dir.name == "sweep-2"
    assert (out / "sweep" / "notes.txt").read_text() == "mine"


def test_an_unreadable_sweep_json_is_one_line(store, tmp_path):
    out = tmp_path / "out"
    (out / "sweep").mkdir(parents=True)
    (out / "sweep" / "sweep.json").write_text("{not json")
    with pytest.raises(SweepError, match=r"sweep\.json: not a readable sweep record"):
        sweep(sweep_config(store, out, heads=["mean"], view_sets=["ego"]))
    code, output = invoke_cli(
        "sweep", str(store.path), "--heads", "mean", "--view-sets", "ego", "--out", str(out)
    )
    assert code == 2 and "Traceback" not in output
    assert f"{out / 'sweep' / 'sweep.json'}: not a readable sweep record" in output
    (out / "sweep" / "sweep.json").write_text('{"skill_sweep_format": 99}')
    with pytest.raises(SweepError, match="sweep format 99 is newer than this skill"):
        sweep(sweep_config(store, out, heads=["mean"], view_sets=["ego"]))
    (out / "sweep" / "sweep.json").write_text("[1, 2]")
    with pytest.raises(SweepError, match="not a sweep record"):
        sweep(sweep_config(store, out, heads=["mean"], view_sets=["ego"]))


# ---- run folder problems: one line naming the file ---------------------------------------------
@pytest.fixture(scope="module")
def run_dir(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return fit(FitConfig(store=str(store.path), out_dir=str(out), head="mean", **QUICK)).run_dir


def predict_output(store, run: Path, tmp_path) -> tuple[int, str]:
    return invoke_cli(
        "predict", str(store.path), "--run", str(run), "--out", str(tmp_path / "p.csv")
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda run: (run / "config.json").unlink(), "not a complete run folder (no config.json)"),
        (lambda run: (run / "config.json").write_text("{oops"), "not a readable run config"),
        (
            lambda run: _edit_config(run, skill_run_format=7),
            "run format 7 is newer than this skill (reads up to 2)",
        ),
        (
            lambda run: _edit_config(run, skill_run_format=0),
            "run format 0 was written by an older skill that recorded no task",
        ),
        (lambda run: _edit_config(run, model=None), "missing field model"),
        (
            lambda run: (run / "model.safetensors").unlink(),
            "model file model.safetensors is missing",
        ),
    ],
)
def test_run_folder_problems_are_one_line(store, run_dir, tmp_path, damage, message):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    damage(run)
    code, output = predict_output(store, run, tmp_path)
    assert code == 2, output
    assert "Traceback" not in output and message in output and str(run) in output


def _edit_config(run: Path, **changes) -> None:
    data = json.loads((run / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    (run / "config.json").write_text(json.dumps(data))


def test_run_metrics_problems_name_the_file(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    assert read_run_metrics(run)["fit_seconds"] >= 0
    assert read_run_record(run).model.head == "mean"
    (run / "metrics.json").write_text("[]")
    with pytest.raises(RunFolderError, match=r"metrics\.json: expected a JSON object"):
        read_run_metrics(run)
    (run / "metrics.json").write_text("{")
    with pytest.raises(RunFolderError, match=r"metrics\.json: not readable run metrics"):
        read_run_metrics(run)


# ---- one sweep per sweep folder at a time ------------------------------------------------------
# Holds the lock from a stopped process; the default run meets the lock in test_store.
@pytest.mark.slow
def test_a_second_sweep_into_the_same_folder_is_refused_naming_the_first(store, tmp_path):
    from tests.stop_at_publish import sweep_config as runner_config

    out = tmp_path / "out"
    first = start_stopped_fit(store, out, "", sweep_at=1)  # stopped inside, holding the lock
    try:
        code, output = invoke_cli(
            "sweep", str(store.path), "--heads", "mean,lightgbm", "--view-sets", "ego;all",
            "--out", str(out),
        )  # fmt: skip
        assert code == 2 and "Traceback" not in output
        assert f"{out / 'sweep'}: another skill sweep is writing this sweep folder " in output
        assert f"(pid {first.pid} on " in output and " since " in output
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["sweep"]
        assert [p.name for p in (out / "sweep").iterdir() if not p.name.startswith(".")] == [
            "sweep.json"
        ]  # the second wrote nothing
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
            first.wait()
    result = sweep(runner_config(str(store.path), str(out)))  # the kernel released the lock
    assert result.sweep_dir == out / "sweep" and len(result.rows) == 4
    assert not [p for p in out.iterdir() if p.name.startswith("sweep-")]
    assert not [p for p in result.sweep_dir.iterdir() if p.name.endswith("-2")]
