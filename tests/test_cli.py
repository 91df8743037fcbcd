"""The `skill` command as a user meets it: end to end in-process, help, and error messages."""

from __future__ import annotations

import csv
import json
import re
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
            "--out",
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
    label = {str(t): int(y) for t, y in zip(table.ids, table.target, strict=True)}
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
        (
            ["extract", str(ROOT / "pyproject.toml"), "--store", "s.zarr", "--tokens", "pixels"],
            "--tokens",
        ),  # settings are refused before the manifest is read
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


# ---- cheap mistakes are answered before heavy imports --------------------------------------
HEAVY = ("torch", "transformers", "zarr", "lightgbm", "decord", "av")
WATCH_IMPORTS = """
import sys
from skill.cli import app
try:
    app(sys.argv[1:], prog_name="skill")
except SystemExit as done:
    code = done.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("heavy imports:", heavy, file=sys.stderr)
sys.exit(code)
"""


def slow(*values):
    """A parameter set that only `-m slow` runs."""
    return pytest.param(*values, marks=pytest.mark.slow)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """A store every cheap mistake below names and none writes to: built once."""
    from tests.token_store import build_token_store

    folder = tmp_path_factory.mktemp("cheap")
    return build_token_store(folder / "store.zarr", n_participants=12, takes_per_participant=1).path


@pytest.mark.parametrize(
    "args, message",
    [
        # a process each: the default run checks each command once or twice, -m slow all
        (["fit", "/no/such.zarr"], "/no/such.zarr: no such store"),
        slow(["fit", "STORE", "--head", "nosuch"], "--head: 'nosuch' is not a head"),
        (["fit", "STORE", "--views", "ego,exo9"], "--views: unknown view 'exo9'"),
        slow(["fit", "STORE", "--sweep"], "No such option: --sweep"),  # a grid: skill sweep
        slow(["sweep", "STORE", "--heads", "mean,nosuch"], "--heads: 'nosuch' is not"),
        slow(["sweep", "STORE", "--view-sets", "ego;exo9"], "--view-sets: "),
        (["sweep", "STORE", "--stores", "/no/other.zarr"], "/no/other.zarr: no such store"),
        slow(["predict", "/no/such.zarr", "--run", "r", "--out", "p.csv"], "no such store"),
        (["predict", "STORE", "--run", "r", "--out", "p.csv", "--views", "exo9"], "--views"),
        (["adapt", "/no/m.jsonl", "--out", "a"], "/no/m.jsonl: manifest not found"),
        (["extract", "/no/m.jsonl", "--store", "s.zarr"], "/no/m.jsonl: manifest not found"),
    ],
)
def test_a_cheap_mistake_is_refused_before_torch_is_imported(args, message, small_store, tmp_path):
    """A wrong store, view, head or manifest costs a second, not the import of torch."""
    args = [str(small_store) if arg == "STORE" else arg for arg in args]
    script = WATCH_IMPORTS.format(heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in " ".join(done.stderr.split()), done.stderr
    assert "heavy imports: []" in done.stderr, done.stderr


def test_the_declared_head_names_are_the_registered_ones_without_importing_a_head():
    check = (
        "import sys\n"
        "from skill.heads.registry import declared_head_names\n"
        "names = declared_head_names()\n"
        "assert 'torch' not in sys.modules\n"
        "from skill.heads.registry import head_names\n"
        "assert names == head_names(), (names, head_names())\n"
        "print(names)\n"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cvf" in done.stdout and "lightgbm" in done.stdout


# ---- tables and lines in a log are never cut ----------------------------------------------
def test_a_sweep_table_written_to_a_log_keeps_every_cell_whole(tmp_path):
    """Output that is not a terminal (here typer's runner; a file or a pipe alike) gets each
    table row on one line, every cell whole, however wide: rich would fit it to 80 columns."""
    from tests.token_store import PROVENANCE, build_token_store

    long_name = "a-backbone-whose-name-alone-is-wider-than-half-a-terminal-line"
    other = {**PROVENANCE, "backbone": {"name": long_name, "adapter": None}}
    small = {"n_participants": 20, "takes_per_participant": 2}  # train, val and test
    a = build_token_store(tmp_path / "a.zarr", **small).path
    b = build_token_store(tmp_path / "b.zarr", **small, seed=1, provenance=other).path
    result = invoke(
        "sweep", a, "--stores", b, "--heads", "mean", "--view-sets", "ego", "--seeds", "0,1",
        "--epochs", "1", "--hidden", "8", "--no-plots", "--out", tmp_path / "runs",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = [line for line in lines if " mean " in line and "±" in line]
    assert len(rows) == 2, result.output  # one row per backbone, each on one line
    assert any(long_name in row for row in rows) and "…" not in result.output
    for row in rows:  # val and test, top-1 and balanced accuracy: mean ± std, all four whole
        assert len(re.findall(r"\d\.\d{3} ± \d\.\d{3}", row)) == 4, row
    header = next(line for line in lines if "val top-1" in line)
    assert "test bal.acc" in header and "s/fit" in header
    assert max(map(len, rows)) > 80  # wider than the 80 columns rich assumes off a terminal


def test_a_long_line_to_a_log_is_not_wrapped():
    import io

    from skill.cli import OutputConsole

    log = io.StringIO()
    line = "predicted 48 takes of split test -> " + "/a/rather/deep/folder" * 8 + "/pred.csv"
    OutputConsole(file=log).print(line)
    assert log.getvalue() == line + "\n"
