"""Frame sampling: shapes, order, range, determinism, padding and refused configurations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skill.errors import ConfigError
from skill.pipeline.sampling import SamplingConfig, sample_indices

CONFIGS = {
    "uniform": SamplingConfig("uniform", frames=16, clips=1),
    "uniform_k3": SamplingConfig("uniform", frames=8, clips=3),
    "uniform_jitter": SamplingConfig("uniform", frames=8, clips=2, jitter=True),
    "windows": SamplingConfig("windows", frames=8, clips=3, stride=4),
    "windows_jitter": SamplingConfig("windows", frames=16, clips=1, stride=4, jitter=True),
    "skillformer": SamplingConfig("skillformer-windows", frames=8, clips=3, stride=4),
    "skillformer_jitter": SamplingConfig(
        "skillformer-windows", frames=16, clips=1, stride=4, jitter=True
    ),
    "segments": SamplingConfig("segments", frames=12, clips=2, n_segments=4, segment_len=3),
    "segments_jitter": SamplingConfig(
        "segments", frames=8, clips=1, n_segments=2, segment_len=4, segment_stride=2, jitter=True
    ),
}


def _check_valid(indices: np.ndarray, cfg: SamplingConfig, num_frames: int) -> None:
    assert indices.shape == (cfg.clips, cfg.frames)
    assert indices.dtype == np.int64
    assert indices.min() >= 0 and indices.max() <= num_frames - 1
    assert np.all(np.diff(indices, axis=1) >= 0), "each clip must be sorted"


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("num_frames", [1, 5, 16, 17, 100, 1001])
def test_every_strategy_gives_sorted_in_range_clips(name: str, num_frames: int) -> None:
    cfg = CONFIGS[name]
    sampled = sample_indices(num_frames, cfg, key="take/ego")
    _check_valid(sampled.indices, cfg, num_frames)
    assert 0 <= sampled.padded < cfg.frames


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_same_seed_and_key_give_the_same_frames(name: str) -> None:
    cfg = CONFIGS[name]
    first = sample_indices(500, cfg, key="take_7/exo2").indices
    again = sample_indices(500, cfg, key="take_7/exo2").indices
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize(
    "name", ["uniform_jitter", "windows_jitter", "skillformer_jitter", "segments_jitter"]
)
def test_jitter_depends_on_seed_and_key(name: str) -> None:
    cfg = CONFIGS[name]
    base = sample_indices(5000, cfg, key="a").indices
    other_seed = sample_indices(5000, SamplingConfig(**{**cfg.to_dict(), "seed": 1}), "a").indices
    other_key = sample_indices(5000, cfg, key="b").indices
    assert not np.array_equal(base, other_seed)
    assert not np.array_equal(base, other_key)


def test_jitter_is_stable_across_processes_known_value() -> None:
    # A hashlib-seeded generator gives the same draw in every process; Python's hash()
    # would not (PYTHONHASHSEED). Pin one value so a change of the seeding is noticed.
    cfg = SamplingConfig("windows", frames=4, clips=1, stride=1, jitter=True, seed=3)
    first = sample_indices(1000, cfg, key="take/ego").indices
    assert first.tolist() == sample_indices(1000, cfg, key="take/ego").indices.tolist()
    starts = {
        int(sample_indices(1000, SamplingConfig(**{**cfg.to_dict(), "seed": s}), "k").indices[0, 0])
        for s in range(20)
    }
    assert len(starts) > 10, "jittered windows should land in many places"


def test_uniform_single_clip_takes_bin_centres() -> None:
    sampled = sample_indices(160, SamplingConfig("uniform", frames=16), key="x")
    np.testing.assert_array_equal(sampled.indices[0], np.arange(16) * 10 + 5)
    assert sampled.padded == 0


def test_uniform_clips_are_distinct_offsets_and_cover_the_take() -> None:
    sampled = sample_indices(300, CONFIGS["uniform_k3"], key="x").indices
    assert len({tuple(row) for row in sampled}) == 3
    assert sampled[:, 0].max() < 300 / 8 and sampled[:, -1].min() >= 300 * 7 / 8


def test_windows_use_the_stride_and_spread_over_the_take() -> None:
    cfg = CONFIGS["windows"]
    sampled = sample_indices(300, cfg, key="x").indices
    assert np.all(np.diff(sampled, axis=1) == cfg.stride)
    centres = sampled.mean(axis=1)
    np.testing.assert_allclose(centres, [50, 150, 250], atol=2)


def test_segments_are_dense_and_inside_their_parts() -> None:
    cfg = CONFIGS["segments"]
    sampled = sample_indices(400, cfg, key="x").indices
    for row in sampled:
        segments = row.reshape(cfg.n_segments, cfg.segment_len)
        assert np.all(np.diff(segments, axis=1) == 1)
        for j, segment in enumerate(segments):
            assert 100 * j <= segment[0] and segment[-1] < 100 * (j + 1)
    assert not np.array_equal(sampled[0], sampled[1])


def test_segment_stride_shrinks_so_segments_never_overlap() -> None:
    cfg = SamplingConfig("segments", frames=8, n_segments=4, segment_len=2, segment_stride=50)
    row = sample_indices(40, cfg, key="x").indices[0]
    assert len(np.unique(row)) == 8
    assert np.all(np.diff(row) > 0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_short_video_repeats_the_last_frame_and_counts_it(name: str) -> None:
    cfg = CONFIGS[name]
    sampled = sample_indices(3, cfg, key="x")
    expected_row = [0, 1, 2] + [2] * (cfg.frames - 3)
    assert sampled.padded == cfg.frames - 3
    assert sampled.indices.tolist() == [expected_row] * cfg.clips


def test_window_longer_than_the_video_is_clamped_and_padded() -> None:
    cfg = SamplingConfig("windows", frames=8, clips=2, stride=4)  # span 29 frames
    sampled = sample_indices(20, cfg, key="x")
    assert sampled.indices.tolist() == [[0, 4, 8, 12, 16, 19, 19, 19]] * 2
    assert sampled.padded == 3


def test_exactly_enough_frames_is_not_padded() -> None:
    sampled = sample_indices(16, SamplingConfig("uniform", frames=16), key="x")
    assert sampled.padded == 0
    assert sampled.indices.tolist() == [list(range(16))]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "random"}, "not one of"),
        ({"frames": 0}, "frames must be"),
        ({"clips": -1}, "clips must be"),
        ({"stride": 0}, "stride must be"),
        ({"seed": -3}, "seed must be"),
        ({"strategy": "segments", "frames": 16}, "needs n_segments"),
        ({"strategy": "segments", "frames": 16, "n_segments": 4, "segment_len": 3}, "must equal"),
        ({"strategy": "uniform", "n_segments": 4, "segment_len": 4}, "only apply"),
        ({"strategy": "windows", "segment_stride": 2}, "only apply"),
        ({"frames": 2.5}, "frames must be"),
    ],
)
def test_invalid_configs_are_refused_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


def test_to_dict_round_trips_through_json() -> None:
    cfg = CONFIGS["segments_jitter"]
    restored = SamplingConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    with pytest.raises(ValueError, match="unknown sampling settings"):
        SamplingConfig.from_dict({**cfg.to_dict(), "fps": 30})


@pytest.mark.parametrize("num_frames", [0, -4])
def test_videos_without_frames_are_refused(num_frames: int) -> None:
    with pytest.raises(ValueError, match="frames"):
        sample_indices(num_frames, SamplingConfig(), key="x")


# ---- SkillFormer's placement ---------------------------------------------------------------


def skillformer_indices(clip_len: int, rate: int, seg_len: int, end_idx: int) -> np.ndarray:
    """EdoWhite/SkillFormer's frame choice (``sample_frame_indices``), step by step, with the
    end index its ``np.random.randint(clip_len * rate, seg_len)`` drew given instead (a video
    too short for the window always ends at its last frame)."""
    converted_len = clip_len * rate
    if seg_len <= converted_len:
        end_idx = seg_len - 1
    assert min(converted_len, seg_len - 1) <= end_idx <= seg_len - 1
    start_idx = max(end_idx - converted_len, 0)
    positions = np.linspace(start_idx, end_idx, num=clip_len)
    return np.clip(positions, start_idx, end_idx - 1).astype(np.int64)


SKILLFORMER_16 = SamplingConfig("skillformer-windows", frames=16, clips=1, stride=4)


@pytest.mark.parametrize("num_frames", [65, 66, 67, 100, 301, 1001, 5400])
def test_skillformer_windows_are_skillformers_frame_indices(num_frames: int) -> None:
    row = sample_indices(num_frames, SKILLFORMER_16, key="take/ego").indices[0]
    start = int(row[0])
    assert 0 <= start <= num_frames - 1 - 64, "the window fits the video"
    np.testing.assert_array_equal(row, skillformer_indices(16, 4, num_frames, start + 64))
    # np.linspace(start, start + 64, 16) cast to int; SkillFormer clips its end to start + 63
    linspace = np.linspace(start, start + 64, 16).astype(int)
    np.testing.assert_array_equal(row[:-1], linspace[:-1])
    assert row[-1] == start + 63
    assert set(np.diff(row).tolist()) == {4, 5}  # not a fixed stride of 4
    windows = sample_indices(num_frames, SamplingConfig("windows", frames=16, stride=4), "take/ego")
    assert set(np.diff(windows.indices[0]).tolist()) == {4}


def test_skillformer_windows_are_centred_or_drawn_over_every_start_that_fits() -> None:
    centred = sample_indices(300, SKILLFORMER_16, key="x").indices[0]
    assert abs((centred[0] + centred[-1]) / 2 - 300 / 2) <= 2
    cfg = SamplingConfig(**{**SKILLFORMER_16.to_dict(), "jitter": True})
    starts = {int(sample_indices(70, cfg, key=f"take{i}/ego").indices[0, 0]) for i in range(300)}
    assert starts == set(range(70 - 64)), "SkillFormer draws its start from 0 .. n - 1 - T * 4"
    for key in ("a", "b", "c"):
        row = sample_indices(70, cfg, key=key).indices[0]
        np.testing.assert_array_equal(row, skillformer_indices(16, 4, 70, int(row[0]) + 64))


@pytest.mark.parametrize("num_frames", [17, 20, 40, 64])
def test_a_video_too_short_for_the_window_gets_skillformers_own_rule(num_frames: int) -> None:
    sampled = sample_indices(num_frames, SKILLFORMER_16, key="x")
    expected = skillformer_indices(16, 4, num_frames, num_frames - 1)
    assert sampled.indices.tolist() == [expected.tolist()] and sampled.padded == 0
    assert len(set(expected.tolist())) == 16  # distinct frames, the last one left out


def test_skillformer_windows_spread_k_clips_inside_the_video() -> None:
    sampled = sample_indices(300, CONFIGS["skillformer"], key="x").indices
    starts = sampled[:, 0]
    assert np.all(np.diff(starts) > 0) and sampled.max() <= 299
    for row in sampled:
        np.testing.assert_array_equal(row, skillformer_indices(8, 4, 300, int(row[0]) + 32))


def test_the_two_window_placements_are_different_provenance() -> None:
    from skill.pipeline.extract_config import ExtractConfig

    def sampling(strategy: str) -> dict:
        cfg = ExtractConfig(manifest="m.jsonl", store="s.zarr", strategy=strategy, stride=4)
        return cfg.sampling.to_dict()

    ours, theirs = sampling("windows"), sampling("skillformer-windows")
    assert ours != theirs and theirs["strategy"] == "skillformer-windows"
    assert SamplingConfig.from_dict(theirs) == SamplingConfig(**theirs)
    with pytest.raises(ConfigError, match="--sampling must be one of .*skillformer-windows"):
        sampling("linspace")
