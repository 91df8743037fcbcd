"""The synthetic multi-view skill dataset: files, manifest, determinism, splits and cues."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from skill.synth import (
    INFO_NAME,
    MANIFEST_NAME,
    SCENARIOS,
    SynthConfig,
    decode_luma,
    decode_video,
    read_manifest,
    synthesize,
)
from skill.tasks.classification import EGOEXO4D_LEVELS as LABELS
from tests.synth_proxy import proxy_view_accuracy

SMALL = {"takes": 24, "size": 32, "frames": 48}
VIEWS = ["ego", "exo1", "exo2", "exo3", "exo4"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 takes at 32 px, rendered in this process."""
    out = tmp_path_factory.mktemp("synth")
    synthesize(SynthConfig(seed=0, **SMALL), out, workers=1)
    return out


@pytest.fixture(scope="module")
def records(dataset: Path) -> list[dict]:
    return read_manifest(dataset / MANIFEST_NAME)


def all_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root, by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_manifest_lines_have_the_project_fields_and_real_labels(dataset, records):
    assert len(records) == 24
    assert [r["take"] for r in records] == [f"t{i:04d}" for i in range(1, 25)]
    names = {s.name for s in SCENARIOS}
    for r in records:
        assert set(r) == {"take", "videos", "label", "scenario", "participant", "split"}
        assert list(r["videos"]) == VIEWS
        assert r["label"] in LABELS
        assert r["scenario"] in names
        assert r["split"] in {"train", "val", "test"}
        for view, rel in r["videos"].items():
            assert rel == f"{r['take']}/{view}.mp4"  # relative to the manifest's folder
            assert (dataset / rel).stat().st_size > 0
    info = json.loads((dataset / INFO_NAME).read_text())
    assert info["config"]["seed"] == 0 and info["config"]["takes"] == 24
    assert info["views"] == VIEWS and info["labels"] == list(LABELS)


def test_every_video_decodes_to_the_requested_frames_and_size(dataset, records):
    for r in records:
        for rel in r["videos"].values():
            assert decode_luma(dataset / rel).shape == (48, 32, 32), rel
    rgb = decode_video(dataset / records[0]["videos"]["ego"])
    assert rgb.shape == (48, 32, 32, 3) and rgb.dtype == np.uint8


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(dataset, tmp_path):
    synthesize(SynthConfig(seed=0, **SMALL), tmp_path / "again", workers=2)
    assert all_bytes(tmp_path / "again") == all_bytes(dataset)


def test_another_seed_gives_other_videos(dataset, records, tmp_path):
    synthesize(SynthConfig(seed=1, **SMALL), tmp_path / "other", workers=1)
    other = read_manifest(tmp_path / "other" / MANIFEST_NAME)
    assert [r["take"] for r in other] == [r["take"] for r in records]
    for view in VIEWS:
        rel = records[0]["videos"][view]
        assert (tmp_path / "other" / rel).read_bytes() != (dataset / rel).read_bytes()
    assert [(r["label"], r["participant"]) for r in other] != [
        (r["label"], r["participant"]) for r in records
    ]


def test_splits_are_grouped_by_participant_and_hold_every_level(records):
    split_of, label_of = defaultdict(set), defaultdict(set)
    for r in records:
        split_of[r["participant"]].add(r["split"])
        label_of[r["participant"]].add(r["label"])
    assert all(len(s) == 1 for s in split_of.values()), "a participant in two splits"
    assert all(len(s) == 1 for s in label_of.values()), "a participant with two levels"
    for split in ("train", "val", "test"):
        assert {r["label"] for r in records if r["split"] == split} == set(LABELS), split
    people = Counter(next(iter(splits)) for splits in split_of.values())
    assert people["train"] == 12 and people["val"] == 4 and people["test"] == 4


def test_cameras_see_different_images(dataset, records):
    take = records[0]["videos"]
    means = {v: decode_video(dataset / take[v]).astype(np.float32).mean(0) for v in VIEWS}
    for i, a in enumerate(VIEWS):
        for b in VIEWS[i + 1 :]:
            assert np.abs(means[a] - means[b]).mean() > 8, (a, b)


def tremor_energy(path: Path) -> float:
    """Mean absolute second temporal difference of 8x8 brightness thumbnails: shaking."""
    luma = decode_luma(path).astype(np.float32)
    n, h, w = luma.shape
    thumbs = luma.reshape(n, 8, h // 8, 8, w // 8).mean((2, 4))
    return float(np.abs(np.diff(thumbs, 2, axis=0)).mean())


def test_novice_tremor_shows_in_side_views_more_than_in_ego(dataset, records):
    def mean_energy(label: str, view: str) -> float:
        paths = [dataset / r["videos"][view] for r in records if r["label"] == label]
        return float(np.mean([tremor_energy(p) for p in paths]))

    ratio = {v: mean_energy("Novice", v) / mean_energy("Late Expert", v) for v in VIEWS}
    assert ratio["exo2"] > 1.3 and ratio["exo3"] > 1.3, ratio
    assert ratio["ego"] < min(ratio["exo2"], ratio["exo3"]) - 0.2, ratio


def yellow_share(path: Path) -> float:
    """Share of target-yellow pixels in the last 12 frames (the placed ball and its disc)."""
    rgb = decode_video(path)[-12:].astype(np.float32) / 255
    return float(((rgb[..., 0] > 0.6) & (rgb[..., 1] > 0.5) & (rgb[..., 2] < 0.35)).mean())


def test_placement_error_shows_in_the_ego_close_up_only(dataset, records):
    def mean_share(label: str, view: str) -> float:
        paths = [dataset / r["videos"][view] for r in records if r["label"] == label]
        return float(np.mean([yellow_share(p) for p in paths]))

    # Early Experts miss the target, Intermediate Experts do not: more disc stays uncovered.
    assert mean_share("Early Expert", "ego") > 2 * mean_share("Intermediate Expert", "ego")
    assert mean_share("Early Expert", "ego") > 0.02
    for view in ("exo1", "exo2", "exo3"):  # low cameras see the disc edge-on
        assert mean_share("Early Expert", view) < 0.01, view


def test_bad_parameters_are_refused_with_the_parameter_named():
    with pytest.raises(ValueError, match="--size must be even and at least 16 .*, not 33"):
        SynthConfig(takes=24, size=33)
    with pytest.raises(ValueError, match="--exo-views must be 1 to 4, not 5"):
        SynthConfig(takes=24, exo_views=5)
    with pytest.raises(ValueError, match="--takes must be at least 12.*not 4"):
        SynthConfig(takes=4)


def test_fewer_exo_views_are_written_when_asked(tmp_path):
    synthesize(SynthConfig(takes=12, size=16, frames=8, exo_views=3), tmp_path, workers=1)
    first = read_manifest(tmp_path / MANIFEST_NAME)[0]
    assert list(first["videos"]) == ["ego", "exo1", "exo2", "exo3"]


@pytest.mark.slow
def test_proxy_fusion_beats_every_single_view(tmp_path):
    synthesize(SynthConfig(takes=200, seed=0), tmp_path)
    accuracy = proxy_view_accuracy(tmp_path)
    single = max(v for k, v in accuracy.items() if k != "all")
    assert accuracy["all"] >= 0.6, accuracy
    assert accuracy["all"] - single >= 0.05, accuracy
