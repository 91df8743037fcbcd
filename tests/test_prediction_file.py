"""The EgoExo4D prediction files: the scorer agrees with skill on takes with missing views and
on the uniformly filled takes, the file holds skill's logits exactly (no near-tie flips),
unpredictable takes are refused unless asked, one split only, the labels format, and the
leakage guards counting the takes of the file (issues 15, 23)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from skill.cache.store import TokenStore
from skill.errors import ConfigError, SkillError
from skill.heads.config import PredictConfig
from skill.heads.predict import predict
from skill.heads.run_folder import write_json
from skill.interop.egoexo4d import (
    UnpredictableTakesError,
    egoexo4d_payload,
    file_slots,
    late_slots,
    predict_egoexo4d,
    slot_predictions,
    written_slots,
)
from tests.test_predict import Runs
from tests.token_store import LABELS, edit_take

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(store, tmp_path_factory):
    return Runs(store, tmp_path_factory.mktemp("runs"))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def scorer(payload: dict, truth: dict[str, int]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The official EgoExo4D scorer's arithmetic, written here independently of skill:
    Ego = argmax of the ego logits, Exo = argmax of the mean of the four exo softmaxes,
    Ego+Exo = argmax of the mean of all five softmaxes. Returns the three top-1 figures over
    the takes in ``truth`` and the per-take predictions of every take of the file."""
    ego = np.asarray(payload["ego_model_predictions"], dtype=float)  # (n, C)
    exo = np.asarray(payload["exo_model_predictions"], dtype=float)  # (n, 4, C)
    assert ego.ndim == 2 and exo.shape == (len(ego), 4, ego.shape[1])
    preds = {
        "ego": ego.argmax(axis=1),
        "exo": np.mean([softmax(exo[:, i]) for i in range(4)], axis=0).argmax(axis=1),
        "ego+exo": ((softmax(ego) + sum(softmax(exo[:, i]) for i in range(4))) / 5).argmax(axis=1),
    }
    rows = [i for i, t in enumerate(payload["videos"]) if t in truth]
    y = np.array([truth[payload["videos"][i]] for i in rows])
    return {k: float((p[rows] == y).mean()) for k, p in preds.items()}, preds


def labelled(result) -> dict[str, int]:
    """The labelled takes skill predicted (the filled takes of a file left out)."""
    return {t: int(y) for t, y in zip(result.take_ids, result.targets, strict=True) if y >= 0}


def file_truth(store_path, payload: dict) -> dict[str, int]:
    """Every labelled take of the file, as the ground truth the scorer reads (filled ones too)."""
    table = TokenStore.open(store_path).take_table()
    label = {str(t): int(y) for t, y in zip(table.ids, table.target, strict=True)}
    return {t: label[t] for t in payload["videos"] if label[t] >= 0}


def table_splits(store) -> dict[str, str]:
    table = TokenStore.open(store.path).take_table()
    return {str(t): str(s) for t, s in zip(table.ids, table.split, strict=True)}


# ---- 1. missing views: the fill rule -------------------------------------------------------


def test_fill_rule_keeps_the_mean_of_five_softmaxes_equal_to_the_fused_output():
    rng = np.random.default_rng(0)
    n, views, classes = 200, ["ego", "exo1", "exo2", "exo3"], 4
    per_view = softmax(rng.normal(0, 2, size=(n, len(views), classes)))
    mask = rng.random((n, len(views))) > 0.4
    mask[~mask.any(axis=1), 1] = True
    fused = (per_view * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)  # the late head
    slots = late_slots(np.log(per_view), mask, views, np.log(fused))
    five = softmax(slots).mean(axis=1)
    np.testing.assert_allclose(five, fused, atol=1e-12)  # exactly the fused distribution
    assert (five.argmax(1) == fused.argmax(1)).all()
    # the ego slot is the ego classifier where there is an ego view, the fused one where not
    np.testing.assert_allclose(slots[mask[:, 0], 0], np.log(per_view[mask[:, 0], 0]))
    np.testing.assert_allclose(slots[~mask[:, 0], 0], np.log(fused[~mask[:, 0]]))
    # without an ego view, the exo mean is the fused output too
    exo_mean = softmax(slots[:, 1:]).mean(axis=1)
    np.testing.assert_allclose(exo_mean[~mask[:, 0]], fused[~mask[:, 0]], atol=1e-12)
    # the old rule (mean of the valid views' log-probabilities) does not keep it
    old = np.einsum("nv,nvc->nc", mask / mask.sum(1, keepdims=True), np.log(per_view))
    old_slots = late_slots(np.log(per_view), mask, views, old)
    assert (softmax(old_slots).mean(1).argmax(1) != fused.argmax(1)).any()


