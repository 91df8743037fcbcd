"""Drawing shared by the tasks' figures and the heads' (matplotlib, Agg backend, imported
when a figure is drawn so that importing skill never needs a display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path) -> None:
    plt = pyplot()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def takes(n: int) -> str:
    return f"{n} take" if n == 1 else f"{n} takes"


def confusion_figure(panels: list[tuple[str, np.ndarray]], class_names: list[str], title: str):
    """One confusion matrix per (split, (C, C) counts) panel, side by side, rows = true class;
    each panel's title gives its top-1 and the takes it counts, ``title`` names the run."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.6), squeeze=False)
    for ax, (split, matrix) in zip(axes[0], panels, strict=True):
        matrix = np.asarray(matrix)
        n = int(matrix.sum())
        top1 = float(np.trace(matrix)) / n if n else float("nan")
        _draw_confusion(ax, matrix, class_names, f"{split}: top-1 {top1:.3f} on {takes(n)}")
    if title:
        fig.suptitle(title, fontsize=10)
    # Fixed margins for the rotated class names: tight_layout costs more than the drawing.
    fig.subplots_adjust(left=0.28 / len(panels), right=0.98, bottom=0.3, top=0.86, wspace=0.6)
    return fig


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
