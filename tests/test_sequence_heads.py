"""Heads that read ordered clip sequences (registered with ``reads="sequence"``): shapes, masks
of views and clips, gradients, that clip order (by time) matters, and fit, predict and sweep
on a sequence store; with them, what the clip heads and the commands do with a store's clip
axis (pooled clips, refusals of mixed axes). The head list comes from the registry: a new
sequence head file is tested without editing this file."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from torch import nn

from skill.heads import HEADS, build_head, head_names
from skill.heads.registry import HEAD_READS, resolve_head
from tests.markers import one_fast
from tests.token_store import shared_token_store

# Per-take sequence heads; a per-clip head (``per_clip``: spotter) learns only a per-clip task
# and outputs (B, K, O + 2), not logits per take: tests/test_demonstration_task.py covers it.
SEQUENCE_HEADS = [
    name
    for name in head_names()
    if HEAD_READS[name] == "sequence" and not resolve_head(name).per_clip
]
VIEWS = ["ego", "exo1", "exo2"]
# Small sizes: B samples, V views, K clips, N tokens, D width, C classes.
B, V, K, N, D, C = 6, 3, 5, 2, 32, 4


def small_head(name: str, **options) -> nn.Module:
    return build_head(name, dim=D, num_views=V, outputs=C, tokens=N, view_names=VIEWS,
                      hidden=16, **options)  # fmt: skip


def clip_times(batch: int, views: int, clips: int, every: float = 2.0) -> torch.Tensor:
    """``(B, V, K, 2)``: clip k of every view lasts one second from ``k * every`` seconds."""
    start = torch.arange(clips, dtype=torch.float32) * every
    return torch.stack([start, start + 1.0], dim=-1).expand(batch, views, clips, 2).clone()


def inputs(seed: int = 0):
    """Tokens, a view mask with every view missing somewhere, a clip mask with padded clips
    (a view ends early) and times 0 where a clip is absent, as the trainer gives them."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, K, N, D, generator=generator)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1]],
                        dtype=torch.bool)  # fmt: skip
    clips = torch.ones(B, V, K, dtype=torch.bool)
    clips[0, 1, 3:] = False
    clips[4, 2, 1:] = False  # a view with one clip
    clips[5, :, 4:] = False
    clips &= mask[:, :, None]
    times = clip_times(B, V, K) * clips[..., None]
    return x, mask, clips, times


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sequence_store(tmp_path_factory):
    return shared_token_store(tmp_path_factory, "sequence", clip_axis="sequence")


def test_there_are_sequence_heads_and_they_are_listed_like_every_head():
    from skill.heads import HEAD_FILES

    assert {"seqformer", "viewselect"} <= set(SEQUENCE_HEADS)
    assert set(SEQUENCE_HEADS) <= set(HEAD_FILES)
    assert resolve_head("cvf").reads == "clip" and resolve_head("lightgbm").reads == "clip"
    with pytest.raises(ValueError, match="reads must be one of clip, sequence"):
        from skill.heads.registry import register_head

        register_head("bad", reads="frames")


@pytest.mark.parametrize("name", SEQUENCE_HEADS)
def test_a_sequence_head_is_a_plain_module_whose_docstring_states_shapes_and_masks(name):
    cls = HEADS[name]
    assert issubclass(cls, nn.Module)
    doc = (inspect.getdoc(cls) or "") + (inspect.getdoc(cls.forward) or "")
    for shape in ("(B, V, K, N, D)", "(B, V)", "(B, V, K)", "(B, V, K, 2)", "(B, O)"):
        assert shape in doc, (name, shape)
    assert "mask" in doc


@pytest.mark.parametrize("name", SEQUENCE_HEADS)
def test_builds_at_egoexo4d_size_and_gives_logits(name):
    torch.manual_seed(0)
    names = ["ego", "exo1", "exo2", "exo3", "exo4"]
    head = build_head(name, dim=768, num_views=5, outputs=4, tokens=1, view_names=names).eval()
    x = torch.randn(2, 5, 48, 1, 768)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    clips = mask[:, :, None].expand(2, 5, 48).clone()
    clips[0, :, 30:] = False
    with torch.no_grad():
        logits = head(x, mask, clips, clip_times(2, 5, 48) * clips[..., None])
    assert logits.shape == (2, 4) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", SEQUENCE_HEADS)
