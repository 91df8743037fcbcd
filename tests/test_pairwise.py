"""The ``pairwise`` task: its margin ranking loss against torch's, pairs recorded in a store
(and caught when edited), fit / sweep / predict of every neural head on a store whose tokens
carry a latent skill (tests/token_store.py), and its refusals, one line each."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from skill.cache.store import StoreError, TokenStore
from skill.cache.verify import verify_store
from skill.cli import app
from skill.errors import ConfigError
from skill.heads.config import FitConfig, SweepConfig
from skill.heads.data import load_selection, split_takes
from skill.heads.lgbm import LightGBMSettings
from skill.heads.registry import HEAD_READS, head_names, resolve_head
from skill.heads.sweep import sweep
from skill.heads.train import fit
from skill.pipeline.extract import read_pairs_files
from skill.pipeline.manifest.pairs import PairError
from skill.pipeline.takes import Take
from skill.tasks import get_task
from skill.tasks.pairwise import pair_accuracy
from tests.extract_helpers import invoke_cli
from tests.markers import one_fast
from tests.token_store import shared_token_store

PAIRWISE = get_task("pairwise")
# A per-clip head (spotter) cannot learn a per-take task: tests/test_demonstration_task.py.
NEURAL_HEADS = [h for h in head_names() if h != "lightgbm" and not resolve_head(h).per_clip]
QUICK = dict(epochs=20, batch_size=16, patience=0, plots=False, device="cpu",
             lightgbm=LightGBMSettings(lgbm_rounds=20, lgbm_threads=1))  # fmt: skip
SMALL = dict(task="pairwise", n_participants=40, takes_per_participant=3)
"""40 participants: a head must see many participants' offsets to rank new ones' takes."""


def _store(tmp_path_factory, head: str):
    """The small pairwise store, its clips in order for a head that reads sequences."""
    axis = HEAD_READS[head] if HEAD_READS[head] == "sequence" else "samples"
    options = {**SMALL, "clip_axis": axis}
    return shared_token_store(tmp_path_factory, f"pairwise-{axis}", **options)


# ---- the loss and the metric -----------------------------------------------------------------


@pytest.mark.parametrize("margin", [0.25, 1.0, 3.0])
def test_the_loss_is_torchs_margin_ranking_loss(margin):
    generator = torch.Generator().manual_seed(int(margin * 100))
    outputs = torch.randn(2 * 37, 1, generator=generator) * 2
    schema = PAIRWISE.schema({"margin": margin})
    loss = PAIRWISE.make_loss(schema, np.zeros((0, 1)), False, "cpu")(outputs, None)
    better, worse = outputs[:37, 0], outputs[37:, 0]
    expected = torch.nn.functional.margin_ranking_loss(better, worse, torch.ones(37), margin=margin)
    assert torch.allclose(loss, expected) and float(expected) > 0
    assert torch.allclose(torch.nn.MarginRankingLoss(margin=margin)(better, worse,
                                                                     torch.ones(37)), loss)  # fmt: skip


def test_pairwise_accuracy_counts_ties_half_and_chance_is_half():
    assert pair_accuracy(np.array([3.0, 1.0, 2.0, 5.0]), np.array([1.0, 2.0, 2.0, 4.0])) == 0.625
    assert PAIRWISE.chance(PAIRWISE.schema(None)) == 0.5
    bound = PAIRWISE.on_pairs(np.array([[0, 1], [2, 1]]))
    metrics = bound.evaluate(PAIRWISE.schema(None), np.array([[2.0], [1.0], [np.nan]]),
                             np.array([[0.5], [0.1], [0.0]]), np.array(["a", "a", "b"]),
                             np.zeros((0, 1)))  # fmt: skip
    assert (metrics["pairs"], metrics["pair_accuracy"], metrics["scored"]) == (2, 0.5, 2)
    assert metrics["spearman"] == pytest.approx(1.0)
    assert metrics["per_scenario"]["a"] == {"n": 2, "pairs": 1, "pair_accuracy": 1.0}


# ---- pairs in the store ----------------------------------------------------------------------


def test_the_store_records_its_pairs_and_the_splits_follow_them(tmp_path_factory):
    store = _store(tmp_path_factory, "mean")
    rows, splits = TokenStore.open(store.path).pairs()
    assert len(rows) > 50 and set(splits) == {"train", "val", "test"}
    sel = load_selection(store.path, "all")
    parts = split_takes(sel)
    assert len(parts.pairs["train"]) + len(parts.pairs["val"]) + len(parts.pairs["test"]) == (
        len(rows) - sel.dropped_pairs
    )
    assert set(sel.split[parts.train]) == {"train"} and set(sel.split[parts.test]) == {"test"}
    assert verify_store(store.path).ok


def test_an_edited_pairs_array_is_damage(tmp_path):
    import zarr

    from tests.token_store import build_token_store

    path = tmp_path / "s.zarr"
    build_token_store(path, **SMALL)
    array = zarr.open_array(str(path), path="pairs", mode="r+", zarr_format=3)
    array[0] = array[0][::-1]  # the first pair's order reversed
    report = verify_store(path)
    assert not report.ok and any("the pairs are damaged" in p for p in report.store_problems)
    with pytest.raises(StoreError, match="the pairs are damaged .*not those committed"):
        load_selection(path, "all")


def _takes(split_of: dict[str, str]) -> list[Take]:
    return [Take(take_id=t, videos={"ego": f"{t}.mp4"}, split=s) for t, s in split_of.items()]


def test_extract_reads_pairs_files_by_name_or_split(tmp_path):
    (tmp_path / "train.txt").write_text("a b\nc b\n")
    (tmp_path / "other.csv").write_text("Better,Worse,\nd,c,\n")
    takes = _takes({"a": "train", "b": "train", "c": "train", "d": "test"})
    pairs = read_pairs_files([tmp_path / "train.txt", f"test={tmp_path / 'other.csv'}"],
                             takes, takes)  # fmt: skip
    assert [(p.better, p.worse, p.split) for p in pairs.pairs] == [
        ("a", "b", "train"), ("c", "b", "train"), ("d", "c", "test")
    ]  # fmt: skip
    kept = read_pairs_files([tmp_path / "train.txt"], takes, takes[:2])  # --limit 2
    assert [(p.better, p.worse) for p in kept.pairs] == [("a", "b")]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("a zz", "take 'zz' is not among the manifest's takes"),
        ("a d", "a pair across splits: take 'd' is in split test"),
    ],
)
def test_a_bad_pair_is_refused_in_one_line_naming_file_and_line(tmp_path, line, problem):
    path = tmp_path / "train.txt"
    path.write_text(f"a b\n{line}\n")
    takes = _takes({"a": "train", "b": "train", "d": "test"})
    with pytest.raises(PairError) as err:
        read_pairs_files([path], takes, takes)
    message = str(err.value)
    assert message.startswith(f"{path}:2: ") and "\n" not in message
    assert problem.replace("'", "") in message.replace("'", "")


def test_pairs_are_refused_for_a_task_that_does_not_learn_from_them(tmp_path):
    from skill.pipeline.extract_config import ExtractConfig

    with pytest.raises(ConfigError, match="--pairs: task classification does not learn from"):
        ExtractConfig(manifest=tmp_path / "m.jsonl", store=tmp_path / "s.zarr",
                      pairs=[tmp_path / "train.txt"])  # fmt: skip


def test_lightgbm_is_refused_in_one_line(tmp_path_factory, tmp_path):
    store = _store(tmp_path_factory, "mean")
    cfg = FitConfig(store=str(store.path), out_dir=str(tmp_path), head="lightgbm", **QUICK)
    with pytest.raises(ConfigError) as err:
        fit(cfg)
    assert str(err.value).startswith("--head lightgbm: cannot learn from pairs")
    assert "\n" not in str(err.value)


# ---- every neural head, end to end -----------------------------------------------------------


@pytest.mark.parametrize("head", one_fast(NEURAL_HEADS, "concat"))
def test_every_neural_head_ranks_the_test_pairs_and_predict_writes_scores(
    tmp_path_factory, tmp_path, head
):
    store = _store(tmp_path_factory, head)
    cfg = FitConfig(store=str(store.path), out_dir=str(tmp_path), head=head, name="run", **QUICK)
    result = fit(cfg)
    test = result.metrics["test"]
    assert test["pairs"] >= 20 and test["pair_accuracy"] > 0.8, test
    assert result.metrics["val"]["pair_accuracy"] > 0.5
    out = tmp_path / "predicted.csv"
    code, output = invoke_cli("predict", str(store.path), "--run", str(result.run_dir),
                              "--out", str(out), "--device", "cpu")  # fmt: skip
    assert code == 0, output
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert "skill_score" in rows[0] and len(rows) >= 50
    assert " ".join(PAIRWISE.describe("test", test).split()) in output  # as fit scored it


def test_a_sweep_tabulates_pairwise_accuracy(tmp_path_factory, tmp_path):
    store = _store(tmp_path_factory, "mean")
    base = FitConfig(store=str(store.path), out_dir=str(tmp_path), **{**QUICK, "epochs": 4})
    result = sweep(SweepConfig(fit=base, heads=["mean", "concat"], view_sets=["all"], seeds=[0]))
    assert [row["head"] for row in result.rows] == ["mean", "concat"]
    assert all(row["test_pair_accuracy_mean"] > 0.5 for row in result.rows), result.rows
    metrics = json.loads((result.fits[0].run_dir / "metrics.json").read_text())
    assert metrics["splits"]["pairs"]["train"] > 0


# ---- skill extract --task pairwise --pairs ---------------------------------------------------


@pytest.fixture(scope="module")
def scored_dataset(tmp_path_factory):
    """A real dataset of 6 takes whose manifest states a score per take (no level), and a
    pairs file per split, the higher score better."""
    from tests.extract_helpers import make_dataset

    folder = tmp_path_factory.mktemp("pairwise-dataset")
    manifest = make_dataset(folder, 6)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    levels = ["Novice", "Early Expert", "Intermediate Expert", "Late Expert"]
    for number, record in enumerate(records):
        record["score"] = 2.0 * levels.index(record.pop("label")) + 0.1 * number
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    files = []
    for split in sorted({r["split"] for r in records}):
        members = sorted((r for r in records if r["split"] == split), key=lambda r: -r["score"])
        lines = [
            f"{a['take']} {b['take']}\n" for a, b in zip(members[:-1], members[1:], strict=True)
        ]
        if lines:
            files.append(folder / f"{split}.txt")
            files[-1].write_text("".join(lines))
    return manifest, files, records


def test_extract_records_the_pairs_files_and_verify_checks_them(scored_dataset, tmp_path):
    from tests.extract_helpers import extract_args

    manifest, files, records = scored_dataset
    store = tmp_path / "s.zarr"
    pairs = ",".join(map(str, files))
    code, output = invoke_cli(*extract_args(manifest, store, "--task", "pairwise", "--pairs",
                                            pairs, "--workers", "0"))  # fmt: skip
    assert code == 0, output
    opened = TokenStore.open(store)
    rows, splits = opened.pairs()
    ids = opened.take_table().ids
    written = [(str(ids[b]), str(ids[w]), s) for (b, w), s in zip(rows, splits, strict=True)]
    expected = [(*line.split(), path.stem) for path in files
                for line in path.read_text().splitlines()]  # fmt: skip
    assert sorted(written) == sorted(expected)
    assert opened.task["name"] == "pairwise" and verify_store(store).ok
    code, output = invoke_cli("verify", str(store))
    assert code == 0, output


def test_extract_refuses_a_pair_naming_an_unknown_take_before_writing(scored_dataset, tmp_path):
    from tests.extract_helpers import extract_args

    manifest, _, records = scored_dataset
    bad = tmp_path / "bad_train.txt"
    bad.write_text(f"{records[0]['take']} nobody\n")
    store = tmp_path / "s.zarr"
    args = extract_args(manifest, store, "--task", "pairwise", "--pairs", str(bad), "--workers",
                        "0")  # fmt: skip
    result = CliRunner().invoke(app, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {bad}:1: take") and "nobody" in lines[0]
    assert not store.exists()
