"""The task is a seam: a task registered in this file alone, a two-output regression (two
named scores per take, mean squared error), goes through a store, `skill fit` with neural
heads and LightGBM's refusal, `skill sweep` and `skill predict` without any edit of the
package. Its arithmetic is written here, so what the stages produce is checked against it."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from skill.cache.store import STATUS_COMPLETE, TakeResult, TakeRow, TokenStore
from skill.tasks import TargetError, TargetSpec, register_task, task_record
from tests.extract_helpers import invoke_cli

SCORES = ("execution", "difficulty")
VIEWS = ["ego", "exo1"]
CLIPS, TOKENS, DIM, FRAMES = 2, 3, 16, 4


class TwoScores:
    """Two scores per take in [0, 10]; stored float32 (n, 2), NaN-free fill -1 = unscored."""

    name = "two-scores"
    monitors = ("loss",)
    table_metrics = ("rmse", "mae")
    baseline_name = "mean"
    metric_labels = {"rmse": "RMSE"}
    class_probabilities = False

    def schema(self, declared):
        return {"scores": list((declared or {}).get("scores") or SCORES)}

    def target_spec(self, schema):
        return TargetSpec("score", "float32", (len(schema["scores"]),), -1.0, low=0.0, high=10.0)

    def encode(self, value, schema):
        if value is None:
            return [-1.0] * len(schema["scores"])
        if len(value) != len(schema["scores"]) or not all(0 <= v <= 10 for v in value):
            raise TargetError(f"scores {value!r} are not {len(schema['scores'])} values in 0..10")
        return [float(v) for v in value]

    def decode(self, stored, schema):
        return [None if row[0] < 0 else row.tolist() for row in np.asarray(stored)]

    def labelled(self, stored):
        return np.asarray(stored)[:, 0] >= 0

    def strata(self, stored):
        return np.zeros(len(stored), dtype=np.int64)

    def train_summary(self, schema, train_targets):
        return {"mean": np.asarray(train_targets).mean(axis=0).tolist()}

    def summary_targets(self, summary, schema):
        return np.asarray([summary["mean"]], dtype=np.float32)

    def output_width(self, schema):
        return len(schema["scores"])

    def sample_weights(self, schema, train_targets):
        raise TargetError("two-scores has no groups to balance")

    def make_loss(self, schema, train_targets, balanced, device):
        import torch

        return torch.nn.MSELoss()

    def torch_targets(self, stored):
        import torch

        return torch.from_numpy(np.asarray(stored, dtype=np.float32))

    def to_scores(self, outputs):
        return outputs.float()

    def fuse_views(self, outputs, mask):
        weights = mask[:, :, None].to(outputs.dtype)
        return (outputs * weights).sum(dim=1) / weights.sum(dim=1)

    def for_run(self, summary):
        return self

    def validation_row(self, scores, targets):
        return {"val_loss": float(((scores - targets) ** 2).mean())}

    def monitor_key(self, row, monitor):
        return (-row["val_loss"],)

    def evaluate(self, schema, targets, scores, groups, train_targets):
        error = np.asarray(scores) - np.asarray(targets)
        mean = np.asarray(train_targets).mean(axis=0)
        return {
            "n": len(targets),
            "rmse": float(np.sqrt((error**2).mean())) if len(targets) else math.nan,
            "mae": float(np.abs(error).mean()) if len(targets) else math.nan,
            "per_scenario": {},
            "baselines": {"mean": {"rmse": float(np.sqrt(((mean - targets) ** 2).mean()))}},
        }

    def describe(self, split, scores):
        return f"{split} (n={scores['n']}): rmse {scores['rmse']:.3f}"

    def baseline(self, scores):
        return scores["baselines"]["mean"]["rmse"]

    def chance(self, schema):
        return None

    def prediction_columns(self, scores, schema):
        return {name: scores[:, i].tolist() for i, name in enumerate(schema["scores"])}

    def plot_run(self, folder, metrics, schema, title):
        return []

    def lightgbm_objective(self, schema):
        raise TargetError("two-scores has no LightGBM objective (two outputs)")

    def lightgbm_row(self, evals):
        raise AssertionError("never trained")

    def lightgbm_scores(self, raw):
        raise AssertionError("never trained")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store of the regression task whose first score is a linear read-out of the ego
    tokens and whose second is of exo1's: a head that learns beats the training mean."""
    register_task(TwoScores())
    record = task_record("two-scores", TwoScores().schema(None))
    path = tmp_path_factory.mktemp("seam") / "scores.zarr"
    created = TokenStore.create(path, provenance={"backbone": {"name": "synthetic"}},
                                views=VIEWS, task=record, clips=CLIPS, tokens=TOKENS, dim=DIM,
                                frames=FRAMES)  # fmt: skip
    rng = np.random.default_rng(0)
    n = 120
    tokens = rng.normal(size=(n, len(VIEWS), CLIPS, TOKENS, DIM)).astype(np.float16)
    scores = np.clip(5 + 2 * tokens[:, :, :, :, 0].mean(axis=(2, 3)), 0, 10)  # (n, 2)
    splits = ["train"] * 80 + ["val"] * 20 + ["test"] * 20
    rows = [
        TakeRow(f"t{i:03d}", scores[i].tolist(), "s", f"p{i // 4}", splits[i]) for i in range(n)
    ]
    created.add_takes(rows)
    frames = np.zeros((len(VIEWS), CLIPS, FRAMES), dtype=np.int32)
    results = [
        TakeResult(
            tokens=tokens[i],
            valid=np.ones(len(VIEWS), bool),
            frame_index=frames,
            timestamp=frames.astype(np.float32),
            padded=np.zeros(len(VIEWS)),
            status=STATUS_COMPLETE,
        )  # fmt: skip
        for i in range(n)
    ]
    created.write_takes(0, results)
    created.pack()
    return path


