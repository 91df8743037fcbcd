"""The metrics of EgoExo4D's demonstration proficiency benchmark (numpy only): timestamped,
categorised events of a take, scored as the official evaluation and SkillSpotter score them.

Detection (the official ``ANETdetection`` with distance matching, `detection_map`): per
category present in the ground truth and per distance threshold (0.25, 0.5, 1.0 s), the
predictions of that category are taken by decreasing score; each is a true positive when the
nearest ground-truth event of its category and take that no better-scored prediction took lies
at most the threshold away, else a false positive. Average precision is the VOC 2011
interpolated area under that precision-recall curve; mAP is its mean over categories, and the
figure reported is the mean of mAP over the thresholds. Grading (SkillSpotter's balanced
accuracy, `grading_balanced_accuracy`): per radius, predictions of any category are matched
greedily to ground-truth events of any category; on the matched pairs, with a good execution
the positive class, balanced accuracy is the mean of the recall of good executions and the
recall of tips for improvement; the figure reported is its mean over the radii. The rules,
ties included, are written out in docs/demonstration.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CATEGORIES: tuple[str, ...] = ("good_executions", "tips_for_improvement")
"""The benchmark's categories, in the order of the official label ids (0 and 1)."""
GOOD = 0
"""The label id of a good execution, the positive class of the grading."""
DISTANCE_THRESHOLDS: tuple[float, ...] = (0.25, 0.5, 1.0)
"""The official timestamp-distance thresholds, in seconds (SkillSpotter's matching radii)."""
SKILLSPOTTER_TOP_K = 100
"""SkillSpotter scores only the 100 best-scored predictions of each take."""


class EventsError(ValueError):
    """Arrays that cannot describe a list of events (lengths differ, a time is not finite)."""


@dataclass(frozen=True)
class Events:
    """A flat list of N events over many takes: one row per event, like the official tables.

    `takes` (N,) object array of take names; `times` (N,) float64 seconds from the take's
    start; `labels` (N,) int64 category ids (`CATEGORIES` index); `scores` (N,) float64
    confidences (ground truth: ones). Build it with `Events.of`, which checks the shapes.
    """

    takes: np.ndarray
    times: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    @classmethod
    def of(
        cls,
        takes: Sequence[str],
        times: Sequence[float],
        labels: Sequence[int],
        scores: Sequence[float] | None = None,
    ) -> Events:
        """Events from parallel sequences of length N (`scores` None: all ones); EventsError
        when the lengths differ or a time or score is not a finite number."""
        take_array = np.empty(len(takes), dtype=object)
        take_array[:] = [str(take) for take in takes]
        time_array = np.asarray(times, dtype=np.float64).reshape(-1)
        label_array = np.asarray(labels, dtype=np.int64).reshape(-1)
        score_array = (
            np.ones(len(take_array))
            if scores is None
            else np.asarray(scores, dtype=np.float64).reshape(-1)
        )
        sizes = {len(take_array), len(time_array), len(label_array), len(score_array)}
        if len(sizes) != 1:
            raise EventsError(
                f"events: takes, times, labels and scores differ in length "
                f"({len(take_array)}, {len(time_array)}, {len(label_array)}, {len(score_array)})"
            )
        if not np.isfinite(time_array).all() or not np.isfinite(score_array).all():
            raise EventsError("events: a time or a score is not a finite number")
        return cls(take_array, time_array, label_array, score_array)

    def __len__(self) -> int:
        return len(self.times)

    def select(self, mask: np.ndarray) -> Events:
        """The events where boolean `mask` (N,) is true, or at integer positions `mask`."""
        return Events(self.takes[mask], self.times[mask], self.labels[mask], self.scores[mask])

    def with_labels(self, label: int) -> Events:
        """The same events, every one labelled `label` (the class-agnostic view)."""
        return Events(self.takes, self.times, np.full(len(self), label, np.int64), self.scores)


# ---------------------------------------------------------------------------------------------
# Detection: average precision at timestamp-distance thresholds


def score_order(scores: np.ndarray) -> np.ndarray:
    """(N,) positions by decreasing score; equal scores: the one listed later first (a stable
    ascending sort, reversed). The official code reverses numpy's default argsort, which is
    not stable: its order among equal scores depends on the numpy build; this one is fixed."""
    return np.argsort(scores, kind="stable")[::-1]


