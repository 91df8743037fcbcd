"""Every task through the stages that carry targets outside training: `skill export` and
`skill import features` reproduce a store's task and targets (one column per score), `skill
info` says what the targets hold (counts by level, the range of each score), `skill predict`'s
CSV has a truth column per score and prints the task's metrics, and EgoExo4D's prediction file
of an ordinal run holds its level probabilities, which the scorer's arithmetic reads (issue 27)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from skill.cache.info import store_summary, summary_lines
from skill.cache.store import STATUS_COMPLETE, TakeResult, TakeRow, TokenStore
from skill.heads.config import FitConfig, PredictConfig
from skill.heads.train import fit
from skill.interop.egoexo4d import predict_egoexo4d, written_slots
from skill.interop.export import ExportConfig, export_store
from skill.interop.import_features import ImportFeaturesConfig, import_features
from skill.tasks import get_task, task_names, task_record
from tests.extract_helpers import invoke_cli
from tests.token_store import PROVENANCE, build_token_store, shared_token_store

TWO_SCORES = {"scores": [{"name": "tes", "low": 0.0, "high": 100.0}, "pcs"], "group": "apparatus"}
VIEWS = ["ego", "exo1"]
CLIPS, TOKENS, DIM, FRAMES = 2, 3, 8, 4
QUICK = dict(epochs=3, batch_size=16, lr=3e-3, hidden=32, patience=0, plots=False, device="cpu")


def export_and_import(store: Path, fmt: str, folder: Path) -> Path:
    out = folder / ("export.h5" if fmt == "hdf5" else "export")
    export_store(ExportConfig(store=str(store), out=str(out), format=fmt))
    imported = folder / "imported.zarr"
    import_features(ImportFeaturesConfig(features=str(out), store=str(imported)))
    return imported


def named_pairs(path: Path) -> list[tuple[str, str, str]] | None:
    """The store's recorded pairs as (better, worse, split) take names, those of completed
    takes only; None when it records none."""
    store = TokenStore.open(path)
    recorded = store.pairs()
    if recorded is None:
        return None
    records = store.take_records()
    ids, done = records.table.ids, records.status == STATUS_COMPLETE
    return [(str(ids[b]), str(ids[w]), str(split))
            for (b, w), split in zip(*recorded, strict=True) if done[b] and done[w]]  # fmt: skip


def completed_targets(path: Path) -> dict[str, np.ndarray]:
    """Stored targets of the completed takes, by take id."""
    store = TokenStore.open(path)
    records = store.take_records()
    rows = np.flatnonzero(records.status == STATUS_COMPLETE)
    return {str(records.table.ids[r]): records.table.target[r] for r in rows}


def two_score_store(path: Path, n: int = 60) -> Path:
    """A regression store of scores ``tes`` (declared 0..100) and ``pcs`` (no range), made
    through the store's API: ego's first token dimension carries tes, exo1's pcs; every fifth
    take has no pcs, two have no score at all."""
    rng = np.random.default_rng(3)
    schema = get_task("regression").schema(TWO_SCORES)
    store = TokenStore.create(path, provenance=PROVENANCE, views=VIEWS,
                              task=task_record("regression", schema), clips=CLIPS, tokens=TOKENS,
                              dim=DIM, frames=FRAMES)  # fmt: skip
    tes = np.round(rng.uniform(10, 90, n), 2)
    pcs = np.round(rng.uniform(-3, 3, n), 3)
    rows = []
    for i in range(n):
        target = {"tes": float(tes[i]), "pcs": None if i % 5 == 0 else float(pcs[i])}
        split = ("train", "train", "train", "val", "test")[i % 5]
        rows.append(TakeRow(f"t{i:03d}", None if i in (7, 8) else target, f"g{i % 3}",
                            f"p{i}", split))  # fmt: skip
    indices = store.add_takes(rows)
    for i in indices:
        tokens = rng.normal(0, 0.3, (len(VIEWS), CLIPS, TOKENS, DIM))
        tokens[0, :, :, 0] += (tes[i] - 50) / 20
        tokens[1, :, :, 1] += pcs[i]
        frames = np.tile(np.arange(FRAMES), (len(VIEWS), CLIPS, 1))
        store.write_take(i, TakeResult(
            tokens=tokens.astype(np.float16), valid=np.ones(len(VIEWS), bool),
            frame_index=frames, timestamp=frames / 30.0, padded=np.zeros(len(VIEWS), int),
            view_error=[""] * len(VIEWS), status=STATUS_COMPLETE,
        ))  # fmt: skip
    store.pack()
    return path


@pytest.fixture(scope="module")
def scores_store(tmp_path_factory) -> Path:
    return two_score_store(tmp_path_factory.mktemp("two") / "two.zarr")


# ---- export -> import ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["hdf5", "npy"])
# demonstration's targets are lists of events, which no table column holds (export refuses
# them, naming the task); not yet exported.
@pytest.mark.parametrize("task", [name for name in task_names() if name != "demonstration"])
def test_export_then_import_reproduces_every_tasks_targets_and_schema(task, fmt, tmp_path):
    source = build_token_store(tmp_path / "s.zarr", n_participants=8, takes_per_participant=2,
                               task=task)  # fmt: skip
    imported = export_and_import(source.path, fmt, tmp_path)
    assert TokenStore.open(imported).task == TokenStore.open(source.path).task
    want, got = completed_targets(source.path), completed_targets(imported)
    assert list(got) == list(want) and set(source.unlabelled) & set(want)  # unlabelled ones too
    for take, target in want.items():
        np.testing.assert_array_equal(got[take], target, err_msg=take)
    pairs = named_pairs(source.path)  # a ranking task's pairs of takes travel too
    assert named_pairs(imported) == pairs and (pairs is None or len(pairs) > 0)


@pytest.mark.parametrize("fmt", ["hdf5", "npy"])
def test_several_scores_travel_one_column_each(scores_store, fmt, tmp_path):
    imported = export_and_import(scores_store, fmt, tmp_path)
    assert TokenStore.open(imported).task == TokenStore.open(scores_store).task
    want, got = completed_targets(scores_store), completed_targets(imported)
    assert list(got) == list(want)
    for take, target in want.items():
        np.testing.assert_array_equal(got[take], target, err_msg=take)  # NaN where none
    table = TokenStore.open(scores_store).take_table()
    if fmt == "npy":
        with open(tmp_path / "export" / "takes.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        meta = json.loads((tmp_path / "export" / "skill_export.json").read_text())
        assert meta["task"] == TokenStore.open(scores_store).task and "labels" not in meta
    else:
        with h5py.File(tmp_path / "export.h5", "r") as f:
            columns = {name: f["takes"][name][()] for name in ("score_tes", "score_pcs")}
        rows = [{k: "" if math.isnan(v[i]) else repr(float(v[i])) for k, v in columns.items()}
                for i in range(len(table.ids))]  # fmt: skip
    assert "score" not in rows[0] and "label" not in rows[0]
    for row, stored in zip(rows, table.target, strict=True):
        for s, name in enumerate(("score_tes", "score_pcs")):
            value = float(stored[s])
            assert row[name] == ("" if math.isnan(value) else str(float(str(np.float32(value)))))


def test_a_score_cell_that_is_not_a_number_names_the_line(scores_store, tmp_path):
    out = tmp_path / "export"
    export_store(ExportConfig(store=str(scores_store), out=str(out), format="npy"))
    lines = (out / "takes.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[3].split(",")
    cells[header.index("score_tes")] = "high"
    lines[3] = ",".join(cells)
    (out / "takes.csv").write_text("\n".join(lines) + "\n")
    code, output = invoke_cli("import", "features", str(out), "--store", str(tmp_path / "i.zarr"))
    assert code == 2 and output.startswith("error: ") and output.count("\n") == 0, output
    assert f"takes.csv:4: take {cells[0]}: score_tes 'high' is not a number" in output
    assert not (tmp_path / "i.zarr").exists()


def test_a_score_outside_its_declared_range_or_an_unknown_task_is_refused(scores_store, tmp_path):
    out = tmp_path / "export"
    export_store(ExportConfig(store=str(scores_store), out=str(out), format="npy"))
    text = (out / "takes.csv").read_text()
    first = text.splitlines()[1].split(",")
    tes = first[text.splitlines()[0].split(",").index("score_tes")]
    (out / "takes.csv").write_text(text.replace(f",{tes},", ",120.5,", 1))
    code, output = invoke_cli("import", "features", str(out), "--store", str(tmp_path / "i.zarr"))
    assert (
        code == 2
        and "takes.csv:2: take t000: not a target of the export's task regression" in output
    )
    assert "tes 120.5 is outside its declared range 0.0..100.0" in output
    (out / "takes.csv").write_text(text)
    meta = json.loads((out / "skill_export.json").read_text())
    meta["task"]["name"] = "ranking"
    (out / "skill_export.json").write_text(json.dumps(meta))
    code, output = invoke_cli("import", "features", str(out), "--store", str(tmp_path / "i.zarr"))
    assert code == 2 and "skill_export.json: field 'task': 'ranking' is not a task" in output
    assert not (tmp_path / "i.zarr").exists()


# ---- skill info ----------------------------------------------------------------------------


def test_info_counts_levels_and_ranges_scores(scores_store, tmp_path):
    summary = store_summary(scores_store)
    stored = TokenStore.open(scores_store).take_table().target.astype(np.float64)
    for s, name in enumerate(("score_tes", "score_pcs")):
        known = stored[np.isfinite(stored[:, s]), s]
        column = summary["targets"][name]
        assert column["labelled"] == len(known) < column["takes"] == len(stored)
        # the scores as stated (float32's shortest text), not float32's float64 digits
        assert column["min"] == float(str(np.float32(known.min())))
        assert column["max"] == float(str(np.float32(known.max())))
        assert column["mean"] == pytest.approx(known.mean(), rel=1e-6)
    lines = summary_lines(summary)
    assert not [line for line in lines if line.startswith("takes by label")]
    tes = summary["targets"]["score_tes"]
    assert f"score_tes: 58 of 60 takes labelled, min {tes['min']:.4g}" in "\n".join(lines)
    levels = build_token_store(tmp_path / "l.zarr", n_participants=8, takes_per_participant=2,
                               task="ordinal")  # fmt: skip
    counts = store_summary(levels.path)["targets"]["label"]["counts"]
    assert counts["(unlabelled)"] == len(levels.unlabelled) and sum(counts.values()) == 16
    line = "takes by label: " + ", ".join(f"{level} {n}" for level, n in counts.items())
    assert line in summary_lines(store_summary(levels.path)) and "Early Expert" in line


# ---- skill predict -------------------------------------------------------------------------


def test_predict_writes_a_truth_column_per_score_and_prints_the_metrics(scores_store, tmp_path):
    run = fit(FitConfig(store=str(scores_store), out_dir=str(tmp_path), head="mean",
                        name="run", **QUICK)).run_dir  # fmt: skip
    out = tmp_path / "p.csv"
    code, output = invoke_cli("predict", str(scores_store), "--run", str(run), "--out", str(out),
                              "--device", "cpu")  # fmt: skip
    assert code == 0, output
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"score_tes", "score_pcs", "true_tes", "true_pcs"} <= set(rows[0])
    assert not any("{" in value for row in rows for value in row.values())  # no dict repr
    table = TokenStore.open(scores_store).take_table()
    stored = {str(t): y for t, y in zip(table.ids, table.target, strict=True)}
    for row in rows:
        for s, name in enumerate(("true_tes", "true_pcs")):
            value = float(stored[row["take"]][s])
            if math.isnan(value):
                assert row[name] == ""
            else:
                assert float(row[name]) == pytest.approx(value, abs=1e-5)
    metrics = json.loads((Path(run) / "metrics.json").read_text())
    task = get_task("regression")
    assert " ".join(task.describe("test", metrics["test"]).split()) in output
    assert "relative L2 x100" in output and "mean " in output  # the baseline beside it


# ---- EgoExo4D's file of an ordinal run -----------------------------------------------------


def test_the_egoexo4d_file_of_an_ordinal_run_holds_its_level_probabilities(
    tmp_path_factory, tmp_path
):
    ordered = shared_token_store(tmp_path_factory, "task-ordinal", task="ordinal")
    run = fit(FitConfig(store=str(ordered.path), out_dir=str(tmp_path), head="late", name="run",
                        **{**QUICK, "epochs": 12, "hidden": 64})).run_dir  # fmt: skip
    result = predict_egoexo4d(PredictConfig(
        store=str(ordered.path), run=str(run), format="egoexo4d", split="test",
        out_json=str(tmp_path / "p.json"), out_csv=str(tmp_path / "p.csv"), device="cpu",
    ))  # fmt: skip
    payload = json.loads((tmp_path / "p.json").read_text())
    slots = written_slots(payload)  # (n, 5, K): log level probabilities
    assert slots.shape == (len(result.take_ids), 5, 4)
    probabilities = np.exp(slots)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1, atol=1e-9)  # distributions
    # Ego+Exo, the mean of the five slots' distributions, is the run's level distribution
    row = {t: i for i, t in enumerate(payload["videos"])}
    fused = probabilities.mean(axis=1)[[row[t] for t in result.take_ids]]
    np.testing.assert_allclose(fused, result.scores, atol=1e-6)  # float32 per view and fused
    with open(tmp_path / "p.csv", newline="") as f:
        written = [[float(r[f"p_{level}"]) for level in result.schema["labels"]]
                   for r in csv.DictReader(f)]  # fmt: skip
    np.testing.assert_allclose(written, result.scores, atol=1e-6)
    # the scorer's arithmetic, written out: argmax of the ego logits, of the mean exo and of
    # the mean of all five softmaxes, over the labelled takes of the file
    softmax = np.exp(slots - slots.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    table = TokenStore.open(ordered.path).take_table()
    level = {str(t): int(y) for t, y in zip(table.ids, table.target, strict=True)}
    truth = np.array([level[t] for t in payload["videos"]])
    labelled = truth >= 0
    expected = {
        "ego": slots[:, 0].argmax(-1),
        "exo": softmax[:, 1:].mean(1).argmax(-1),
        "ego+exo": softmax.mean(1).argmax(-1),
    }
    for name, predicted in expected.items():
        top1 = float((predicted[labelled] == truth[labelled]).mean())
        assert result.benchmark[name] == pytest.approx(top1, abs=1e-12), name
    assert result.benchmark["ego+exo"] > result.benchmark_majority  # it learned the levels


def test_a_pair_naming_a_take_the_export_lacks_names_the_line(tmp_path):
    source = build_token_store(tmp_path / "s.zarr", n_participants=8, takes_per_participant=2,
                               task="pairwise")  # fmt: skip
    out = tmp_path / "export"
    result = export_store(ExportConfig(store=str(source.path), out=str(out), format="npy"))
    assert result.pairs == len(named_pairs(source.path)) > 0
    lines = (out / "pairs.csv").read_text().splitlines()
    assert lines[0] == "better,worse,split"
    lines[2] = "nobody," + lines[2].split(",", 1)[1]
    (out / "pairs.csv").write_text("\n".join(lines) + "\n")
    code, output = invoke_cli("import", "features", str(out), "--store", str(tmp_path / "i.zarr"))
    assert code == 2 and output.count("\n") == 0, output
    assert "pairs.csv:3: the pair names take 'nobody', which the export does not hold" in output
    assert not (tmp_path / "i.zarr").exists()