def test_tokens_of_padded_clips_and_missing_views_do_not_change_the_output(name):
    torch.manual_seed(0)
    head = small_head(name).eval()
    x, mask, clips, times = inputs()
    loud, nan = x.clone(), x.clone()
    absent = ~clips  # padded clips and every clip of a missing view
    loud[absent] = torch.randn(int(absent.sum()), N, D) * 100.0
    nan[absent] = float("nan")
    with torch.no_grad():
        reference = head(x, mask, clips, times)
        assert torch.equal(head(loud, mask, clips, times), reference)
        assert torch.equal(head(nan, mask, clips, times), reference)
        # the times of absent clips are not read either
        assert torch.equal(head(x, mask, clips, times + 50.0 * absent[..., None]), reference)
        # a present clip's tokens do matter (the checks above are not vacuous)
        changed = x.clone()
        changed[0, 0, 1] += torch.randn(N, D)
        assert not torch.allclose(head(changed, mask, clips, times)[0], reference[0])


@pytest.mark.parametrize("name", SEQUENCE_HEADS)
def test_samples_are_independent_and_one_view_or_one_clip_is_enough(name):
    torch.manual_seed(0)
    head = small_head(name).eval()
    x, mask, clips, times = inputs()
    with torch.no_grad():
        batched = head(x, mask, clips, times)
        alone = torch.cat(
            [
                head(x[i : i + 1], mask[i : i + 1], clips[i : i + 1], times[i : i + 1])
                for i in range(B)
            ]
        )
    assert batched.shape == (B, C) and torch.isfinite(batched).all()
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", SEQUENCE_HEADS)
def test_every_parameter_gets_a_finite_nonzero_gradient(name):
    torch.manual_seed(0)
    head = small_head(name).train()
    x, mask, clips, times = inputs()
    x[~clips] = float("nan")  # must not leak into the gradients either
    labels = torch.arange(B) % C
    nn.functional.cross_entropy(head(x, mask, clips, times), labels).backward()
    for param_name, param in head.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", SEQUENCE_HEADS)
def test_clip_order_is_read_from_the_times(name):
    """Clips in another order at the same times are another take; the same clips with their
    own times, stored in another order along K, are the same take."""
    torch.manual_seed(0)
    head = small_head(name).eval()
    x, mask, clips, times = inputs()
    clips[:] = mask[:, :, None]  # every clip present, so any permutation is one of clips
    times = clip_times(B, V, K) * clips[..., None]
    order = torch.tensor([3, 0, 4, 1, 2])
    with torch.no_grad():
        reference = head(x, mask, clips, times)
        reordered = head(x[:, :, order], mask, clips, times)
        moved = head(x[:, :, order], mask, clips, times[:, :, order])
    assert (reordered - reference).abs().max(dim=1).values.min() > 1e-4
    torch.testing.assert_close(moved, reference, rtol=1e-4, atol=1e-5)


def test_viewselect_keeps_the_top_k_present_exo_views_and_never_a_missing_one():
    torch.manual_seed(0)
    names = ["ego", "exo1", "exo2", "exo3", "exo4"]
    head = build_head("viewselect", dim=D, num_views=5, outputs=C, view_names=names, k=2,
                      hidden=16).eval()  # fmt: skip
    x = torch.randn(4, 5, K, N, D)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 0, 0], [0, 1, 0, 1, 1], [1, 0, 0, 0, 0]],
                        dtype=torch.bool)  # fmt: skip
    clips = mask[:, :, None].expand(4, 5, K).clone()
    chosen = head.exo_choice(x, mask, clips, clip_times(4, 5, K) * clips[..., None])
    assert chosen.shape == (4, 4)
    assert not (chosen & ~mask[:, 1:]).any()  # never a missing view
    assert chosen.sum(dim=1).tolist() == [2, 1, 2, 0]  # k, or fewer where fewer are present
    # training draws Gumbel noise: the choice varies, still among present views only
    head.train()
    for _ in range(5):
        weights = head.choose(
            head.summarise(x, mask, clips, clip_times(4, 5, K))[:, 1:], mask[:, 1:]
        )
        assert not (weights.detach()[~mask[:, 1:]]).any()


