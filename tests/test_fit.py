"""`skill fit` logic on a small synthetic token store: every head learns, runs are
reproducible and complete, splits never share a participant."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skill.heads import HEADS, head_names
from skill.heads.config import FitConfig
from skill.heads.data import load_selection, resolve_views, split_takes
from skill.heads.lgbm import LightGBMSettings
from skill.heads.registry import HEAD_READS, is_trainable, resolve_head
from skill.heads.train import fit
from skill.heads.trainer import drop_views
from skill.tasks import get_task
from skill.tasks.metrics import (
    balanced_accuracy,
    confusion_matrix,
    macro_f1,
    majority_baseline,
    random_baseline,
)
from tests.token_store import LABELS, PROVENANCE, VIEWS, shared_token_store

# Small and quick: the synthetic signal is strong, so a few epochs suffice.
QUICK = dict(epochs=12, batch_size=16, lr=3e-3, hidden=64, patience=0, plots=False,
             lightgbm=LightGBMSettings(lgbm_rounds=100, lgbm_learning_rate=0.1,
                                       lgbm_threads=1))  # fmt: skip


@pytest.fixture(scope="module")
def selection(store):
    return load_selection(store.path, "all")


def quick(store, tmp_path, **overrides) -> FitConfig:
    return FitConfig(
        store=str(store.path), out_dir=str(tmp_path / "runs"), **{**QUICK, **overrides}
    )


@pytest.mark.parametrize("head", [h for h in head_names() if HEAD_READS[h] == "clip"])
def test_every_head_beats_chance_clearly(head, store, selection, tmp_path):
    result = fit(quick(store, tmp_path, head=head), selection=selection)
    for split in ("val", "test"):
        metrics = result.metrics[split]
        assert metrics["n"] >= 30
        assert metrics["top1"] >= 0.6, (head, split, metrics["top1"])
        assert metrics["top1"] > metrics["baselines"]["majority"]["top1"] + 0.2
        assert metrics["baselines"]["random_uniform"] == 0.25


def test_ego_alone_cannot_tell_the_low_bit(store, tmp_path):
    # The synthetic low class bit lives only in exo views: ego-only stays near 50 %.
    result = fit(quick(store, tmp_path, head="lightgbm", views="ego"))
    assert result.metrics["val"]["top1"] < 0.7
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["view_names"] == ["ego"]


def test_same_seed_gives_identical_metrics_and_weights(store, selection, tmp_path):
    cfg = quick(store, tmp_path, head="cvf", view_dropout=0.3, epochs=4)
    first, second = fit(cfg, selection=selection), fit(cfg, selection=selection)
    for key in ("val", "test", "history", "best_epoch"):
        assert first.metrics[key] == second.metrics[key]
    assert (first.run_dir / "model.safetensors").read_bytes() == (
        second.run_dir / "model.safetensors"
    ).read_bytes()
    # the second run never overwrites the first: it gets a suffix
    assert first.run_dir.name == "cvf-all-s0" and second.run_dir.name == "cvf-all-s0-2"
    other = fit(quick(store, tmp_path, head="cvf", view_dropout=0.3, epochs=4, seed=1), selection)
    assert other.metrics["history"] != first.metrics["history"]
    # the fit's torch settings are its own: the caller's come back
    assert not torch.are_deterministic_algorithms_enabled()


def test_early_stopping_restores_the_best_epoch(store, selection, tmp_path):
    cfg = quick(store, tmp_path, head="mean", epochs=40, patience=2, monitor="loss",
                class_balanced=True, lr=1e-2)  # fmt: skip
    result = fit(cfg, selection=selection)
    history, best = result.metrics["history"], result.metrics["best_epoch"]
    assert result.metrics["epochs_run"] < 40 and len(history) == best + 2
    assert min(h["val_loss"] for h in history) == history[best - 1]["val_loss"]
    # the kept weights are the best epoch's: evaluating them again gives its loss
    assert result.metrics["val"]["loss"] == pytest.approx(history[best - 1]["val_loss"])


def test_lightgbm_is_reproducible(store, selection, tmp_path):
    cfg = quick(store, tmp_path, head="lightgbm")
    first, second = fit(cfg, selection=selection), fit(cfg, selection=selection)
    assert first.metrics["val"] == second.metrics["val"]
    assert (first.run_dir / "model.txt").read_text() == (second.run_dir / "model.txt").read_text()


def test_run_folder_contents(store, selection, tmp_path):
    from safetensors.torch import load_file

    result = fit(quick(store, tmp_path, head="late", plots=True), selection=selection)
    run = result.run_dir
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.json", "model.safetensors", "confusion.png", "curve.png",
            "predictions.csv"} <= names  # fmt: skip
    assert not [p for p in run.parent.iterdir() if p.name.startswith(".")]  # no staging left
    config = json.loads((run / "config.json").read_text())
    assert config["store"]["provenance"] == json.loads(json.dumps(PROVENANCE))
    assert config["store"]["path"] == str(Path(store.path).resolve())
    assert config["view_names"] == VIEWS and config["task"]["schema"]["labels"] == LABELS
    assert config["fit"]["head"] == "late" and config["fit"]["seed"] == 0
    assert config["model"]["options"]["hidden"] == 64
    assert len(config["takes"]["take_ids_sha256"]) == 64
    assert config["package_version"]
    assert config["takes"]["dropped_no_valid_view"] == []  # every view chosen: none is dropped
    weights = load_file(str(run / "model.safetensors"))
    assert weights and all(t.dtype == torch.float32 for t in weights.values())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val"]["top1"] == result.metrics["val"]["top1"]
    assert (run / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_killed_fit_leaves_no_run_that_looks_complete(store, selection, tmp_path, monkeypatch):
    import skill.heads.run_folder

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C while the run folder is being written

    monkeypatch.setattr(skill.heads.run_folder, "write_predictions_csv", crash)
    with pytest.raises(KeyboardInterrupt):
        fit(quick(store, tmp_path, head="mean", epochs=1), selection=selection)
    runs = tmp_path / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []


def test_config_rejects_conflicting_settings(store):
    with pytest.raises(ValueError, match="--epochs must be at least 1"):
        FitConfig(store=str(store.path), epochs=0)
    with pytest.raises(ValueError, match="--val-frac"):
        FitConfig(store=str(store.path), val_frac=1.0)
    with pytest.raises(ValueError, match="'nope' is not a head"):
        FitConfig(store=str(store.path), head="nope")
    with pytest.raises(ValueError, match="--view-dropout"):
        FitConfig(store=str(store.path), view_dropout=1.0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            FitConfig(store=str(store.path), device="cuda")
        assert FitConfig(store=str(store.path), device="auto").device == "cpu"
    assert (
        FitConfig(store=str(store.path), head="late", views="ego,exo2").name == "late-ego+exo2-s0"
    )


def test_resolve_views():
    assert resolve_views("all", VIEWS) == VIEWS
    assert resolve_views("exo", VIEWS) == ["exo1", "exo2", "exo3"]
    assert resolve_views("exo2, ego", VIEWS) == ["ego", "exo2"]
    with pytest.raises(ValueError, match="valid views: all, exo, ego, exo1, exo2, exo3"):
        resolve_views("ego,exo9", VIEWS)
    with pytest.raises(ValueError, match="no exo view"):
        resolve_views("exo", ["ego"])


def test_selection_masks_views_and_drops_takes_without_any(store, selection):
    ids = set(selection.take_ids.tolist())
    assert not ids & set(store.pending + store.failed + store.all_views_invalid)
    assert selection.dropped_take_ids == []  # a complete take has a valid view
    assert selection.n_incomplete == len(store.pending + store.failed + store.all_views_invalid)
    assert selection.x.dtype == np.float16 and selection.x.shape[1:] == (4, 2, 4, 32)
    assert selection.mask.any(axis=1).all() and not selection.mask.all()
    # a masked view holds no data, a valid one does
    assert not selection.x[~selection.mask].any()
    assert np.abs(selection.x[selection.mask]).sum(axis=(1, 2, 3)).min() > 0
    partly = [i for i, t in enumerate(selection.take_ids) if t in store.partly_masked]
    assert partly and all(not selection.mask[i].all() for i in partly)
    ego = load_selection(store.path, "ego")  # takes without ego are dropped for ego alone
    assert ego.n == int(selection.mask[:, 0].sum())


def test_store_splits_and_unlabelled_takes(store, selection):
    splits = split_takes(selection)
    assert splits.source == "store"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (
        (selection.split == "train").sum(),
        (selection.split == "val").sum(),
        (selection.split == "test").sum(),
    )
    used = np.concatenate([splits.train, splits.val, splits.test])
    assert (selection.targets[used] >= 0).all()
    assert not set(selection.take_ids[used]) & set(store.unlabelled)


def test_missing_val_split_is_carved_from_train_by_participant(selection):
    no_val = dataclasses.replace(
        selection, split=np.where(selection.split == "val", "train", selection.split)
    )
    splits = split_takes(no_val, val_frac=0.2, seed=0)
    assert splits.source == "store+grouped"
    assert not set(no_val.participant[splits.train]) & set(no_val.participant[splits.val])
    assert set(no_val.split[splits.test]) == {"test"} and len(splits.test) == 40
    assert len(splits.val) + len(splits.train) == int((no_val.split == "train").sum())


def test_grouped_split_has_no_participant_on_both_sides(tmp_path_factory, tmp_path):
    unsplit = shared_token_store(
        tmp_path_factory,
        name="unsplit",
        with_splits=False,
        n_participants=20,
        takes_per_participant=3,
    )
    sel = load_selection(unsplit.path, "all")
    splits = split_takes(sel, val_frac=0.25, seed=3)
    assert splits.source == "grouped" and len(splits.test) == 0
    train_people = set(sel.participant[splits.train])
    val_people = set(sel.participant[splits.val])
    assert train_people and val_people and not train_people & val_people
    assert set(sel.targets[splits.val]) == {0, 1, 2, 3}  # stratified by the participants' labels
    assert len(val_people) == 4  # 25 % of the 5 participants of each label, rounded
    again = split_takes(sel, val_frac=0.25, seed=3)
    assert np.array_equal(again.val, splits.val)
    assert not np.array_equal(split_takes(sel, val_frac=0.25, seed=4).val, splits.val)
    result = fit(quick(unsplit, tmp_path, head="concat", val_frac=0.25, split_seed=3), sel)
    assert result.metrics["splits"]["source"] == "grouped" and "test" not in result.metrics


def test_view_dropout_never_drops_every_view():
    rng = np.random.default_rng(0)
    mask = rng.random((500, 4)) > 0.3
    mask[~mask.any(axis=1), 0] = True
    kept = drop_views(mask, 0.95, rng)
    assert kept.any(axis=1).all()
    assert not (kept & ~mask).any()  # never revives a missing view
    assert (kept.sum(axis=1) == 1).mean() > 0.8  # almost everything dropped but one view
    light = drop_views(mask, 0.3, rng)
    assert 0.6 < light.sum() / mask.sum() < 0.8


def test_metrics_and_baselines():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 3])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    assert confusion_matrix(y_true, y_pred, 4).tolist() == [
        [3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]
    ]  # fmt: skip
    # recalls 3/4, 1/2, 1, 0 -> mean 0.5625
    assert balanced_accuracy(y_true, y_pred, 4) == pytest.approx(0.5625)
    # F1: class0 2*3/(4+4)=0.75, class1 2*1/(2+2)=0.5, class2 2/(1+2)=2/3, class3 0
    assert macro_f1(y_true, y_pred, 4) == pytest.approx((0.75 + 0.5 + 2 / 3 + 0) / 4)
    train = np.array([1, 1, 1, 0, 2, 3])
    major = majority_baseline(train, y_true, 4)
    assert major["label"] == 1 and major["top1"] == pytest.approx(2 / 8)
    rand = random_baseline(train, y_true, 4)
    assert rand["random_uniform"] == 0.25
    # train prior (1/6, 3/6, 1/6, 1/6) . eval prior (4/8, 2/8, 1/8, 1/8)
    assert rand["random_prior"] == pytest.approx((4 + 6 + 1 + 1) / 48)
    probs = np.eye(4)[y_pred] * 0.7 + 0.075
    metrics = get_task("classification").evaluate(
        {"labels": list("wxyz")}, y_true, probs, np.array(["a"] * 4 + ["b"] * 4), train
    )
    assert metrics["top1"] == pytest.approx(5 / 8)
    assert metrics["per_scenario"] == {"a": {"n": 4, "top1": 0.75}, "b": {"n": 4, "top1": 0.5}}


@pytest.mark.parametrize(
    "name", [h for h in head_names() if not is_trainable(HEADS[h]) and HEAD_READS[h] == "clip"]
)
def test_tokens_pooled_once_give_the_same_logits_as_raw_tokens(selection, name):
    """A head flagged ``pools_tokens`` is trained on ``head_input`` (the per-view token mean
    computed once); the flag is only right if that input changes nothing."""
    from skill.heads.trainer import head_input

    torch.manual_seed(0)
    x = selection.x[:12]  # (12, V, K, N, D) float16
    spec = resolve_head(name)
    head = spec.build(dim=selection.dim, num_views=selection.num_views,
                      outputs=4, tokens=selection.tokens, hidden=16).eval()  # fmt: skip
    fed = head_input(spec, x)
    mask = torch.from_numpy(selection.mask[:12])
    with torch.no_grad():
        raw = head(torch.from_numpy(x[:, :, 0]).float(), mask)
        pooled = head(torch.from_numpy(fed[:, :, 0]).float(), mask)
    if spec.pools_tokens:
        assert fed.shape == (*x.shape[:3], 1, x.shape[4]) and fed.dtype == np.float32
        torch.testing.assert_close(pooled, raw, atol=1e-5, rtol=1e-5)
    else:
        assert fed is x
        # Such a head must see every token: averaging them first would change it.
        x_pooled = np.repeat(x.astype(np.float32).mean(axis=3, keepdims=True), x.shape[3], 3)
        with torch.no_grad():
            flat = head(torch.from_numpy(x_pooled[:, :, 0]), mask)
        assert not torch.allclose(flat, raw, atol=1e-4)


def test_every_config_field_has_a_docstring_and_fit_defaults_to_cvf(store):
    import ast
    import inspect

    import skill.heads.config as config

    tree = ast.parse(inspect.getsource(config))
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
        body = cls.body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                after = body[i + 1] if i + 1 < len(body) else None
                described = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                assert described, f"{cls.name}.{node.target.id} has no docstring"
    assert FitConfig(store=str(store.path)).head == "cvf"
    with pytest.raises(ValueError, match="--lgbm-feature-fraction must be in"):
        FitConfig(store=str(store.path), lightgbm=LightGBMSettings(lgbm_feature_fraction=0.0))


def test_view_dropout_default_is_the_heads_and_only_with_several_views(store, tmp_path):
    # None = the head's multi-view default (cvf 0.2), 0 with one view or for other heads;
    # config.json records the value used, and training with it equals training given it.
    ran = {}
    for head, views in (("cvf", "all"), ("cvf", "ego"), ("late", "all")):
        result = fit(quick(store, tmp_path, head=head, views=views, epochs=2))
        config = json.loads((result.run_dir / "config.json").read_text())
        ran[head, views] = (config["fit"]["view_dropout"], result.metrics["history"])
    assert [drop for drop, _ in ran.values()] == [0.2, 0.0, 0.0]
    given = fit(quick(store, tmp_path, head="cvf", views="all", epochs=2, view_dropout=0.2))
    assert given.metrics["history"] == ran["cvf", "all"][1]
    none = fit(quick(store, tmp_path, head="cvf", views="all", epochs=2, view_dropout=0.0))
    assert none.metrics["history"] != ran["cvf", "all"][1]


def test_lr_default_is_the_heads_and_recorded(store, tmp_path):
    # None = the head's default (cvf 3e-3, the others 1e-3), written resolved to
    # config.json; training with it equals training given it, and another rate differs.
    from skill.heads.registry import DEFAULT_LR, head_names

    defaults = {head: resolve_head(head).default_lr for head in head_names()}
    assert defaults["cvf"] == 3e-3 and defaults["concat"] == DEFAULT_LR == 1e-3
    ran = {}
    for head in ("cvf", "concat"):
        result = fit(quick(store, tmp_path, head=head, epochs=2, lr=None))
        config = json.loads((result.run_dir / "config.json").read_text())
        ran[head] = (config["fit"]["lr"], result.metrics["history"])
        assert max(row["lr"] for row in result.metrics["history"]) <= ran[head][0]
    assert [lr for lr, _ in ran.values()] == [3e-3, 1e-3]
    given = fit(quick(store, tmp_path, head="cvf", epochs=2, lr=3e-3))
    assert given.metrics["history"] == ran["cvf"][1]
    other = fit(quick(store, tmp_path, head="cvf", epochs=2, lr=1e-3))
    assert other.metrics["history"] != ran["cvf"][1]


def test_the_trainers_steps_take_a_config_resolved_once_with_the_head(store, selection, tmp_path):
    # A caller of the trainer's steps (a benchmark, a notebook) resolves its config once with
    # the head it looked up: lr and view_dropout left unset then train exactly as the head's
    # defaults given; a config left unresolved is refused, not trained with None.
    from skill.heads.trainer import TokenBatches, deterministic_torch, start_training, train_epoch

    splits = split_takes(selection, 0.25, 0)
    spec = resolve_head("cvf")
    unresolved = quick(store, tmp_path, head="cvf", epochs=1, lr=None, view_dropout=None)
    with pytest.raises(ValueError, match="resolved config"):
        start_training(unresolved, selection, splits, spec)
    losses = {}
    for lr, drop in ((None, None), (3e-3, 0.2), (1e-3, 0.2)):
        cfg = quick(store, tmp_path, head="cvf", epochs=1, lr=lr, view_dropout=drop)
        cfg = cfg.resolved(spec, selection.num_views, selection.task)
        with deterministic_torch(cfg.seed, cfg.device, cfg.threads):
            state = start_training(cfg, selection, splits, spec)
            batches = TokenBatches(state.cfg, selection, splits.train, spec)
            losses[lr, drop] = train_epoch(state, batches)
        assert (state.cfg.lr, state.cfg.view_dropout) == (lr or 3e-3, drop or 0.2)
    assert losses[None, None] == losses[3e-3, 0.2] != losses[1e-3, 0.2]


@pytest.mark.parametrize("head", ["mean", "lightgbm"])
def test_a_fit_looks_its_head_up_once_and_resolves_its_config_once(
    head, store, selection, tmp_path, monkeypatch
):
    import skill.heads.registry as registry

    lookups, resolutions = [], []
    head_class, resolved = registry.head_class, FitConfig.resolved
    monkeypatch.setattr(
        registry, "head_class", lambda name: lookups.append(name) or head_class(name)
    )
    monkeypatch.setattr(
        FitConfig, "resolved", lambda cfg, *args: resolutions.append(args) or resolved(cfg, *args)
    )
    fit(quick(store, tmp_path, head=head, epochs=1), selection=selection)
    assert lookups == [head] and len(resolutions) == 1


def test_weights_of_an_older_head_version_are_refused_in_one_line(store, selection, tmp_path):
    # A mean run saved before the per-view projection lacks its weights: SkillError naming
    # the file, not a torch traceback.
    from safetensors.torch import load_file, save_file

    from skill.errors import SkillError
    from skill.heads.trainer import NeuralHead

    run = fit(quick(store, tmp_path, head="mean", epochs=1), selection=selection).run_dir
    config = json.loads((run / "config.json").read_text())
    weights = load_file(str(run / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("view_proj.")},
              str(run / "model.safetensors"))  # fmt: skip
    with pytest.raises(SkillError, match=r"model\.safetensors: weights do not fit .*view_proj"):
        NeuralHead.load("mean", run, "model.safetensors", config["model"]["options"])