@pytest.mark.parametrize("head", ["late", "mean"])
def test_the_scorer_says_what_skill_reports_on_takes_with_missing_views(
    head, store, runs, tmp_path
):
    out = tmp_path / "pred.json"
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs[head].run_dir,
            format="egoexo4d",
            out_json=out,
            unpredictable="uniform",
        )
    )
    payload = json.loads(out.read_text())
    assert store.partly_masked  # takes with a missing view are among those scored
    scores, preds = scorer(payload, file_truth(store.path, payload))
    assert scores == pytest.approx(result.benchmark, abs=1e-12)
    # Ego+Exo is skill's own prediction of every take, its top-1 skill's top-1
    row = {t: i for i, t in enumerate(payload["videos"])}
    ours = result.scores.argmax(axis=1)
    assert (preds["ego+exo"][[row[t] for t in result.take_ids]] == ours).all()
    predicted_only, _ = scorer(payload, labelled(result))
    assert predicted_only["ego+exo"] == pytest.approx(result.metrics["all"]["top1"])
    if head == "mean":  # a fusion head: all three are the fused prediction
        assert scores["ego"] == scores["exo"] == scores["ego+exo"]


def test_ego_figure_with_the_ego_view_masked_is_the_fused_prediction(store, runs, tmp_path):
    out = tmp_path / "exo.json"
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs["late"].run_dir,
            format="egoexo4d",
            out_json=out,
            views="exo1,exo2,exo3",
            unpredictable="uniform",
        )
    )
    payload = json.loads(out.read_text())
    scores, _ = scorer(payload, labelled(result))
    top1 = result.metrics["all"]["top1"]
    assert scores["ego"] == pytest.approx(top1) and scores["exo"] == pytest.approx(top1)
    assert scores["ego+exo"] == pytest.approx(top1)
    whole_file, _ = scorer(payload, file_truth(store.path, payload))
    assert result.benchmark == pytest.approx(whole_file, abs=1e-12)


# ---- 2. unpredictable takes ---------------------------------------------------------------


def test_unpredictable_takes_are_refused_by_default(store, runs, tmp_path):
    unpredictable = store.pending + store.failed + store.all_views_invalid
    with pytest.raises(UnpredictableTakesError) as err:
        predict_egoexo4d(
            PredictConfig(
                store=store.path,
                run=runs["mean"].run_dir,
                format="egoexo4d",
                out_json=tmp_path / "p.json",
            )
        )
    assert isinstance(err.value, SkillError)
    assert f"{len(unpredictable)} take(s)" in str(err.value)
    assert all(t in str(err.value) for t in unpredictable)
    assert not (tmp_path / "p.json").exists()
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs["mean"].run_dir,
            format="egoexo4d",
            out_json=tmp_path / "p.json",
            unpredictable="uniform",
        )
    )
    assert sorted(result.filled) == sorted(unpredictable)
    payload = json.loads((tmp_path / "p.json").read_text())
    for take in unpredictable:
        i = payload["videos"].index(take)
        assert not np.any(payload["ego_model_predictions"][i])
        assert not np.any(payload["exo_model_predictions"][i])
    with pytest.raises(ConfigError, match="--unpredictable must be refuse or uniform, not 'nov"):
        predict_egoexo4d(
            PredictConfig(
                store=store.path,
                run=runs["mean"].run_dir,
                format="egoexo4d",
                out_json=tmp_path / "p.json",
                unpredictable="novice",
            )
        )


def test_cli_refuses_then_counts_the_uniform_takes(store, runs, tmp_path):
    from skill.cli import app

    args = ["predict", str(store.path), "--run", str(runs["mean"].run_dir), "--out",
            str(tmp_path / "p.csv"), "--format", "egoexo4d"]  # fmt: skip
    refused = runner.invoke(app, args)
    assert refused.exit_code == 2, refused.output
    unpredictable = store.pending + store.failed + store.all_views_invalid
    assert "cannot be predicted" in refused.output and unpredictable[0] in refused.output
    done = runner.invoke(app, [*args, "--unpredictable", "uniform"])
    assert done.exit_code == 0, done.output
    n = len(store.pending + store.failed + store.all_views_invalid)
    text = " ".join(done.output.split())
    assert f"{n} takes of the file had nothing to predict from" in text
    # the figures printed are the scorer's on the written file, the filled takes counted
    payload = json.loads((tmp_path / "p.json").read_text())
    truth = file_truth(store.path, payload)
    scores, _ = scorer(payload, truth)
    filled = sum(t in truth for t in store.pending + store.failed + store.all_views_invalid)
    figures = ", ".join(f"{k} {v:.3f}" for k, v in scores.items())
    assert (f"the scorer's top-1 on the {len(truth)} labelled takes of the file, {filled} of them "
            f"filled with the uniform guess, which the scorer reads as {LABELS[0]}: {figures}"
            ) in text  # fmt: skip