@pytest.mark.parametrize("views", [["ego"], ["exo1", "exo2"]])
def test_viewselect_works_on_ego_only_and_exo_only_selections(views):
    torch.manual_seed(0)
    head = build_head("viewselect", dim=D, num_views=len(views), outputs=C, view_names=views,
                      hidden=16).train()  # fmt: skip
    x = torch.randn(3, len(views), K, N, D)
    mask = torch.ones(3, len(views), dtype=torch.bool)
    clips = torch.ones(3, len(views), K, dtype=torch.bool)
    out = head(x, mask, clips, clip_times(3, len(views), K))
    assert out.shape == (3, C) and torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.arange(3)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


# ---- the data path: pooled clips, whole sequences, refusals ---------------------------------


def test_a_clip_head_reads_the_mean_over_valid_clips_only(sequence_store):
    from skill.heads.data import load_selection, pool_clips, pooled_selection, selection_for

    sel = load_selection(sequence_store.path, "all")
    assert sel.clip_axis == "sequence" and sel.clip_mask.shape == sel.x.shape[:3]
    assert (~sel.clip_mask[sel.mask]).any()  # some views end early: padded clips
    noisy = sel.x.copy()
    noisy[~sel.clip_mask] = 7.0  # whatever absent clips hold
    pooled = pool_clips(noisy, sel.clip_mask)
    assert pooled.shape == (sel.n, sel.num_views, 1, sel.tokens, sel.dim)
    take, view = np.argwhere(sel.mask & ~sel.clip_mask.all(axis=2))[0]
    expected = sel.x[take, view][sel.clip_mask[take, view]].astype(np.float32).mean(axis=0)
    np.testing.assert_allclose(pooled[take, view, 0], expected, rtol=2e-3, atol=2e-3)
    # once per selection, whatever number of heads and seeds read it
    assert selection_for("clip", sel) is pooled_selection(sel) is selection_for("clip", sel)
    assert selection_for("sequence", sel) is sel and pooled_selection(sel).sequence is None


def test_a_sequence_head_is_fed_whole_sequences_with_dropped_views_masked(sequence_store):
    from skill.heads.config import FitConfig
    from skill.heads.data import load_selection, split_takes
    from skill.heads.trainer import token_source

    sel = load_selection(sequence_store.path, "all")
    spec = resolve_head("seqformer")
    cfg = FitConfig(store=str(sequence_store.path), head="seqformer", batch_size=8,
                    device="cpu").resolved(spec, sel.num_views, sel.task)  # fmt: skip
    cfg.view_dropout = 0.5
    source = token_source(cfg, sel, split_takes(sel).train, spec)
    batch = next(iter(source.batches(1)))
    x, keep, clips, times = batch.inputs
    assert x.shape == (8, sel.num_views, sel.clips, 1, sel.dim)  # every clip, tokens pooled
    assert (keep <= torch.from_numpy(sel.mask[batch.rows])).all()
    assert not clips[~keep].any() and not times[~keep].any() and not x[~keep].any()
    assert torch.equal(clips[keep], torch.from_numpy(sel.clip_mask[batch.rows])[keep])
    assert not times[~clips].any() and torch.isfinite(times).all()


def test_a_sequence_head_on_a_samples_store_is_refused_in_one_line(store, tmp_path):
    from skill.heads.config import FitConfig
    from skill.heads.data import ClipAxisError
    from skill.heads.train import fit

    with pytest.raises(ClipAxisError) as refused:
        fit(FitConfig(store=str(store.path), head="seqformer", out_dir=str(tmp_path), epochs=1))
    message = str(refused.value)
    assert "\n" not in message and str(store.path) in message
    assert "clip axis is samples" in message and "--sampling sequence or stride" in message
    assert not any(tmp_path.iterdir())  # nothing written


# ---- fit, predict and sweep on a sequence store ---------------------------------------------

QUICK = dict(epochs=8, batch_size=16, patience=0, plots=False)


@pytest.fixture(scope="module")
def sequence_runs(sequence_store, tmp_path_factory):
    from skill.heads.config import FitConfig
    from skill.heads.data import load_selection
    from skill.heads.lgbm import LightGBMSettings
    from skill.heads.train import fit

    out = tmp_path_factory.mktemp("sequence-runs")
    sel = load_selection(sequence_store.path, "all")
    settings = LightGBMSettings(lgbm_rounds=20, lgbm_learning_rate=0.1)
    return {
        head: fit(
            FitConfig(
                store=str(sequence_store.path),
                head=head,
                out_dir=str(out),
                lightgbm=settings,
                **QUICK,
            ),
            selection=sel,
        )  # fmt: skip
        for head in [*SEQUENCE_HEADS, "cvf", "lightgbm"]
    }


