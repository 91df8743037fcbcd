"""Stage two, ``skill fit``: train one head on a token store and write a run folder.

``fit`` is the recipe: load the views, look the head up once
(:func:`heads.registry.resolve_head`) and fill in its defaults, match what it reads to the
store's clip axis (:func:`heads.data.selection_for`), split, build the head kind
(:func:`heads.interface.new_head`), ``fit`` it, predict val/test, score, write the run folder
(:mod:`heads.run_folder`). The neural training loop is :mod:`heads.trainer`, LightGBM is
:mod:`heads.lgbm`; both behind :class:`heads.interface.TrainableHead`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.heads import run_folder
from skill.heads.config import FitConfig
from skill.heads.data import (
    Selection,
    SelectionError,
    Splits,
    check_clip_axis,
    for_run,
    load_selection,
    resolve_views,
    scored_rows,
    selection_for,
    split_takes,
)
from skill.heads.interface import TrainableHead, new_head
from skill.heads.registry import resolve_head
from skill.progress import say

__all__ = ["FitConfig", "FitResult", "fit", "fit_metrics"]


@dataclass
class FitResult:
    """What ``fit`` returns; ``predictions[split] = (take ids (n,), the task's scores (n, O))``."""

    run_dir: Path
    metrics: dict
    config: FitConfig
    task_name: str = "classification"  # the store's task the run learned
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def fit(cfg: FitConfig, selection: Selection | None = None) -> FitResult:
    """Train ``cfg.head`` on ``cfg.store`` and write the run folder.

    ``selection``: the already loaded views (a sweep loads each view set once); it must
    come from ``cfg.store`` with the views ``cfg.views`` names.
    """
    start = time.perf_counter()
    sel = (
        selection
        if selection is not None
        else load_selection(cfg.store, cfg.views, cfg.allow_unfinished)
    )
    _check_selection(cfg, sel)
    spec = resolve_head(cfg.head)  # the fit's one look-up of its head, handed down from here
    check_clip_axis(cfg.head, spec.reads, sel)
    sel = selection_for(spec.reads, sel)  # a clip head on a sequence store: clips pooled
    cfg = cfg.resolved(spec, sel.num_views, sel.task)  # what config.json records is what was used
    splits = split_takes(sel, cfg.val_frac, cfg.split_seed)
    sel = for_run(sel, splits.train)  # its task's scores as the run reports them
    head = new_head(spec)
    head.check_task(sel.task, sel.schema)
    if head.kind != "torch":  # the neural trainer reports its epochs; others say they started
        say(f"fit {cfg.head} on {cfg.views}: training on {len(splits.train)} takes")
    head.fit(cfg, sel, splits)
    predictions = {}
    for name in ("val", "test"):
        rows, _ = scored_rows(sel, splits, name)  # a ranking store's: the takes its pairs name
        if len(rows):
            scores = head.predict_scores(
                sel.x, sel.mask, sel.task, rows, cfg.batch_size, cfg.device, sel.sequence
            )
            predictions[name] = (sel.take_ids[rows], scores)
    metrics = fit_metrics(sel, splits, head, predictions)
    metrics["fit_seconds"] = round(time.perf_counter() - start, 3)
    run_dir = run_folder.write_run(cfg, sel, splits, head, metrics, predictions)
    return FitResult(run_dir=run_dir, metrics=metrics, config=cfg, predictions=predictions,
                     task_name=sel.task_name)  # fmt: skip


def _check_selection(cfg: FitConfig, sel: Selection) -> None:
    wanted = resolve_views(cfg.views, sel.store_views)
    if sel.view_names != wanted:
        raise ValueError(f"selection holds views {sel.view_names}, config asks for {wanted}")
    if str(Path(cfg.store).resolve()) != sel.store_path:
        raise ValueError(f"selection comes from {sel.store_path}, config names {cfg.store}")
    if sel.n == 0:
        raise SelectionError(f"{cfg.store}: no completed take has a valid view among {wanted}")


def fit_metrics(sel: Selection, splits: Splits, head: TrainableHead, predictions: dict) -> dict:
    """metrics.json content: per-split metrics with baselines, split facts, history."""
    train_targets = sel.targets[splits.train]
    metrics: dict = {
        "train": {
            "n": len(splits.train),
            **sel.task.train_summary(sel.schema, train_targets),
        },
    }
    for name, (_, scores) in predictions.items():
        rows, task = scored_rows(sel, splits, name)
        metrics[name] = task.evaluate(
            sel.schema, sel.targets[rows], scores, sel.scenario[rows], train_targets
        )
    metrics["splits"] = {
        "source": splits.source,
        "unused_labelled_takes": splits.unused,
        "shared_participants_train_val": splits.shared_participants,
        "dropped_takes_no_valid_view": len(sel.dropped_take_ids),
        "incomplete_takes": sel.n_incomplete,
    }
    if splits.pairs is not None:
        metrics["splits"]["pairs"] = {name: len(p) for name, p in splits.pairs.items()}
        metrics["splits"]["dropped_pairs_no_valid_view"] = sel.dropped_pairs
    metrics[f"best_{head.step}"] = head.best  # best_epoch or best_round
    metrics[f"{head.step}s_run"] = len(head.history)  # epochs_run or rounds_run
    metrics["history"] = head.history
    return metrics
