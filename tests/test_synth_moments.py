"""`skill synth --kind moments`: long takes with marked moments, written as the EgoExo4D
demonstration benchmark's files and read back by its format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skill.pipeline.manifest import read_takes
from skill.synth import INFO_NAME, SynthConfig, synthesize
from skill.synth.moment_plan import FAULT_STEP, GOOD_STEP, MOMENT_FRAMES, MOMENT_GAP_SLOTS
from skill.synth.video import decode_video
from tests.extract_helpers import extract_args, invoke_cli


@pytest.fixture(scope="module")
def moments(tmp_path_factory):
    folder = tmp_path_factory.mktemp("moments")
    cfg = SynthConfig(kind="moments", takes=12, size=32, exo_views=1, frames=96)
    return cfg, synthesize(cfg, folder, workers=1)


def test_the_moments_are_the_benchmarks_events_at_their_slots_middles(moments):
    cfg, manifest = moments
    data = read_takes(manifest, task="demonstration")
    assert data.format == "egoexo4d-demonstration" and len(data.takes) == 12
    info = json.loads((manifest.parent / INFO_NAME).read_text())
    slot_seconds = MOMENT_FRAMES / cfg.fps
    for take in data.takes:
        order = info["orders"][take.take_id]
        marked = [slot for slot, step in enumerate(order) if step in (GOOD_STEP, FAULT_STEP)]
        assert len(marked) >= 1 and np.all(np.diff(marked) >= MOMENT_GAP_SLOTS)
        expected = sorted(
            (round((slot + 0.5) * slot_seconds, 4), "good_executions" if order[slot] == GOOD_STEP
             else "tips_for_improvement") for slot in marked
        )  # fmt: skip
        assert sorted(take.target) == expected
        assert take.split in ("train", "val", "test") and take.uid == f"uid-{take.take_id}"
        assert [take.videos[v] is not None for v in ("ego", "exo1", "exo2")] == [1, 1, 0]
        assert float(take.extra["duration_sec"]) == pytest.approx(cfg.frames / cfg.fps)
    assert {e.category for take in data.takes for e in take.events} == {
        "good_executions", "tips_for_improvement"}  # fmt: skip


def test_a_good_execution_is_visible_in_its_slot(moments):
    """The good execution's red ball shows in the frames of its slot, not in a filler's."""
    _, manifest = moments
    info = json.loads((manifest.parent / INFO_NAME).read_text())
    good, filler = [], []
    for take, order in info["orders"].items():
        frames = decode_video(manifest.parent / take / "exo1.mp4").astype(int)
        red = (frames[..., 0] > 140) & (frames[..., 1] < 90) & (frames[..., 2] < 90)
        per_slot = red.reshape(len(order), MOMENT_FRAMES, -1).mean(axis=(1, 2))
        for slot, step in enumerate(order):
            (good if step == GOOD_STEP else filler if step != FAULT_STEP else []).append(
                per_slot[slot]
            )
    assert good and min(good) > 2 * max(filler) + 1e-3


def test_bad_moments_settings_are_refused():
    assert SynthConfig(takes=12, kind="moments").frames == 128
    with pytest.raises(ValueError, match="--frames must be a multiple of 8 and at least 32"):
        SynthConfig(takes=12, kind="moments", frames=100)
    with pytest.raises(ValueError, match="--task regression needs --kind cues"):
        SynthConfig(takes=12, kind="moments", task="regression")


def test_the_benchmarks_files_go_through_extract_fit_and_predict_to_a_submission(moments, tmp_path):
    """The official layout, end to end through the CLI: a stride sequence extracted for the
    demonstration task, the spotter fitted on it, the test split's prediction file written."""
    from skill.interop.egoexo4d_demonstration import read_submission

    cfg, manifest = moments
    store = tmp_path / "moments.zarr"
    code, output = invoke_cli(*extract_args(
        manifest, store, "--task", "demonstration", "--sampling", "stride", "--stride", "1",
        "--clip-every", "4", "--clips", str(cfg.frames // 4), "--frames", "8",
    ))  # fmt: skip
    assert code == 0, output
    code, output = invoke_cli("fit", str(store), "--head", "spotter", "--epochs", "3",
                              "--out", str(tmp_path / "runs"), "--name", "run",
                              "--device", "cpu", "--no-plots")  # fmt: skip
    assert code == 0, output
    out = tmp_path / "submission.json"
    code, output = invoke_cli("predict", str(store), "--run", str(tmp_path / "runs" / "run"),
                              "--format", "egoexo4d-demonstration", "--split", "test",
                              "--out-json", str(out), "--device", "cpu")  # fmt: skip
    assert code == 0, output
    test_ids = [t.take_id for t in read_takes(manifest, task="demonstration").takes
                if t.split == "test"]  # fmt: skip
    predicted = read_submission(out, "test", test_ids)
    assert set(predicted.takes) == set(test_ids) and "mAP" in output
