"""Stage two, ``skill predict``: a run folder's head applied to a token store, giving each
take's scores (the run's task's: classification's class probabilities; for heads that have
them, each view's too) and skill's own CSV.
The store must have been extracted like the run's (the same clip axis, samples or sequence,
checked first; then every provenance field; a mismatch names each differing field), hold the
views the run uses (``views`` may mask some, like a view that
failed to decode) with its token count and width; the CSV has one row per predicted take, in
the store's take order (``take``, ``split``, ``scenario``, the task's prediction columns
(classification: ``predicted`` and ``p_<class>`` per class), and the target when the store
has targets); ``aggregate="participant"`` replaces each take's scores with the mean over its
participant's predicted takes (outside the
benchmark's input rules); takes written that the run trained or validated on, or that share
its training participants, give leakage warnings. The EgoExo4D prediction files are written
from these by `skill.interop.egoexo4d`."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.cache.files import write_text_atomically
from skill.cache.store import TakeTable, TokenStore, diff_provenance, provenance_identity
from skill.errors import ConfigError, SkillError
from skill.heads.config import FORMATS, PredictConfig
from skill.heads.data import (
    Selection,
    clip_axis_of,
    load_selection,
    pair_metrics,
    pairs_within,
    resolve_views,
)
from skill.heads.interface import TrainableHead
from skill.heads.run_folder import (
    ModelRecord,
    RunRecord,
    load_head,
    read_run_record,
)

__all__ = ["FORMATS", "PredictConfig", "PredictResult", "RunMismatchError", "predict"]


class RunMismatchError(SkillError, ValueError):
    """The store cannot be used with the run (different provenance, views or geometry)."""


@dataclass
class PredictResult:
    """Predictions of one run on one store; rows follow the store's take order."""

    take_ids: list[str]
    scores: np.ndarray  # (n, O) the task's scores (classification: class probabilities)
    targets: np.ndarray  # (n, *shape) the stored targets (see `tasks`)
    task_name: str
    schema: dict  # the task's schema (classification: the labels)
    view_names: list[str]  # the run's views
    used_views: list[str]  # the views that fed the head (others masked)
    skipped: list[str] = field(default_factory=list)  # takes with nothing to predict from
    split: str | None = None  # the split predicted (None = every take)
    file_takes: int = 0  # takes listed in the JSON prediction file
    filled: list[str] = field(default_factory=list)  # takes of the file given the uniform fill
    warnings: list[str] = field(default_factory=list)  # leakage warnings (see leakage_warnings)
    benchmark: dict = field(default_factory=dict)  # egoexo4d: ego, exo, ego+exo top-1 (labelled)
    benchmark_takes: int = 0  # the labelled takes of the file those figures count
    benchmark_filled: int = 0  # of them, written with the uniform fill (read as class 0)
    benchmark_majority: float | None = None  # the training majority class's top-1 on them
    aggregate: str = "none"  # "participant": probabilities are participant means
    metrics: dict = field(
        default_factory=dict
    )  # per split ("all", "train", "val", ...) if labelled
    out_csv: Path | None = None
    out_json: Path | None = None


def predict(cfg: PredictConfig) -> PredictResult:
    """Predict every completed take of ``cfg.store`` (of ``cfg.split`` when set) with the head
    in ``cfg.run`` and write the CSV ``cfg.out_csv`` (``cfg.format`` csv; the EgoExo4D files
    are written by `skill.interop.egoexo4d.predict_egoexo4d`). ``views``: a subset of the run's
    views (spec as for ``fit``).
    """
    if cfg.format != "csv":
        raise ValueError(
            f"format {cfg.format!r}: written by skill.interop.egoexo4d.predict_egoexo4d"
        )
    prediction = predict_takes(cfg)
    result = prediction.result
    result.warnings = leakage_warnings(
        prediction.record, prediction.sel, set(result.take_ids), Path(cfg.out_csv)
    )
    result.out_csv = Path(cfg.out_csv)
    write_csv(result.out_csv, result, prediction.sel)
    return result


