"""``demonstration``: the timestamped, categorised moments of an untrimmed take (EgoExo4D's
demonstration proficiency: good executions and tips for improvement, marked by experts).

Schema: ``categories`` (default the benchmark's two, `demonstration_metrics.CATEGORIES`) and
``max_events`` E, the most events a take may hold. Stored as float32 ``(E, 2)`` per take:
rows ``(time in seconds, category index)`` in the manifest's order, then padding rows
``(NaN, -1)``; an unlabelled take is all NaN. A manifest states a take's target as its list
of events: ``(time, category)`` pairs (``Take.target`` of an ``egoexo4d-demonstration``
take), objects with ``time`` and ``category`` attributes or keys, or ``[time, category]``
lists.

The task is per clip (``per_clip = True``): it is learned by a head that reads the clip
sequence and outputs, per clip, O = C + 1 values (a logit per category and the offset from
the clip's centre to the event, in units of `OFFSET_SCALE_S` seconds) followed by the
clip's centre time in seconds and 1 where the clip is present (0 where padded):
``(B, K, O + 2)`` (`CLIP_EXTRAS`). Only heads that declare ``per_clip = True`` learn it,
and they learn no other task. Loss (`detection_loss`): sigmoid focal loss per clip and
category, a clip being positive for a category when an event of it lies within
`LABEL_RADIUS_S` of its centre or it is that event's nearest clip, normalised by the
positives; plus the L1 error of the offsets of positive clips (to their nearest event).
Decoding (`decode_events`): per take and category, each present clip proposes the event
``centre + offset`` scored by its probability; proposals by decreasing score are kept when
none kept of the category lies within `SUPPRESS_RADIUS_S`; the `TOP_N` best of the take
are its events. Metrics: the official detection mAP per distance threshold and their mean
(`map`, the headline), the mAP at the loosest threshold, the class-agnostic mAP and the
grading's balanced accuracy (`skill.tasks.demonstration_metrics`), beside the ``frequent``
baseline: each category's events predicted in every take at the training takes' most frequent
event times (1-second bins; as many per take as the category's mean count per training take,
rounded, at least one; scored by the bin's share of training takes; only times within the
take's clips).
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import numpy as np

from skill.tasks.base import TargetError, TargetSpec
from skill.tasks.demonstration_metrics import (
    CATEGORIES,
    Events,
    evaluate_demonstration,
)
from skill.tasks.registry import register_task

DEFAULT_MAX_EVENTS = 128
CLIP_EXTRAS = 2
"""Values a per-clip head appends to the task's O per clip: the clip's centre in seconds and
its presence (1 present, 0 padded)."""
LABEL_RADIUS_S = 0.5
"""A clip is a positive of an event's category within this many seconds of the event."""
OFFSET_SCALE_S = 1.0
"""The unit of the offsets a head predicts, in seconds."""
SUPPRESS_RADIUS_S = 1.0
"""Decoded events of one category and take are at least this many seconds apart."""
TOP_N = 100
"""Events decoded per take at most (SkillSpotter scores each take's 100 best)."""
FOCAL_GAMMA = 2.0
BASELINE_BIN_S = 1.0
"""The width of the time bins the ``frequent`` baseline counts training events in."""
PAD_CATEGORY = -1.0


