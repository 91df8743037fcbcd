"""A run folder's config.json may only name heads and head options this skill builds, and a
model file inside the run folder: anything else is refused in one line naming config.json and
the head, option or file, by `skill predict --run` and by a sweep that finds the run."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from skill.heads.config import FitConfig, SweepConfig
from skill.heads.lgbm import LightGBMSettings
from skill.heads.run_folder import RunConfigError, load_head, read_run_record
from skill.heads.sweep import sweep
from skill.heads.train import fit
from tests.extract_helpers import invoke_cli
from tests.token_store import shared_token_store

QUICK = dict(epochs=1, batch_size=16, hidden=16, patience=0, plots=False,
             lightgbm=LightGBMSettings(lgbm_rounds=5, lgbm_threads=1))  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return shared_token_store(tmp_path_factory)


@pytest.fixture(scope="module")
def runs(store, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    return {
        head: fit(FitConfig(store=str(store.path), out_dir=str(out), head=head, **QUICK)).run_dir
        for head in ("mean", "lightgbm")
    }


def edited(runs: dict, tmp_path: Path, run_of: str = "mean", **model) -> Path:
    """A copy of the run of head ``run_of`` whose config.json has ``model`` fields changed
    (an ``options`` dict is merged into the options; a None value removes that option)."""
    run = tmp_path / "run"
    shutil.copytree(runs[run_of], run)
    data = json.loads((run / "config.json").read_text())
    options = model.pop("options", {})
    data["model"].update(model)
    for key, value in options.items():
        if value is None:
            del data["model"]["options"][key]
        else:
            data["model"]["options"][key] = value
    (run / "config.json").write_text(json.dumps(data))
    return run


def predict_refusal(store, run: Path, tmp_path: Path) -> str:
    code, output = invoke_cli(
        "predict", str(store.path), "--run", str(run), "--out", str(tmp_path / "p.csv")
    )
    assert code == 2, output
    assert "Traceback" not in output and f"{run / 'config.json'}: " in output
    assert not (tmp_path / "p.csv").exists()
    return output


@pytest.mark.parametrize(
    "head, model, message",
    [
        ("mean", {"head": "bogus"}, "model.head 'bogus' is not a head this skill knows"),
        ("mean", {"options": {"bogus": 3}}, "model.options: unknown option bogus"),
        ("mean", {"options": {"dim": None}}, "model.options: missing option dim of head 'mean'"),
        ("mean", {"options": {"hidden": "wide"}}, "model.options do not build head 'mean'"),
        ("lightgbm", {"options": {"num_leaves": 7}}, "unknown option num_leaves"),
        ("mean", {"file": "/etc/passwd"}, "model.file '/etc/passwd' is not a file name inside"),
        ("mean", {"file": "../model.safetensors"}, "model.file '../model.safetensors' is not"),
        ("mean", {"file": "sub/model.safetensors"}, "is not a file name inside the run folder"),
    ],
)
def test_predict_refuses_what_config_json_must_not_name(store, runs, tmp_path, head, model,
                                                        message):  # fmt: skip
    run = edited(runs, tmp_path, head, **model)
    assert message in predict_refusal(store, run, tmp_path)


def test_a_model_file_that_links_out_of_the_run_folder_is_refused(store, runs, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(runs["mean"] / "model.safetensors", outside)
    run = edited(runs, tmp_path, file="linked.safetensors")
    os.symlink(outside, run / "linked.safetensors")
    output = predict_refusal(store, run, tmp_path)
    assert "model.file 'linked.safetensors' leads out of the run folder" in output
    model = dataclasses.replace(read_run_record(runs["mean"]).model, file="linked.safetensors")
    with pytest.raises(RunConfigError, match="leads out of the run folder"):
        load_head(run, model)  # the same check where a caller loads a head itself


def test_a_link_inside_the_run_folder_still_loads(runs, tmp_path):
    run = edited(runs, tmp_path, file="linked.safetensors")
    os.symlink("model.safetensors", run / "linked.safetensors")
    record = read_run_record(run)
    assert load_head(run, record.model).model is not None


def test_a_sweep_refuses_a_run_whose_config_names_an_unknown_head(store, tmp_path):
    base = FitConfig(store=str(store.path), out_dir=str(tmp_path / "out"), **QUICK)
    cfg = SweepConfig(fit=base, heads=["mean"], view_sets=["ego"], seeds=[0])
    first = sweep(cfg)
    config = first.sweep_dir / "mean-ego-s0" / "config.json"
    data = json.loads(config.read_text())
    data["model"]["head"] = "bogus"
    config.write_text(json.dumps(data))
    with pytest.raises(RunConfigError, match=f"{config}: model.head 'bogus'"):
        sweep(cfg)
    assert sorted(p.name for p in first.sweep_dir.iterdir()) == [
        "mean-ego-s0",
        "sweep.csv",
        "sweep.json",
        "sweep.md",
        "sweep_scenarios.csv",
    ]  # fmt: skip  (no refit beside it as mean-ego-s0-2)
