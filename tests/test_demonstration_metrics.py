"""The demonstration benchmark's metrics on small hand-made cases: each answer is worked out
by hand in the test (the comments show the arithmetic), following the official evaluation's
rules (distance matching, VOC 2011 interpolation, ties) and SkillSpotter's grading."""

from __future__ import annotations

import numpy as np
import pytest

from skill.tasks.demonstration_metrics import (
    DISTANCE_THRESHOLDS,
    SKILLSPOTTER_TOP_K,
    Events,
    EventsError,
    average_precision,
    detection_map,
    evaluate_demonstration,
    grading_balanced_accuracy,
    grading_matches,
    interpolated_average_precision,
    score_order,
    top_k_per_take,
)

GOOD, TIP = 0, 1


def events(*rows: tuple) -> Events:
    """Events from (take, time, label[, score]) rows."""
    return Events.of(
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] if len(r) > 3 else 1.0 for r in rows],
    )


def test_the_official_thresholds_are_a_quarter_half_and_one_second():
    assert DISTANCE_THRESHOLDS == (0.25, 0.5, 1.0)


def test_ap_of_one_category_at_each_threshold_with_the_interpolated_envelope():
    gt = events(("t", 10.0, GOOD), ("t", 20.0, GOOD))
    # by score: p1 10.2 (0.2 from 10), p2 30.0 (10 from 20), p3 19.6 (0.4 from 20)
    pred = events(("t", 10.2, GOOD, 0.9), ("t", 30.0, GOOD, 0.8), ("t", 19.6, GOOD, 0.7))
    ap = average_precision(gt, pred)
    # 0.25 s: hit, miss, miss -> precision 1, 1/2, 1/3; recall 1/2, 1/2, 1/2
    #   framed recall 0, .5, .5, .5, 1; envelope 1, 1, 1/2, 1/3, 0
    #   AP = (.5 - 0) * 1 + (1 - .5) * 0 = 0.5
    # 0.5 s and 1 s: hit, miss, hit -> precision 1, 1/2, 2/3; recall 1/2, 1/2, 1
    #   envelope 1, 1, 2/3, 2/3, 0 (the 1/2 raised to the later 2/3)
    #   AP = .5 * 1 + (1 - .5) * 2/3 = 5/6
    np.testing.assert_allclose(ap, [0.5, 5 / 6, 5 / 6])


def test_a_taken_event_is_passed_over_for_the_next_nearest_within_the_threshold():
    gt = events(("t", 5.0, GOOD), ("t", 5.5, GOOD))
    pred = events(("t", 5.1, GOOD, 0.9), ("t", 5.2, GOOD, 0.8))
    # p1 takes 5.0 (0.1 away). p2: 5.0 is taken, the next nearest is 5.5, 0.3 away:
    #   0.25 s: too far -> miss; precision 1, 1/2, recall 1/2, 1/2 -> AP = .5 * 1 = 0.5
    #   0.5 s and 1 s: hit -> precision 1, 1, recall 1/2, 1 -> AP = .5 + .5 = 1
    np.testing.assert_allclose(average_precision(gt, pred), [0.5, 1.0, 1.0])


def test_a_distance_equal_to_the_threshold_is_a_hit():
    gt = events(("t", 3.0, GOOD))
    pred = events(("t", 3.25, GOOD))  # 0.25 exactly (both numbers are exact in binary)
    np.testing.assert_allclose(average_precision(gt, pred), [1.0, 1.0, 1.0])


def test_equally_distant_events_go_to_the_one_listed_first():
    gt = events(("t", 4.0, GOOD), ("t", 6.0, GOOD))
    pred = events(("t", 5.0, GOOD, 0.9), ("t", 6.9, GOOD, 0.8))
    # 1 s: p1 is 1.0 from both and takes 4.0 (listed first); p2 takes 6.0 (0.9 away):
    #   two hits -> AP 1. (Had p1 taken 6.0, p2 would miss: AP = .5.)
    # 0.25 s and 0.5 s: both are farther than the threshold -> AP 0
    np.testing.assert_allclose(average_precision(gt, pred), [0.0, 0.0, 1.0])


