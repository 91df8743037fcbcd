"""`skill predict` logic: CSV and EgoExo4D prediction files, refusals, masked views."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from skill.heads import head_names
from skill.heads.config import FitConfig, PredictConfig
from skill.heads.lgbm import LightGBMSettings
from skill.heads.predict import RunMismatchError, predict
from skill.heads.registry import HEAD_READS
from skill.heads.train import fit
from skill.interop.egoexo4d import late_slots, predict_egoexo4d, read_take_order
from tests.markers import one_fast
from tests.token_store import LABELS, PROVENANCE, shared_token_store

QUICK = dict(epochs=10, batch_size=16, lr=3e-3, hidden=64, patience=0, plots=False,
             lightgbm=LightGBMSettings(lgbm_rounds=60, lgbm_learning_rate=0.1,
                                       lgbm_threads=1))  # fmt: skip


class Runs(dict):
    """Fitted runs by head name, each fitted on first use (once per module)."""

    def __init__(self, store, out):
        super().__init__()
        self.store, self.out = store, out

    def __missing__(self, head: str):
        cfg = FitConfig(store=str(self.store.path), head=head, out_dir=str(self.out), **QUICK)
        self[head] = fit(cfg)
        return self[head]


@pytest.fixture(scope="module")
def runs(store, tmp_path_factory):
    """Fitted runs by head name (every registered head can be asked for)."""
    return Runs(store, tmp_path_factory.mktemp("runs"))


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def official_scores(payload: dict, truth: dict[str, int]) -> dict[str, float]:
    """The EgoExo4D scorer's three numbers: argmax of the ego logits, of the mean exo
    softmax, and of the mean of all five softmaxes."""
    rows = [i for i, t in enumerate(payload["videos"]) if t in truth]
    ego = np.array(payload["ego_model_predictions"])[rows]  # (n, C)
    exo = np.array(payload["exo_model_predictions"])[rows]  # (n, 4, C)
    y = np.array([truth[payload["videos"][i]] for i in rows])
    both = (softmax(ego) + softmax(exo).sum(axis=1)) / 5
    return {
        "ego": float((ego.argmax(1) == y).mean()),
        "exo": float((softmax(exo).mean(axis=1).argmax(1) == y).mean()),
        "ego+exo": float((both.argmax(1) == y).mean()),
    }


@pytest.mark.parametrize(
    "head", one_fast([h for h in head_names() if HEAD_READS[h] == "clip"], "concat")
)
def test_csv_round_trip_matches_the_fit(head, store, runs, tmp_path):
    run = runs[head]
    result = predict(
        PredictConfig(store=store.path, run=run.run_dir, out_csv=tmp_path / "pred.csv")
    )
    rows = read_csv(tmp_path / "pred.csv")
    expected = set(store.take_ids) - set(store.pending + store.failed + store.all_views_invalid)
    assert {r["take"] for r in rows} == expected
    assert sorted(result.skipped) == sorted(store.pending + store.failed + store.all_views_invalid)
    assert list(rows[0]) == ["take", "split", "scenario", "predicted",
                             *(f"p_{c}" for c in LABELS), "label"]  # fmt: skip
    for row in rows:
        probs = np.array([float(row[f"p_{c}"]) for c in LABELS])
        assert probs.sum() == pytest.approx(1, abs=1e-4)
        assert row["predicted"] == LABELS[int(probs.argmax())]
        assert (row["label"] == "") == (row["take"] in store.unlabelled)
    # weights (safetensors / LightGBM text) load back and give the fit's own predictions
    fit_ids, fit_probs = run.predictions["val"]
    index = {t: i for i, t in enumerate(result.take_ids)}
    np.testing.assert_allclose(result.scores[[index[t] for t in fit_ids]], fit_probs, atol=1e-6)
    assert result.metrics["val"]["top1"] == pytest.approx(run.metrics["val"]["top1"])
    assert result.metrics["test"]["top1"] == pytest.approx(run.metrics["test"]["top1"])


def test_partly_masked_takes_are_still_predicted(store, runs, tmp_path):
    result = predict(
        PredictConfig(store=store.path, run=runs["mean"].run_dir, out_csv=tmp_path / "p.csv")
    )
    assert store.partly_masked and set(store.partly_masked) <= set(result.take_ids)
    only_ego = predict(
        PredictConfig(
            store=store.path, run=runs["mean"].run_dir, out_csv=tmp_path / "ego.csv", views="ego"
        )
    )
    assert only_ego.used_views == ["ego"]
    # takes without an ego view now have nothing to predict from
    assert len(only_ego.take_ids) < len(result.take_ids)
    assert not np.allclose(only_ego.scores[:5], result.scores[:5])


def test_egoexo4d_file_for_a_fusion_head(store, runs, tmp_path):
    out = tmp_path / "pred.json"
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs["mean"].run_dir,
            out_csv=tmp_path / "p.csv",
            format="egoexo4d",
            out_json=out,
            unpredictable="uniform",
        )
    )
    payload = json.loads(out.read_text())
    assert set(payload) == {"videos", "ego_model_predictions", "exo_model_predictions"}
    assert payload["videos"] == store.take_ids  # the store's take order, every take
    ego, exo = (
        np.array(payload["ego_model_predictions"]),
        np.array(payload["exo_model_predictions"]),
    )
    assert ego.shape == (len(store.take_ids), 4) and exo.shape == (len(store.take_ids), 4, 4)
    # a fusion head fills every slot with the fused prediction
    np.testing.assert_allclose(exo, np.repeat(ego[:, None], 4, axis=1))
    for take in store.pending + store.failed + store.all_views_invalid:
        assert not ego[store.take_ids.index(take)].any()  # uniform guess for the unpredictable
    truth = {t: LABELS.index(p) for t, p in zip(*_labelled_truth(result), strict=True)}
    scores = official_scores(payload, truth)
    assert scores["ego"] == scores["exo"] == scores["ego+exo"]
    assert scores["ego"] == pytest.approx(result.metrics["all"]["top1"])


def _labelled_truth(result) -> tuple[list[str], list[str]]:
    rows = [i for i, t in enumerate(result.take_ids) if result.targets[i] >= 0]
    return [result.take_ids[i] for i in rows], [LABELS[result.targets[i]] for i in rows]


def test_egoexo4d_file_for_the_late_head_uses_per_view_logits(store, runs, tmp_path):
    from skill.heads.data import load_selection
    from skill.heads.trainer import clip_mean_scores

    out = tmp_path / "late.json"
    result = predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs["late"].run_dir,
            format="egoexo4d",
            out_json=out,
            unpredictable="uniform",
        )
    )
    payload = json.loads(out.read_text())
    model = _load_model(runs["late"].run_dir)
    sel = load_selection(store.path, "all")
    per_view = np.log(clip_mean_scores(model.per_view_logits, sel.task, sel.x, sel.mask,
                                       np.arange(sel.n), 64, "cpu"))  # fmt: skip
    row = {t: i for i, t in enumerate(payload["videos"])}
    ego, exo = (
        np.array(payload["ego_model_predictions"]),
        np.array(payload["exo_model_predictions"]),
    )
    for i, take in enumerate(sel.take_ids):
        mask = sel.mask[i]
        fallback = np.log(np.exp(per_view[i][mask]).mean(axis=0))  # the fused output
        want_ego = per_view[i, 0] if mask[0] else fallback
        np.testing.assert_allclose(ego[row[take]], want_ego, atol=1e-5)
        for slot in range(3):  # exo1..exo3 of the store; slot 4 has no camera here
            want = per_view[i, slot + 1] if mask[slot + 1] else fallback
            np.testing.assert_allclose(exo[row[take], slot], want, atol=1e-5)
        np.testing.assert_allclose(exo[row[take], 3], fallback, atol=1e-5)
    assert result.out_csv is None and result.out_json == out
    truth = {t: LABELS.index(p) for t, p in zip(*_labelled_truth(result), strict=True)}
    scores = official_scores(payload, truth)
    assert min(scores.values()) > 0.4  # each slot is a working classifier on its own


def _load_model(run_dir):
    from skill.heads.predict import load_run_model
    from skill.heads.run_folder import read_run_record

    return load_run_model(run_dir, read_run_record(run_dir))


def test_late_slots_fallback_is_the_fused_output():
    log_probs = np.log(np.array([[[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]]]))  # (1, V=3, C=2)
    mask = np.array([[False, True, True]])
    fused = np.log(np.exp(log_probs[:, 1:]).mean(axis=1))  # the late head's output
    slots = late_slots(log_probs, mask, ["ego", "exo1", "exo2"], fused)
    fallback = fused[0]
    np.testing.assert_allclose(slots[0, 0], fallback)  # ego missing
    np.testing.assert_allclose(slots[0, 1], log_probs[0, 1])
    np.testing.assert_allclose(slots[0, 2], log_probs[0, 2])
    np.testing.assert_allclose(slots[0, 3:], [fallback, fallback])  # no exo3/exo4 camera


def test_given_order_is_followed_and_checked(store, runs, tmp_path):
    order = list(reversed(store.take_ids[:10]))
    (tmp_path / "order.txt").write_text("\n".join(order) + "\n")
    assert read_take_order(tmp_path / "order.txt") == order
    out = tmp_path / "o.json"
    predict_egoexo4d(
        PredictConfig(
            store=store.path,
            run=runs["mean"].run_dir,
            format="egoexo4d",
            out_json=out,
            order=order,
            unpredictable="uniform",
        )
    )
    assert json.loads(out.read_text())["videos"] == order
    (tmp_path / "gt.json").write_text(json.dumps({"videos": order}))
    assert read_take_order(tmp_path / "gt.json") == order
    with pytest.raises(ValueError, match="not in .*: nope_take"):
        predict_egoexo4d(
            PredictConfig(
                store=store.path,
                run=runs["mean"].run_dir,
                format="egoexo4d",
                out_json=out,
                order=["nope_take"],
            )
        )


def test_store_with_other_provenance_is_refused(store, runs, tmp_path_factory, tmp_path):
    other = json.loads(json.dumps(PROVENANCE))
    other["backbone"]["weights_sha256"] = "def456" * 8
    other["token_mode"] = "cls"
    changed = shared_token_store(tmp_path_factory, name="other-backbone", n_participants=4,
                                 takes_per_participant=3, provenance=other)  # fmt: skip
    with pytest.raises(RunMismatchError) as err:
        predict(
            PredictConfig(store=changed.path, run=runs["mean"].run_dir, out_csv=tmp_path / "p.csv")
        )
    message = str(err.value)
    assert 'backbone.weights_sha256: store "def456def456' in message
    assert 'vs run "abc123abc123' in message
    assert 'token_mode: store "cls" vs run "mean_patches"' in message
    assert "backbone.name" not in message  # only the fields that differ
    assert not (tmp_path / "p.csv").exists()


def test_a_keyframe_store_is_refused_for_a_run_fitted_on_exact_frames(
    runs, tmp_path_factory, tmp_path
):
    keyframe = json.loads(json.dumps(PROVENANCE))
    keyframe["sampling"]["snap"] = "keyframe"  # as SamplingConfig(snap="keyframe").to_dict()
    snapped = shared_token_store(tmp_path_factory, name="keyframe-sampling", n_participants=4,
                                 takes_per_participant=3, provenance=keyframe)  # fmt: skip
    with pytest.raises(RunMismatchError, match='sampling.snap: store "keyframe" vs run null'):
        predict(
            PredictConfig(store=snapped.path, run=runs["mean"].run_dir, out_csv=tmp_path / "p.csv")
        )
    assert not (tmp_path / "p.csv").exists()


def test_store_missing_a_view_is_refused_unless_left_out(runs, tmp_path_factory, tmp_path):
    three = shared_token_store(tmp_path_factory, name="no-exo3", n_participants=4,
                               takes_per_participant=3, views=["ego", "exo1", "exo2"])  # fmt: skip
    with pytest.raises(RunMismatchError, match="has no view exo3 that run"):
        predict(
            PredictConfig(store=three.path, run=runs["late"].run_dir, out_csv=tmp_path / "p.csv")
        )
    result = predict(
        PredictConfig(
            store=three.path,
            run=runs["late"].run_dir,
            out_csv=tmp_path / "p.csv",
            views="ego,exo1,exo2",
        )
    )
    assert result.used_views == ["ego", "exo1", "exo2"] and len(result.take_ids) > 0


def test_incomplete_run_folder_is_refused(store, tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="not a complete run folder"):
        predict(PredictConfig(store=store.path, run=tmp_path / "half", out_csv=tmp_path / "p.csv"))


def test_run_config_problems_name_the_file_and_the_field(store, runs, tmp_path):
    from skill.errors import SkillError
    from skill.heads.run_folder import RunFolderError

    run = tmp_path / "run"
    shutil.copytree(runs["mean"].run_dir, run)
    config = json.loads((run / "config.json").read_text())
    broken = {**config, "model": {k: v for k, v in config["model"].items() if k != "file"}}
    (run / "config.json").write_text(json.dumps(broken))
    with pytest.raises(RunFolderError, match=r"config\.json: missing field model\.file"):
        predict(PredictConfig(store=store.path, run=run, out_csv=tmp_path / "p.csv"))
    (run / "config.json").write_text(json.dumps({**config, "view_names": "ego"}))
    with pytest.raises(RunFolderError, match="field view_names has type str, expected list"):
        predict(PredictConfig(store=store.path, run=run, out_csv=tmp_path / "p.csv"))
    (run / "config.json").write_text(json.dumps({**config, "skill_run_format": 99}))
    with pytest.raises(RunFolderError, match="run format 99 is newer than this skill"):
        predict(PredictConfig(store=store.path, run=run, out_csv=tmp_path / "p.csv"))
    assert issubclass(RunFolderError, SkillError) and issubclass(RunMismatchError, SkillError)


def test_predict_takes_a_predict_config_whose_problems_name_the_option(store, runs, tmp_path):
    from skill.errors import ConfigError

    cfg = PredictConfig(store=store.path, run=runs["mean"].run_dir, out_csv=tmp_path / "p.csv",
                        format="egoexo4d", unpredictable="uniform")  # fmt: skip
    assert cfg.out_json == str(tmp_path / "p.json")
    result = predict_egoexo4d(cfg)
    assert result.out_json.is_file() and result.out_csv.is_file()
    with pytest.raises(ConfigError, match="--format must be .*, not 'xml'"):
        PredictConfig(store="s.zarr", run="run", out_csv="p.csv", format="xml")
    with pytest.raises(ConfigError, match="--out-csv"):
        PredictConfig(store="s.zarr", run="run")
    with pytest.raises(ConfigError, match="--batch-size"):
        PredictConfig(store="s.zarr", run="run", out_csv="p.csv", batch_size=0)
