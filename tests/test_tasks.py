"""The package's tasks, ``classification``, ``ordinal`` and ``regression``: the CORN loss and
its levels against coral-pytorch's, the metrics against scipy (and scikit-learn when it is
installed) or their formulas written out here, the targets a manifest may state, and every
task through fit and predict with every head that reads clips."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from skill.cache.store import TokenStore
from skill.heads.config import FitConfig
from skill.heads.lgbm import LightGBMSettings
from skill.heads.registry import HEAD_READS, head_names
from skill.heads.train import fit
from skill.tasks import TargetError, get_task, task_names
from skill.tasks.metrics import fisher_z_mean, quadratic_kappa, relative_l2, spearman
from skill.tasks.ordinal import (
    corn_levels,
    corn_loss,
    corn_loss_of_probabilities,
    fuse_corn_views,
    level_probabilities,
    levels_from_probabilities,
)
from tests.extract_helpers import invoke_cli
from tests.markers import one_fast
from tests.token_store import LABELS, shared_token_store

PACKAGE_TASKS = ("classification", "ordinal", "regression")
RANKING_TASKS = ("pairwise",)
PER_CLIP_TASKS = ("demonstration",)  # learned by per-clip heads: tests/test_demonstration_task.py
"""Tasks learned from pairs of takes: tests/test_pairwise.py fits them."""
REPO = Path(__file__).resolve().parents[1]
ORDINAL = get_task("ordinal")
REGRESSION = get_task("regression")
TWO_SCORES = REGRESSION.schema(
    {"scores": [{"name": "tes", "low": 0, "high": 100}, "pcs"], "group": "apparatus"}
)


# ---- ordinal: CORN as coral-pytorch computes it ----------------------------------------------


@pytest.mark.parametrize("levels", [2, 4, 6])
def test_corn_loss_and_levels_equal_coral_pytorchs(levels):
    from coral_pytorch.dataset import corn_label_from_logits
    from coral_pytorch.losses import corn_loss as coral_corn_loss

    gen = torch.Generator().manual_seed(levels)
    logits = (3 * torch.randn(400, levels - 1, generator=gen)).requires_grad_()
    y = torch.randint(0, levels, (400,), generator=gen)
    ours, theirs = corn_loss(logits, y), coral_corn_loss(logits, y, levels)
    assert torch.allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    (ours_grad,) = torch.autograd.grad(ours, logits)
    (their_grad,) = torch.autograd.grad(theirs, logits)
    assert torch.allclose(ours_grad, their_grad, rtol=1e-5, atol=1e-9)
    expected = corn_label_from_logits(logits.detach())
    assert torch.equal(corn_levels(logits.detach()), expected)
    # The level a prediction file states: the same rule read from the level probabilities.
    probabilities = level_probabilities(logits.detach().double()).numpy()
    assert np.array_equal(levels_from_probabilities(probabilities), expected.numpy())
    assert len(set(expected.tolist())) == levels  # every level is predicted somewhere


def test_level_probabilities_are_a_distribution_whose_tail_is_the_corn_product():
    logits = torch.randn(50, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = level_probabilities(logits)
    assert torch.all(p >= 0) and torch.allclose(p.sum(dim=-1), torch.ones(50, dtype=p.dtype))
    above = torch.flip(torch.cumsum(torch.flip(p, [1]), 1), [1])[:, 1:]  # P(y > k)
    assert torch.allclose(above, torch.cumprod(torch.sigmoid(logits), dim=1))


def test_the_validation_loss_from_probabilities_is_the_corn_loss():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(300, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (300,), generator=gen)
    from_probabilities = corn_loss_of_probabilities(level_probabilities(logits).numpy(), y.numpy())
    assert from_probabilities == pytest.approx(float(corn_loss(logits, y)), rel=1e-9)


def test_the_balanced_corn_loss_weights_takes_by_level():
    gen = torch.Generator().manual_seed(3)
    logits, y = torch.randn(40, 3, generator=gen), torch.tensor([0] * 30 + [3] * 10)
    plain = ORDINAL.make_loss({"labels": LABELS}, y.numpy(), False, "cpu")
    balanced = ORDINAL.make_loss({"labels": LABELS}, y.numpy(), True, "cpu")
    assert torch.allclose(plain(logits, y), corn_loss(logits, y))
    # weights n / (C count): 40 / (2 * 30) for level 0, 40 / (2 * 10) for level 3
    weights = torch.where(y == 0, 40 / 60, 40 / 20)
    assert torch.allclose(balanced(logits, y), corn_loss(logits, y, weights))
    assert not torch.allclose(balanced(logits, y), plain(logits, y))


def test_late_fusion_of_corn_outputs_averages_the_views_level_distributions():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 3, 3, generator=gen, dtype=torch.float64)  # (B, V, K-1)
    mask = torch.tensor([[True, True, False]] * 3 + [[False, True, False]] * 3)
    fused = fuse_corn_views(logits, mask)
    per_view = level_probabilities(logits)  # (B, V, K)
    weights = mask[:, :, None].double()
    mean = (per_view * weights).sum(1) / weights.sum(1)
    assert torch.allclose(level_probabilities(fused), mean)
    assert torch.allclose(fused[3:], logits[3:, 1])  # one valid view: its own logits


# ---- ordinal: metrics ------------------------------------------------------------------------


def _kappa_written_out(y_true, y_pred, levels):
    observed = np.zeros((levels, levels))
    for t, p in zip(y_true, y_pred, strict=True):
        observed[t, p] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / len(y_true)
    w = np.array([[(i - j) ** 2 / (levels - 1) ** 2 for j in range(levels)] for i in range(levels)])
    return 1 - (w * observed).sum() / (w * expected).sum()


def test_quadratic_kappa_is_the_weighted_agreement_beyond_chance():
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 5, 200)
    y_pred = np.clip(y_true + rng.integers(-1, 2, 200), 0, 4)
    ours = quadratic_kappa(y_true, y_pred, 5)
    assert ours == pytest.approx(_kappa_written_out(y_true, y_pred, 5))
    assert 0.5 < ours < 1
    assert quadratic_kappa(y_true, y_true, 5) == 1.0
    assert quadratic_kappa(y_true, np.full(200, 2), 5) == 0.0
    try:
        from sklearn.metrics import cohen_kappa_score
    except ImportError:
        return
    assert ours == pytest.approx(
        cohen_kappa_score(y_true, y_pred, weights="quadratic", labels=list(range(5)))
    )


def test_ordinal_evaluation_reads_levels_by_corns_rule_beside_the_majority():
    # Level probabilities whose argmax (level 0) is not their median (level 1).
    scores = np.array([[0.4, 0.3, 0.3, 0.0], [0.0, 0.1, 0.1, 0.8], [0.1, 0.8, 0.1, 0.0]])
    targets, groups = np.array([1, 3, 0]), np.array(["a", "a", "b"])
    result = ORDINAL.evaluate({"labels": LABELS}, targets, scores, groups, np.array([1, 1, 2]))
    assert levels_from_probabilities(scores).tolist() == [1, 3, 1]
    assert result["top1"] == pytest.approx(2 / 3) and result["mae"] == pytest.approx(1 / 3)
    assert result["per_scenario"]["b"] == {"n": 1, "top1": 0.0, "mae": 1.0}
    majority = result["baselines"]["majority"]
    assert majority["label"] == 1 and majority["mae"] == pytest.approx((0 + 2 + 1) / 3)
    columns = ORDINAL.prediction_columns(scores, {"labels": LABELS})
    assert columns["predicted"] == [LABELS[1], LABELS[3], LABELS[1]]


def test_ordinal_refuses_labels_its_format_does_not_declare_ordered():
    with pytest.raises(TargetError, match="does not declare its labels ordered"):
        ORDINAL.schema({"labels": ["a", "b", "c"]})
    with pytest.raises(TargetError, match="--task classification"):
        ORDINAL.schema(None)
    schema = ORDINAL.schema({"labels": LABELS, "ordered": True})
    assert schema == {"labels": LABELS, "ordered": True} and ORDINAL.schema(schema) == schema


def test_the_manifest_formats_of_skill_declare_their_levels_ordered(tmp_path):
    from skill.pipeline.manifest import get_format, read_takes

    for name in ("skill", "egoexo4d", "skillformer"):
        assert get_format(name).schema == {"labels": LABELS, "ordered": True}
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"take": "t1", "videos": {"ego": "t1.mp4"}, "label": "Late Expert"}) + "\n"
    )
    dataset = read_takes(manifest, task="ordinal", missing_videos="keep")
    assert dataset.schema == {"labels": LABELS, "ordered": True}
    assert ORDINAL.encode(dataset.takes[0].label, dataset.schema) == 3


# ---- regression: metrics ---------------------------------------------------------------------


def test_spearman_and_the_fisher_z_mean_match_scipy():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(6)
    truth = rng.integers(0, 20, 300).astype(float)  # ties, as judges' scores have
    predicted = truth + rng.normal(0, 6, 300)
    groups = rng.choice(["dive", "vault", "floor", "beam"], 300)
    assert spearman(truth, predicted) == pytest.approx(spearmanr(truth, predicted).statistic)
    rhos = [spearmanr(truth[groups == g], predicted[groups == g]).statistic for g in set(groups)]
    assert fisher_z_mean(rhos) == pytest.approx(np.tanh(np.mean(np.arctanh(rhos))))
    result = REGRESSION.evaluate(
        REGRESSION.schema(None), truth[:, None], predicted[:, None], groups, truth[:200, None]
    )
    score = result["scores"]["score"]
    assert score["spearman"] == pytest.approx(spearmanr(truth, predicted).statistic)
    assert score["spearman_fisher_z"] == pytest.approx(np.tanh(np.mean(np.arctanh(rhos))))
    assert score["pearson"] == pytest.approx(pearsonr(truth, predicted).statistic)
    assert set(score["per_group"]) == set(groups) and score["groups"] == 4
    assert result["per_scenario"]["dive"]["spearman"] == score["per_group"]["dive"]["spearman"]


def test_relative_l2_is_the_squared_error_over_the_range_times_100():
    rng = np.random.default_rng(7)
    truth, predicted = rng.uniform(0, 100, 50), rng.uniform(0, 100, 50)
    expected = np.mean(((truth - predicted) / (100 - 0)) ** 2) * 100
    assert relative_l2(truth, predicted, 0, 100) == pytest.approx(expected)
    # A score without a declared range: the training targets' range.
    schema, train = REGRESSION.schema(None), np.array([[10.0], [30.0], [20.0]])
    result = REGRESSION.evaluate(schema, truth[:, None], predicted[:, None], np.full(50, ""), train)
    score = result["scores"]["score"]
    assert score["range"] == [10.0, 30.0] and score["range_from"] == "training"
    assert score["rel_l2"] == pytest.approx(np.mean(((truth - predicted) / 20) ** 2) * 100)
    mean = result["baselines"]["mean"]
    assert mean["rel_l2"] == pytest.approx(np.mean(((truth - 20) / 20) ** 2) * 100)
    assert mean["mae"] == pytest.approx(np.abs(truth - 20).mean())
    assert math.isnan(mean["spearman"]) and math.isnan(REGRESSION.baseline(result))


def test_several_scores_are_scored_each_and_averaged():
    rng = np.random.default_rng(8)
    truth = np.stack([rng.uniform(0, 100, 60), rng.uniform(20, 40, 60)], 1)
    truth[::7, 1] = np.nan  # takes without a pcs
    predicted = truth + rng.normal(0, 3, truth.shape)
    predicted[::7, 1] = 30.0
    result = REGRESSION.evaluate(TWO_SCORES, truth, predicted, np.full(60, "x"), truth)
    tes, pcs = result["scores"]["tes"], result["scores"]["pcs"]
    known = ~np.isnan(truth[:, 1])
    assert pcs["n"] == known.sum() and tes["n"] == 60
    assert tes["range"] == [0, 100] and pcs["range_from"] == "training"
    low, high = np.nanmin(truth[:, 1]), np.nanmax(truth[:, 1])
    assert pcs["rel_l2"] == pytest.approx(
        relative_l2(truth[known, 1], predicted[known, 1], low, high)
    )
    assert result["rel_l2"] == pytest.approx((tes["rel_l2"] + pcs["rel_l2"]) / 2)
    assert result["spearman"] == pytest.approx((tes["spearman"] + pcs["spearman"]) / 2)
    lines = REGRESSION.describe("test", result)
    assert "tes: rho" in lines and "undefined" in lines


def test_a_prediction_computes_the_baselines_a_fit_did_from_the_run_summary():
    rng = np.random.default_rng(9)
    train = np.stack([rng.exponential(5, 80), rng.uniform(20, 40, 80)], 1)
    train[:5, 1] = np.nan
    summary = REGRESSION.train_summary(TWO_SCORES, train)
    standing = REGRESSION.summary_targets(json.loads(json.dumps(summary)), TWO_SCORES)
    for s in range(2):
        column = standing[~np.isnan(standing[:, s]), s]
        known = train[~np.isnan(train[:, s]), s]
        assert column.mean() == pytest.approx(known.mean(), rel=1e-12)
        assert (column.min(), column.max()) == (known.min(), known.max())
    truth, predicted = train + 1.0, train - 1.0
    groups = np.full(80, "")
    at_fit = REGRESSION.evaluate(TWO_SCORES, truth, predicted, groups, train)
    at_predict = REGRESSION.evaluate(TWO_SCORES, truth, predicted, groups, standing)
    assert at_predict["baselines"]["mean"]["rel_l2"] == pytest.approx(
        at_fit["baselines"]["mean"]["rel_l2"], rel=1e-9
    )
    assert at_predict["rel_l2"] == pytest.approx(at_fit["rel_l2"], rel=1e-9)


def test_regression_trains_on_standardised_scores_and_reports_its_own_units():
    train = np.array([[10.0, np.nan], [30.0, 2.0], [50.0, 4.0]])
    loss = REGRESSION.make_loss(TWO_SCORES, train, False, "cpu")
    outputs = torch.tensor([[0.5, -1.0]])
    target = torch.tensor([[30.0, np.nan]], dtype=torch.float32)
    sd = np.std([10.0, 30.0, 50.0])
    assert float(loss(outputs, target)) == pytest.approx((0.5 - 0.0) ** 2, rel=1e-6)
    target = torch.tensor([[50.0, 4.0]], dtype=torch.float32)
    expected = ((0.5 - 20 / sd) ** 2 + (-1.0 - 1.0) ** 2) / 2
    assert float(loss(outputs, target)) == pytest.approx(expected, rel=1e-6)
    run = REGRESSION.for_run(REGRESSION.train_summary(TWO_SCORES, train))
    scores = run.to_scores(outputs).numpy()
    assert scores[0] == pytest.approx([30 + 0.5 * sd, 3.0 - 1.0], rel=1e-6)
    with pytest.raises(TargetError, match="--class-balanced"):
        REGRESSION.make_loss(TWO_SCORES, train, True, "cpu")


# ---- regression: targets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, problem",
    [
        ("7.5", "tes '7.5' is not a number"),
        (True, "tes True is not a number"),
        (float("nan"), "is not a number"),
        (101, "tes 101 is outside its declared range 0..100"),
        (-0.5, "outside its declared range"),
    ],
)
def test_a_score_that_is_not_a_number_in_its_range_is_refused(value, problem):
    with pytest.raises(TargetError, match=problem.replace("(", r"\(")):
        REGRESSION.encode({"tes": value, "pcs": 3}, TWO_SCORES)


def test_scores_are_stated_by_name_and_read_back_as_stated():
    assert REGRESSION.encode({"pcs": 31.7}, TWO_SCORES)[1] == 31.7
    assert all(math.isnan(v) for v in REGRESSION.encode(None, TWO_SCORES))
    with pytest.raises(TargetError, match="unknown score name"):
        REGRESSION.encode({"tes": 1, "PCS": 2}, TWO_SCORES)
    with pytest.raises(TargetError, match="object of score name to number"):
        REGRESSION.encode(7.0, TWO_SCORES)
    one = REGRESSION.schema(None)
    stored = np.array([REGRESSION.encode(v, one) for v in (7.3, None, 81)], dtype=np.float32)
    assert REGRESSION.decode(stored, one) == [7.3, None, 81.0]
    assert REGRESSION.labelled(stored).tolist() == [True, False, True]
    two = np.array([REGRESSION.encode({"tes": 55.13}, TWO_SCORES)], dtype=np.float32)
    assert REGRESSION.decode(two, TWO_SCORES) == [{"tes": 55.13, "pcs": None}]


@pytest.mark.parametrize(
    "declared, problem",
    [
        ({"scores": ["a", "a"]}, "distinct"),
        ({"scores": [{"name": "a", "low": 0}]}, "give both low and high"),
        ({"scores": [{"name": "a", "low": 5, "high": 1}]}, "low < high"),
        ({"scores": [{"name": "a", "scale": 5}]}, "unknown key"),
        ({"scores": "a"}, "must be a list"),
    ],
)
def test_a_regression_schema_that_cannot_be_scored_is_refused(declared, problem):
    with pytest.raises(TargetError, match=problem):
        REGRESSION.schema(declared)


def test_a_label_manifest_read_for_regression_is_refused_naming_the_task(tmp_path):
    from skill.pipeline.manifest import read_takes
    from skill.pipeline.takes import ManifestError

    manifest = tmp_path / "m.jsonl"
    lines = [{"take": f"t{i}", "videos": {"ego": f"t{i}.mp4"}, "label": None} for i in range(3)]
    lines[1]["label"] = "Novice"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, task="regression", missing_videos="keep")
    message = str(caught.value)
    assert message == (
        f"{manifest}: --task regression learns scores ('score' or 'scores'), and no take states "
        "one; the takes state levels ('label'): choose another --task"
    )


def test_lightgbm_learns_one_score_and_refuses_several():
    from skill.errors import ConfigError
    from skill.heads.lgbm import lightgbm_objective

    assert lightgbm_objective(REGRESSION, REGRESSION.schema(None))["objective"] == "regression"
    with pytest.raises(ConfigError, match=r"--head lightgbm: LightGBM learns one score .* 2 \("):
        lightgbm_objective(REGRESSION, TWO_SCORES)


# ---- every task through fit and predict -------------------------------------------------------


def test_every_task_file_registers_itself_and_is_imported():
    files = sorted(
        p.stem
        for p in (REPO / "tasks").glob("*.py")
        if p.read_text().rstrip().splitlines()[-1].startswith("register_task(")
    )
    assert tuple(files) == tuple(sorted(PACKAGE_TASKS + RANKING_TASKS + PER_CLIP_TASKS))
    assert set(files) <= set(task_names())
    init = (REPO / "tasks" / "__init__.py").read_text()
    assert all(f"from skill.tasks import {name}  # noqa: F401" in init for name in files)


QUICK = dict(epochs=12, batch_size=16, lr=3e-3, hidden=64, patience=0, plots=False, device="cpu",
             lightgbm=LightGBMSettings(lgbm_rounds=60, lgbm_learning_rate=0.1, lgbm_threads=1))  # fmt: skip
CLIP_HEADS = [h for h in head_names() if HEAD_READS[h] == "clip"]


@pytest.fixture(scope="module", params=PACKAGE_TASKS)
def task_store(request, tmp_path_factory):
    return request.param, shared_token_store(tmp_path_factory, f"task-{request.param}",
                                             task=request.param)  # fmt: skip


@pytest.mark.parametrize("head", one_fast(CLIP_HEADS, "concat"))
def test_every_head_fits_every_task_and_predicts_its_columns(task_store, head, tmp_path):
    name, store = task_store
    task = get_task(name)
    cfg = FitConfig(store=str(store.path), out_dir=str(tmp_path), head=head, name="run", **QUICK)
    result = fit(cfg)
    for split in ("val", "test"):
        metrics = result.metrics[split]
        assert all(np.isfinite(metrics[m]) for m in task.table_metrics), (split, metrics)
    out = tmp_path / "predicted.csv"
    code, output = invoke_cli("predict", str(store.path), "--run", str(result.run_dir),
                              "--out", str(out), "--device", "cpu")  # fmt: skip
    assert code == 0, output
    with open(out) as f:
        rows = list(csv.DictReader(f))
    schema = TokenStore.open(store.path).task["schema"]
    width = len(schema.get("labels") or schema.get("scores"))  # scores: (n, C) or (n, S)
    columns = task.prediction_columns(np.full((1, width), 1 / width), schema)
    assert set(columns) <= set(rows[0]) and len(rows) >= 190
    # predict scores the test split as fit did, baselines included
    assert " ".join(task.describe("test", result.metrics["test"]).split()) in output
    assert _beats_its_baseline(name, result.metrics["test"]), result.metrics["test"]


def _beats_its_baseline(task: str, metrics: dict) -> bool:
    """Well above the baseline: the store's signal is strong (tests/token_store.py)."""
    if task == "regression":
        mean = metrics["baselines"]["mean"]
        return metrics["spearman"] > 0.7 and metrics["rel_l2"] < mean["rel_l2"] / 2
    if task == "ordinal":
        return metrics["mae"] < metrics["baselines"]["majority"]["mae"] / 2
    return metrics["top1"] > metrics["baselines"]["majority"]["top1"] + 0.2


