"""PNG figures: a fit's confusion matrices and training curves, a sweep's results
(matplotlib, Agg backend).

Every figure names its run or sweep in its title and says how many takes each score rests
on. Each drawing function builds a matplotlib Figure (``*_figure``) that the ``plot_*``
function saves, so that what a figure shows can be read back from its objects.

matplotlib is imported inside the functions so that importing ``heads`` stays cheap and
never needs a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# (linestyle, marker) per line of a panel: two metrics with the same values stay two lines.
LINE_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))
MARKED_POINTS = 15
"""About this many markers per line, whatever the number of epochs or rounds."""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    plt = _pyplot()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_title(out_dir: str | Path, name: str, head: str, views: str, seed: int) -> str:
    """``runs/cvf-all-s0: cvf on all, seed 0``: the run a figure belongs to."""
    return f"{Path(out_dir).name}/{name}: {head} on {views}, seed {seed}"


def _takes(n: int) -> str:
    return f"{n} take" if n == 1 else f"{n} takes"


# ---- confusion matrices ------------------------------------------------------------------
def plot_confusion(
    panels: list[tuple[str, np.ndarray]],
    class_names: list[str],
    path: str | Path,
    title: str = "",
) -> None:
    """One confusion matrix per (split, (C, C) counts) panel, side by side, rows = true class;
    each panel's title gives its top-1 and the takes it counts, ``title`` names the run."""
    _save(confusion_figure(panels, class_names, title), path)


def confusion_figure(panels: list[tuple[str, np.ndarray]], class_names: list[str], title: str):
    """The figure ``plot_confusion`` saves."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.6), squeeze=False)
    for ax, (split, matrix) in zip(axes[0], panels, strict=True):
        matrix = np.asarray(matrix)
        n = int(matrix.sum())
        top1 = float(np.trace(matrix)) / n if n else float("nan")
        _draw_confusion(ax, matrix, class_names, f"{split}: top-1 {top1:.3f} on {_takes(n)}")
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


# ---- training curves ---------------------------------------------------------------------
def plot_curve(
    history: list[dict],
    path: str | Path,
    x_key: str = "epoch",
    best: int | None = None,
    title: str = "",
    takes: dict[str, int] | None = None,
) -> None:
    """Losses (keys ending in ``loss``) on the left, other metrics on the right, per ``x_key``;
    a dashed line marks the ``best`` epoch (or round) whose weights were kept. ``takes``:
    split -> the takes its curves rest on (``train``, ``val``); ``title`` names the run."""
    _save(curve_figure(history, x_key, best, title, takes or {}), path)


def curve_figure(
    history: list[dict], x_key: str, best: int | None, title: str, takes: dict[str, int]
):
    """The figure ``plot_curve`` saves."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 4.2))
    xs = [row[x_key] for row in history]
    keys = [k for k in (history[0] if history else {}) if k not in (x_key, "lr")]
    every = max(1, len(xs) // MARKED_POINTS)
    drawn = {loss_ax: 0, metric_ax: 0}
    for key in keys:
        ax = loss_ax if key.endswith("loss") else metric_ax
        linestyle, marker = LINE_STYLES[drawn[ax] % len(LINE_STYLES)]
        # Each further line thinner, so one lying on another still shows both.
        width = max(0.8, 2.4 - 0.7 * drawn[ax])
        ax.plot(xs, [row[key] for row in history], linestyle=linestyle, marker=marker,
                markevery=every, markersize=4, linewidth=width, label=_curve_label(key, takes))  # fmt: skip
        drawn[ax] += 1
    loss_ax.set_ylabel("cross-entropy loss")
    metric_ax.set_ylabel("validation score (0 to 1)")
    loss_ax.set_title(_split_counts("loss", takes), fontsize=10)
    metric_ax.set_title(_split_counts("validation", {"val": takes.get("val")}), fontsize=10)
    for ax in (loss_ax, metric_ax):
        ax.set_xlabel(x_key)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best is not None:
            label = f"best {x_key} ({best}): weights kept"
            ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=label)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.84, wspace=0.22)
    return fig


def _curve_label(key: str, takes: dict[str, int]) -> str:
    split = key.split("_", 1)[0]
    return f"{key} ({_takes(takes[split])})" if takes.get(split) else key


