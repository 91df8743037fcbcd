"""Stage two, ``skill predict``: apply a run folder's head to a token store.

Checks before anything is computed:
- the store's provenance (backbone and its weights hash, adapter, sampling, token mode,
  preprocessing, dtype: every field) must equal the one the run was trained on; otherwise
  the error names each differing field, e.g. ``backbone.weights_sha256: store abc... vs run def...``;
- the store must hold every view the run uses (or ``views`` must leave the missing one out),
  with the run's token count and width.

``views`` restricts prediction to a subset of the run's views (e.g. ``ego`` for a run trained
on all views): the others are masked, exactly like a view that failed to decode.

Outputs:
- CSV (``out_csv``): one row per predicted take, in the store's take order: ``take``,
  ``split``, ``scenario``, ``predicted`` (class name), ``p_<class>`` per class, and ``label``
  (the true class name, empty when unlabelled) when the store has labels.
- ``fmt="egoexo4d"`` (``out_json``, default: ``out_csv`` with suffix ``.json``): the official
  EgoExo4D proficiency prediction file, ``{"videos": [take ids], "ego_model_predictions":
  [[C logits], ...], "exo_model_predictions": [[[C logits] x 4], ...]}``, takes in the order
  of the store's take table (of ``split`` when set), or of ``order`` (the ground truth's take
  names). Logits are log-probabilities (their softmax is the predicted distribution).
  The scorer takes argmax of the ego slot (Ego), of the mean of the exo slots' softmaxes
  (Exo) and of the mean of all five softmaxes (Ego+Exo). Fill rule: every slot without a
  view of its own gets the take's fused log-probabilities (the head's output).
  Fusion heads (one output per take) put the fused logits in every slot, so the scorer's
  Ego, Exo and Ego+Exo all equal the fused prediction. The ``late`` head puts the ego
  view's own logits in the ego slot and the i-th exo view's logits in the i-th exo slot; its
  fused output is the mean of the valid views' probabilities, so filling the missing slots
  with it keeps the mean of the five softmaxes equal to it: the scorer's Ego+Exo is skill's
  prediction of every take, its Ego is the ego classifier where the take has an ego view
  and the fused prediction where not, its Exo the exo classifiers' mean with the same fill.
  ``PredictResult.benchmark`` holds these three figures computed by the scorer's own
  arithmetic from exactly the values written into the file, over every labelled take of the
  file, the uniformly filled ones included (the scorer reads their zero logits as class 0,
  Novice: numpy's argmax gives ties to the first index), so what skill reports is what the
  scorer will say. Logits are written with full round-trip precision (Python's ``repr`` of
  the float64 value), never rounded: a near-tie cannot fall the other way in the file.
- ``fmt="egoexo4d-labels"``: the challenge's newer file, ``{"videos": [take names],
  "predictions": [class names]}`` (skill's fused prediction per take).
- A take of the file that cannot be predicted (not completed, or no valid view) is refused
  (:class:`UnpredictableTakesError`, listing them) unless ``unpredictable="uniform"``: then
  it gets all-zero logits (a uniform guess; labels: the run's most frequent training class)
  and ``PredictResult.filled`` names them.
- ``aggregate="participant"``: every output and metric uses, for each take, the mean of
  the probabilities of its participant's predicted takes (the late head's slots are
  averaged in probability space, so the scorer's Ego+Exo stays skill's prediction). This
  is outside the benchmark's input rules (each take is to be scored on its own videos).
- Leakage guards: takes written into the output file (the JSON prediction file when there is
  one, else the CSV) that the run predicted and that were among its training or validation
  takes, or share participants with its training takes, give ``PredictResult.warnings``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.cache.recovery import write_text_atomically
from skill.cache.store import TokenStore, diff_provenance, provenance_identity
from skill.errors import ConfigError, SkillError
from skill.heads.config import FORMATS, PredictConfig
from skill.heads.data import Selection, load_selection, resolve_views
from skill.heads.interface import TrainableHead
from skill.heads.metrics import evaluate
from skill.heads.run_folder import (
    ModelRecord,
    RunRecord,
    load_head,
    read_run_record,
    write_json,
)

__all__ = ["FORMATS", "PredictConfig", "PredictResult", "RunMismatchError", "predict"]

EXO_SLOTS = 4  # the official prediction file has four exo slots per take


class RunMismatchError(SkillError, ValueError):
    """The store cannot be used with the run (different provenance, views or geometry)."""


@dataclass
class PredictResult:
    """Predictions of one run on one store; rows follow the store's take order."""

    take_ids: list[str]
    probs: np.ndarray  # (n, C) class probabilities
    predicted: list[str]  # (n,) class names
    labels: np.ndarray  # (n,) int, -1 = unlabelled
    class_names: list[str]
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