def test_equal_scores_rank_the_prediction_listed_later_first():
    gt = events(("t", 1.0, GOOD))
    pred = events(("t", 1.0, GOOD, 0.5), ("t", 9.0, GOOD, 0.5))
    # ranked: 9.0 (miss) then 1.0 (hit): precision 0, 1/2; recall 0, 1
    #   envelope over framed precision 0, 0, .5, 0 -> .5 at the recall step -> AP = 0.5
    # (ranked the other way it would be hit, miss: AP 1)
    np.testing.assert_allclose(average_precision(gt, pred), [0.5, 0.5, 0.5])
    # by score 0.9 first, then the three 0.5s from the last listed to the first
    assert score_order(np.array([0.5, 0.5, 0.9, 0.5])).tolist() == [2, 3, 1, 0]


def test_map_scores_the_categories_of_the_ground_truth_and_misses_in_other_takes():
    gt = events(("a", 1.0, GOOD), ("b", 2.0, TIP))
    pred = events(("b", 2.0, GOOD, 0.9), ("a", 1.0, GOOD, 0.5), ("a", 1.0, 7, 0.99))
    scores = detection_map(gt, pred)
    # good: "b" has no good execution -> miss, then a hit: precision 0, 1/2, recall 0, 1
    #   AP = (1 - 0) * 1/2 = 0.5 at every threshold
    # tip: no prediction -> AP 0; label 7 is not in the ground truth: not scored
    assert scores.categories.tolist() == [GOOD, TIP]
    np.testing.assert_allclose(scores.ap, [[0.5, 0.0]] * 3)
    np.testing.assert_allclose(scores.map, [0.25, 0.25, 0.25])  # (0.5 + 0) / 2
    assert scores.average_map == pytest.approx(0.25)
    # categories ignored: 0.99 at a takes a's event (hit), 0.9 at b hits, 0.5 at a finds
    # a's only event taken (miss): precision 1, 1, 2/3; recall 1/2, 1, 1
    #   AP = .5 * 1 + .5 * 1 = 1 (the late miss adds no recall)
    agnostic = detection_map(gt.with_labels(0), pred.with_labels(0))
    np.testing.assert_allclose(agnostic.map, [1.0, 1.0, 1.0])


def test_interpolated_ap_sums_recall_steps_times_the_best_later_precision():
    # precision .5, 1, recall .5, 1 -> envelope 1, 1 -> AP = .5 * 1 + .5 * 1 = 1
    assert interpolated_average_precision(np.array([0.5, 1.0]), np.array([0.5, 1.0])) == 1.0
    # recall never reaches 1: the step to the framing recall 1 has precision 0
    #   precision 1, recall 1/4 -> AP = 1/4
    assert interpolated_average_precision(np.array([1.0]), np.array([0.25])) == 0.25


def test_grading_matches_greedily_by_score_and_ignores_categories():
    gt = events(("t", 10.0, GOOD), ("t", 20.0, TIP), ("t", 30.0, GOOD), ("u", 5.0, TIP))
    pred = events(
        ("t", 10.1, GOOD, 0.9),  # takes 10.0: good as good (TP)
        ("t", 20.3, GOOD, 0.8),  # 0.3 from 20.0: a tip graded good (FP) from 0.5 s on
        ("t", 30.0, TIP, 0.7),  # takes 30.0: good graded tip (FN)
        ("t", 10.0, TIP, 0.6),  # 10.0 is taken and nothing else is near: dropped
        ("u", 5.2, TIP, 0.5),  # takes 5.0: tip as tip (TN)
    )
    truth, guess = grading_matches(gt, pred, 0.25)
    assert truth.tolist() == [GOOD, GOOD, TIP] and guess.tolist() == [GOOD, TIP, TIP]
    scores = grading_balanced_accuracy(gt, pred)
    # 0.25 s: TP 1, FN 1, TN 1, FP 0 -> recall good 1/2, recall tip 1/1 -> BA = 0.75
    # 0.5 s, 1 s: TP 1, FN 1, TN 1, FP 1 -> 1/2 and 1/2 -> BA = 0.5
    assert scores.tp.tolist() == [1, 1, 1] and scores.fp.tolist() == [0, 1, 1]
    assert scores.tn.tolist() == [1, 1, 1] and scores.fn.tolist() == [1, 1, 1]
    np.testing.assert_allclose(scores.balanced_accuracy, [0.75, 0.5, 0.5])
    assert scores.mean_balanced_accuracy == pytest.approx((0.75 + 0.5 + 0.5) / 3)