def test_the_scorer_figures_count_the_filled_takes_as_the_scorer_does(store, runs, tmp_path):
    out = tmp_path / "ego.json"
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs["late"].run_dir,
            format="egoexo4d",
            out_json=out,
            views="ego",
            unpredictable="uniform",
        )
    )
    payload = json.loads(out.read_text())
    truth = file_truth(store.path, payload)
    filled = [t for t in result.filled if t in truth]
    assert filled and result.benchmark_filled == len(filled)
    assert result.benchmark_takes == len(truth) == len(payload["videos"]) - len(store.unlabelled)
    scores, preds = scorer(payload, truth)
    assert result.benchmark == pytest.approx(scores, abs=1e-12)
    row = {t: i for i, t in enumerate(payload["videos"])}
    for name in preds:  # zero logits: numpy's argmax gives the tie to class 0
        assert all(preds[name][row[t]] == 0 for t in result.filled)
    without_filled, _ = scorer(payload, {t: y for t, y in truth.items() if t not in filled})
    assert without_filled != pytest.approx(scores), "the figure that left them out differs"
    counts = json.loads((runs["late"].run_dir / "config.json").read_text())["takes"]
    majority = int(np.argmax(counts["train_summary"]["class_counts"]))
    assert result.benchmark_majority == pytest.approx(
        np.mean([y == majority for y in truth.values()])
    )


def near_tie_slots() -> np.ndarray:
    """(1, 5, 4) log-probabilities whose two best classes differ by 2e-7: rounded to 6
    decimals both read -1.386294, and the scorer's argmax falls to the first of them."""
    logits = np.array([-1.3862943, -1.3862941, -2.0, -3.0])
    assert np.round(logits[0], 6) == np.round(logits[1], 6) and logits[1] > logits[0]
    return np.repeat(logits[None, None, :], 5, axis=1)


def test_a_near_tie_is_written_as_skill_decides_it(tmp_path):
    slots = near_tie_slots()
    order, row_of = ["near", "unpredictable"], {"near": 0}
    write_json(tmp_path / "p.json", egoexo4d_payload(order, file_slots(order, row_of, slots)),
               indent=None)  # fmt: skip
    written = json.loads((tmp_path / "p.json").read_text())
    np.testing.assert_array_equal(written_slots(written)[0], slots[0])  # every bit
    assert not np.any(written_slots(written)[1])  # the filled take: zero logits
    skills = slot_predictions(slots)  # what skill reports: class 1 for all three
    _, preds = scorer(written, {"near": 1})
    for name in ("ego", "exo", "ego+exo"):
        assert preds[name][0] == skills[name][0] == 1
    rounded = {**written}  # the file as it was written before: 6 decimals
    rounded["ego_model_predictions"] = np.round(written["ego_model_predictions"], 6).tolist()
    rounded["exo_model_predictions"] = np.round(written["exo_model_predictions"], 6).tolist()
    _, flipped = scorer(rounded, {"near": 1})
    assert all(flipped[name][0] == 0 for name in flipped), "the near-tie flips when rounded"


def test_the_file_holds_the_fused_logits_exactly(store, runs, tmp_path):
    out = tmp_path / "mean.json"
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs["mean"].run_dir,
            format="egoexo4d",
            out_json=out,
            unpredictable="uniform",
        )
    )
    written = written_slots(json.loads(out.read_text()))
    row = {t: i for i, t in enumerate(json.loads(out.read_text())["videos"])}
    ours = written[[row[t] for t in result.take_ids]]
    want = np.log(np.clip(result.scores.astype(np.float64), 1e-12, None))
    np.testing.assert_array_equal(ours, np.repeat(want[:, None], 5, axis=1))
    _, preds = scorer(json.loads(out.read_text()), labelled(result))
    skill = result.scores.argmax(axis=1)
    for name in preds:  # the scorer's class is skill's class, take by take
        assert (preds[name][[row[t] for t in result.take_ids]] == skill).all()


# ---- 3. one split -------------------------------------------------------------------------


