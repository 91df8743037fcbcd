"""The default training budget on the demo's store (120 training takes, 4 steps an epoch): every
neural head learns, and cvf on all views reaches 0.5 (issue 15: with the old 30-epoch budget it
scored 0.225, below chance).

Two of issue 15's targets are not met by the budget alone and are marked xfail (strict, so a
change that meets them shows): on this store's 40 test takes (4 participants) cvf on all views
scores 0.525 against 0.575 on ego alone at seed 0 (0.483 vs 0.525, mean of seeds 0-2), and the
mean head, which averages the five views before its MLP, stays near 0.3 on all views
however long it trains (3,000 steps: 0.275); see BENCHMARKS.md, benchmark 7."""

from __future__ import annotations

import pytest

from skill.heads.config import FitConfig
from skill.heads.registry import HEADS, head_names, is_trainable

NOT_MET_BY_THE_BUDGET = {"mean": "the mean of the views loses what tells the levels apart here"}


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """The store `skill demo` fits on, built the way the demo builds it."""
    from skill.demo import DemoConfig, _extract, _synth

    cfg = DemoConfig(out=tmp_path_factory.mktemp("demo"))
    return _extract(cfg, _synth(cfg, say=lambda line: None), say=lambda line: None)


def default_fit(store, folder, head: str, views: str) -> dict:
    from skill.heads.train import fit

    cfg = FitConfig(store=str(store), head=head, views=views, out_dir=str(folder), plots=False)
    return fit(cfg).metrics


@pytest.fixture(scope="module")
def cvf_tests(demo_store, tmp_path_factory) -> dict[str, float]:
    folder = tmp_path_factory.mktemp("cvf-runs")
    return {v: default_fit(demo_store, folder, "cvf", v)["test"]["top1"] for v in
            ("ego", "exo", "all")}  # fmt: skip


@pytest.mark.slow
def test_cvf_on_all_views_reaches_half(cvf_tests):
    assert cvf_tests["all"] >= 0.5, cvf_tests


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="cvf all 0.525 < ego 0.575 at seed 0 (issue 15)")
def test_cvf_on_all_views_beats_every_single_view_set(cvf_tests):
    assert cvf_tests["all"] > max(cvf_tests["ego"], cvf_tests["exo"]), cvf_tests


@pytest.mark.slow
@pytest.mark.parametrize(
    "head",
    [
        pytest.param(h, marks=pytest.mark.xfail(strict=True, reason=NOT_MET_BY_THE_BUDGET[h]))
        if h in NOT_MET_BY_THE_BUDGET
        else h
        for h in head_names()
        if h != "cvf" and not is_trainable(HEADS[h])
    ],
)
def test_every_neural_head_learns_on_all_views(demo_store, tmp_path, head):
    metrics = default_fit(demo_store, tmp_path, head, "all")
    assert metrics["train"]["n"] == 120  # the budget rule's small case
    assert metrics["test"]["top1"] >= 0.4, (head, metrics["test"]["top1"])
