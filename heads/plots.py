"""PNG figures of a fit: confusion matrices and training curves (matplotlib, Agg backend).

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
