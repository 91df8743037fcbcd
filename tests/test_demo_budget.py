"""The default training settings on the demo's store (120 training takes, 4 steps an epoch):
every neural head learns on all views, and cvf on all views reaches 0.5. Whether it also
beats ego alone and exo alone is a benchmark figure, not a test: on 40 test takes it moves with
the library versions that build the tiny backbone. BENCHMARKS.md, benchmark 7, measures the
settings that get there (the budget in steps, the mean head's per-view projection, cvf's view
dropout and learning rate)."""

from __future__ import annotations

import pytest

from skill.heads.config import FitConfig
from skill.heads.registry import HEAD_READS, HEADS, head_names, is_trainable


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


@pytest.mark.slow
def test_cvf_on_all_views_reaches_half(demo_store, tmp_path):
    assert default_fit(demo_store, tmp_path, "cvf", "all")["test"]["top1"] >= 0.5


@pytest.mark.slow
@pytest.mark.parametrize(
    "head",
    [
        h
        for h in head_names()
        if h != "cvf" and not is_trainable(HEADS[h]) and HEAD_READS[h] == "clip"
    ],
)
def test_every_neural_head_learns_on_all_views(demo_store, tmp_path, head):
    metrics = default_fit(demo_store, tmp_path, head, "all")
    assert metrics["train"]["n"] == 120  # the budget rule's small case
    assert metrics["test"]["top1"] >= 0.4, (head, metrics["test"]["top1"])