def _split_counts(what: str, takes: dict) -> str:
    counts = ", ".join(f"{split} {_takes(n)}" for split, n in takes.items() if n)
    return f"{what} ({counts})" if counts else what


# ---- a sweep -----------------------------------------------------------------------------
def plot_sweep(rows: list[dict], path: str | Path, name: str = "") -> None:
    """A sweep's top-1 on test (val when there is no test): one panel per backbone, a group of
    bars per view set, one bar per head; bar = mean over seeds, error bar = min..max (none,
    and the title says so, with one seed); dashed line = chance (1 / classes), dotted lines =
    the majority baseline of the split (the most common training label), per view set; the
    takes each bar rests on under its view set. ``name`` names the sweep (its folder's name)."""
    _save(sweep_figure(rows, name), path)


def sweep_figure(rows: list[dict], name: str = ""):
    """The figure ``plot_sweep`` saves."""
    split = "test" if any(row.get("n_test") for row in rows) else "val"
    backbones = list(dict.fromkeys(row.get("backbone", "") for row in rows))
    heads = list(dict.fromkeys(row["head"] for row in rows))
    view_sets = list(dict.fromkeys(row["views"] for row in rows))
    seeds = sorted({row.get("seeds", 1) for row in rows})
    plt = _pyplot()
    panel, legend = max(3.5, 0.45 * len(heads) * len(view_sets) + 1.0), 2.6  # inches
    total = panel * len(backbones) + legend + 0.8
    fig, axes = plt.subplots(1, len(backbones), figsize=(total, 4.6), squeeze=False, sharey=True)
    for ax, backbone in zip(axes[0], backbones, strict=True):
        mine = [row for row in rows if row.get("backbone", "") == backbone]
        _draw_sweep_panel(ax, mine, heads, view_sets, split)
        ax.set_title(f"{backbone}: {split} top-1" if backbone else f"{split} top-1", fontsize=10)
    spread = "one seed: no spread to show" if seeds == [1] else "mean over seeds, bars min..max"
    axes[0][0].set_ylabel(f"{split} top-1 ({spread})")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(_sweep_title(name, split, seeds), fontsize=10)
    fig.subplots_adjust(
        left=0.8 / total, right=1 - legend / total, bottom=0.16, top=0.84, wspace=0.08
    )
    return fig


def _sweep_title(name: str, split: str, seeds: list[int]) -> str:
    counts = "one seed" if seeds == [1] else f"{'/'.join(map(str, seeds))} seeds"
    sweep = f"{name}: " if name else ""
    return f"{sweep}{split} top-1 per head and view set ({counts})"


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
        spread = any(low) or any(high)  # one seed: no zero-width error bars
        ax.bar(xs, means, bar * 0.9, yerr=[low, high] if spread else None, capsize=3, label=head)
    _draw_baselines(ax, rows, views, split)
    ax.set_xticks(range(len(views)), [_view_tick(rows, v, split) for v in views], fontsize=8)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)


def _view_tick(rows: list[dict], view_set: str, split: str) -> str:
    # The takes of a split can differ per view set (takes without any of its views drop out).
    counts = sorted({r.get(f"n_{split}", 0) for r in rows if r["views"] == view_set})
    return f"{view_set}\n({_takes(counts[0]) if len(counts) == 1 else 'n varies'})"


def _draw_baselines(ax, rows: list[dict], views: list[str], split: str) -> None:
    """Chance (dashed grey) and the majority baseline per view set (dotted black, drawn
    thicker): where the two are equal both stay visible, and the legend says so."""
    chance = rows[0].get("chance") if rows else None
    majorities = []
    for v, view_set in enumerate(views):
        row = next((r for r in rows if r["views"] == view_set), {})
        majority = row.get(f"{split}_majority_top1")
        if majority is not None and majority == majority:
            majorities.append(majority)
            label = "majority (train labels)" if len(majorities) == 1 else None
            ax.hlines(majority, v - 0.45, v + 0.45, color="black", linestyle=":", linewidth=2.5,
                      label=label)  # fmt: skip
    if chance is not None and chance == chance:
        same = bool(majorities) and all(abs(m - chance) < 5e-4 for m in majorities)
        label = f"chance ({chance:.3f})" + (" = majority here" if same else "")
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=label)
