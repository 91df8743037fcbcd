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


def confusion_figure(
    panels: list[tuple[str, np.ndarray]], class_names: list[str], title: str, ordered: bool = False
):
    """One confusion matrix per (split, (C, C) counts) panel, side by side, rows = true class;
    each panel's title gives its top-1 (``ordered`` levels: and the mean absolute error in
    levels) and the takes it counts, ``title`` names the run."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.6), squeeze=False)
    for ax, (split, matrix) in zip(axes[0], panels, strict=True):
        matrix = np.asarray(matrix)
        n = int(matrix.sum())
        top1 = float(np.trace(matrix)) / n if n else float("nan")
        scores = f"top-1 {top1:.3f}"
        if ordered:
            levels = np.arange(len(matrix))
            distance = np.abs(levels[:, None] - levels[None, :])
            scores += f", MAE {float((distance * matrix).sum()) / n if n else float('nan'):.3f}"
        _draw_confusion(ax, matrix, class_names, f"{split}: {scores} on {takes(n)}")
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


def scatter_figure(
    panels: list[tuple[str, np.ndarray, np.ndarray, list[float]]],
    score_names: list[str],
    title: str,
    ranges: list[tuple[float, float]] | None = None,
):
    """Predicted against true scores, one panel per (split, true (n, S), predicted (n, S),
    Spearman's rho per score), one colour per score with its rho in the legend, the diagonal
    dashed; each panel's title gives the mean rho and the takes it counts, ``title`` names the
    run. ``ranges``: each score's range (the axes cover it)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.6), squeeze=False)
    for ax, (split, true, predicted, rhos) in zip(axes[0], panels, strict=True):
        true, predicted = np.asarray(true, float), np.asarray(predicted, float)
        for s, name in enumerate(score_names):
            known = np.isfinite(true[:, s]) & np.isfinite(predicted[:, s])
            label = f"{name}: rho {_number(rhos[s])} ({takes(int(known.sum()))})"
            ax.scatter(true[known, s], predicted[known, s], s=14, alpha=0.7, label=label)
        low, high = _limits(true, predicted, ranges)
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("true score")
        ax.set_ylabel("predicted score")
        defined = [r for r in rhos if r == r]
        mean = float(np.mean(defined)) if defined else float("nan")
        n = int(np.isfinite(true).any(axis=1).sum())
        ax.set_title(f"{split}: Spearman rho {_number(mean)} on {takes(n)}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.86, wspace=0.3)
    return fig


def _limits(true: np.ndarray, predicted: np.ndarray, ranges) -> tuple[float, float]:
    """Axes limits covering the scores' ranges and every point, a little margin around."""
    values = np.concatenate([true[np.isfinite(true)], predicted[np.isfinite(predicted)]])
    bounds = [b for r in (ranges or []) for b in r if b is not None and b == b]
    low = min([*values.tolist(), *bounds], default=0.0)
    high = max([*values.tolist(), *bounds], default=1.0)
    margin = 0.03 * (high - low or 1.0)
    return low - margin, high + margin


def _number(value) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def save_confusions(
    folder: str | Path, scores: dict, class_names: list[str], title: str, ordered: bool = False
) -> list[str]:
    """``confusion.png`` in ``folder``: the val and test confusion matrices of a run's
    ``scores``; the file names written (none without either split)."""
    panels = [
        (split, np.array(scores[split]["confusion"]))
        for split in ("val", "test")
        if split in scores
    ]
    if not panels:
        return []
    save(confusion_figure(panels, class_names, title, ordered), Path(folder) / "confusion.png")
    return ["confusion.png"]