def predict(
    cfg: PredictConfig | str | Path,
    run_dir: str | Path | None = None,
    out_csv: str | Path | None = None,
    fmt: str = "csv",
    out_json: str | Path | None = None,
    views: str | None = None,
    order: list[str] | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    split: str | None = None,
    unpredictable: str = "refuse",
    aggregate: str = "none",
) -> PredictResult:
    """Predict every completed take of ``cfg.store`` (of ``cfg.split`` when set) with the head
    in ``cfg.run``.

    ``format``: ``csv`` writes ``out_csv``; ``egoexo4d`` / ``egoexo4d-labels`` also write the
    official JSON to ``out_json``. ``views``: a subset of the run's views (spec as for
    ``fit``). ``order``: take ids for the JSON's order (default: the store's take table order,
    of ``split`` when set). The keyword form ``predict(store, run_dir, out_csv, fmt=..., ...)``
    builds the PredictConfig.
    """
    if not isinstance(cfg, PredictConfig):
        cfg = PredictConfig(
            store=cfg, run=run_dir, out_csv=out_csv, format=fmt, out_json=out_json,
            views=views, order=order, device=device, batch_size=batch_size, split=split,
            unpredictable=unpredictable, aggregate=aggregate,
        )  # fmt: skip
    record = read_run_record(cfg.run)
    store = TokenStore.open(cfg.store)
    used_views = check_compatible(store, record, cfg.run, cfg.views)
    table = store.take_table()
    in_split = select_split(store, table, cfg.split)
    sel = expand_to_run_views(
        load_selection(cfg.store, used_views, cfg.allow_unfinished), record.view_names
    )
    sel = subset(sel, in_split[sel.store_rows])
    head = load_head(cfg.run, record.model)
    probs = head.predict_proba(sel.x, sel.mask, None, cfg.batch_size, cfg.device)
    take_probs = probs
    if cfg.aggregate == "participant":
        probs = participant_mean(probs, sel.participant)
    result = make_result(store, sel, record, probs, used_views, in_split)
    result.split, result.aggregate = cfg.split, cfg.aggregate
    if cfg.format == "csv":
        result.warnings = leakage_warnings(record, sel, set(result.take_ids), Path(cfg.out_csv))
    else:
        ids = [str(t) for t in table.ids[in_split]] if cfg.order is None else cfg.order
        ids = take_names(ids, table)
        check_order(ids, store, table, in_split, cfg.split)
        row_of = {str(t): i for i, t in enumerate(sel.take_ids)}
        missing = [t for t in ids if t not in row_of]
        if missing and cfg.unpredictable == "refuse":
            raise UnpredictableTakesError(
                f"{len(missing)} take(s) of the prediction file cannot be predicted (not "
                f"completed, or no valid view among {', '.join(used_views)}): "
                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; pass "
                "unpredictable=uniform (--unpredictable uniform) to write them with a uniform "
                "guess, or leave them out with order"
            )
        result.filled = missing
        result.file_takes = len(ids)
        file_takes = {t for t in ids if t in row_of}
        result.warnings = leakage_warnings(record, sel, file_takes, Path(cfg.out_json), len(ids))
    if cfg.out_csv is not None:
        result.out_csv = Path(cfg.out_csv)
        write_csv(result.out_csv, result, sel)
    if cfg.format == "egoexo4d":
        result.out_json = Path(cfg.out_json)
        slots = egoexo4d_slots(head, sel, take_probs, cfg.device, cfg.batch_size)
        if cfg.aggregate == "participant":  # in probability space: Ego+Exo stays the fused
            slots = np.log(np.clip(participant_mean(_softmax(slots), sel.participant), 1e-12, None))
        payload = egoexo4d_payload(ids, file_slots(ids, row_of, slots))
        write_json(result.out_json, payload, indent=None)  # compact, as the challenge's files
        score_file(result, written_slots(payload), file_labels(ids, table), ids, row_of, record)
    elif cfg.format == "egoexo4d-labels":
        result.out_json = Path(cfg.out_json)
        fill = record.class_names[int(np.argmax(record.train_class_counts))]
        write_egoexo4d_labels(result.out_json, ids, row_of, result.predicted, fill)
    return result


