"""The EgoExo4D demonstration benchmark's files, written small in their official layouts:
``proficiency_demonstration_{split}.json`` with ``takes.json`` read through `read_takes` and
the format registry (takes, take_uids, views, events, durations; bad events refused in one
line naming the file and the take), and the prediction file the official evaluation scores
(written, read back, refused for another split or a take outside the split)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skill.errors import SkillError
from skill.interop.egoexo4d_demonstration import (
    SubmissionError,
    read_submission,
    submission_payload,
    write_submission,
)
from skill.pipeline.manifest import detect_format, read_takes
from skill.pipeline.manifest.egoexo4d_demonstration import ground_truth_events, take_durations
from skill.pipeline.takes import Event, ManifestError
from skill.tasks.demonstration_metrics import Events, detection_map
from tests.extract_helpers import extract_args, invoke_cli

CAMERAS = ("aria01_214-1", "cam01", "cam02", "cam03", "cam04")
UIDS = {"iiith_cooking_01_1": "uid-aaa", "unc_basketball_02_3": "uid-bbb"}


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")


def video_paths(take: str, missing: tuple[str, ...] = ()) -> dict[str, str]:
    """The record's ``video_paths`` as the official files write them: ego, exo1..exo4."""
    views = ("ego", "exo1", "exo2", "exo3", "exo4")
    return {
        view: f"takes/{take}/frame_aligned_videos/{camera}.mp4"
        for view, camera in zip(views, CAMERAS, strict=True)
        if view not in missing
    }


def moment(time: float, expert: str = "e1") -> dict:
    """One item of good_executions / tips_for_improvement, with the official fields."""
    return {"video_time": time, "list": "['keep the elbow in']", "expert_uid": expert,
            "video_name": "x"}  # fmt: skip


def record(take: str, good: list[dict], tips: list[dict], **fields) -> dict:
    return {
        "task_id": 6002, "task_name": "Drills", "scenario_name": "Basketball",
        "university_id": "ego4d-unc", "origin_participant_id": "30", "take_uid": UIDS[take],
        "video_paths": video_paths(take), "good_executions": good,
        "tips_for_improvement": tips, **fields,
    }  # fmt: skip


def takes_json_entry(take: str, duration: float) -> dict:
    """A takes.json entry with the fields the format reads (and some it does not)."""
    aligned = {
        "aria01": {
            "rgb": {"cam_id": "aria01", "relative_path": "frame_aligned_videos/aria01_214-1.mp4"},
            "et": {"cam_id": "aria01", "relative_path": "frame_aligned_videos/aria01_211-1.mp4"},
        },
        **{
            cam: {"0": {"cam_id": cam, "relative_path": f"frame_aligned_videos/{cam}.mp4"}}
            for cam in CAMERAS[1:]
        },
        "collage": {"0": {"relative_path": "ego_preview.mp4"}},
    }
    return {"root_dir": f"takes/{take}", "take_name": take, "take_uid": UIDS[take],
            "duration_sec": duration, "frame_aligned_videos": aligned}  # fmt: skip


def dataset(root: Path, records: list[dict], durations: dict[str, float] | None = None,
            split: str = "val") -> Path:  # fmt: skip
    """<root>/annotations/proficiency_demonstration_<split>.json, <root>/takes.json (when
    `durations`) and the takes' camera files."""
    for take in UIDS:
        for camera in CAMERAS:
            touch(root / "takes" / take / "frame_aligned_videos" / f"{camera}.mp4")
    if durations is not None:
        entries = [takes_json_entry(take, seconds) for take, seconds in durations.items()]
        (root / "takes.json").write_text(json.dumps(entries), encoding="utf-8")
    manifest = root / "annotations" / f"proficiency_demonstration_{split}.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"annotations": records}, indent=2), encoding="utf-8")
    return manifest