@dataclass
class StorePrediction:
    """A run's per-take probabilities on a store, before any file is written: what each output
    format is made from."""

    record: RunRecord
    store: TokenStore
    table: TakeTable  # the store's take table
    in_split: np.ndarray  # (rows of the table,) bool: the takes of the split asked for
    sel: Selection  # the predicted takes (others: skipped)
    head: TrainableHead
    take_scores: np.ndarray  # (n, O) each take's own scores, before any aggregate
    result: PredictResult  # its scores aggregated as asked


def predict_takes(cfg: PredictConfig) -> StorePrediction:
    """Load the run, check the store against it, and compute the task's scores of every
    completed take of ``cfg.store`` (of ``cfg.split`` when set) with ``cfg.views`` fed."""
    record = read_run_record(cfg.run)
    store = TokenStore.open(cfg.store)
    used_views = check_compatible(store, record, cfg.run, cfg.views)
    table = store.take_table()
    in_split = select_split(store, table, cfg.split)
    sel = expand_to_run_views(
        load_selection(cfg.store, used_views, cfg.allow_unfinished), record.view_names
    )
    sel = subset(sel, in_split[sel.store_rows])
    sel.train_summary = record.train_summary  # its task's scores as the run reports them
    head = load_head(cfg.run, record.model)
    scores = head.predict_scores(
        sel.x, sel.mask, sel.task, None, cfg.batch_size, cfg.device, sel.sequence
    )
    take_scores = scores
    if cfg.aggregate == "participant":
        scores = participant_mean(scores, sel.participant)
    result = make_result(store, sel, record, scores, used_views, in_split)
    result.split, result.aggregate = cfg.split, cfg.aggregate
    return StorePrediction(record, store, table, in_split, sel, head, take_scores, result)


def per_view_scores(prediction: StorePrediction, cfg: PredictConfig) -> np.ndarray | None:
    """``(n, V, O)``: each view's own scores for a head that has them (``late``); None for a
    head with one output per take."""
    sel = prediction.sel
    return prediction.head.per_view_scores(
        sel.x, sel.mask, sel.task, cfg.batch_size, cfg.device, sel.sequence
    )


def participant_mean(values: np.ndarray, participant: np.ndarray) -> np.ndarray:
    """``(n, ...)`` -> each row replaced by the mean of the rows of its participant (a take
    without a participant keeps its own row)."""
    out = values.copy()
    people = np.asarray(participant).astype(str)
    for person in set(people.tolist()) - {""}:
        rows = people == person
        out[rows] = values[rows].mean(axis=0)
    return out


def select_split(store: TokenStore, table, split: str | None) -> np.ndarray:
    """``(rows of the take table,)`` bool: the takes of ``split`` (all when None)."""
    if split is None:
        return np.ones(len(table.ids), dtype=bool)
    rows = np.asarray(table.split).astype(str) == split
    if not rows.any():
        have = sorted(set(np.asarray(table.split).astype(str).tolist()) - {""})
        raise ConfigError(
            f"split: {store.path} has no take of split {split!r} "
            f"(its splits: {', '.join(have) or 'none'})"
        )
    return rows


def subset(sel: Selection, keep: np.ndarray) -> Selection:
    """The takes of ``sel`` where ``keep`` (n,) is True."""
    if keep.all():
        return sel
    for name, value in pairs_within(sel, keep).items():  # a ranking store's, among those kept
        setattr(sel, name, value)
    for name in ("x", "mask", "targets", "take_ids", "scenario", "participant", "split",
                 "store_rows", "clip_mask", "clip_times"):  # fmt: skip
        if getattr(sel, name) is not None:
            setattr(sel, name, getattr(sel, name)[keep])
    return sel