def participant_mean(values: np.ndarray, participant: np.ndarray) -> np.ndarray:
    """``(n, ...)`` -> each row replaced by the mean of the rows of its participant (a take
    without a participant keeps its own row)."""
    out = values.copy()
    people = np.asarray(participant).astype(str)
    for person in set(people.tolist()) - {""}:
        rows = people == person
        out[rows] = values[rows].mean(axis=0)
    return out


class UnpredictableTakesError(SkillError, ValueError):
    """Takes of the prediction file have nothing to predict from (the message lists them)."""


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
    for name in ("x", "mask", "labels", "take_ids", "scenario", "participant", "split",
                 "store_rows"):  # fmt: skip
        setattr(sel, name, getattr(sel, name)[keep])
    return sel


def take_names(order: list[str], table) -> list[str]:
    """``order`` with every take uid (EgoExo4D's ``take_uid``, the table's ``uid`` column)
    replaced by its take's name: the challenge's files name takes, its ground truth may list
    uids. An entry that is a take name stays one."""
    names = {str(t) for t in table.ids}
    name_of_uid = {str(u): str(t) for t, u in zip(table.ids, table.uid, strict=True) if u}
    return [t if t in names else name_of_uid.get(t, t) for t in order]


def check_order(ids: list[str], store: TokenStore, table, in_split, split) -> None:
    """Every take of the file's order must be a take of the store (of ``split`` when set)."""
    known = {str(t) for t in table.ids}
    unknown = [t for t in ids if t not in known]
    if unknown:
        raise ConfigError(
            f"{len(unknown)} take(s) of the given order are not in {store.path}: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
        )
    if split is not None:
        ours = {str(t) for t in table.ids[in_split]}
        other = [t for t in ids if t not in ours]
        if other:
            raise ConfigError(
                f"{len(other)} take(s) of the given order are not of split {split!r}: "
                f"{', '.join(other[:5])}{' ...' if len(other) > 5 else ''}"
            )


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
    if list(store.labels) != list(record.class_names):
        raise RunMismatchError(
            f"{store.path}: classes {store.labels} differ from the run's {record.class_names}"
        )
    return used


def expand_to_run_views(sel: Selection, run_views: list[str]) -> Selection:
    """Place the loaded views at their positions among the run's views; others masked."""
    if sel.view_names == run_views:
        return sel
    n, _, clips, tokens, dim = sel.x.shape
    x = np.zeros((n, len(run_views), clips, tokens, dim), dtype=sel.x.dtype)
    mask = np.zeros((n, len(run_views)), dtype=bool)
    for i, name in enumerate(sel.view_names):
        j = run_views.index(name)
        x[:, j], mask[:, j] = sel.x[:, i], sel.mask[:, i]
    sel.x, sel.mask, sel.view_names = x, mask, list(run_views)
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
    probs: np.ndarray,
    used_views: list[str],
    in_split: np.ndarray,
) -> PredictResult:
    class_names = list(record.class_names)
    table = store.take_table()
    predicted_rows = set(sel.store_rows.tolist())
    skipped = [str(t) for i, t in enumerate(table.ids) if in_split[i] and i not in predicted_rows]
    result = PredictResult(
        take_ids=[str(t) for t in sel.take_ids],
        probs=probs,
        predicted=[class_names[int(i)] for i in probs.argmax(axis=1)] if len(probs) else [],
        labels=sel.labels,
        class_names=class_names,
        view_names=list(record.view_names),
        used_views=used_views,
        skipped=skipped,
    )
    result.metrics = labelled_metrics(sel, probs, record)
    return result


