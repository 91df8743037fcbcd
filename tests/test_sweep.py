"""`skill sweep` logic: every combination, one load per view set, a mean ± std table."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import skill.heads.sweep
from skill.heads.config import FitConfig, SweepConfig
from skill.heads.lgbm import LightGBMSettings
from skill.heads.sweep import markdown_table, mean_std, sweep, table_columns
from skill.tasks import get_task
from tests.token_store import shared_token_store

QUICK = dict(epochs=8, batch_size=16, lr=3e-3, hidden=32, patience=0, plots=False,
             lightgbm=LightGBMSettings(lgbm_rounds=60, lgbm_learning_rate=0.1,
                                       lgbm_threads=1))  # fmt: skip


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    store = shared_token_store(tmp_path_factory)
    out = tmp_path_factory.mktemp("sweeps")
    loads = []
    original = skill.heads.sweep.load_selection

    def counting_load(path, views, *args, **kwargs):
        loads.append(views)
        return original(path, views, *args, **kwargs)

    skill.heads.sweep.load_selection = counting_load
    try:
        base = FitConfig(store=str(store.path), out_dir=str(out), **QUICK)
        grid = dict(heads=["mean", "lightgbm"], view_sets=["ego", "all"], seeds=[0, 1])
        result = sweep(SweepConfig(fit=base, **grid))
    finally:
        skill.heads.sweep.load_selection = original
    return result, loads


def test_every_combination_is_fitted_once_per_view_set_load(swept):
    result, loads = swept
    assert loads == ["ego", "all"]  # each view set read from the store once
    assert len(result.fits) == 8
    runs = sorted(p.name for p in result.sweep_dir.iterdir() if p.is_dir())
    assert runs == sorted(f"{h}-{v}-s{s}" for h in ("mean", "lightgbm") for v in ("ego", "all")
                          for s in (0, 1))  # fmt: skip
    assert all((result.sweep_dir / r / "config.json").is_file() for r in runs)


def test_table_rows_hold_mean_and_std_over_seeds(swept):
    result, _ = swept
    assert [(r["head"], r["views"]) for r in result.rows] == [
        ("mean", "ego"), ("lightgbm", "ego"), ("mean", "all"), ("lightgbm", "all")
    ]  # fmt: skip
    by_run = {(f.config.head, f.config.views, f.config.seed): f.metrics for f in result.fits}
    for row in result.rows:
        assert row["seeds"] == 2
        assert row["n_val"] == by_run[(row["head"], row["views"], 0)]["val"]["n"]
        for split in ("val", "test"):
            for metric in ("top1", "balanced_accuracy", "macro_f1"):
                values = [by_run[(row["head"], row["views"], s)][split][metric] for s in (0, 1)]
                assert row[f"{split}_{metric}_mean"] == pytest.approx(np.mean(values))
                assert row[f"{split}_{metric}_std"] == pytest.approx(np.std(values, ddof=1))
        assert row["fit_seconds_mean"] > 0
    # the class information of the exo views shows up in the table
    top1 = {(r["head"], r["views"]): r["val_top1_mean"] for r in result.rows}
    assert top1[("lightgbm", "all")] > top1[("lightgbm", "ego")] + 0.15
    assert top1[("mean", "all")] > top1[("mean", "ego")] + 0.15


def test_seeds_change_the_neural_runs(swept):
    result, _ = swept
    mean_all = next(r for r in result.rows if (r["head"], r["views"]) == ("mean", "all"))
    histories = [f.metrics["history"] for f in result.fits
                 if f.config.head == "mean" and f.config.views == "all"]  # fmt: skip
    assert histories[0] != histories[1]
    assert mean_all["val_top1_std"] >= 0


def test_sweep_files(swept):
    result, _ = swept
    with open(result.sweep_dir / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and list(rows[0]) == table_columns(get_task("classification"))
    assert float(rows[0]["val_top1_mean"]) == pytest.approx(
        result.rows[0]["val_top1_mean"], abs=1e-5
    )
    # the main table, then (after a blank line) the per-scenario tables
    markdown = (result.sweep_dir / "sweep.md").read_text().split("\n\n")[0].splitlines()
    assert len(markdown) == 2 + 4
    assert markdown[0].startswith("| head | views | seeds | val top1 |")
    assert " ± " in markdown[2] and "| mean | ego | 2 |" in markdown[2]


def test_mean_std_and_missing_splits():
    assert mean_std([0.5]) == (0.5, 0.0)
    mean, std = mean_std([0.4, 0.6])
    assert mean == pytest.approx(0.5) and std == pytest.approx(np.std([0.4, 0.6], ddof=1))
    row = {"head": "mean", "views": "ego", "seeds": 1, "n_val": 10, "n_test": 0,
           "task": "classification", "headline": "top1", "baseline": "majority"}  # fmt: skip
    for split in ("val", "test"):
        for metric in ("top1", "balanced_accuracy", "macro_f1"):
            value = 0.5 if split == "val" else float("nan")
            row[f"{split}_{metric}_mean"], row[f"{split}_{metric}_std"] = value, 0.0
    row["fit_seconds_mean"], row["fit_seconds_std"] = 1.0, 0.0
    table = markdown_table([row])
    header = next(line for line in table.splitlines() if line.startswith("| head"))
    assert "test" not in header and "| 0.500 |" in table
    assert table.startswith("One seed") and "±" not in table  # no bare "± 0.000"


def test_sweep_refuses_an_empty_grid(tmp_path_factory):
    store = shared_token_store(tmp_path_factory)
    with pytest.raises(ValueError, match="at least one head"):
        SweepConfig(fit=FitConfig(store=str(store.path)), heads=[], view_sets=["all"], seeds=[0])


def test_sweep_config_problems_name_the_option(tmp_path_factory):
    from skill.errors import ConfigError

    base = FitConfig(store=str(shared_token_store(tmp_path_factory).path))
    with pytest.raises(ConfigError, match="--heads: 'nope' is not a head"):
        SweepConfig(fit=base, heads=["mean", "nope"])
    with pytest.raises(ConfigError, match="seeds must be integers"):
        SweepConfig(fit=base, seeds=["one"])
    with pytest.raises(ConfigError, match="--name '.*' must be a plain folder name"):
        SweepConfig(fit=base, name="../up")
    assert SweepConfig(fit=base, seeds=["1", 2]).seeds == [1, 2]