def leakage_warnings(
    record: RunRecord, sel: Selection, written: set[str], path: Path, total: int | None = None
) -> list[str]:
    """Warnings when takes of ``sel`` written into the file at ``path`` (their ids:
    ``written``; the file holds ``total`` takes, default ``len(written)``) were trained or
    validated on by the run, or share participants with its training takes. Takes the run
    predicted but the file leaves out are not counted (runs fitted before this record say
    nothing)."""
    takes = record.takes
    rows = [i for i, t in enumerate(sel.take_ids) if str(t) in written]
    ids = [str(sel.take_ids[i]) for i in rows]
    participants = [str(sel.participant[i]) for i in rows]
    of_file = f"of the {len(written) if total is None else total} takes written to {path.name}"
    warnings = []
    for key, what in (("train_ids", "training"), ("val_ids", "validation")):
        seen = set(takes.get(key) or [])
        hits = sum(t in seen for t in ids)
        if hits:
            warnings.append(
                f"{hits} {of_file} were among the run's {what} takes (scores on them are not "
                "held-out figures)"
            )
    people = set(takes.get("train_participants") or [])
    shared = sorted(set(participants) & people - {""})
    if shared:
        hits = sum(p in people for p in participants)
        warnings.append(
            f"{hits} {of_file} share participants with the run's training takes "
            f"({len(shared)} participant(s): {', '.join(shared[:5])}"
            f"{' ...' if len(shared) > 5 else ''})"
        )
    return warnings


# ---- checks ------------------------------------------------------------------------------


def check_compatible(store: TokenStore, record: RunRecord, run_dir, views: str | None) -> list[str]:
    """Refuse a store the run cannot read; returns the run views to feed (others masked)."""
    check_clip_axes(store, record, run_dir)
    # Where the store's tokens came from must match, not where files happened to lie.
    diffs = diff_provenance(
        provenance_identity(store.provenance),
        provenance_identity(record.store.provenance),
        wanted_name="run",
    )
    if diffs:
        raise RunMismatchError(
            f"{store.path} was not extracted like the store run {run_dir} was trained on:\n  "
            + "\n  ".join(diffs)
        )
    geometry = record.store.geometry
    for key, have in (("tokens", store.tokens), ("dim", store.dim)):
        if int(geometry[key]) != have:
            raise RunMismatchError(
                f"{store.path}: {key} = {have}, but run {run_dir} was trained with {geometry[key]}"
            )
    run_views = list(record.view_names)
    used = resolve_views(views, run_views) if views else run_views
    missing = [v for v in used if v not in store.views]
    if missing:
        raise RunMismatchError(
            f"{store.path} has no view {', '.join(missing)} that run {run_dir} uses "
            f"(store views: {', '.join(store.views)}); pass views without it to predict "
            "with that view masked"
        )
    stored = {"name": store.task["name"], "schema": store.task["schema"]}
    if stored != record.task:
        raise RunMismatchError(
            f"{store.path}: the store's task {stored} differs from the run's {record.task}"
        )
    return used


def check_clip_axes(store: TokenStore, record: RunRecord, run_dir) -> None:
    """Refuse a store whose clip axis (samples or sequence) is not the one of the store the
    run was fitted on: one line naming both."""
    have, fitted = store.clip_axis, clip_axis_of(record.store.provenance)
    if have != fitted:
        raise RunMismatchError(
            f"{store.path}: clip axis {have}, but run {run_dir} was fitted on a store whose "
            f"clip axis is {fitted}; predict a store extracted with the run's --sampling"
        )


def expand_to_run_views(sel: Selection, run_views: list[str]) -> Selection:
    """Place the loaded views at their positions among the run's views; others masked (no
    clip, no time)."""
    if sel.view_names == run_views:
        return sel
    n, _, clips, tokens, dim = sel.x.shape
    x = np.zeros((n, len(run_views), clips, tokens, dim), dtype=sel.x.dtype)
    mask = np.zeros((n, len(run_views)), dtype=bool)
    clip_mask = np.zeros((n, len(run_views), clips), dtype=bool)
    clip_times = np.full((n, len(run_views), clips, 2), np.nan, dtype=np.float32)
    for i, name in enumerate(sel.view_names):
        j = run_views.index(name)
        x[:, j], mask[:, j] = sel.x[:, i], sel.mask[:, i]
        clip_mask[:, j], clip_times[:, j] = sel.clip_mask[:, i], sel.clip_times[:, i]
    sel.x, sel.mask, sel.view_names = x, mask, list(run_views)
    sel.clip_mask, sel.clip_times = clip_mask, clip_times
    return sel