def labelled_metrics(sel: Selection, probs: np.ndarray, record: RunRecord) -> dict:
    """Metrics over all labelled takes and per split, with the run's training baselines."""
    counts = record.train_class_counts
    train_labels = np.repeat(np.arange(len(counts)), counts)
    groups = {"all": sel.labels >= 0}
    for split in sorted(set(sel.split.tolist()) - {""}):
        groups[split] = (sel.labels >= 0) & (sel.split == split)
    return {
        name: evaluate(
            sel.labels[rows],
            probs[rows],
            sel.scenario[rows],
            train_labels,
            list(record.class_names),
        )
        for name, rows in groups.items()
        if rows.any()
    }


# ---- outputs -----------------------------------------------------------------------------


def write_csv(path: Path, result: PredictResult, sel: Selection) -> None:
    """One row per predicted take; ``label`` column only when some take is labelled."""
    with_labels = bool((result.labels >= 0).any())
    header = ["take", "split", "scenario", "predicted", *(f"p_{c}" for c in result.class_names)]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header + (["label"] if with_labels else []))
    for i, take in enumerate(result.take_ids):
        row = [
            take,
            sel.split[i],
            sel.scenario[i],
            result.predicted[i],
            *(f"{p:.6f}" for p in result.probs[i]),
        ]
        if with_labels:
            label = int(result.labels[i])
            row.append(result.class_names[label] if label >= 0 else "")
        writer.writerow(row)
    write_text_atomically(path, text.getvalue())


def egoexo4d_slots(
    head: TrainableHead, sel: Selection, probs: np.ndarray, device: str, batch_size: int
) -> np.ndarray:
    """Log-probabilities per take for the 1 ego + 4 exo slots: ``(n, 5, C)`` float64."""
    # float64 before the log: distinct float32 probabilities keep distinct, ordered logits.
    fused = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))  # (n, C)
    per_view = head.per_view_proba(sel.x, sel.mask, batch_size, device)  # (n, V, C) or None
    if per_view is None:  # one output per take: the fused logits in every slot
        return np.repeat(fused[:, None, :], 1 + EXO_SLOTS, axis=1)
    per_view = np.asarray(per_view, dtype=np.float64)
    return late_slots(np.log(np.clip(per_view, 1e-12, None)), sel.mask, sel.view_names, fused)


def late_slots(
    log_probs: np.ndarray, mask: np.ndarray, view_names: list[str], fused: np.ndarray
) -> np.ndarray:
    """``(n, V, C)`` per-view log-probabilities, ``(n, V)`` mask, ``(n, C)`` fused
    log-probabilities (the head's output) -> ``(n, 5, C)`` slots.

    Slot 0 is the view named ``ego``; slots 1..4 are the views named ``exo*`` in order. A
    slot without a valid view gets the take's fused log-probabilities. The fused output of
    the late head is the mean of the valid views' probabilities, so the mean of the five
    slots' softmaxes (the scorer's Ego+Exo) is the fused distribution itself, whatever views
    are missing: the scorer's Ego+Exo prediction is skill's prediction of every take.
    """
    n, _, num_classes = log_probs.shape
    exos = [i for i, v in enumerate(view_names) if v.startswith("exo")][:EXO_SLOTS]
    ego = [view_names.index("ego")] if "ego" in view_names else [None]
    sources = ego + exos + [None] * (EXO_SLOTS - len(exos))
    slots = np.empty((n, 1 + EXO_SLOTS, num_classes))
    for s, v in enumerate(sources):
        slots[:, s] = fused
        if v is not None:
            slots[mask[:, v], s] = log_probs[mask[:, v], v]
    return slots


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def slot_predictions(slots: np.ndarray) -> dict[str, np.ndarray]:
    """The three per-take predictions of the EgoExo4D scorer's arithmetic on ``(n, 5, C)``
    slots: argmax of the ego logits, of the mean exo softmax, of the mean of all five."""
    probs = _softmax(slots)
    return {
        "ego": slots[:, 0].argmax(axis=-1),
        "exo": probs[:, 1:].mean(axis=1).argmax(axis=-1),
        "ego+exo": probs.mean(axis=1).argmax(axis=-1),
    }


