"""What the figures show, read from the matplotlib objects that are saved: the run or sweep
they belong to, the takes each score rests on, axis labels, lines that stay apart when two
metrics coincide, the best epoch in the legend, integer epochs, one seed said as such, and
chance and majority lines told apart when equal."""

from __future__ import annotations

import numpy as np
import pytest

from skill.heads import plots
from skill.heads.config import FitConfig
from skill.heads.train import fit
from skill.tasks import figures
from tests.token_store import shared_token_store

CLASSES = ["Novice", "Early Expert", "Intermediate Expert", "Late Expert"]


def _history(epochs: int) -> list[dict]:
    # val_top1 and val_balanced_accuracy equal, as on a balanced split
    rng = np.random.default_rng(0)
    rows = []
    for epoch in range(1, epochs + 1):
        top1 = float(rng.random())
        rows.append({"epoch": epoch, "train_loss": 1.4 / epoch, "val_loss": 1.3 / epoch,
                     "val_top1": top1, "val_balanced_accuracy": top1, "lr": 1e-3})  # fmt: skip
    return rows


def _legend(ax) -> list[str]:
    return [text.get_text() for text in ax.get_legend().get_texts()]


def test_curve_has_labels_distinct_lines_best_epoch_and_integer_epochs():
    title = plots.run_title("runs", "cvf-all-s0", "cvf", "all", 0)
    fig = plots.curve_figure(_history(3), "epoch", 2, title, {"train": 120, "val": 40})
    loss_ax, metric_ax = fig.axes
    assert fig._suptitle.get_text() == "runs/cvf-all-s0: cvf on all, seed 0"
    for ax in (loss_ax, metric_ax):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel()
        assert "best epoch (2): weights kept" in _legend(ax)
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 3]
        assert ticks and all(float(t).is_integer() for t in ticks)
    top1, balanced = (line for line in metric_ax.lines if line.get_label().startswith("val_"))
    assert np.array_equal(top1.get_ydata(), balanced.get_ydata())  # they coincide ...
    assert (top1.get_linestyle(), top1.get_marker()) != (balanced.get_linestyle(),
                                                         balanced.get_marker())  # fmt: skip
    assert top1.get_linewidth() > balanced.get_linewidth()  # ... and both stay visible
    assert "val_top1 (40 takes)" in _legend(metric_ax)
    assert "train_loss (120 takes)" in _legend(loss_ax)
    assert "40 takes" in metric_ax.get_title()


def test_confusion_panels_give_top1_and_the_takes_counted():
    val = np.array([[7, 2, 1, 0], [1, 5, 4, 0], [1, 0, 9, 0], [0, 0, 0, 10]])
    fig = figures.confusion_figure([("val", val), ("test", val[::-1])], CLASSES, "runs/x: mean")
    assert fig._suptitle.get_text() == "runs/x: mean"
    assert fig.axes[0].get_title() == "val: top-1 0.775 on 40 takes"
    assert fig.axes[1].get_title().startswith("test: top-1 ") and "on 40 takes" in (
        fig.axes[1].get_title()
    )


def _row(head: str, views: str, seeds: list[float], majority: float, n: int = 40) -> dict:
    return {"backbone": "", "head": head, "views": views, "seeds": len(seeds), "n_test": n,
            "task": "classification", "headline": "top1", "baseline": "majority",
            "test_top1_seeds": seeds, "test_majority_top1": majority, "chance": 0.25}  # fmt: skip


def _error_bars(ax) -> list:
    return [bars.errorbar for bars in ax.containers if getattr(bars, "errorbar", None)]


def test_one_seed_sweep_says_so_and_draws_no_error_bars():
    rows = [_row("mean", "ego", [0.5], 0.25), _row("cvf", "ego", [0.6], 0.25),
            _row("mean", "all", [0.55], 0.25, n=38), _row("cvf", "all", [0.7], 0.25, n=38)]  # fmt: skip
    fig = plots.sweep_figure(rows, "sweep-2")
    ax = fig.axes[0]
    assert fig._suptitle.get_text() == "sweep-2: test top1 per head and view set (one seed)"
    assert "one seed" in ax.get_ylabel() and not _error_bars(ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ego\n(40 takes)", "all\n(38 takes)"]
    legend = _legend(ax)
    assert "chance (0.250) = majority here" in legend and "majority (train targets)" in legend
    chance = next(line for line in ax.lines if line.get_label().startswith("chance"))
    majority = next(c for c in ax.collections if c.get_label() == "majority (train targets)")
    assert chance.get_linestyle() != majority.get_linestyle()[0]
    assert majority.get_linewidth()[0] > chance.get_linewidth()


def test_several_seeds_draw_min_max_bars_and_name_the_count():
    rows = [_row("mean", "ego", [0.5, 0.6, 0.4], 0.3), _row("cvf", "ego", [0.6, 0.7, 0.65], 0.3)]
    fig = plots.sweep_figure(rows, "sweep")
    ax = fig.axes[0]
    assert "(3 seeds)" in fig._suptitle.get_text() and "min..max" in ax.get_ylabel()
    assert len(_error_bars(ax)) == 2
    assert "chance (0.250)" in _legend(ax)  # not "= majority": they differ here


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures a fit saves, kept for reading (they are saved as usual)."""
    kept = []
    save = figures.save

    def keep(fig, path):
        kept.append((str(path), fig._suptitle.get_text(), [ax.get_title() for ax in fig.axes]))
        save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    monkeypatch.setattr(figures, "save", keep)
    return kept


def test_a_fit_names_its_run_in_both_figures(tmp_path_factory, tmp_path, saved_figures):
    store = shared_token_store(tmp_path_factory)
    cfg = FitConfig(store=str(store.path), head="mean", views="all", epochs=2, batch_size=16,
                    hidden=16, patience=0, plots=True, out_dir=str(tmp_path / "runs"))  # fmt: skip
    result = fit(cfg)
    assert {path.rsplit("/", 1)[1] for path, _, _ in saved_figures} == {"confusion.png",
                                                                        "curve.png"}  # fmt: skip
    for _, title, _ in saved_figures:
        assert title == f"runs/{result.run_dir.name}: mean on all, seed 0"
    confusion_titles = next(titles for path, _, titles in saved_figures if "confusion" in path)
    n_val = result.metrics["val"]["n"]
    assert any(t.startswith("val: top-1 ") and t.endswith(f"on {n_val} takes")
               for t in confusion_titles)  # fmt: skip
