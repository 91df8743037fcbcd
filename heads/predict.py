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
  of the store's take table, or of ``order`` (the ground truth's take names). Logits are
  log-probabilities (their softmax is the predicted distribution).
  Fusion heads (one output per take) put the fused logits in every slot, so the scorer's
  Ego, Exo and Ego+Exo scores all equal the fused prediction. The ``late`` head puts the ego
  view's own logits in the ego slot and the i-th exo view's logits in the i-th exo slot; a
  slot whose view is missing for that take (or absent from the run, e.g. only 3 exo
  cameras) gets the mean of the take's available views' log-probabilities.
  A take that cannot be predicted (not completed, or no valid view) gets all-zero logits
  (a uniform guess) so that the file still lists every take; ``PredictResult.skipped`` names them.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.cache.store import TokenStore, diff_provenance, provenance_identity
from skill.errors import ConfigError, SkillError
from skill.heads.config import FORMATS, PredictConfig
from skill.heads.data import Selection, load_selection, resolve_views
from skill.heads.interface import TrainableHead
from skill.heads.metrics import evaluate
from skill.heads.run_folder import ModelRecord, RunRecord, json_safe, load_head, read_run_record

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
) -> PredictResult:
    """Predict every completed take of ``cfg.store`` with the head in ``cfg.run``.

    ``format``: ``csv`` writes ``out_csv``; ``egoexo4d`` also writes the official JSON to
    ``out_json``. ``views``: a subset of the run's views (spec as for ``fit``). ``order``:
    take ids for the JSON's order (default: the store's take table order). The keyword form
    ``predict(store, run_dir, out_csv, fmt=..., ...)`` builds the PredictConfig.
    """
    if not isinstance(cfg, PredictConfig):
        cfg = PredictConfig(
            store=cfg, run=run_dir, out_csv=out_csv, format=fmt, out_json=out_json,
            views=views, order=order, device=device, batch_size=batch_size,
        )  # fmt: skip
    record = read_run_record(cfg.run)
    store = TokenStore.open(cfg.store)
    used_views = check_compatible(store, record, cfg.run, cfg.views)
    sel = expand_to_run_views(load_selection(cfg.store, used_views), record.view_names)
    head = load_head(cfg.run, record.model)
    probs = head.predict_proba(sel.x, sel.mask, None, cfg.batch_size, cfg.device)
    result = make_result(store, sel, record, probs, used_views)
    if cfg.out_csv is not None:
        result.out_csv = Path(cfg.out_csv)
        write_csv(result.out_csv, result, sel)
    if cfg.format == "egoexo4d":
        result.out_json = Path(cfg.out_json)
        ids = cfg.order if cfg.order is not None else [str(t) for t in store.take_table().ids]
        slots = egoexo4d_slots(head, sel, probs, cfg.device, cfg.batch_size)
        write_egoexo4d(result.out_json, ids, sel, slots, store)
    return result


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
    store: TokenStore, sel: Selection, record: RunRecord, probs: np.ndarray, used_views: list[str]
) -> PredictResult:
    class_names = list(record.class_names)
    table = store.take_table()
    predicted_rows = set(sel.store_rows.tolist())
    skipped = [str(t) for i, t in enumerate(table.ids) if i not in predicted_rows]
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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
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
    os.replace(tmp, path)


def egoexo4d_slots(
    head: TrainableHead, sel: Selection, probs: np.ndarray, device: str, batch_size: int
) -> np.ndarray:
    """Log-probabilities per take for the 1 ego + 4 exo slots: ``(n, 5, C)``."""
    fused = np.log(np.clip(probs, 1e-12, None))  # (n, C)
    per_view = head.per_view_proba(sel.x, sel.mask, batch_size, device)  # (n, V, C) or None
    if per_view is None:  # one output per take: the fused logits in every slot
        return np.repeat(fused[:, None, :], 1 + EXO_SLOTS, axis=1)
    return late_slots(np.log(np.clip(per_view, 1e-12, None)), sel.mask, sel.view_names)


def late_slots(log_probs: np.ndarray, mask: np.ndarray, view_names: list[str]) -> np.ndarray:
    """``(n, V, C)`` per-view log-probabilities, ``(n, V)`` mask -> ``(n, 5, C)`` slots.

    Slot 0 is the view named ``ego``; slots 1..4 are the views named ``exo*`` in order. A
    slot without a valid view gets the mean of the take's valid views' log-probabilities.
    """
    n, _, num_classes = log_probs.shape
    weights = mask / mask.sum(axis=1, keepdims=True)  # every row has >= 1 valid view
    fallback = np.einsum("nv,nvc->nc", weights, log_probs)  # (n, C)
    exos = [i for i, v in enumerate(view_names) if v.startswith("exo")][:EXO_SLOTS]
    ego = [view_names.index("ego")] if "ego" in view_names else [None]
    sources = ego + exos + [None] * (EXO_SLOTS - len(exos))
    slots = np.empty((n, 1 + EXO_SLOTS, num_classes))
    for s, v in enumerate(sources):
        slots[:, s] = fallback
        if v is not None:
            slots[mask[:, v], s] = log_probs[mask[:, v], v]
    return slots


def write_egoexo4d(path: Path, order: list[str], sel: Selection, slots: np.ndarray, store) -> None:
    """The official prediction JSON; takes without a prediction get zero (uniform) logits."""
    row_of = {str(t): i for i, t in enumerate(sel.take_ids)}
    known = set(str(t) for t in store.take_table().ids)
    unknown = [t for t in order if t not in known]
    if unknown:
        raise ConfigError(
            f"{len(unknown)} take(s) of the given order are not in {store.path}: "
            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}"
        )
    uniform = np.zeros((1 + EXO_SLOTS, slots.shape[2] if len(slots) else len(store.labels)))
    ego, exo = [], []
    for take in order:
        take_slots = slots[row_of[take]] if take in row_of else uniform
        ego.append([round(float(v), 6) for v in take_slots[0]])
        exo.append([[round(float(v), 6) for v in s] for s in take_slots[1:]])
    payload = {"videos": list(order), "ego_model_predictions": ego, "exo_model_predictions": exo}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(json_safe(payload)) + "\n")
    os.replace(tmp, path)


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