def two_takes(root: Path, **durations: float) -> Path:
    records = [
        record("iiith_cooking_01_1", [moment(12.5), moment(3.0, "e2")], [moment(40.25)]),
        record("unc_basketball_02_3", [], [moment(7.0)], video_paths=video_paths(
            "unc_basketball_02_3", missing=("exo3",))),
    ]  # fmt: skip
    known = {"iiith_cooking_01_1": 60.0, "unc_basketball_02_3": 30.0, **durations}
    return dataset(root, records, known)


def test_the_official_file_is_detected_and_read_with_events_views_and_durations(tmp_path):
    manifest = two_takes(tmp_path)
    assert detect_format(str(manifest), manifest.read_text()) == "egoexo4d-demonstration"
    data = read_takes(manifest)
    assert data.format == "egoexo4d-demonstration"
    cooking, basketball = data.takes
    assert (cooking.take_id, cooking.uid, cooking.split) == ("iiith_cooking_01_1", "uid-aaa", "val")
    # good executions first, each category in file order
    assert cooking.events == (
        Event(12.5, "good_executions", "e1"),
        Event(3.0, "good_executions", "e2"),
        Event(40.25, "tips_for_improvement", "e1"),
    )
    assert basketball.events == (Event(7.0, "tips_for_improvement", "e1"),)
    assert basketball.videos["exo3"] is None and basketball.videos["exo4"] is not None
    assert data.views == ["ego", "exo1", "exo2", "exo3", "exo4"]
    assert cooking.scenario == "Basketball" and cooking.participant == "ego4d-unc:30"
    assert take_durations(data.takes) == {"iiith_cooking_01_1": 60.0, "unc_basketball_02_3": 30.0}
    truth = ground_truth_events(data.takes)
    assert truth.takes.tolist() == ["iiith_cooking_01_1"] * 3 + ["unc_basketball_02_3"]
    assert truth.times.tolist() == [12.5, 3.0, 40.25, 7.0]
    assert truth.labels.tolist() == [0, 0, 1, 1]


def test_takes_json_gives_the_cameras_of_a_record_without_video_paths(tmp_path):
    bare = record("iiith_cooking_01_1", [moment(1.0)], [])
    del bare["video_paths"]
    manifest = dataset(tmp_path, [bare], {"iiith_cooking_01_1": 10.0})
    (take,) = read_takes(manifest).takes
    assert take.take_id == "iiith_cooking_01_1"
    assert take.videos["ego"].endswith(
        "takes/iiith_cooking_01_1/frame_aligned_videos/aria01_214-1.mp4"
    )
    assert take.videos["exo4"].endswith("cam04.mp4")


def one_line_error(manifest: Path) -> str:
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(manifest))
    assert isinstance(caught.value, SkillError)
    return message


def test_an_event_after_the_take_ends_is_refused_naming_the_file_and_take(tmp_path):
    manifest = two_takes(tmp_path, unc_basketball_02_3=6.5)  # its tip is at 7.0 s
    message = one_line_error(manifest)
    assert "take unc_basketball_02_3: tips_for_improvement[0] at 7 s is outside" in message
    assert "0 to 6.5 s (takes.json)" in message


def test_without_takes_json_durations_are_unknown_but_negative_times_are_refused(tmp_path):
    late = record("iiith_cooking_01_1", [moment(9999.0)], [])
    assert read_takes(dataset(tmp_path / "a", [late])).takes[0].events[0].time == 9999.0
    early = record("iiith_cooking_01_1", [moment(-0.5)], [])
    assert "good_executions[0] at -0.5 s is outside" in one_line_error(
        dataset(tmp_path / "b", [early])
    )


def test_an_unknown_category_is_refused_naming_the_take(tmp_path):
    odd = record("iiith_cooking_01_1", [], [], bad_executions=[moment(1.0)])
    message = one_line_error(dataset(tmp_path, [odd], {"iiith_cooking_01_1": 10.0}))
    assert "take iiith_cooking_01_1: unknown category 'bad_executions'" in message
    assert "good_executions, tips_for_improvement" in message