def test_grading_counts_a_class_without_pairs_as_recall_zero():
    # one good execution graded good: recall good 1/1, no tip pair -> recall tip 0 (not
    # skipped, as SkillSpotter divides safely) -> BA = (1 + 0) / 2
    scores = grading_balanced_accuracy(events(("t", 1.0, GOOD)), events(("t", 1.0, GOOD)))
    np.testing.assert_allclose(scores.balanced_accuracy, [0.5, 0.5, 0.5])


def test_grading_takes_the_nearest_free_event_for_the_best_scored_prediction():
    gt = events(("t", 1.0, GOOD), ("t", 1.4, TIP))
    # 1.3 (tip, 0.4) and 1.1 (good, 0.9): 1.1 goes first and takes 1.0 (0.1 away);
    # 1.3 then takes 1.4 (0.1 away): good as good and tip as tip at 0.25 s
    pred = events(("t", 1.3, TIP, 0.4), ("t", 1.1, GOOD, 0.9))
    truth, guess = grading_matches(gt, pred, 0.25)
    assert truth.tolist() == [GOOD, TIP] and guess.tolist() == [GOOD, TIP]


def test_top_k_keeps_the_best_predictions_of_each_take():
    pred = events(("t", 1.0, GOOD, 0.1), ("t", 2.0, GOOD, 0.9), ("s", 3.0, TIP, 0.2),
                  ("t", 4.0, TIP, 0.5))  # fmt: skip
    kept = top_k_per_take(pred, 2)
    assert list(zip(kept.takes, kept.times, strict=True)) == [("s", 3.0), ("t", 2.0), ("t", 4.0)]
    assert SKILLSPOTTER_TOP_K == 100


def test_evaluate_reports_specific_agnostic_and_grading_figures():
    gt = events(("a", 1.0, GOOD), ("b", 2.0, TIP))
    pred = events(("a", 1.0, GOOD, 0.9), ("b", 2.1, GOOD, 0.8), ("b", 2.0, TIP, 0.1))
    result = evaluate_demonstration(gt, pred, top_k=1)
    # top 1 per take keeps a@1.0 (good) and b@2.1 (good)
    # specific: good has one event: hit, then b has no good event: miss -> precision 1, 1/2,
    #   recall 1, 1 -> AP = 1 * 1 = 1; tip: no prediction left -> 0; mAP = (1 + 0) / 2
    # agnostic: a hit, b@2.1 0.1 from 2.0: hit -> AP 1
    # grading: a good as good (TP), b tip graded good (FP) -> (1/1 + 0/1) / 2 = 0.5
    assert result.specific.average_map == pytest.approx(0.5)
    assert result.agnostic.average_map == pytest.approx(1.0)
    assert result.grading.mean_balanced_accuracy == pytest.approx(0.5)
    everything = evaluate_demonstration(gt, pred)
    # all three: tip gains its hit -> AP 1 at every threshold; mAP (1 + 1) / 2 = 1
    assert everything.specific.average_map == pytest.approx(1.0)


def test_events_of_parallel_sequences_refuse_mismatched_lengths_and_nan():
    with pytest.raises(EventsError, match="differ in length"):
        Events.of(["t"], [1.0, 2.0], [0, 0])
    with pytest.raises(EventsError, match="finite"):
        Events.of(["t"], [float("nan")], [0])