def test_split_predicts_one_split_only(store, runs, tmp_path):
    splits = table_splits(store)
    out = tmp_path / "val.json"
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path, run=runs["late"].run_dir, format="egoexo4d", out_json=out, split="val"
        )
    )
    want = [t for t in store.take_ids if splits[t] == "val"]
    payload = json.loads(out.read_text())
    assert payload["videos"] == want and result.file_takes == len(want) and result.split == "val"
    assert set(result.take_ids) == set(want) and set(result.metrics) == {"all", "val"}
    scores, _ = scorer(payload, labelled(result))
    assert scores == pytest.approx(result.benchmark)
    with pytest.raises(ConfigError, match="split: .* has no take of split 'holdout'"):
        predict(
            PredictConfig(
                store=store.path,
                run=runs["late"].run_dir,
                out_csv=tmp_path / "p.csv",
                split="holdout",
            )
        )
    test_take = next(t for t in store.take_ids if splits[t] == "test")
    with pytest.raises(ConfigError, match="not of split 'val'"):
        predict_egoexo4d(
            PredictConfig(
                store=store.path,
                run=runs["late"].run_dir,
                format="egoexo4d",
                out_json=out,
                split="val",
                order=[want[0], test_take],
            )
        )


def test_cli_says_how_many_takes_of_which_split(store, runs, tmp_path):
    from skill.cli import app

    done = runner.invoke(app, ["predict", str(store.path), "--run", str(runs["mean"].run_dir),
                               "--out", str(tmp_path / "p.csv"), "--format", "egoexo4d",
                               "--split", "test"])  # fmt: skip
    assert done.exit_code == 0, done.output
    n = sum(s == "test" for s in table_splits(store).values())
    text = " ".join(done.output.split())
    assert f"(egoexo4d): {n} takes of split test" in text
    assert "the scorer's top-1" in text


# ---- 4. the labels format -----------------------------------------------------------------


def test_labels_format_lists_class_names_by_take_name(store, runs, tmp_path):
    out = tmp_path / "labels.json"
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs["cvf"].run_dir,
            out_csv=tmp_path / "p.csv",
            format="egoexo4d-labels",
            out_json=out,
            unpredictable="uniform",
        )
    )
    payload = json.loads(out.read_text())
    assert set(payload) == {"videos", "predictions"} and payload["videos"] == store.take_ids
    assert set(payload["predictions"]) <= set(LABELS)
    by_take = dict(zip(payload["videos"], payload["predictions"], strict=True))
    predicted = [LABELS[i] for i in result.scores.argmax(axis=1)]
    assert all(by_take[t] == p for t, p in zip(result.take_ids, predicted, strict=True))
    counts = json.loads((runs["cvf"].run_dir / "config.json").read_text())["takes"]
    majority = LABELS[int(np.argmax(counts["train_summary"]["class_counts"]))]
    assert all(by_take[t] == majority for t in result.filled) and result.filled
    with pytest.raises(UnpredictableTakesError):
        predict_egoexo4d(
            PredictConfig(
                store=store.path, run=runs["cvf"].run_dir, format="egoexo4d-labels", out_json=out
            )
        )


# ---- 5. leakage guards --------------------------------------------------------------------


def test_run_folder_records_its_takes_and_participants(store, runs):
    run = runs["mean"]
    takes = json.loads((run.run_dir / "config.json").read_text())["takes"]
    splits = table_splits(store)
    assert len(takes["train_ids"]) == takes["n"]["train"] and takes["val_ids"]
    assert {splits[t] for t in takes["train_ids"]} == {"train"}
    assert {splits[t] for t in takes["val_ids"]} == {"val"}
    assert takes["train_participants"] == sorted({t.split("_")[0] for t in takes["train_ids"]})