QUICK = ["--epochs", "40", "--batch-size", "16", "--no-plots", "--device", "cpu"]


def test_fit_learns_the_task_and_records_it(store, tmp_path):
    code, output = invoke_cli("fit", str(store), "--head", "concat", "--monitor", "loss",
                              *QUICK, "--out", str(tmp_path))  # fmt: skip
    assert code == 0, output
    run = next(tmp_path.iterdir())
    import json

    config = json.loads((run / "config.json").read_text())
    assert config["task"] == {"name": "two-scores", "schema": {"scores": list(SCORES)}}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["rmse"] < metrics["test"]["baselines"]["mean"]["rmse"]
    with open(run / "predictions.csv") as f:
        header = next(csv.reader(f))
    assert header == ["take", "split", *SCORES]


def test_lightgbm_is_refused_by_the_task_in_one_line(store, tmp_path):
    code, output = invoke_cli("fit", str(store), "--head", "lightgbm", *QUICK,
                              "--out", str(tmp_path))  # fmt: skip
    assert code == 2 and output.startswith("error: ") and "no LightGBM objective" in output


def test_sweep_tabulates_the_tasks_metrics(store, tmp_path):
    code, output = invoke_cli("sweep", str(store), "--heads", "mean,concat", "--view-sets",
                              "ego;all", "--seeds", "0", "--monitor", "loss", *QUICK,
                              "--out", str(tmp_path))  # fmt: skip
    assert code == 0, output
    with open(tmp_path / "sweep" / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {"test_rmse_mean", "test_mae_mean", "test_mean_rmse"} <= set(rows[0])
    assert all(float(r["test_rmse_mean"]) > 0 for r in rows)


def test_predict_writes_the_tasks_columns_and_metrics(store, tmp_path):
    code, output = invoke_cli("fit", str(store), "--head", "mean", "--monitor", "loss", *QUICK,
                              "--out", str(tmp_path / "runs"), "--name", "run")  # fmt: skip
    assert code == 0, output
    out = tmp_path / "pred.csv"
    code, output = invoke_cli("predict", str(store), "--run", str(tmp_path / "runs" / "run"),
                              "--out", str(out), "--device", "cpu")  # fmt: skip
    assert code == 0, output
    with open(out) as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 120 and set(SCORES) <= set(lines[0])
    assert "rmse" in output