@pytest.mark.parametrize("name", one_fast([*SEQUENCE_HEADS, "cvf", "lightgbm"]))
def test_fits_on_a_sequence_store_and_predict_gives_the_fits_scores(
    name, sequence_store, sequence_runs, tmp_path
):
    from skill.heads.config import PredictConfig
    from skill.heads.predict import predict

    run = sequence_runs[name]
    for split in ("val", "test"):
        metrics = run.metrics[split]
        assert metrics["top1"] > metrics["baselines"]["majority"]["top1"] + 0.2, (name, split)
    result = predict(PredictConfig(store=sequence_store.path, run=run.run_dir, batch_size=16,
                                   out_csv=tmp_path / "p.csv"))  # fmt: skip
    index = {take: i for i, take in enumerate(result.take_ids)}
    ids, scores = run.predictions["val"]
    np.testing.assert_allclose(result.scores[[index[t] for t in ids]], scores, atol=1e-6)


def test_predict_refuses_a_store_of_the_other_clip_axis(
    store, sequence_store, sequence_runs, tmp_path
):
    from skill.heads.config import PredictConfig
    from skill.heads.predict import RunMismatchError, predict

    for run, other, have, fitted in (
        (sequence_runs["seqformer"], store, "samples", "sequence"),
        (sequence_runs["cvf"], store, "samples", "sequence"),  # a pooled run reads sequences
    ):
        with pytest.raises(RunMismatchError) as refused:
            predict(PredictConfig(store=other.path, run=run.run_dir, out_csv=tmp_path / "p.csv"))
        message = str(refused.value)
        assert "\n" not in message
        assert f"clip axis {have}" in message and f"clip axis is {fitted}" in message
    assert not (tmp_path / "p.csv").exists()


def test_sweep_on_a_sequence_store_runs_sequence_and_pooled_heads_side_by_side(
    sequence_store, tmp_path
):
    from skill.heads.config import FitConfig, SweepConfig
    from skill.heads.sweep import sweep

    base = FitConfig(store=str(sequence_store.path), out_dir=str(tmp_path), epochs=2,
                     batch_size=16, patience=0, plots=False, hidden=16)  # fmt: skip
    heads = ["cvf", *SEQUENCE_HEADS]
    result = sweep(SweepConfig(fit=base, heads=heads, view_sets=["all"], seeds=[0]))
    assert [row["head"] for row in result.rows] == heads
    assert all(np.isfinite(row["val_top1_mean"]) for row in result.rows)


def test_sweep_leaves_sequence_heads_out_of_the_default_list_on_a_samples_store(store, tmp_path):
    from skill.heads.config import FitConfig, SweepConfig
    from skill.heads.data import ClipAxisError
    from skill.heads.sweep import heads_for_clip_axis, sweep

    base = FitConfig(store=str(store.path), out_dir=str(tmp_path), epochs=1, plots=False)
    default = SweepConfig(fit=base)
    assert set(SEQUENCE_HEADS) <= set(default.heads)
    kept, note = heads_for_clip_axis(default, "samples", str(store.path))
    assert kept.heads == [h for h in default.heads if HEAD_READS[h] != "sequence"]
    assert "\n" not in note and all(h in note for h in SEQUENCE_HEADS)
    assert heads_for_clip_axis(default, "sequence", str(store.path)) == (default, "")
    # named by --heads, a sequence head on a samples store is refused before any fit
    with pytest.raises(ClipAxisError, match="--heads seqformer reads ordered clip sequences"):
        sweep(SweepConfig(fit=base, heads=["mean", "seqformer"], view_sets=["all"]))
    assert not any(p.is_dir() and any(p.iterdir()) for p in tmp_path.iterdir())


def test_sweep_refuses_stores_of_other_clip_axes_in_one_line(store, sequence_store, tmp_path):
    from skill.heads.config import FitConfig, SweepConfig
    from skill.heads.sweep import SweepError, sweep

    base = FitConfig(store=str(store.path), out_dir=str(tmp_path), epochs=1, plots=False)
    cfg = SweepConfig(fit=base, heads=["mean"], view_sets=["all"],
                      stores=[str(store.path), str(sequence_store.path)])  # fmt: skip
    with pytest.raises(SweepError) as refused:
        sweep(cfg)
    message = str(refused.value)
    assert "\n" not in message and "clip axis samples" in message and "has sequence" in message