def test_leakage_warnings_name_the_count(store, runs, tmp_path_factory, tmp_path):
    from skill.cli import app

    run = runs["mean"].run_dir
    splits = table_splits(store)
    train = predict(
        PredictConfig(store=store.path, run=run, out_csv=tmp_path / "a.csv", split="train")
    )
    assert len(train.warnings) == 2  # training takes, and their participants
    assert f"{len(train.take_ids)} of the {len(train.take_ids)} takes written to a.csv were " \
           "among the run's training takes" in train.warnings[0]  # fmt: skip
    assert "share participants with the run's training takes" in train.warnings[1]
    val = predict(PredictConfig(store=store.path, run=run, out_csv=tmp_path / "b.csv", split="val"))
    assert len(val.warnings) == 1 and "run's validation takes" in val.warnings[0]
    assert (
        predict(
            PredictConfig(store=store.path, run=run, out_csv=tmp_path / "c.csv", split="test")
        ).warnings
        == []
    )
    # a test take of a training participant
    copy = tmp_path_factory.mktemp("leaky") / "leaky.zarr"
    shutil.copytree(store.path, copy)
    test_take = next(t for t in store.take_ids if splits[t] == "test")
    edit_take(copy, test_take, participant="p00")
    leaky = predict(PredictConfig(store=copy, run=run, out_csv=tmp_path / "d.csv", split="test"))
    assert leaky.warnings == [
        f"1 of the {len(leaky.take_ids)} takes written to d.csv share participants with the "
        "run's training takes (1 participant(s): p00)"
    ]
    done = runner.invoke(app, ["predict", str(copy), "--run", str(run), "--out",
                               str(tmp_path / "e.csv"), "--split", "test"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "warning: 1 of the" in " ".join(done.output.split())


def test_leakage_counts_the_takes_of_the_prediction_file_only(store, runs, tmp_path):
    from skill.cli import app

    run = runs["mean"].run_dir
    splits = table_splits(store)
    val = [t for t in store.take_ids if splits[t] == "val"]
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path, run=run, format="egoexo4d", out_json=tmp_path / "v.json", order=val
        )
    )  # every take predicted, the val takes written
    assert len(result.take_ids) > len(val) == result.file_takes
    assert result.warnings == [
        f"{len(val)} of the {len(val)} takes written to v.json were among the run's validation "
        "takes (scores on them are not held-out figures)"
    ]  # the training takes the run also predicted are not in the file
    (tmp_path / "val.txt").write_text("\n".join(val))
    done = runner.invoke(app, ["predict", str(store.path), "--run", str(run), "--out",
                               str(tmp_path / "w.csv"), "--format", "egoexo4d", "--order",
                               str(tmp_path / "val.txt")])  # fmt: skip
    assert done.exit_code == 0, done.output
    text = " ".join(done.output.split())
    assert f"warning: {len(val)} of the {len(val)} takes written to w.json" in text
    assert "training takes" not in text


def test_runs_without_the_record_give_no_warning(store, runs, tmp_path):
    run = tmp_path / "old-run"
    shutil.copytree(runs["mean"].run_dir, run)
    config = json.loads((run / "config.json").read_text())
    for key in ("train_ids", "val_ids", "train_participants"):
        del config["takes"][key]
    (run / "config.json").write_text(json.dumps(config))
    assert (
        predict(
            PredictConfig(store=store.path, run=run, out_csv=tmp_path / "p.csv", split="train")
        ).warnings
        == []
    )


# ---- 6. participant aggregation -----------------------------------------------------------


def test_participant_aggregate_is_a_mean_over_the_takes_of_each_person(store, runs, tmp_path):
    from skill.cli import app

    out = tmp_path / "agg.json"
    single = predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs["late"].run_dir,
            format="egoexo4d",
            out_json=out,
            split="test",
        )
    )
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs["late"].run_dir,
            format="egoexo4d",
            out_json=out,
            split="test",
            aggregate="participant",
        )
    )
    assert result.aggregate == "participant" and result.take_ids == single.take_ids
    person = np.array([t.split("_")[0] for t in result.take_ids])
    for p in set(person):
        rows = person == p
        want = np.broadcast_to(single.scores[rows].mean(0), result.scores[rows].shape)
        np.testing.assert_allclose(result.scores[rows], want, atol=1e-6)
    scores, preds = scorer(json.loads(out.read_text()), labelled(result))
    assert scores == pytest.approx(result.benchmark)
    assert scores["ego+exo"] == pytest.approx(result.metrics["all"]["top1"])
    with pytest.raises(ConfigError, match="--aggregate must be none or participant, not 'sc"):
        predict(
            PredictConfig(
                store=store.path,
                run=runs["late"].run_dir,
                out_csv=tmp_path / "p.csv",
                aggregate="scenario",
            )
        )
    done = runner.invoke(app, ["predict", str(store.path), "--run", str(runs["late"].run_dir),
                               "--out", str(tmp_path / "p.csv"), "--split", "test",
                               "--aggregate", "participant"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "outside the benchmark's input rules" in " ".join(done.output.split())


def test_each_format_is_written_by_its_own_room(store, runs, tmp_path):
    """skill's CSV comes from heads.predict, the EgoExo4D files from interop.egoexo4d: each
    refuses the other's format before anything is computed or written."""
    with pytest.raises(ValueError, match="predict_egoexo4d"):
        predict(
            PredictConfig(
                store=store.path,
                run=runs["mean"].run_dir,
                format="egoexo4d",
                out_json=tmp_path / "p.json",
            )
        )
    with pytest.raises(ValueError, match="not an EgoExo4D file"):
        predict_egoexo4d(
            PredictConfig(store=store.path, run=runs["mean"].run_dir, out_csv=tmp_path / "p.csv")
        )
    assert not any(tmp_path.iterdir())