def match_by_distance(
    gt: Events, pred: Events, thresholds: Sequence[float] = DISTANCE_THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """Match the predictions of one category to its ground truth, at each threshold alone.

    `gt` (G events) and `pred` (P events) hold one category. Returns (order, hits): `order`
    (P,) the predictions' positions by decreasing score (`score_order`); `hits` (T, P) bool,
    whether the prediction at rank p is a true positive at threshold t: the ground-truth
    events of its take, nearest first (equal distances: the one listed first), are walked
    until one lies farther than the threshold (a miss) or one not yet taken at that threshold
    is found (a hit, which takes it); taken ones are passed over.
    """
    order = score_order(pred.scores)
    hits = np.zeros((len(thresholds), len(pred)), dtype=bool)
    taken = np.zeros((len(thresholds), len(gt)), dtype=bool)
    rows_of_take: dict[str, np.ndarray] = {}
    for take in dict.fromkeys(gt.takes):
        rows_of_take[take] = np.flatnonzero(gt.takes == take)
    for rank, p in enumerate(order):
        rows = rows_of_take.get(pred.takes[p])
        if rows is None:
            continue  # no ground truth of this category in the take: a miss
        distance = np.abs(gt.times[rows] - pred.times[p])
        nearest = np.argsort(distance, kind="stable")
        for t, threshold in enumerate(thresholds):
            for k in nearest:
                if distance[k] > threshold:
                    break
                if taken[t, rows[k]]:
                    continue
                taken[t, rows[k]] = True
                hits[t, rank] = True
                break
    return order, hits


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC 2011 interpolated AP of one curve (precision and recall (P,), in rank order).

    The curve is framed by (recall 0, precision 0) before and (recall 1, precision 0) after;
    each precision is raised to the best precision at any later rank; AP sums, over every
    rank where recall grows, the growth times that raised precision.
    """
    framed_precision = np.concatenate([[0.0], precision, [0.0]])
    framed_recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(framed_precision[::-1])[::-1]
    steps = np.flatnonzero(framed_recall[1:] != framed_recall[:-1]) + 1
    return float(np.sum((framed_recall[steps] - framed_recall[steps - 1]) * envelope[steps]))


def average_precision(
    gt: Events, pred: Events, thresholds: Sequence[float] = DISTANCE_THRESHOLDS
) -> np.ndarray:
    """(T,) AP of one category at each threshold; zeros when it has no prediction.

    Recall divides the true positives so far by all G ground-truth events of the category
    (every take of the split), precision by the predictions so far.
    """
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros(len(thresholds))
    _, hits = match_by_distance(gt, pred, thresholds)
    true_so_far = np.cumsum(hits, axis=1, dtype=np.float64)
    ranks = np.arange(1, len(pred) + 1, dtype=np.float64)
    precision, recall = true_so_far / ranks, true_so_far / len(gt)
    return np.array(
        [interpolated_average_precision(precision[t], recall[t]) for t in range(len(thresholds))]
    )


@dataclass(frozen=True)
class DetectionScores:
    """`categories` (C,) the label ids scored (those in the ground truth, ascending);
    `thresholds` (T,) seconds; `ap` (T, C); `map` (T,) the mean over categories;
    `average_map` the mean of `map` (the benchmark's figure, SkillSpotter's mAP)."""

    categories: np.ndarray
    thresholds: np.ndarray
    ap: np.ndarray
    map: np.ndarray
    average_map: float


def detection_map(
    gt: Events, pred: Events, thresholds: Sequence[float] = DISTANCE_THRESHOLDS
) -> DetectionScores:
    """Class-specific mAP as the official evaluation computes it: AP per category found in
    `gt` (a predicted category absent from `gt` is not scored) at every threshold, their mean
    per threshold, and the mean over thresholds. For the class-agnostic figure (SkillSpotter's
    mAP_A), pass ``gt.with_labels(0)`` and ``pred.with_labels(0)``."""
    categories = np.unique(gt.labels)
    ap = np.zeros((len(thresholds), len(categories)))
    for c, category in enumerate(categories):
        ap[:, c] = average_precision(
            gt.select(gt.labels == category), pred.select(pred.labels == category), thresholds
        )
    per_threshold = ap.mean(axis=1) if len(categories) else np.full(len(thresholds), math.nan)
    return DetectionScores(
        categories=categories,
        thresholds=np.asarray(thresholds, dtype=np.float64),
        ap=ap,
        map=per_threshold,
        average_map=float(per_threshold.mean()),
    )


# ---------------------------------------------------------------------------------------------
# Grading: SkillSpotter's balanced accuracy on matched pairs


def grading_matches(gt: Events, pred: Events, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """SkillSpotter's greedy matching, categories ignored: per take, its predictions by
    decreasing score (equal scores: the one listed first), each to the nearest ground-truth
    event within `radius` that no earlier prediction took (equal distances: the one listed
    first); an unmatched prediction is dropped. Returns (gt_labels, pred_labels), (M,) each,
    one entry per matched pair."""
    gt_labels: list[int] = []
    pred_labels: list[int] = []
    for take in dict.fromkeys(pred.takes):
        rows = np.flatnonzero(gt.takes == take)
        free = np.ones(len(rows), dtype=bool)
        mine = np.flatnonzero(pred.takes == take)
        for p in mine[np.argsort(-pred.scores[mine], kind="stable")]:
            distance = np.abs(gt.times[rows] - pred.times[p])
            candidates = np.flatnonzero(free & (distance <= radius))
            if len(candidates) == 0:
                continue
            best = candidates[np.argmin(distance[candidates])]  # first of equal distances
            free[best] = False
            gt_labels.append(int(gt.labels[rows[best]]))
            pred_labels.append(int(pred.labels[p]))
    return np.array(gt_labels, dtype=np.int64), np.array(pred_labels, dtype=np.int64)


@dataclass(frozen=True)
class GradingScores:
    """Per radius (T,): the confusion counts of matched pairs with a good execution the
    positive class (`tp` good as good, `fp` tip as good, `tn` tip as tip, `fn` good as tip),
    `balanced_accuracy` in [0, 1]; `mean_balanced_accuracy` their mean (SkillSpotter's BA,
    which it prints times 100)."""

    radii: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    balanced_accuracy: np.ndarray
    mean_balanced_accuracy: float


def _ratio(numerator: int, denominator: int) -> float:
    """SkillSpotter's safe division: 0 when the denominator is 0."""
    return numerator / denominator if denominator else 0.0


def grading_balanced_accuracy(
    gt: Events, pred: Events, radii: Sequence[float] = DISTANCE_THRESHOLDS
) -> GradingScores:
    """Balanced accuracy of the grading as SkillSpotter reports it: at each radius, the pairs
    of `grading_matches` give the recall of good executions, TP / (TP + FN), and of tips,
    TN / (TN + FP), each 0 when it has no pair; balanced accuracy is their mean. Any label
    other than `GOOD` counts as a tip."""
    counts = np.zeros((4, len(radii)), dtype=np.int64)
    accuracy = np.zeros(len(radii))
    for r, radius in enumerate(radii):
        truth, guess = grading_matches(gt, pred, float(radius))
        good_truth, good_guess = truth == GOOD, guess == GOOD
        tp = int(np.sum(good_truth & good_guess))
        fp = int(np.sum(~good_truth & good_guess))
        tn = int(np.sum(~good_truth & ~good_guess))
        fn = int(np.sum(good_truth & ~good_guess))
        counts[:, r] = (tp, fp, tn, fn)
        accuracy[r] = 0.5 * (_ratio(tp, tp + fn) + _ratio(tn, tn + fp))
    return GradingScores(
        radii=np.asarray(radii, dtype=np.float64),
        tp=counts[0],
        fp=counts[1],
        tn=counts[2],
        fn=counts[3],
        balanced_accuracy=accuracy,
        mean_balanced_accuracy=float(accuracy.mean()) if len(radii) else math.nan,
    )


# ---------------------------------------------------------------------------------------------
# Both, as the benchmark and SkillSpotter report them


def top_k_per_take(pred: Events, k: int) -> Events:
    """SkillSpotter's cut before scoring: the `k` best-scored predictions of each take,
    ordered by take name, then by decreasing score (equal scores: the one listed first)."""
    order = np.lexsort((-pred.scores, pred.takes.astype(str)))
    kept: list[int] = []
    count: dict[str, int] = {}
    for p in order:
        take = pred.takes[p]
        if count.get(take, 0) < k:
            kept.append(int(p))
            count[take] = count.get(take, 0) + 1
    return pred.select(np.array(kept, dtype=np.int64))


@dataclass(frozen=True)
class DemonstrationScores:
    """`specific`: class-specific detection (the official mAP; SkillSpotter's mAP_S);
    `agnostic`: categories ignored (SkillSpotter's mAP_A); `grading`: balanced accuracy."""

    specific: DetectionScores
    agnostic: DetectionScores
    grading: GradingScores


def evaluate_demonstration(
    gt: Events,
    pred: Events,
    thresholds: Sequence[float] = DISTANCE_THRESHOLDS,
    top_k: int | None = None,
) -> DemonstrationScores:
    """Every figure of the benchmark for predictions `pred` of the takes in `gt`. `top_k`:
    None scores every prediction (the official evaluation); `SKILLSPOTTER_TOP_K` keeps the
    best of each take first, as SkillSpotter does."""
    if top_k is not None:
        pred = top_k_per_take(pred, top_k)
    return DemonstrationScores(
        specific=detection_map(gt, pred, thresholds),
        agnostic=detection_map(gt.with_labels(0), pred.with_labels(0), thresholds),
        grading=grading_balanced_accuracy(gt, pred, thresholds),
    )