def test_a_run_of_one_task_refuses_a_store_of_another(tmp_path_factory, tmp_path):
    levels = shared_token_store(tmp_path_factory, "task-classification", task="classification")
    ordered = shared_token_store(tmp_path_factory, "task-ordinal", task="ordinal")
    cfg = FitConfig(store=str(levels.path), out_dir=str(tmp_path), head="mean", name="run",
                    **{**QUICK, "epochs": 1})  # fmt: skip
    run = fit(cfg).run_dir
    code, output = invoke_cli("predict", str(ordered.path), "--run", str(run),
                              "--out", str(tmp_path / "p.csv"), "--device", "cpu")  # fmt: skip
    assert code == 2 and output.startswith("error: "), output
    assert "the store's task" in output and "'ordinal'" in output and "'classification'" in output
    assert not (tmp_path / "p.csv").exists()


def test_egoexo4d_files_of_an_ordinal_run_hold_its_levels_and_scores_refuse_them(
    tmp_path_factory, tmp_path
):
    ordered = shared_token_store(tmp_path_factory, "task-ordinal", task="ordinal")
    cfg = FitConfig(store=str(ordered.path), out_dir=str(tmp_path), head="late", name="run",
                    **QUICK)  # fmt: skip
    run = str(fit(cfg).run_dir)
    common = ("--run", run, "--device", "cpu", "--split", "test")
    code, output = invoke_cli("predict", str(ordered.path), *common, "--out",
                              str(tmp_path / "p.csv"))  # fmt: skip
    assert code == 0, output
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    for fmt in ("egoexo4d-labels", "egoexo4d"):
        out = tmp_path / f"{fmt}.json"
        code, output = invoke_cli("predict", str(ordered.path), *common, "--format", fmt,
                                  "--out", str(out))  # fmt: skip
        assert code == 0, output
    labels = json.loads((tmp_path / "egoexo4d-labels.json").read_text())
    assert labels["videos"] == [r["take"] for r in rows]
    assert labels["predictions"] == [r["predicted"] for r in rows]  # CORN's rule, not argmax
    logits = json.loads((tmp_path / "egoexo4d.json").read_text())
    assert set(logits) >= {"videos"} and logits["videos"] == labels["videos"]
    scores = shared_token_store(tmp_path_factory, "task-regression", task="regression")
    cfg = FitConfig(store=str(scores.path), out_dir=str(tmp_path), head="mean", name="scores",
                    **{**QUICK, "epochs": 1})  # fmt: skip
    code, output = invoke_cli("predict", str(scores.path), "--run", str(fit(cfg).run_dir),
                              "--format", "egoexo4d", "--out", str(tmp_path / "s.json"))  # fmt: skip
    assert code == 2 and "learned task regression; write --format csv" in output