# ---- model -------------------------------------------------------------------------------


def load_run_model(run_dir: str | Path, config: dict | RunRecord):
    """The trained model of a run (an nn.Module from safetensors, or a LightGBM Booster);
    ``config`` is the run's RunRecord or a config.json dict with at least ``model``."""
    if isinstance(config, RunRecord):
        model = config.model
    else:
        model = ModelRecord.from_dict(config.get("model"), str(Path(run_dir) / "config.json"))
    return load_head(run_dir, model).model


def make_result(
    store: TokenStore,
    sel: Selection,
    record: RunRecord,
    scores: np.ndarray,
    used_views: list[str],
    in_split: np.ndarray,
) -> PredictResult:
    table = store.take_table()
    predicted_rows = set(sel.store_rows.tolist())
    skipped = [str(t) for i, t in enumerate(table.ids) if in_split[i] and i not in predicted_rows]
    result = PredictResult(
        take_ids=[str(t) for t in sel.take_ids],
        scores=scores,
        targets=sel.targets,
        task_name=sel.task_name,
        schema=dict(sel.schema),
        view_names=list(record.view_names),
        used_views=used_views,
        skipped=skipped,
    )
    result.metrics = labelled_metrics(sel, scores, record)
    return result


def labelled_metrics(sel: Selection, scores: np.ndarray, record: RunRecord) -> dict:
    """The task's metrics over all takes with a target and per split, beside the baselines of
    the run's training targets."""
    task = sel.task
    train_targets = task.summary_targets(record.train_summary, sel.schema)
    if sel.pairs is not None:  # a ranking store's splits are scored on their pairs
        return pair_metrics(sel, scores, train_targets)
    labelled = sel.labelled
    groups = {"all": labelled}
    for split in sorted(set(sel.split.tolist()) - {""}):
        groups[split] = labelled & (sel.split == split)
    return {
        name: task.evaluate(
            sel.schema, sel.targets[rows], scores[rows], sel.scenario[rows], train_targets
        )
        for name, rows in groups.items()
        if rows.any()
    }


# ---- outputs -----------------------------------------------------------------------------


def write_csv(path: Path, result: PredictResult, sel: Selection) -> None:
    """One row per predicted take: ``take``, ``split``, ``scenario``, the task's prediction
    columns, and the true targets when some take has one (`tasks.columns.truth_columns`:
    classification's ``label``, regression's ``true_<name>`` per score; empty where a take has
    none)."""
    task = sel.task
    columns = task.prediction_columns(result.scores, result.schema) if len(result.scores) else {}
    truth = _truth(sel, result) if sel.labelled.any() else {}
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["take", "split", "scenario", *columns, *truth])
    for i, take in enumerate(result.take_ids):
        row = [take, sel.split[i], sel.scenario[i], *(_cell(v[i]) for v in columns.values())]
        row += ["" if v[i] is None else _cell(v[i]) for v in truth.values()]
        writer.writerow(row)
    write_text_atomically(path, text.getvalue())


def _truth(sel: Selection, result: PredictResult) -> dict[str, list]:
    """The true targets' columns; a task whose targets no column holds gets one column named by
    its target array, each target as the manifest states it."""
    from skill.tasks.columns import UntabledTargets, truth_columns

    task = sel.task
    try:
        return truth_columns(task, result.schema, result.targets)
    except UntabledTargets:
        return {task.target_spec(result.schema).array: task.decode(result.targets, result.schema)}


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, (list, tuple, dict)):  # e.g. a take's events: JSON, as a manifest has it
        return json.dumps(value)
    return str(value)
