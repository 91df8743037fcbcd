"""The EgoExo4D proficiency challenge's prediction files, made from `skill predict`'s
probabilities: the logits file (``--format egoexo4d``: per take one ego slot and four exo slots
of log-probabilities) and the newer labels file (``--format egoexo4d-labels``), the order of
their takes (a ground-truth order file; take uids read as take names), the fill rule for a take
that cannot be predicted, and the official scorer's arithmetic, applied to the values written
so that the figures skill prints are the ones the scorer will compute from the file. The file
layouts and the rules of their slots are in docs/interop.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from skill.cache.store import TokenStore
from skill.errors import ConfigError, SkillError
from skill.heads.config import PredictConfig
from skill.heads.data import Selection
from skill.heads.predict import (
    PredictResult,
    StorePrediction,
    leakage_warnings,
    participant_mean,
    per_view_scores,
    predict_takes,
    write_csv,
)
from skill.heads.run_folder import RunRecord, write_json

FILE_FORMATS = ("egoexo4d", "egoexo4d-labels")
"""The `skill predict --format` values written here."""
EXO_SLOTS = 4  # the official prediction file has four exo slots per take


def predict_egoexo4d(cfg: PredictConfig) -> PredictResult:
    """Predict ``cfg.store`` with ``cfg.run`` as `skill.heads.predict.predict` does and write
    the official file of ``cfg.format`` to ``cfg.out_json`` (and the CSV when ``cfg.out_csv``
    is set). Its takes: ``cfg.order`` (take names or uids), default the store's take order, of
    ``cfg.split`` when set; a take of the file with nothing to predict from is refused unless
    ``cfg.unpredictable`` is ``uniform``."""
    if cfg.format not in FILE_FORMATS:
        raise ValueError(
            f"format {cfg.format!r} is not an EgoExo4D file: skill.heads.predict writes it"
        )
    prediction = predict_takes(cfg)
    result, sel = prediction.result, prediction.sel
    if not sel.task.class_probabilities:
        raise ConfigError(
            f"--format {cfg.format}: the EgoExo4D files hold class scores, and run {cfg.run} "
            f"learned task {result.task_name}; write --format csv"
        )
    ids = file_order(cfg, prediction)
    row_of = {str(t): i for i, t in enumerate(sel.take_ids)}
    missing = [t for t in ids if t not in row_of]
    if missing and cfg.unpredictable == "refuse":
        raise unpredictable_takes_error(missing, result.used_views)
    result.filled = missing
    result.file_takes = len(ids)
    file_takes = {t for t in ids if t in row_of}
    result.warnings = leakage_warnings(
        prediction.record, sel, file_takes, Path(cfg.out_json), len(ids)
    )
    if cfg.out_csv is not None:
        result.out_csv = Path(cfg.out_csv)
        write_csv(result.out_csv, result, sel)
    result.out_json = Path(cfg.out_json)
    if cfg.format == "egoexo4d":
        write_logits_file(result.out_json, prediction, cfg, ids, row_of)
    else:
        labels = result.schema["labels"]
        fill = labels[int(np.argmax(prediction.record.train_summary["class_counts"]))]
        # The task's level (ordinal: CORN's rank-consistent rule, not the argmax).
        columns = sel.task.prediction_columns(result.scores, result.schema) if len(sel.x) else {}
        predicted = columns.get("predicted", [])
        write_egoexo4d_labels(result.out_json, ids, row_of, predicted, fill)
    return result


def file_order(cfg: PredictConfig, prediction: StorePrediction) -> list[str]:
    """The take names of the file, in its order: ``cfg.order`` (names or uids, checked against
    the store and ``cfg.split``), default the store's take order (of ``cfg.split``)."""
    table, in_split = prediction.table, prediction.in_split
    ids = [str(t) for t in table.ids[in_split]] if cfg.order is None else cfg.order
    ids = take_names(ids, table)
    check_order(ids, prediction.store, table, in_split, cfg.split)
    return ids


def unpredictable_takes_error(missing: list[str], used_views: list[str]) -> SkillError:
    """The refusal of takes of the file that have nothing to predict from."""
    return UnpredictableTakesError(
        f"{len(missing)} take(s) of the prediction file cannot be predicted (not "
        f"completed, or no valid view among {', '.join(used_views)}): "
        f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; pass "
        "unpredictable=uniform (--unpredictable uniform) to write them with a uniform "
        "guess, or leave them out with order"
    )


def write_logits_file(
    path: Path, prediction: StorePrediction, cfg: PredictConfig, ids: list[str], row_of: dict
) -> None:
    """Write the logits file of the takes ``ids`` and score it as the scorer will (into
    ``prediction.result``'s benchmark fields)."""
    sel, result = prediction.sel, prediction.result
    slots = egoexo4d_slots(per_view_scores(prediction, cfg), sel, prediction.take_scores)
    if cfg.aggregate == "participant":  # in probability space: Ego+Exo stays the fused
        slots = np.log(np.clip(participant_mean(_softmax(slots), sel.participant), 1e-12, None))
    payload = egoexo4d_payload(ids, file_slots(ids, row_of, slots))
    write_json(path, payload, indent=None)  # compact, as the challenge's files
    labels = file_labels(ids, prediction.table)
    score_file(result, written_slots(payload), labels, ids, row_of, prediction.record)


class UnpredictableTakesError(SkillError, ValueError):
    """Takes of the prediction file have nothing to predict from (the message lists them)."""


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


def egoexo4d_slots(per_view: np.ndarray | None, sel: Selection, probs: np.ndarray) -> np.ndarray:
    """Log-probabilities per take for the 1 ego + 4 exo slots: ``(n, 5, C)`` float64, from the
    head's ``(n, C)`` probabilities and its ``(n, V, C)`` per-view ones (None: it has none)."""
    # float64 before the log: distinct float32 probabilities keep distinct, ordered logits.
    fused = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None))  # (n, C)
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
    the file (empty when nothing is labelled). `predict_egoexo4d` passes every take of the file
    as written (:func:`written_slots`), the uniformly filled ones included: the scorer counts
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
    return float((labelled == int(np.argmax(record.train_summary["class_counts"]))).mean())


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
    return np.array([int(table.target[row[t]]) for t in order], dtype=np.int64)


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
