"""Every per-take task from `skill synth --task` through extract, fit, sweep and predict, by the
CLI: what a user of each task runs first."""

from __future__ import annotations

import csv

import pytest

from skill.synth import SynthConfig, synthesize
from tests.extract_helpers import extract_args, invoke_cli

pytestmark = pytest.mark.slow

# The column `skill predict` writes for each task's prediction.
PREDICTION_COLUMN = {"ordinal": "predicted", "regression": "score", "pairwise": "skill_score"}


def task_extract_args(task: str, folder) -> list[str]:
    """What extract needs beyond the manifest for ``task`` (pairwise: its pairs files)."""
    args = ["--task", task]
    if task == "pairwise":
        pairs = ",".join(
            str(folder / "pairs" / f"{split}.txt") for split in ("train", "val", "test")
        )
        args += ["--pairs", pairs]
    return args


@pytest.mark.parametrize("task", sorted(PREDICTION_COLUMN))
def test_a_synthetic_dataset_of_each_task_runs_extract_fit_sweep_and_predict(task, tmp_path):
    data = tmp_path / "data"
    manifest = synthesize(SynthConfig(takes=48, size=32, exo_views=1, task=task), data, workers=1)
    store = tmp_path / "store.zarr"
    code, output = invoke_cli(*extract_args(manifest, store, *task_extract_args(task, data)))
    assert code == 0, output

    code, output = invoke_cli("fit", str(store), "--head", "concat", "--epochs", "3",
                              "--out", str(tmp_path / "runs"), "--name", "run",
                              "--device", "cpu", "--no-plots")  # fmt: skip
    assert code == 0, output
    code, output = invoke_cli("sweep", str(store), "--heads", "mean,late", "--view-sets", "all",
                              "--seeds", "0", "--epochs", "2", "--out", str(tmp_path / "runs"),
                              "--no-plots")  # fmt: skip
    assert code == 0, output
    out = tmp_path / "predictions.csv"
    code, output = invoke_cli("predict", str(store), "--run", str(tmp_path / "runs" / "run"),
                              "--out", str(out), "--device", "cpu")  # fmt: skip
    assert code == 0, output
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 48
    assert any(name.startswith(PREDICTION_COLUMN[task]) for name in rows[0]), rows[0].keys()
