"""The `skill` command as a user meets it: end to end in-process, help, and error messages."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skill.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_help_does_not_import_torch_or_decoders():
    check = (
        "import sys\n"
        "sys.argv = ['skill', '--help']\n"
        "from skill.cli import app\n"
        "try:\n"
        "    app()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'decord', 'av', 'zarr', 'lightgbm')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "extract" in done.stdout and "fit" in done.stdout


def test_expected_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch):
    import skill.cache.info

    missing = tmp_path / "nope.zarr"
    result = runner.invoke(app, ["info", str(missing)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {missing}: no such store"]

    def bug(path):
        raise ValueError("an internal invariant broke")  # a bug, not the user's input

    monkeypatch.setattr(skill.cache.info, "store_summary", bug)
    result = runner.invoke(app, ["info", str(missing)])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)
    assert "error:" not in result.output


def test_a_path_the_os_refuses_is_one_line_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["synth", str(blocker / "data"), "--takes", "12"])
    assert result.exit_code == 2, result.output
    assert f"error: {blocker / 'data'}" in " ".join(result.output.split())


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """synth -> extract -> fit -> predict through the CLI, once for the module."""
    base = tmp_path_factory.mktemp("e2e")
    data, store, runs = base / "data", base / "store.zarr", base / "runs"
    steps = {
        "synth": invoke("synth", data, "--takes", 48, "--seed", 3, "--size", 48, "--frames", 24),
        "extract": invoke(
            "extract",
            data / "manifest.jsonl",
            "--store",
            store,
            "--backbone",
            "tiny-timesformer",
            "--frames",
            4,
            "--device",
            "cpu",
            "--workers",
            1,
        ),  # fmt: skip
        "info": invoke("info", store, "--json"),
        "fit": invoke(
            "fit",
            store,
            "--head",
            "mean",
            "--views",
            "all",
            "--out-dir",
            runs,
            "--epochs",
            15,
            "--no-plots",
        ),  # fmt: skip
    }
    steps["predict"] = invoke(
        "predict", store, "--run", runs / "mean-all-s0", "--out", base / "pred.csv",
        "--format", "egoexo4d",
    )  # fmt: skip
    return {"base": base, "store": store, "runs": runs, "steps": steps}


def test_every_step_succeeds(pipeline_run):
    for name, result in pipeline_run["steps"].items():
        assert result.exit_code == 0, f"{name}: {result.output}"


def test_store_holds_every_take(pipeline_run):
    info = json.loads(pipeline_run["steps"]["info"].output)
    assert info["takes"] == 48 and info["completed"] == 48 and info["failed"] == 0
    assert info["views"][0] == "ego" and len(info["views"]) >= 4
    assert info["provenance"]["backbone"]["name"] == "tiny-timesformer"
    assert set(info["by_split"]) == {"train", "val", "test"}


def test_fit_writes_a_complete_run_folder(pipeline_run):
    run = pipeline_run["runs"] / "mean-all-s0"
    assert {"config.json", "metrics.json", "model.safetensors"} <= {p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    assert config["store"]["provenance"]["backbone"]["name"] == "tiny-timesformer"
    assert "val" in json.loads((run / "metrics.json").read_text())
    assert "top-1" in pipeline_run["steps"]["fit"].output


def _majority_top1(store: Path, train_ids: list[str], scored: list[str]) -> float:
    """The training majority class (ties: lower index) scored on the `scored` takes."""
    from skill.cache.store import TokenStore

    table = TokenStore.open(store).take_table()
    label = {str(t): int(y) for t, y in zip(table.ids, table.label, strict=True)}
    counts = [0] * 4
    for take in train_ids:
        counts[label[take]] += 1
    majority = counts.index(max(counts))
    return sum(label[t] == majority for t in scored) / len(scored)


def test_fit_and_predict_print_the_majority_baseline_of_the_training_labels(pipeline_run):
    import re

    run, store = pipeline_run["runs"] / "mean-all-s0", pipeline_run["store"]
    train = json.loads((run / "config.json").read_text())["takes"]["train_ids"]
    with open(run / "predictions.csv") as f:
        test = [row["take"] for row in csv.DictReader(f) if row["split"] == "test"]
    fit_output = " ".join(pipeline_run["steps"]["fit"].output.split())
    printed = re.search(r"test \(n=\d+\): top-1 \S+ majority (\S+)", fit_output)
    assert printed, fit_output
    assert float(printed.group(1)) == pytest.approx(_majority_top1(store, train, test), abs=5e-4)
    predict_output = " ".join(pipeline_run["steps"]["predict"].output.split())
    printed = re.search(r"majority baseline of the training labels (\S+)\)", predict_output)
    assert printed, predict_output
    official = json.loads((pipeline_run["base"] / "pred.json").read_text())["videos"]
    expected = _majority_top1(store, train, official)  # every take is labelled and predicted
    assert float(printed.group(1)) == pytest.approx(expected, abs=5e-4)


def test_predict_writes_csv_and_official_json(pipeline_run):
    base = pipeline_run["base"]
    with open(base / "pred.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 48
    probs = [float(rows[0][k]) for k in rows[0] if k.startswith("p_")]
    assert len(probs) == 4 and abs(sum(probs) - 1) < 1e-4
    official = json.loads((base / "pred.json").read_text())
    assert len(official["videos"]) == 48 == len(official["ego_model_predictions"])
    assert all(
        len(x) == 4 and all(len(v) == 4 for v in x) for x in official["exo_model_predictions"]
    )


def test_info_on_a_store_prints_a_readable_summary(pipeline_run):
    result = invoke("info", pipeline_run["store"])
    assert result.exit_code == 0
    assert "completed: 48" in result.output and "tiny-timesformer" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "/nonexistent/store.zarr"], "no such store"),
        (["extract", "/nonexistent/m.jsonl", "--store", "/tmp/x.zarr"], "m.jsonl"),
        (["fit", "/nonexistent/store.zarr"], "no such store"),
        (["extract", "m.jsonl", "--store", "s.zarr", "--tokens", "pixels"], "--tokens"),
    ],
)
def test_expected_errors_are_one_clear_message(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback():
    result = runner.invoke(app, ["--debug", "info", "/nonexistent/store.zarr"])
    assert result.exit_code != 0
    assert result.exception is not None and "no such store" in str(result.exception)


def test_predict_refuses_a_store_of_another_backbone(pipeline_run, tmp_path):
    data = pipeline_run["base"] / "data"
    other = tmp_path / "clip.zarr"
    extracted = invoke(
        "extract", data / "manifest.jsonl", "--store", other, "--backbone", "tiny-clip",
        "--frames", 4, "--device", "cpu", "--workers", 1, "--limit", 4,
    )  # fmt: skip
    assert extracted.exit_code == 0, extracted.output
    result = runner.invoke(
        app, ["predict", str(other), "--run", str(pipeline_run["runs"] / "mean-all-s0"),
              "--out", str(tmp_path / "p.csv")]
    )  # fmt: skip
    assert result.exit_code == 2
    assert "backbone.name" in result.output and "tiny-clip" in result.output
    assert not (tmp_path / "p.csv").exists()
