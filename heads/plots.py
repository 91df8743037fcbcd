"""PNG figures: a fit's confusion matrices and training curves, a sweep's results
(matplotlib, Agg backend).

matplotlib is imported inside the functions so that importing ``heads`` stays cheap and
never needs a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(
    panels: list[tuple[str, np.ndarray]], class_names: list[str], path: str | Path
) -> None:
    """One confusion matrix per (title, (C, C) counts) panel, side by side, rows = true class."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.4), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], panels, strict=True):
        _draw_confusion(ax, np.asarray(matrix), class_names, title)
    # Fixed margins for the rotated class names: tight_layout costs more than the drawing.
    fig.subplots_adjust(left=0.28 / len(panels), right=0.98, bottom=0.3, top=0.92, wspace=0.6)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw_confusion(ax, matrix: np.ndarray, class_names: list[str], title: str) -> None:
    # Colour by row-normalised recall so that rare classes are readable; print the counts.
    rows = matrix.sum(axis=1, keepdims=True)
    recall = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    ax.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            colour = "white" if recall[i, j] > 0.5 else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=colour, fontsize=8)


def plot_curve(
    history: list[dict], path: str | Path, x_key: str = "epoch", best: int | None = None
) -> None:
    """Losses (keys ending in ``loss``) on the left, other metrics on the right, per ``x_key``;
    a dashed line marks the ``best`` epoch (or round) whose weights were kept."""
    plt = _pyplot()
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    xs = [row[x_key] for row in history]
    keys = [k for k in (history[0] if history else {}) if k not in (x_key, "lr")]
    for key in keys:
        ax = loss_ax if key.endswith("loss") else metric_ax
        ax.plot(xs, [row[key] for row in history], marker="." if len(xs) < 50 else None, label=key)
    for ax, title in ((loss_ax, "loss"), (metric_ax, "validation metric")):
        ax.set_xlabel(x_key)
        if best is not None:
            ax.axvline(best, color="grey", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=10)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.9, wspace=0.2)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweep(rows: list[dict], path: str | Path) -> None:
    """A sweep's top-1 on test (val when there is no test): one panel per backbone, a group of
    bars per view set, one bar per head; bar = mean over seeds, error bar = min..max; dashed
    line = chance (1 / classes), dotted lines = the majority baseline of the split (the most
    common training label), per view set."""
    split = "test" if any(row.get("n_test") for row in rows) else "val"
    backbones = list(dict.fromkeys(row.get("backbone", "") for row in rows))
    heads = list(dict.fromkeys(row["head"] for row in rows))
    view_sets = list(dict.fromkeys(row["views"] for row in rows))
    plt = _pyplot()
    panel, legend = max(3.5, 0.45 * len(heads) * len(view_sets) + 1.0), 2.2  # inches
    total = panel * len(backbones) + legend + 0.8
    fig, axes = plt.subplots(1, len(backbones), figsize=(total, 4.2), squeeze=False, sharey=True)
    for ax, backbone in zip(axes[0], backbones, strict=True):
        mine = [row for row in rows if row.get("backbone", "") == backbone]
        _draw_sweep_panel(ax, mine, heads, view_sets, split)
        ax.set_title(f"{backbone}: {split} top-1" if backbone else f"{split} top-1", fontsize=10)
    axes[0][0].set_ylabel(f"{split} top-1 (mean over seeds, min..max)")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.subplots_adjust(
        left=0.8 / total, right=1 - legend / total, bottom=0.2, top=0.9, wspace=0.08
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw_sweep_panel(ax, rows: list[dict], heads: list[str], views: list[str], split: str):
    bar = 0.8 / len(heads)
    for h, head in enumerate(heads):
        xs, means, low, high = [], [], [], []
        for v, view_set in enumerate(views):
            row = next((r for r in rows if (r["head"], r["views"]) == (head, view_set)), None)
            seeds = [x for x in (row or {}).get(f"{split}_top1_seeds", []) if x == x]
            if seeds:
                mean = float(np.mean(seeds))
                xs.append(v - 0.4 + bar * (h + 0.5))
                means.append(mean)
                low.append(mean - min(seeds))
                high.append(max(seeds) - mean)
        ax.bar(xs, means, bar * 0.9, yerr=[low, high], capsize=3, label=head)
    chance = rows[0].get("chance") if rows else None
    if chance is not None and chance == chance:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    # The majority baseline per view set: a view set can select fewer takes than another.
    for v, view_set in enumerate(views):
        row = next((r for r in rows if r["views"] == view_set), {})
        majority = row.get(f"{split}_majority_top1")
        if majority is not None and majority == majority:
            label = "majority (train labels)" if v == 0 else None
            ax.hlines(majority, v - 0.45, v + 0.45, color="black", linestyle=":", label=label)
    ax.set_xticks(range(len(views)), views, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