def test_a_moment_without_a_time_is_refused(tmp_path):
    odd = record("iiith_cooking_01_1", [{"video_time": "12s"}], [])
    message = one_line_error(dataset(tmp_path, [odd]))
    assert "good_executions[0]: 'video_time' must be a number of seconds" in message


def test_extract_takes_the_format_by_its_name(tmp_path):
    code, output = invoke_cli("extract", "--manifest-format", "egoexo4d-demonstration", "--help")
    assert code == 0 and "--manifest-format" in output
    manifest = two_takes(tmp_path, iiith_cooking_01_1=40.0)  # its tip is at 40.25 s
    code, output = invoke_cli(*extract_args(manifest, tmp_path / "s.zarr", "--manifest-format",
                                            "egoexo4d-demonstration"))  # fmt: skip
    assert code == 2
    assert output.startswith(f"error: {manifest}")
    assert "take iiith_cooking_01_1: tips_for_improvement[0] at 40.25 s is outside" in output


# ---- the prediction file -------------------------------------------------------------------


def predictions() -> Events:
    return Events.of(["iiith_cooking_01_1", "iiith_cooking_01_1", "unc_basketball_02_3"],
                     [12.4, 40.0, 7.5], [0, 1, 1], [0.9, 0.8, 0.3])  # fmt: skip


def test_the_prediction_file_holds_the_official_columns_and_reads_back(tmp_path):
    path = write_submission(tmp_path / "pred.json", predictions(), "val")
    payload = json.loads(path.read_text())
    assert payload == submission_payload(predictions(), "val")
    assert payload["video-id"] == [
        "iiith_cooking_01_1",
        "iiith_cooking_01_1",
        "unc_basketball_02_3",
    ]
    assert payload["times"] == [12.4, 40.0, 7.5] and payload["label"] == [0, 1, 1]
    back = read_submission(path, "val", UIDS)
    assert back.takes.tolist() == predictions().takes.tolist()
    np.testing.assert_array_equal(back.scores, [0.9, 0.8, 0.3])


def test_the_prediction_file_of_another_split_or_take_is_refused(tmp_path):
    path = write_submission(tmp_path / "pred.json", predictions(), "test")
    with pytest.raises(SubmissionError) as caught:
        read_submission(path, "val", UIDS)
    assert str(caught.value).startswith(f"{path}: a prediction file for split 'test', not 'val'")
    with pytest.raises(SubmissionError, match=r"take unc_basketball_02_3 is not in split 'test'"):
        read_submission(path, "test", ["iiith_cooking_01_1"])
    payload = json.loads(path.read_text())
    payload["label"][1] = 2
    path.write_text(json.dumps(payload))
    with pytest.raises(SubmissionError, match=r"row 1 \(take iiith_cooking_01_1\): label 2 is not"):
        read_submission(path, "test", UIDS)


def test_the_annotations_and_a_prediction_file_give_the_metric(tmp_path):
    data = read_takes(two_takes(tmp_path))
    path = write_submission(tmp_path / "pred.json", predictions(), "val")
    scores = detection_map(ground_truth_events(data.takes), read_submission(path, "val", UIDS))
    # good: 12.4 is 0.1 from 12.5 (hit); the other good event (3.0) is never found:
    #   precision 1, recall 1/2 -> AP 1/2 at every threshold
    # tip: 40.0 (0.8) is 0.25 from 40.25: a hit at every threshold; 7.5 (0.3) is 0.5 from
    #   7.0: a miss at 0.25 s, a hit from 0.5 s. 0.25 s: precision 1, 1/2, recall 1/2, 1/2
    #   -> AP 1/2; 0.5 s and 1 s: AP 1
    # mAP: (1/2 + 1/2) / 2 = 0.5, then (1/2 + 1) / 2 = 0.75 twice
    np.testing.assert_allclose(scores.map, [0.5, 0.75, 0.75])
