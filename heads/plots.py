"""PNG figures: a fit's training curves, a sweep's results (matplotlib, Agg backend); a
task's own figures (a confusion matrix) are the task's (`tasks/`).

Every figure names its run or sweep in its title and says how many takes each score rests
on. Each drawing function builds a matplotlib Figure (``*_figure``) that the ``plot_*``
function saves, so that what a figure shows can be read back from its objects.

matplotlib is imported inside the functions so that importing ``heads`` stays cheap and
never needs a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skill.heads.sweep_rows import baseline_key, seeds_key
from skill.tasks.figures import pyplot as _pyplot
from skill.tasks.figures import save as _save
from skill.tasks.figures import takes as _takes

# (linestyle, marker) per line of a panel: two metrics with the same values stay two lines.
LINE_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))
MARKED_POINTS = 15
"""About this many markers per line, whatever the number of epochs or rounds."""


def run_title(out_dir: str | Path, name: str, head: str, views: str, seed: int) -> str:
    """``runs/cvf-all-s0: cvf on all, seed 0``: the run a figure belongs to."""
    return f"{Path(out_dir).name}/{name}: {head} on {views}, seed {seed}"


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
    loss_ax.set_ylabel("loss (the task's)")  # cross-entropy, CORN, MSE or margin
    metric_ax.set_ylabel("validation score")
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
    """A sweep's headline metric (the task's; classification: top-1) on test (val when there
    is no test): one panel per backbone, a group of bars per view set, one bar per head; bar
    = mean over seeds, error bar = min..max (none, and the title says so, with one seed);
    dashed line = chance, dotted lines = the task's baseline of the split (classification:
    the most common training label), per view set; the takes each bar rests on under its
    view set. ``name`` names the sweep (its folder's name)."""
    _save(sweep_figure(rows, name), path)


def sweep_figure(rows: list[dict], name: str = ""):
    """The figure ``plot_sweep`` saves."""
    split = "test" if any(row.get("n_test") for row in rows) else "val"
    metric = rows[0]["headline"] if rows else "top1"
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
        what = f"{split} {metric}"
        ax.set_title(f"{backbone}: {what}" if backbone else what, fontsize=10)
    spread = "one seed: no spread to show" if seeds == [1] else "mean over seeds, bars min..max"
    axes[0][0].set_ylabel(f"{split} {metric} ({spread})")
    axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(_sweep_title(name, f"{split} {metric}", seeds), fontsize=10)
    fig.subplots_adjust(
        left=0.8 / total, right=1 - legend / total, bottom=0.16, top=0.84, wspace=0.08
    )
    return fig


def _sweep_title(name: str, what: str, seeds: list[int]) -> str:
    counts = "one seed" if seeds == [1] else f"{'/'.join(map(str, seeds))} seeds"
    sweep = f"{name}: " if name else ""
    return f"{sweep}{what} per head and view set ({counts})"


def _draw_sweep_panel(ax, rows: list[dict], heads: list[str], views: list[str], split: str):
    bar = 0.8 / len(heads)
    lowest = 0.0  # a rank correlation can be negative: the axis then reaches below 0
    for h, head in enumerate(heads):
        xs, means, low, high = [], [], [], []
        for v, view_set in enumerate(views):
            row = next((r for r in rows if (r["head"], r["views"]) == (head, view_set)), None)
            seeds = [x for x in (row or {}).get(seeds_key(row, split), []) if x == x] if row else []
            if seeds:
                mean = float(np.mean(seeds))
                xs.append(v - 0.4 + bar * (h + 0.5))
                means.append(mean)
                low.append(mean - min(seeds))
                high.append(max(seeds) - mean)
                lowest = min(lowest, min(seeds))
        spread = any(low) or any(high)  # one seed: no zero-width error bars
        ax.bar(xs, means, bar * 0.9, yerr=[low, high] if spread else None, capsize=3, label=head)
    _draw_baselines(ax, rows, views, split)
    ax.set_xticks(range(len(views)), [_view_tick(rows, v, split) for v in views], fontsize=8)
    ax.set_ylim(-1 if lowest < 0 else 0, 1)
    ax.grid(axis="y", alpha=0.3)


def _view_tick(rows: list[dict], view_set: str, split: str) -> str:
    # The takes of a split can differ per view set (takes without any of its views drop out).
    counts = sorted({r.get(f"n_{split}", 0) for r in rows if r["views"] == view_set})
    return f"{view_set}\n({_takes(counts[0]) if len(counts) == 1 else 'n varies'})"


def _draw_baselines(ax, rows: list[dict], views: list[str], split: str) -> None:
    """Chance (dashed grey) and the task's baseline per view set (dotted black, drawn
    thicker): where the two are equal both stay visible, and the legend says so."""
    chance = rows[0].get("chance") if rows else None
    majorities = []
    for v, view_set in enumerate(views):
        row = next((r for r in rows if r["views"] == view_set), None)
        majority = row.get(baseline_key(row, split)) if row else None
        if majority is not None and majority == majority:
            majorities.append(majority)
            label = f"{row['baseline']} (train targets)" if len(majorities) == 1 else None
            ax.hlines(majority, v - 0.45, v + 0.45, color="black", linestyle=":", linewidth=2.5,
                      label=label)  # fmt: skip
    if chance is not None and chance == chance:
        same = bool(majorities) and all(abs(m - chance) < 5e-4 for m in majorities)
        label = f"chance ({chance:.3f})" + (f" = {rows[0]['baseline']} here" if same else "")
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=label)