class Demonstration:
    """See the module docstring; shapes: n takes, K clips, C categories, E events."""

    name = "demonstration"
    per_clip = True
    monitors = ("map", "loss")
    table_metrics = ("map", "map_loosest", "map_agnostic", "balanced_accuracy")
    baseline_name = "frequent"
    baseline_metrics = ("map", "map_loosest")
    metric_labels = {"map": "mAP", "map_loosest": "mAP@1s", "map_agnostic": "mAP-A",
                     "balanced_accuracy": "grading bal.acc"}  # fmt: skip
    class_probabilities = False

    # ---- the target in the manifest and the store
    def schema(self, declared: dict | None) -> dict:
        declared = declared or {}
        categories = list(declared.get("categories") or CATEGORIES)
        if not categories or len(set(categories)) != len(categories):
            raise TargetError(f"demonstration needs distinct categories, got {categories}")
        if not all(isinstance(name, str) and name for name in categories):
            raise TargetError(f"demonstration categories must be non-empty text, got {categories}")
        most = declared.get("max_events", DEFAULT_MAX_EVENTS)
        if isinstance(most, bool) or not isinstance(most, int) or most < 1:
            raise TargetError(f"demonstration max_events must be a positive integer, got {most!r}")
        return {"categories": categories, "max_events": most}

    def target_spec(self, schema: dict) -> TargetSpec:
        attrs = {
            "category_names": list(schema["categories"]),
            "columns": ["time_seconds", "category"],
            "padding": "time NaN, category -1; an unlabelled take: all NaN",
        }
        return TargetSpec("events", "float32", (schema["max_events"], 2), "NaN", attrs=attrs)

    def encode(self, value, schema: dict) -> list[list[float]]:
        most = schema["max_events"]
        if value is None:
            return [[math.nan, math.nan]] * most
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
            raise TargetError(f"events must be a list of events, got {type(value).__name__}")
        if len(value) > most:
            raise TargetError(
                f"{len(value)} events, more than the {most} a take may hold (max_events)"
            )
        rows = [_event_row(item, i, schema["categories"]) for i, item in enumerate(value)]
        return rows + [[math.nan, PAD_CATEGORY]] * (most - len(rows))

    def decode(self, stored: np.ndarray, schema: dict) -> list:
        """Per take, its events as ``(time, category)`` pairs (what ``Take.target`` gives of a
        take's events), None for an unlabelled take."""
        names, out = schema["categories"], []
        for take in _events_array(stored):
            if not np.isfinite(take[:, 1]).any():
                out.append(None)
                continue
            present = take[np.isfinite(take[:, 0])]
            out.append(tuple((float(str(np.float32(t))), names[int(c)]) for t, c in present))
        return out

    def labelled(self, stored: np.ndarray) -> np.ndarray:
        return np.isfinite(_events_array(stored)[:, :, 1]).any(axis=1)

    def strata(self, stored: np.ndarray) -> np.ndarray:
        """The take's number of events, 3 or more counted alike."""
        return np.minimum(np.isfinite(_events_array(stored)[:, :, 0]).sum(axis=1), 3)

    def train_summary(self, schema: dict, train_targets: np.ndarray) -> dict:
        """``takes``, ``event_counts`` per category and ``time_bins``: per category, the
        ``[bin start, count]`` of its training events in `BASELINE_BIN_S` bins."""
        events = _events_array(train_targets)
        bins = []
        counts = []
        for c in range(len(schema["categories"])):
            times = events[:, :, 0][events[:, :, 1] == c]
            counts.append(int(len(times)))
            starts, number = np.unique(np.floor(times / BASELINE_BIN_S), return_counts=True)
            bins.append(
                [[float(s * BASELINE_BIN_S), int(k)] for s, k in zip(starts, number, strict=True)]
            )
        return {"takes": int(len(events)), "event_counts": counts, "time_bins": bins}

    def summary_targets(self, summary: dict, schema: dict) -> np.ndarray:
        """``takes`` pseudo-takes holding each bin's count of events at the bin's start, dealt
        round-robin: the same ``train_summary``, so the same baseline."""
        most, takes = schema["max_events"], max(int(summary["takes"]), 1)
        rows: list[list[list[float]]] = [[] for _ in range(takes)]
        slot = 0
        for c, bins in enumerate(summary["time_bins"]):
            for start, count in bins:
                for _ in range(int(count)):
                    rows[slot % takes].append([float(start), float(c)])
                    slot += 1
        out = np.full((takes, most, 2), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            out[i, :, 1] = PAD_CATEGORY
            out[i, : len(row)] = np.asarray(row, dtype=np.float32).reshape(-1, 2)
        return out

    # ---- learning
    def output_width(self, schema: dict) -> int:
        return len(schema["categories"]) + 1

    def sample_weights(self, schema: dict, train_targets: np.ndarray) -> np.ndarray:
        raise TargetError("--class-balanced: the demonstration task has no classes of takes")

    def make_loss(self, schema: dict, train_targets: np.ndarray, balanced: bool, device: str):
        if balanced:
            raise TargetError("--class-balanced: the demonstration task has no classes of takes")
        categories = len(schema["categories"])
        return lambda outputs, targets: detection_loss(outputs, targets, categories)

    def torch_targets(self, stored: np.ndarray):
        import torch

        return torch.from_numpy(_events_array(stored).astype(np.float32))

    def to_scores(self, outputs):
        """Per clip: the categories' probabilities, the offset, the centre, the presence."""
        import torch

        outputs = outputs.float()
        categories = outputs.shape[-1] - 1 - CLIP_EXTRAS
        return torch.cat([torch.sigmoid(outputs[..., :categories]), outputs[..., categories:]],
                         dim=-1)  # fmt: skip

    def fuse_views(self, outputs, mask):
        raise TargetError("the demonstration task is learned per clip, not per view")

    def for_run(self, summary: dict) -> Demonstration:
        return self

    def validation_row(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        """``val_loss`` (the training loss, from the probabilities), ``val_map`` and
        ``val_map_loosest``."""
        import torch

        scores = np.asarray(scores, dtype=np.float64)
        categories = scores.shape[-1] - 1 - CLIP_EXTRAS
        logits = scores.copy()
        logits[..., :categories] = _logit(scores[..., :categories])
        loss = detection_loss(
            torch.from_numpy(logits).float(),
            torch.from_numpy(_events_array(targets).astype(np.float32)),
            categories,
        )
        found = self._scores(scores, targets)
        return {
            "val_loss": float(loss),
            "val_map": found.specific.average_map,
            "val_map_loosest": _loosest(found.specific),
        }

    def monitor_key(self, row: dict, monitor: str) -> tuple:
        found = row["val_map"] if row["val_map"] == row["val_map"] else -1.0
        if monitor == "loss":
            return (-row["val_loss"], found)
        return (found, -row["val_loss"])

    def evaluate(
        self, schema: dict, targets: np.ndarray, scores: np.ndarray, groups: np.ndarray,
        train_targets: np.ndarray,
    ) -> dict:  # fmt: skip
        """``n``, ``events`` (ground-truth events), the figures of `_figures` (``map``,
        ``map_loosest``, ``map_at`` per threshold, ``ap`` per category and threshold,
        ``map_agnostic``, ``balanced_accuracy``), ``per_scenario`` (group -> n and map) and the
        ``frequent`` baseline's figures."""
        targets = _events_array(targets)
        scores = np.asarray(scores, dtype=np.float64)
        figures = _figures(self._scores(scores, targets), schema)
        per_scenario = {}
        for group in sorted(set(np.asarray(groups, dtype=str).tolist())):
            rows = np.asarray(groups, dtype=str) == group
            found = self._scores(scores[rows], targets[rows])
            per_scenario[group] = {"n": int(rows.sum()), "map": found.specific.average_map}
        frequent = frequent_events(train_targets, len(schema["categories"]), _spans(scores))
        truth = ground_truth(targets)
        return {
            "n": int(len(targets)),
            "events": int(len(truth)),
            **figures,
            "per_scenario": per_scenario,
            "baselines": {"frequent": _figures(evaluate_demonstration(truth, frequent), schema)},
        }

    def _scores(self, scores: np.ndarray, targets: np.ndarray):
        return evaluate_demonstration(ground_truth(targets), decode_events(scores))

    def describe(self, split: str, metrics: dict) -> str:
        base = metrics["baselines"]["frequent"]
        at = ", ".join(f"{t} s {v:.3f}" for t, v in metrics["map_at"].items())
        return "\n".join(
            [
                f"{split} (n={metrics['n']}, {metrics['events']} events):",
                f"  mAP               {metrics['map']:.3f}   frequent times {base['map']:.3f}",
                f"  mAP per threshold {at}",
                f"  mAP class-agnostic {metrics['map_agnostic']:.3f}",
                f"  grading bal. acc. {metrics['balanced_accuracy']:.3f}"
                f"   frequent times {base['balanced_accuracy']:.3f}",
            ]
        )

    def baseline(self, scores: dict) -> float:
        return scores["baselines"]["frequent"]["map"]

    def chance(self, schema: dict) -> float | None:
        return None

    def prediction_columns(self, scores: np.ndarray, schema: dict) -> dict[str, list]:
        """``predicted_events``: per take, the JSON list of its decoded ``[time, category,
        score]``."""
        names = schema["categories"]
        found = decode_events(np.asarray(scores, dtype=np.float64))
        column = []
        for i in range(len(scores)):
            rows = found.select(found.takes == str(i))
            column.append(
                json.dumps(
                    [
                        [round(float(t), 3), names[int(c)], round(float(s), 4)]
                        for t, c, s in zip(rows.times, rows.labels, rows.scores, strict=True)
                    ]
                )
            )
        return {"predicted_events": column}

    def plot_run(self, folder: Path, metrics: dict, schema: dict, title: str) -> list[str]:
        return []

    def lightgbm_objective(self, schema: dict) -> dict:
        raise ValueError("LightGBM predicts one value per take; the demonstration task is per clip")

    def lightgbm_row(self, evals: dict[str, float]) -> dict:
        raise ValueError("LightGBM does not learn the demonstration task")

    def lightgbm_scores(self, raw: np.ndarray) -> np.ndarray:
        raise ValueError("LightGBM does not learn the demonstration task")


# ---- targets


def _event_row(item, index: int, categories: list[str]) -> list[float]:
    """One event as ``[time, category index]``; TargetError naming it when it is not one."""
    if hasattr(item, "time") and hasattr(item, "category"):
        time, category = item.time, item.category
    elif isinstance(item, dict):
        time, category = item.get("time"), item.get("category")
    elif isinstance(item, (list, tuple)) and len(item) == 2:
        time, category = item
    else:
        raise TargetError(f"event {index}: expected {{'time', 'category'}}, got {item!r}")
    finite = isinstance(time, numbers.Real) and not isinstance(time, bool) and math.isfinite(time)
    if not finite or time < 0:
        raise TargetError(f"event {index}: time {time!r} is not a number of seconds >= 0")
    if category not in categories:
        raise TargetError(
            f"event {index}: unknown category {category!r}; categories: {', '.join(categories)}"
        )
    return [float(time), float(categories.index(category))]


def _events_array(stored: np.ndarray) -> np.ndarray:
    """Stored targets as ``(n, E, 2)`` float64."""
    stored = np.asarray(stored, dtype=np.float64)
    return stored.reshape(len(stored), -1, 2)


def ground_truth(targets: np.ndarray) -> Events:
    """Stored targets ``(n, E, 2)`` as the metric's events, take i named ``str(i)``."""
    events = _events_array(targets)
    take, slot = np.nonzero(np.isfinite(events[:, :, 0]))
    return Events.of(take.astype(str), events[take, slot, 0], events[take, slot, 1].astype(int))


# ---- the loss


def detection_loss(outputs, targets, categories: int):
    """The training loss of per-clip outputs ``(B, K, C + 1 + 2)`` (logits, offset, centre,
    presence) against stored events ``(B, E, 2)``: focal loss over present clips and
    categories divided by the positives (at least 1), plus the mean L1 offset error of the
    positive clips."""
    import torch
    import torch.nn.functional as F

    logits, offset = outputs[..., :categories], outputs[..., categories]
    centre, present = outputs[..., categories + 1], outputs[..., categories + 2] > 0.5
    positive, nearest = clip_targets(centre, present, targets, categories)  # (B,K,C), (B,K)
    goal = positive.float()
    bce = F.binary_cross_entropy_with_logits(logits, goal, reduction="none")
    p = torch.sigmoid(logits)
    agree = p * goal + (1 - p) * (1 - goal)
    focal = (bce * (1 - agree) ** FOCAL_GAMMA) * present[..., None]
    positives = positive.any(dim=-1) & present  # (B, K)
    score_loss = focal.sum() / positives.sum().clamp(min=1)
    wanted = (nearest - centre) / OFFSET_SCALE_S
    error = (offset - torch.where(positives, wanted, torch.zeros_like(wanted))).abs()
    offset_loss = (error * positives).sum() / positives.sum().clamp(min=1)
    return score_loss + offset_loss


def clip_targets(centre, present, targets, categories: int):
    """``(B, K, C)`` bool: clip k is a positive of category c (an event of c within
    `LABEL_RADIUS_S` of its centre, or the event's nearest present clip); ``(B, K)`` the time of
    each clip's nearest event (its centre where the take has none)."""
    import torch

    times, labels = targets[..., 0], targets[..., 1]  # (B, E)
    known = torch.isfinite(times)
    safe = torch.where(known, times, torch.zeros_like(times))
    distance = (centre[:, :, None] - safe[:, None, :]).abs()  # (B, K, E)
    usable = present[:, :, None] & known[:, None, :]
    distance = torch.where(usable, distance, torch.full_like(distance, math.inf))
    closest = distance.argmin(dim=1, keepdim=True)  # (B, 1, E): each event's nearest clip
    nearest_clip = torch.zeros_like(usable).scatter_(1, closest, True) & usable
    near = (distance <= LABEL_RADIUS_S) | nearest_clip  # (B, K, E)
    of_category = labels[:, None, :, None] == torch.arange(categories, device=labels.device)
    positive = (near[..., None] & of_category).any(dim=2)  # (B, K, C)
    which = distance.argmin(dim=2)  # (B, K)
    nearest = torch.gather(safe, 1, which)
    nearest = torch.where(torch.isfinite(distance.min(dim=2).values), nearest, centre)
    return positive, nearest


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


# ---- decoding and the baseline


def decode_events(
    scores: np.ndarray, suppress: float = SUPPRESS_RADIUS_S, top_n: int = TOP_N
) -> Events:
    """Per-clip scores ``(n, K, C + 1 + 2)`` (probabilities, offset, centre, presence) as
    events, take i named ``str(i)`` (see the module docstring)."""
    scores = np.asarray(scores, dtype=np.float64)
    categories = scores.shape[-1] - 1 - CLIP_EXTRAS
    takes, times, labels, confidences = [], [], [], []
    for i, take in enumerate(scores):
        present = take[:, categories + 2] > 0.5
        proposed = take[present, categories + 1] + take[present, categories] * OFFSET_SCALE_S
        kept: list[tuple[float, float, int]] = []
        for c in range(categories):
            kept += [(s, t, c) for t, s in suppress_peaks(proposed, take[present, c], suppress)]
        kept.sort(key=lambda item: -item[0])
        for s, t, c in kept[:top_n]:
            takes.append(str(i))
            times.append(max(t, 0.0))
            labels.append(c)
            confidences.append(s)
    return Events.of(takes, times, labels, confidences)


def suppress_peaks(times: np.ndarray, scores: np.ndarray, radius: float) -> list[tuple]:
    """``(time, score)`` of the proposals kept by decreasing score, each farther than
    ``radius`` seconds from every one kept before it."""
    kept: list[tuple[float, float]] = []
    for p in np.argsort(-scores, kind="stable"):
        if all(abs(times[p] - t) > radius for t, _ in kept):
            kept.append((float(times[p]), float(scores[p])))
    return kept


def frequent_events(
    train_targets: np.ndarray, categories: int, spans: list[tuple[float, float]]
) -> Events:
    """The ``frequent`` baseline's events of takes with clip ``spans`` (first and last clip
    centre, seconds; take i named ``str(i)``): see the module docstring."""
    train = _events_array(train_targets)
    n_train = max(len(train), 1)
    chosen: list[tuple[float, int, float]] = []
    for c in range(categories):
        times = train[:, :, 0][train[:, :, 1] == c]
        if not len(times):
            continue
        starts, counts = np.unique(np.floor(times / BASELINE_BIN_S), return_counts=True)
        per_take = max(int(round(len(times) / n_train)), 1)
        best = np.argsort(-counts, kind="stable")[:per_take]  # ties: the earlier bin
        chosen += [((starts[b] + 0.5) * BASELINE_BIN_S, c, counts[b] / n_train) for b in best]
    takes, times, labels, confidences = [], [], [], []
    for i, (first, last) in enumerate(spans):
        for t, c, s in chosen:
            if first - BASELINE_BIN_S <= t <= last + BASELINE_BIN_S:
                takes.append(str(i))
                times.append(t)
                labels.append(c)
                confidences.append(s)
    return Events.of(takes, times, labels, confidences)


def _spans(scores: np.ndarray) -> list[tuple[float, float]]:
    """Each take's first and last present clip centre from its per-clip scores."""
    spans = []
    for take in np.asarray(scores, dtype=np.float64):
        centres = take[take[:, -1] > 0.5, -2]
        spans.append((float(centres.min()), float(centres.max())) if len(centres) else (0.0, 0.0))
    return spans


def _loosest(specific) -> float:
    """The mAP at the largest distance threshold."""
    return float(specific.map[int(np.argmax(specific.thresholds))])


def _figures(found, schema: dict) -> dict:
    """The figures metrics.json records of `evaluate_demonstration`'s result."""
    names = schema["categories"]
    specific = found.specific
    return {
        "map": specific.average_map,
        "map_loosest": _loosest(specific),
        "map_at": {
            f"{t:g}": float(v) for t, v in zip(specific.thresholds, specific.map, strict=True)
        },
        "ap": {
            names[int(c)]: {
                f"{t:g}": float(specific.ap[k, j]) for k, t in enumerate(specific.thresholds)
            }
            for j, c in enumerate(specific.categories)
        },  # fmt: skip
        "map_agnostic": found.agnostic.average_map,
        "balanced_accuracy": found.grading.mean_balanced_accuracy,
    }


register_task(Demonstration())
