"""`skill demo` as a new user runs it: the whole job, and the things it must show: the held-out
split predicted, and the accuracy it prints computed from the file it wrote."""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from skill.cli import app
from tests.token_store import shared_token_store


def _truth(store_path) -> dict[str, str]:
    """take -> label name, from the store (not from the prediction file)."""
    from skill.cache.store import TokenStore

    store = TokenStore.open(store_path)
    table, names = store.take_table(), list(store.task["schema"]["labels"])
    return {
        str(t): names[int(lab)] for t, lab in zip(table.ids, table.target, strict=True) if lab >= 0
    }


def _file_top1(path, truth: dict[str, str]) -> tuple[float, set[str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    hits = [row["predicted"] == truth[row["take"]] for row in rows if row["take"] in truth]
    return sum(hits) / len(hits), {row["split"] for row in rows}


@pytest.mark.slow
def test_demo_predicts_the_held_out_split_and_prints_the_file_s_accuracy(tmp_path, capsys):
    from skill.cli import _print_demo_verdict
    from skill.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(out=tmp_path / "demo"), say=lambda line: None)
    assert result.best_above_chance, result.best
    assert result.fusion_beats_single_views, (result.best_fusion, result.best_single_view)
    official = json.loads(result.prediction_json.read_text())
    assert len(official["videos"]) == result.best["n_test"] == 40  # test only, not all 200
    assert (result.sweep_dir / "sweep.csv").is_file() and not result.warnings
    top1, splits = _file_top1(result.predictions, _truth(result.store))
    assert splits == {"test"}
    score = result.file_score
    assert (score.split, score.takes, score.labelled) == ("test", 40, 40)
    assert score.top1 == pytest.approx(top1) == pytest.approx(result.best["test_top1_mean"])
    assert score.majority_top1 == pytest.approx(result.best["test_majority_top1"])
    _print_demo_verdict(result)
    printed = capsys.readouterr().out
    assert f"top-1 {top1:.3f} read back from the file" in printed
    assert f"majority baseline {score.majority_top1:.3f}" in printed
    assert "the 40 held-out test takes" in printed and "CPU-s" in printed


def test_the_prediction_file_is_scored_as_written(tmp_path_factory, tmp_path):
    from skill.demo import score_prediction_csv
    from skill.heads.config import FitConfig, PredictConfig
    from skill.heads.predict import predict
    from skill.heads.train import fit

    store = shared_token_store(tmp_path_factory)
    run = fit(FitConfig(store=str(store.path), head="mean", views="all", epochs=3, batch_size=16,
                        hidden=16, patience=0, plots=False, out_dir=str(tmp_path)))  # fmt: skip
    path = tmp_path / "pred.csv"
    predicted = predict(
        PredictConfig(store=store.path, run=run.run_dir, out_csv=path, split="test")
    )
    score = score_prediction_csv(path, run.run_dir)
    truth = _truth(store.path)
    top1, splits = _file_top1(path, truth)
    assert splits == {"test"} and score.split == "test" and score.takes == len(predicted.take_ids)
    assert score.top1 == pytest.approx(top1) == pytest.approx(predicted.metrics["test"]["top1"])
    counts = json.loads((run.run_dir / "config.json").read_text())["takes"]["train_summary"][
        "class_counts"
    ]
    majority = max(range(len(counts)), key=lambda c: (counts[c], -c))
    assert score.majority_class == predicted.schema["labels"][majority]
    # Another prediction written into the file changes the score: it is read from the file.
    rows = list(csv.DictReader(path.open(newline="")))
    wrong = next(row for row in rows if row["predicted"] == truth.get(row["take"]))
    wrong["predicted"] = next(c for c in predicted.schema["labels"] if c != wrong["predicted"])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert score_prediction_csv(path, run.run_dir).top1 == pytest.approx(
        score.top1 - 1 / score.labelled
    )


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "not a demo folder" in result.output
    assert (tmp_path / "mine.txt").read_text() == "precious"
