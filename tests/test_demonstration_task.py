"""The ``demonstration`` task (timestamped, categorised moments per take) and the ``spotter``
head: targets, the loss and the decoding on hand-worked cases, the frequent-times baseline, the
head's masks, which heads learn which tasks, and fit -> predict -> the benchmark's prediction
file on a small store built through the API."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from skill.errors import ConfigError
from skill.heads import build_head
from skill.heads.registry import resolve_head
from skill.heads.trainer import check_learns
from skill.interop.egoexo4d_demonstration import read_submission
from skill.pipeline.takes import Event
from skill.tasks import TargetError, get_task
from skill.tasks.demonstration import (
    LABEL_RADIUS_S,
    clip_targets,
    decode_events,
    detection_loss,
    frequent_events,
    ground_truth,
)
from skill.tasks.demonstration_metrics import evaluate_demonstration
from tests.extract_helpers import invoke_cli
from tests.token_store import shared_token_store

TASK = get_task("demonstration")
SCHEMA = TASK.schema({"max_events": 3})
GOOD, TIP = SCHEMA["categories"]


def per_clip(centres, logits, offsets, present=None) -> torch.Tensor:
    """One take's head outputs ``(1, K, C + 3)`` from per-clip centres, logits (K, C) and
    offsets (K,)."""
    k = len(centres)
    present = torch.ones(k) if present is None else torch.tensor(present, dtype=torch.float32)
    columns = [torch.tensor(logits, dtype=torch.float32), torch.tensor(offsets)[:, None],
               torch.tensor(centres)[:, None], present[:, None]]  # fmt: skip
    return torch.cat(columns, dim=1)[None].float()


def stored(events) -> torch.Tensor:
    return torch.tensor([TASK.encode(events, SCHEMA)], dtype=torch.float32)


# ---- targets -----------------------------------------------------------------------------


def test_events_are_stored_padded_and_read_back_as_the_manifest_stated_them():
    events = (Event(1.5, GOOD), Event(0.25, TIP))
    row = np.array([TASK.encode(events, SCHEMA)], dtype=np.float32)
    assert row.shape == (1, 3, 2)
    assert row[0, :2].tolist() == [[1.5, 0.0], [0.25, 1.0]]
    assert math.isnan(row[0, 2, 0]) and row[0, 2, 1] == -1
    assert TASK.decode(row, SCHEMA) == [((1.5, GOOD), (0.25, TIP))]
    # JSONL objects and pairs are the same events
    given = TASK.encode([{"time": 1.5, "category": GOOD}, [0.25, TIP]], SCHEMA)
    np.testing.assert_array_equal(np.array(given, dtype=np.float32), row[0])
    unlabelled, empty = (np.array([TASK.encode(v, SCHEMA)]) for v in (None, []))
    assert TASK.labelled(np.concatenate([row, unlabelled, empty])).tolist() == [True, False, True]
    assert TASK.decode(empty, SCHEMA) == [()] and TASK.decode(unlabelled, SCHEMA) == [None]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([[1.0, "great_moves"]], "event 0: unknown category 'great_moves'"),
        ([[1.0, GOOD], [-0.5, TIP]], "event 1: time -0.5 is not a number of seconds >= 0"),
        ([[1.0, GOOD]] * 4, "4 events, more than the 3 a take may hold"),
        ("1.0 good", "events must be a list of events"),
    ],
)
def test_a_bad_event_is_refused_naming_it(value, problem):
    with pytest.raises(TargetError, match="^" + problem.replace("(", r"\(")):
        TASK.encode(value, SCHEMA)


# ---- the loss ----------------------------------------------------------------------------


def test_clip_targets_take_the_clips_near_an_event_and_each_events_nearest_clip():
    centres = torch.tensor([[0.5, 1.5, 2.5, 3.5]])
    present = torch.tensor([[True, True, True, False]])
    # 1.6 s (good) is within the radius of clip 1 only; 3.3 s (tip) of none present: its
    # nearest present clip (2, 0.8 s away) takes it, never the padded clip 3 (0.2 s away)
    positive, nearest = clip_targets(centres, present, stored([[1.6, GOOD], [3.3, TIP]]), 2)
    assert LABEL_RADIUS_S < 0.8
    assert positive[0].tolist() == [[False, False], [True, False], [False, True], [False, False]]
    torch.testing.assert_close(nearest[0, :3], torch.tensor([1.6, 1.6, 3.3]))


def test_the_loss_is_focal_over_present_clips_per_positive_plus_the_offsets_l1():
    # logits 0: each present clip and category costs 0.25 * log 2 (p = 1/2, (1 - 1/2)^2); one
    # positive clip (1, at 1.5 s) whose event lies 0.1 s later, its offset predicted 0
    outputs = per_clip([0.5, 1.5, 2.5], [[0.0, 0.0]] * 3, [0.0, 0.0, 0.0])
    loss = detection_loss(outputs, stored([[1.6, GOOD]]), 2)
    torch.testing.assert_close(loss, torch.tensor(6 * 0.25 * math.log(2) / 1 + 0.1))
    # a padded clip adds nothing, whatever it holds
    padded = per_clip([0.5, 1.5, 2.5, 1.6], [[0.0, 0.0]] * 3 + [[9.0, -9.0]], [0.0] * 3 + [5.0],
                      present=[1, 1, 1, 0])  # fmt: skip
    torch.testing.assert_close(detection_loss(padded, stored([[1.6, GOOD]]), 2), loss)
    # the right offset and confident right scores cost (almost) nothing
    right = per_clip([0.5, 1.5, 2.5], [[-9.0, -9.0], [9.0, -9.0], [-9.0, -9.0]], [0.0, 0.1, 0.0])
    assert float(detection_loss(right, stored([[1.6, GOOD]]), 2)) < 1e-3


# ---- decoding and the baseline -----------------------------------------------------------


def probabilities(centres, probs, offsets) -> np.ndarray:
    """``(1, K, C + 3)`` scores as ``to_scores`` gives them (probabilities, not logits)."""
    k = len(centres)
    columns = [np.asarray(probs, float), np.asarray(offsets, float)[:, None],
               np.asarray(centres, float)[:, None], np.ones((k, 1))]  # fmt: skip
    return np.concatenate(columns, axis=1)[None]


def test_decoding_keeps_peaks_apart_per_category_and_the_best_of_a_take():
    scores = probabilities(
        [0.0, 1.0, 2.0, 3.0],
        [[0.9, 0.0], [0.8, 0.6], [0.1, 0.0], [0.7, 0.0]],
        [0.0, 0.0, 0.0, 0.0],
    )
    found = decode_events(scores, suppress=1.0, top_n=10)
    # good: 0 s (0.9) kept, 1 s suppressed (not farther than 1 s from it), 3 s (0.7) kept, 2 s
    # suppressed by 3 s; tip: 1 s (0.6) kept, then the ties at 0: 0 s and 2 s suppressed by
    # 1 s, 3 s (2 s away) kept with its score 0
    rows = sorted(zip(found.labels.tolist(), found.times.tolist(), found.scores.tolist(),
                      strict=True))  # fmt: skip
    assert rows == [(0, 0.0, 0.9), (0, 3.0, 0.7), (1, 1.0, 0.6), (1, 3.0, 0.0)]
    assert set(found.takes) == {"0"}
    # an offset moves a clip's proposal: 1 s + 0.5 s is 1.5 s from the kept 0 s
    moved = decode_events(probabilities([0.0, 1.0], [[0.9, 0.0], [0.8, 0.0]], [0.0, 0.5]),
                          suppress=1.0)  # fmt: skip
    assert sorted(moved.select(moved.labels == 0).times.tolist()) == [0.0, 1.5]
    # top-N: the best of the take, over categories
    best = decode_events(scores, suppress=1.0, top_n=2)
    assert sorted(best.scores.tolist()) == [0.7, 0.9]


def test_the_frequent_baseline_predicts_the_training_takes_most_frequent_times():
    train = np.array([TASK.encode(v, SCHEMA) for v in ([[2.2, GOOD], [5.1, TIP]],
                      [[2.7, GOOD]], [[5.3, TIP], [9.9, GOOD]])])  # fmt: skip
    # good: 3 events over 3 takes -> one per take, the bin 2-3 s (2 of them): at 2.5 s, scored
    # 2/3; tip: 2 over 3 takes rounds to 1, the bin 5-6 s: at 5.5 s, scored 2/3. A take whose
    # clips end at 4 s gets only the good one (within a bin's width of its clips).
    found = frequent_events(train, 2, [(0.0, 10.0), (0.0, 4.0)])
    rows = sorted(zip(found.takes.tolist(), found.labels.tolist(), found.times.tolist(),
                      strict=True))  # fmt: skip
    assert rows == [("0", 0, 2.5), ("0", 1, 5.5), ("1", 0, 2.5)]
    np.testing.assert_allclose(found.scores, 2 / 3)
    summary = TASK.train_summary(SCHEMA, train)
    assert TASK.train_summary(SCHEMA, TASK.summary_targets(summary, SCHEMA)) == summary


# ---- the head ----------------------------------------------------------------------------

B, V, K, N, D = 3, 3, 5, 2, 16


def head_inputs():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(B, V, K, N, D, generator=generator)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1]], dtype=torch.bool)
    clips = mask[:, :, None].expand(B, V, K).clone()
    clips[0, 1, 3:] = False  # one view ends early
    clips[2, :, 4:] = False  # the take ends early: its last clip is padded
    start = torch.arange(K, dtype=torch.float32) * 0.5
    times = torch.stack([start, start + 0.5], dim=-1).expand(B, V, K, 2) * clips[..., None]
    return x, mask, clips, times


def test_the_spotter_outputs_per_clip_and_absent_clips_and_views_do_not_count():
    torch.manual_seed(0)
    head = build_head("spotter", dim=D, num_views=V, outputs=3, hidden=16).eval()
    x, mask, clips, times = head_inputs()
    with torch.no_grad():
        reference = head(x, mask, clips, times)
        assert reference.shape == (B, K, 3 + 2)
        # the centres and the presence
        torch.testing.assert_close(reference[0, :, 3], torch.arange(K) * 0.5 + 0.25)
        assert reference[2, :, 4].tolist() == [1, 1, 1, 1, 0]
        assert torch.equal(reference[2, 4], torch.zeros(5))  # a padded clip outputs zeros
        absent = ~(clips & mask[:, :, None])
        for filled in (torch.randn(int(absent.sum()), N, D) * 100, float("nan")):
            other = x.clone()
            other[absent] = filled
            assert torch.equal(head(other, mask, clips, times), reference)
        assert torch.equal(head(x, mask, clips, times + 50.0 * absent[..., None]), reference)
        changed = x.clone()
        changed[0, 0, 1] += 1.0
        assert not torch.allclose(head(changed, mask, clips, times)[0], reference[0])


def test_a_per_clip_head_learns_only_a_per_clip_task_and_the_reverse():
    check_learns(resolve_head("spotter"), TASK)
    check_learns(resolve_head("seqformer"), get_task("classification"))
    with pytest.raises(ConfigError, match="--head spotter predicts per clip and task "
                       "classification is learned per take"):  # fmt: skip
        check_learns(resolve_head("spotter"), get_task("classification"))
    with pytest.raises(ConfigError, match="--head mean predicts per take and task demonstration"):
        check_learns(resolve_head("mean"), TASK)


# ---- fit -> predict -> the prediction file ------------------------------------------------


@pytest.fixture(scope="module")
def moments_store(tmp_path_factory):
    return shared_token_store(
        tmp_path_factory, "moments", task="demonstration", clip_axis="sequence",
        clips_per_take=8, n_participants=20, takes_per_participant=4,
    )  # fmt: skip


def test_the_spotter_finds_the_moments_and_predict_writes_the_benchmarks_file(
    moments_store, tmp_path
):
    from skill.cache.store import TokenStore
    from skill.heads.config import FitConfig
    from skill.heads.train import fit

    cfg = FitConfig(store=str(moments_store.path), views="ego,exo1,exo2", head="spotter",
                    epochs=30, batch_size=16, hidden=32, out_dir=str(tmp_path), name="run",
                    plots=False, device="cpu")  # fmt: skip
    result = fit(cfg)
    test = result.metrics["test"]
    assert test["map_loosest"] >= 0.5 and test["map"] > test["baselines"]["frequent"]["map"] + 0.3
    out = tmp_path / "submission.json"
    code, output = invoke_cli("predict", str(moments_store.path), "--run", str(result.run_dir),
                              "--format", "egoexo4d-demonstration", "--split", "test",
                              "--out-json", str(out), "--out", str(tmp_path / "p.csv"),
                              "--device", "cpu")  # fmt: skip
    assert code == 0, output
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(json.loads(row["predicted_events"]) for row in rows) and rows[0]["split"] == "test"
    table = TokenStore.open(moments_store.path).take_table()
    test_ids = [t for t, s in zip(table.ids, table.column("split"), strict=True) if s == "test"]
    predicted = read_submission(out, "test", test_ids)
    assert len(predicted) > 0 and set(predicted.takes) <= set(test_ids)
    # scored against the store's events, the file gives the fit's test figures
    ids, _ = result.predictions["test"]
    rows = [list(table.ids).index(t) for t in ids]
    truth = ground_truth(table.target[rows])
    names = np.asarray(ids, dtype=object)[truth.takes.astype(int)]
    truth = type(truth).of(names, truth.times, truth.labels)
    scored = evaluate_demonstration(truth, predicted)
    assert scored.specific.average_map == pytest.approx(test["map"])
    # a file of one split is refused as another's
    with pytest.raises(Exception, match="a prediction file for split 'test', not 'val'"):
        read_submission(out, "val", test_ids)
    # and the format needs a split
    code, output = invoke_cli("predict", str(moments_store.path), "--run", str(result.run_dir),
                              "--format", "egoexo4d-demonstration", "--out-json", str(out))  # fmt: skip
    assert code == 2 and "give --split" in output


def test_a_per_take_head_is_refused_the_demonstration_task(moments_store, tmp_path):
    from skill.heads.config import FitConfig
    from skill.heads.train import fit

    cfg = FitConfig(store=str(moments_store.path), head="mean", epochs=1, out_dir=str(tmp_path),
                    plots=False)  # fmt: skip
    with pytest.raises(ConfigError, match="--head mean predicts per take"):
        fit(cfg)


def test_a_sweep_keeps_the_heads_that_learn_the_stores_task(moments_store, tmp_path):
    from skill.heads.config import FitConfig, SweepConfig
    from skill.heads.sweep import heads_for_task

    default = SweepConfig(fit=FitConfig(store=str(moments_store.path), out_dir=str(tmp_path)))
    kept, note = heads_for_task(default, "demonstration", str(moments_store.path))
    assert kept.heads == ["spotter"] and "mean" in note and "\n" not in note
    kept, note = heads_for_task(default, "classification", str(moments_store.path))
    assert "spotter" not in kept.heads and "seqformer" in kept.heads and "spotter" in note
    named = SweepConfig(fit=default.fit, heads=["spotter", "mean"])
    with pytest.raises(ConfigError, match="--heads mean cannot learn task demonstration"):
        heads_for_task(named, "demonstration", str(moments_store.path))