def benchmark_scores(slots: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Ego, Exo and Ego+Exo top-1 over the labelled takes, as the scorer computes them from
    the file (empty when nothing is labelled). ``predict`` passes every take of the file as
    written (:func:`written_slots`), the uniformly filled ones included: the scorer counts
    them, and its argmax reads their zero logits as class 0."""
    rows = labels >= 0
    if not len(rows) or not rows.any():
        return {}
    return {
        name: float((pred[rows] == labels[rows]).mean())
        for name, pred in slot_predictions(slots).items()
    }


def score_file(
    result: PredictResult,
    written: np.ndarray,
    labels: np.ndarray,
    order: list[str],
    row_of: dict,
    record: RunRecord,
) -> None:
    """Fill ``result``'s benchmark fields from the file's ``(n, 5, C)`` written slots and the
    ``(n,)`` labels of its takes (the filled takes, outside ``row_of``, counted too)."""
    filled = np.array([t not in row_of for t in order], dtype=bool)
    result.benchmark = benchmark_scores(written, labels)
    result.benchmark_takes = int((labels >= 0).sum())
    result.benchmark_filled = int((labels[filled] >= 0).sum())
    result.benchmark_majority = majority_top1(record, labels)


def majority_top1(record: RunRecord, labels: np.ndarray) -> float | None:
    """Top-1 of predicting the run's most common training label for every labelled take
    (ties: the lower class index, as `metrics.majority_label`); None when none is labelled."""
    labelled = labels[labels >= 0]
    if not len(labelled):
        return None
    return float((labelled == int(np.argmax(record.train_class_counts))).mean())


def file_slots(order: list[str], row_of: dict, slots: np.ndarray) -> np.ndarray:
    """``(len(order), 5, C)`` float64: the slots of each take of the file, in its order; a take
    without a prediction gets zero logits (a uniform guess)."""
    out = np.zeros((len(order), *slots.shape[1:]), dtype=np.float64)
    for i, take in enumerate(order):
        if take in row_of:
            out[i] = slots[row_of[take]]
    return out


def egoexo4d_payload(order: list[str], slots: np.ndarray) -> dict:
    """The official prediction JSON's content. Values are Python floats, which ``json`` writes
    as their shortest round-trip ``repr``: the file holds exactly these float64 values."""
    return {
        "videos": list(order),
        "ego_model_predictions": [[float(v) for v in s[0]] for s in slots],
        "exo_model_predictions": [[[float(v) for v in e] for e in s[1:]] for s in slots],
    }


def written_slots(payload: dict) -> np.ndarray:
    """``(n, 5, C)``: the ego and exo logits of a prediction payload, as the scorer reads them."""
    ego = np.asarray(payload["ego_model_predictions"], dtype=np.float64)
    exo = np.asarray(payload["exo_model_predictions"], dtype=np.float64)
    if not len(ego):  # a file of no takes
        return np.zeros((0, 1 + EXO_SLOTS, 0))
    return np.concatenate([ego[:, None, :], exo], axis=1)


def file_labels(order: list[str], table) -> np.ndarray:
    """``(len(order),)`` int: each take's label index in the take table, -1 = unlabelled."""
    row = {str(t): i for i, t in enumerate(table.ids)}
    return np.array([int(table.label[row[t]]) for t in order], dtype=np.int64)


def write_egoexo4d_labels(
    path: Path, order: list[str], row_of: dict, predicted: list[str], fill: str
) -> None:
    """The challenge's newer file: ``{"videos": [...], "predictions": [class names]}``; takes
    without a prediction get ``fill`` (the run's most frequent training class)."""
    labels = [predicted[row_of[t]] if t in row_of else fill for t in order]
    write_json(path, {"videos": list(order), "predictions": labels}, indent=None)


def read_take_order(path: str | Path) -> list[str]:
    """Take ids in ground-truth order from a text file (one per line), a JSON list, or a
    JSON object with ``videos`` (a prediction or ground-truth file in the official layout)."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("videos"), list):
        data = data["videos"]
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise ConfigError(f"{path}: expected a JSON list of take ids or an object with 'videos'")
    return data
