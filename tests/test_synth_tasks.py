"""`skill synth --task`: a latent skill per take behind the levels, scores and pairs it
writes, and sweeps of score and ordered-level stores showing their task's columns."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from skill.errors import ConfigError
from skill.pipeline.manifest import read_pairs, read_takes
from skill.synth import INFO_NAME, MANIFEST_NAME, SynthConfig, synthesize
from skill.synth.config import SCORE_RANGE
from skill.synth.motion import cue
from skill.synth.plan import plan_takes
from skill.synth.world import PLACEMENT_ERROR_M, SPEED, TREMOR_M
from skill.tasks import metrics
from skill.tasks.classification import EGOEXO4D_LEVELS as LABELS

TINY = {"takes": 24, "participants": 12, "size": 16, "frames": 8, "exo_views": 1}


def synth(tmp_path_factory, **options) -> Path:
    out = tmp_path_factory.mktemp(f"synth-{options.get('task', 'classification')}")
    synthesize(SynthConfig(seed=0, **TINY, **options), out, workers=1)
    return out


@pytest.fixture(scope="module")
def regression(tmp_path_factory) -> Path:
    return synth(tmp_path_factory, task="regression", scores="tes,pcs")


@pytest.fixture(scope="module")
def pairwise(tmp_path_factory) -> Path:
    return synth(tmp_path_factory, task="pairwise", pairs_per_take=3)


def info(folder: Path) -> dict:
    return json.loads((folder / INFO_NAME).read_text())


def test_the_level_is_the_latent_binned_for_every_latent_task():
    for task in ("ordinal", "regression", "pairwise"):
        specs = plan_takes(SynthConfig(task=task, **TINY))
        for spec in specs:
            assert spec.participant.level == math.floor(spec.latent), (task, spec.take_id)
        latents = [s.latent for s in specs]
        levels = [s.participant.level for s in specs]
        # Monotone with the level: every take of a higher level has a higher latent.
        for low in range(len(LABELS) - 1):
            below = max(x for x, lv in zip(latents, levels, strict=True) if lv == low)
            above = min(x for x, lv in zip(latents, levels, strict=True) if lv == low + 1)
            assert below < above
    # Takes vary around their participant's skill: not one value per participant.
    assert len(set(latents)) > len({s.participant.pid for s in specs})


def test_classification_takes_have_no_latent_and_keep_their_levels_cues():
    specs = plan_takes(SynthConfig(**TINY))
    assert all(spec.latent is None for spec in specs)
    spec = specs[0]
    assert cue(TREMOR_M, spec) == TREMOR_M[spec.participant.level]


def test_the_cues_follow_the_latent_between_the_levels_centres():
    spec = plan_takes(SynthConfig(task="regression", **TINY))[0]
    at = [cue(PLACEMENT_ERROR_M, replace(spec, latent=x)) for x in np.linspace(0, 3.99, 50)]
    assert all(b <= a for a, b in zip(at, at[1:], strict=False))  # less error with more skill
    assert cue(SPEED, replace(spec, latent=3.5)) == SPEED[3]
    assert cue(TREMOR_M, replace(spec, latent=1.0)) == pytest.approx(sum(TREMOR_M[:2]) / 2)


def test_regression_manifest_declares_its_scores_and_they_follow_the_latent(regression):
    dataset = read_takes(regression / MANIFEST_NAME, task="regression")
    first = json.loads((regression / MANIFEST_NAME).read_text().splitlines()[0])
    low, high = SCORE_RANGE
    assert first["schema"]["scores"] == [
        {"name": "tes", "low": low, "high": high},
        {"name": "pcs", "low": low, "high": high},
    ]
    latents = info(regression)["latents"]
    tes = [take.scores["tes"] for take in dataset.takes]
    pcs = [take.scores["pcs"] for take in dataset.takes]
    assert all(low <= v <= high for v in tes + pcs)
    truth = [latents[take.take_id] for take in dataset.takes]
    # The first score has the least judges' noise.
    assert metrics.spearman(np.array(truth), np.array(tes)) > 0.9
    assert np.abs(np.array(tes) - np.array(pcs)).max() > 0
    for take in dataset.takes:  # the level is still stated: the latent binned
        assert take.label == LABELS[math.floor(latents[take.take_id])]


def test_ordinal_manifest_declares_its_levels_ordered(tmp_path_factory):
    folder = synth(tmp_path_factory, task="ordinal")
    first = json.loads((folder / MANIFEST_NAME).read_text().splitlines()[0])
    assert first == {"schema": {"labels": list(LABELS), "ordered": True}}
    dataset = read_takes(folder / MANIFEST_NAME, task="ordinal")
    assert {take.label for take in dataset.takes} == set(LABELS)
    assert "latents" in info(folder) and info(folder)["config"]["task"] == "ordinal"


def test_pairs_files_parse_within_splits_with_the_better_take_first(pairwise):
    dataset = read_takes(pairwise / MANIFEST_NAME, task="regression")
    files = sorted((pairwise / "pairs").glob("*.txt"))
    assert [f.name for f in files] == ["test.txt", "train.txt", "val.txt"]
    pairs = read_pairs(files, dataset.takes)  # refuses unknown takes and pairs across splits
    latents = info(pairwise)["latents"]
    config = SynthConfig(task="pairwise", **TINY)
    split_of = {take.take_id: take.split for take in dataset.takes}
    counts = info(pairwise)["pairs"]
    for split in ("train", "val", "test"):
        chosen = pairs.of_split(split)
        assert len(chosen) == counts[split] > 0
        assert len({(p.better, p.worse) for p in chosen}) == len(chosen)  # no pair twice
        for pair in chosen:
            assert split_of[pair.better] == split_of[pair.worse] == split
            assert latents[pair.better] >= latents[pair.worse] + config.pair_gap


def test_a_classification_dataset_records_no_task_settings(tmp_path_factory):
    folder = synth(tmp_path_factory)
    recorded = info(folder)
    assert "task" not in recorded["config"] and "latents" not in recorded
    first = json.loads((folder / MANIFEST_NAME).read_text().splitlines()[0])
    assert "schema" not in first and "score" not in first


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"task": "ranking"}, "--task"),
        ({"task": "regression", "kind": "order"}, "--kind cues"),
        ({"task": "regression", "scores": "tes,tes"}, "--scores"),
        ({"task": "regression", "scores": "tes,"}, "--scores"),
        ({"task": "regression", "score_noise": -1.0}, "--score-noise"),
        ({"task": "pairwise", "pairs_per_take": 0}, "--pairs-per-take"),
        ({"task": "pairwise", "pair_gap": 1.0}, "--pair-gap"),
    ],
)
def test_bad_task_settings_are_refused_naming_the_option(options, flag):
    with pytest.raises(ConfigError, match=flag):
        SynthConfig(**{**TINY, **options})


# ---- sweeps of other tasks ---------------------------------------------------------------
QUICK = dict(epochs=6, batch_size=16, hidden=16, patience=0, plots=False)


def sweep_of(tmp_path_factory, task: str):
    from skill.heads.config import FitConfig, SweepConfig
    from skill.heads.sweep import sweep
    from tests.token_store import shared_token_store

    store = shared_token_store(tmp_path_factory, name=f"sweep-{task}", task=task)
    out = tmp_path_factory.mktemp(f"sweep-{task}")
    base = FitConfig(store=str(store.path), out_dir=str(out), **QUICK)
    return sweep(SweepConfig(fit=base, heads=["mean"], view_sets=["all"], seeds=[0, 1]))


def test_a_regression_sweep_tables_rho_and_the_means_relative_l2(tmp_path_factory, capsys):
    from skill.cli import print_sweep_table

    result = sweep_of(tmp_path_factory, "regression")
    print_sweep_table(result.rows)
    printed = capsys.readouterr().out
    assert "val rho" in printed and "test rel-L2x100" in printed
    row = result.rows[0]
    mean_l2 = row["test_mean_rel_l2"]
    assert np.isfinite(mean_l2) and f"rel-L2x100 val {row['val_mean_rel_l2']:.3f}" in printed
    assert "mean baseline" in printed and "chance" not in printed
    table = (result.sweep_dir / "sweep.md").read_text()
    header = table.splitlines()[0]
    assert "test spearman" in header and "test mean rel_l2" in header
    assert "mean spearman" not in header  # a constant has no rho
    assert "Fisher-z mean" in table and "test spearman per scenario" in table
    csv_header = (result.sweep_dir / "sweep.csv").read_text().splitlines()[0]
    assert "test_mean_rel_l2" in csv_header and "test_spearman_fisher_z_mean" in csv_header


def test_an_ordinal_sweep_tables_mae_beside_the_majoritys(tmp_path_factory, capsys):
    from skill.cli import print_sweep_table

    result = sweep_of(tmp_path_factory, "ordinal")
    print_sweep_table(result.rows)
    printed = capsys.readouterr().out
    assert "val MAE" in printed and "test top-1" in printed
    row = result.rows[0]
    assert f"MAE val {row['val_majority_mae']:.3f}" in printed
    assert printed.count("majority baseline (most common training label)") == 1
    header = (result.sweep_dir / "sweep.md").read_text().splitlines()[0]
    assert "test mae" in header and "test majority mae" in header
    assert "test majority top1" in header


def test_a_pairwise_sweep_tables_pair_accuracy_with_its_pair_count(tmp_path_factory, capsys):
    from skill.cli import print_sweep_table

    result = sweep_of(tmp_path_factory, "pairwise")
    print_sweep_table(result.rows)
    printed = capsys.readouterr().out
    assert "chance (a coin flip per pair): val 0.500" in printed
    row = result.rows[0]
    assert row["pairs_val"] > 0
    lines = (result.sweep_dir / "sweep.md").read_text().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert cells[header.index("val pairs")] == str(row["pairs_val"])
    assert "val pair_accuracy" in header and "val chance rel_l2" not in header
