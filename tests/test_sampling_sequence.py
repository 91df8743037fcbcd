"""Ordered clip sequences: `sequence` and `stride` sampling, the clip axis they give, clip
times, and the settings and videos they refuse (one line each, naming the setting)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from skill.errors import ConfigError
from skill.pipeline.sampling import (
    STRATEGIES,
    ClipsRefused,
    SamplingConfig,
    clip_axis,
    clip_bounds,
    sample_indices,
)
from tests.extract_helpers import extract_config

SEQUENCE = SamplingConfig("sequence", frames=8, clips=6)
STRIDE = SamplingConfig("stride", frames=4, clips=10, stride=2, clip_every=12)


def stride(**overrides) -> SamplingConfig:
    return SamplingConfig(**{**STRIDE.to_dict(), **overrides})


# ---- sequence --------------------------------------------------------------------------
@pytest.mark.parametrize("jitter", [False, True])
@pytest.mark.parametrize("num_frames", [8, 47, 48, 49, 300, 5401])
def test_sequence_clips_are_in_order_and_cover_the_whole_video(num_frames: int, jitter: bool):
    cfg = SamplingConfig("sequence", frames=8, clips=6, jitter=jitter)
    indices = sample_indices(num_frames, cfg, key="take/ego").indices
    assert indices.shape == (6, 8) and indices.dtype == np.int64
    flat = indices.reshape(-1)
    assert np.all(np.diff(flat) >= 0), "clips and their frames must be in order"
    assert flat.min() >= 0 and flat.max() <= num_frames - 1
    # each of the K * T positions lies in its own equal bin [i, i + 1) * n / (K * T)
    edges = np.arange(len(flat) + 1) * num_frames / len(flat)
    assert np.all(flat >= np.floor(edges[:-1])) and np.all(flat <= np.ceil(edges[1:]) - 1)


def test_a_video_of_exactly_k_times_t_frames_gives_consecutive_frames():
    indices = sample_indices(48, SEQUENCE, key="x").indices
    np.testing.assert_array_equal(indices, np.arange(48).reshape(6, 8))


def test_clip_k_lies_in_the_k_th_part_of_the_video():
    indices = sample_indices(6000, SEQUENCE, key="x").indices
    for k, row in enumerate(indices):
        assert 1000 * k <= row[0] and row[-1] < 1000 * (k + 1)


def test_sequence_jitter_depends_on_seed_and_key_and_repeats():
    cfg = SamplingConfig("sequence", frames=8, clips=6, jitter=True, seed=1)
    first = sample_indices(5000, cfg, key="a").indices
    np.testing.assert_array_equal(first, sample_indices(5000, cfg, key="a").indices)
    assert not np.array_equal(first, sample_indices(5000, cfg, key="b").indices)
    other = SamplingConfig(**{**cfg.to_dict(), "seed": 2})
    assert not np.array_equal(first, sample_indices(5000, other, key="a").indices)


def test_a_sequence_clip_longer_than_the_video_is_refused_naming_frames():
    with pytest.raises(ClipsRefused) as refused:
        sample_indices(7, SEQUENCE, key="x")
    assert refused.value.reason == "a clip of --frames 8 is longer than the video (7 frames)"


# ---- stride ----------------------------------------------------------------------------
@pytest.mark.parametrize(("num_frames", "expected"), [(7, 1), (18, 1), (19, 2), (100, 8)])
def test_stride_starts_a_clip_every_n_frames_as_many_as_fit(num_frames: int, expected: int):
    indices = sample_indices(num_frames, STRIDE, key="x").indices  # span 7, a clip every 12
    assert indices.shape == (expected, 4)
    np.testing.assert_array_equal(indices[:, 0], 12 * np.arange(expected))
    assert np.all(np.diff(indices, axis=1) == 2)
    assert indices.max() <= num_frames - 1
    assert num_frames - 1 - indices[-1, -1] < 12, "one more clip would have fitted"


def test_stride_in_seconds_follows_the_frame_rate():
    cfg = stride(clip_every=0.5, clip_every_unit="seconds")
    indices = sample_indices(120, cfg, key="x", fps=30.0).indices
    np.testing.assert_array_equal(indices[:, 0], 15 * np.arange(8))
    at_25 = sample_indices(120, cfg, key="x", fps=25.0).indices
    np.testing.assert_array_equal(at_25[:, 0], np.floor(12.5 * np.arange(10) + 0.5))


@pytest.mark.parametrize(
    ("cfg", "num_frames", "fps", "reason"),
    [
        (STRIDE, 6, 30.0,
         "a clip of --frames 4 at --stride 2 spans 7 frames, longer than the video (6 frames)"),
        (stride(clips=3), 100, 30.0,
         "stride sampling needs 8 clips (--clip-every 12 frames over 100 frames), more than "
         "--clips 3"),
        (stride(clip_every=0.01, clip_every_unit="seconds"), 100, 30.0,
         "--clip-every 0.01 seconds is less than one frame at the video's 30 fps: it gives no "
         "clip of its own (use a longer --clip-every)"),
        (stride(clip_every=1, clip_every_unit="seconds"), 100, None,
         "--clip-every 1 seconds needs the video's frame rate, which it does not state"),
    ],
    ids=["span-longer-than-video", "more-clips-than-k", "no-clip-of-its-own", "no-frame-rate"],
)  # fmt: skip
def test_stride_refuses_a_video_it_cannot_cover_in_one_line(cfg, num_frames, fps, reason):
    with pytest.raises(ClipsRefused) as refused:
        sample_indices(num_frames, cfg, key="take/ego", fps=fps)
    assert refused.value.reason == reason and "\n" not in reason


def test_a_refusal_survives_the_trip_from_a_decode_worker():
    # worker processes send a job's exception back pickled; its reason must come with it
    again = pickle.loads(pickle.dumps(ClipsRefused("a reason")))
    assert isinstance(again, ClipsRefused) and again.reason == "a reason"


# ---- the clip axis, clip times, the record ---------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_clip_axis_is_a_sequence_only_for_ordered_strategies(strategy: str):
    extra = {"sequence": {}, "stride": {"clip_every": 4}, "segments": {}}.get(strategy, {})
    if strategy == "segments":
        extra = {"n_segments": 4, "segment_len": 4}
    cfg = SamplingConfig(strategy, **extra)
    assert clip_axis(cfg) == ("sequence" if strategy in ("sequence", "stride") else "samples")


def test_clip_bounds_end_one_frame_after_the_last_frame():
    times = np.arange(48).reshape(6, 8) / 30.0
    bounds = clip_bounds(times, fps=30.0)
    assert bounds.shape == (6, 2)
    np.testing.assert_allclose(bounds[:, 1] - bounds[:, 0], 8 / 30.0)
    np.testing.assert_allclose(bounds[1:, 0], bounds[:-1, 1])  # consecutive clips touch


@pytest.mark.parametrize(
    "cfg", [SEQUENCE, STRIDE, stride(clip_every=1.5, clip_every_unit="seconds")]
)
def test_ordered_configs_round_trip_through_json(cfg: SamplingConfig):
    assert SamplingConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_records_of_other_strategies_do_not_grow_the_stride_fields():
    assert "clip_every" not in SamplingConfig("uniform").to_dict()
    assert "clip_every_unit" not in SEQUENCE.to_dict()
    assert STRIDE.to_dict()["clip_every"] == 12 and isinstance(STRIDE.to_dict()["clip_every"], int)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "uniform", "clip_every": 4}, "only apply to strategy 'stride'"),
        ({"strategy": "sequence", "clip_every_unit": "seconds"}, "only apply to strategy"),
        ({"strategy": "stride"}, "needs clip_every > 0"),
        ({"strategy": "stride", "clip_every": 0}, "needs clip_every > 0"),
        ({"strategy": "stride", "clip_every": 2.5}, "not a whole number of frames"),
        ({"strategy": "stride", "clip_every": 2, "clip_every_unit": "hours"}, "not one of"),
        ({"strategy": "stride", "clip_every": 2, "jitter": True}, "fixed grid"),
    ],
)
def test_conflicting_sampling_settings_are_refused(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


# ---- the extract options ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"strategy": "uniform", "clip_every": 4},
         "--clip-every applies to --sampling stride only, not --sampling uniform"),
        ({"strategy": "sequence", "clip_every": 4, "clip_every_unit": "seconds"},
         "--clip-every and --clip-every-unit apply to --sampling stride only"),
        ({"strategy": "stride"}, "--sampling stride needs --clip-every"),
        ({"strategy": "stride", "clip_every": 2.5}, "--clip-every 2.5 frames is not a whole"),
        ({"strategy": "stride", "clip_every": -1}, "--clip-every must be positive"),
        ({"strategy": "stride", "clip_every": 2, "clip_every_unit": "hours"},
         "--clip-every-unit must be one of frames, seconds"),
        ({"strategy": "stride", "clip_every": 2, "jitter": True}, "--jitter: --sampling stride"),
        ({"strategy": "sequence", "stride": 2}, "sequence sampling has neither"),
    ],
)  # fmt: skip
def test_extract_refuses_conflicting_sampling_options_naming_them(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        extract_config(tmp_path / "m.jsonl", tmp_path / "s.zarr", **overrides)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"strategy": "sequence", "clips": 48, "frames": 8},
         {"strategy": "sequence", "clips": 48, "frames": 8}),
        ({"strategy": "stride", "clips": 20, "clip_every": 2.0, "stride": 1},
         {"strategy": "stride", "clip_every": 2, "clip_every_unit": "frames", "stride": 1}),
        ({"strategy": "stride", "clip_every": 0.5, "clip_every_unit": "seconds"},
         {"clip_every": 0.5, "clip_every_unit": "seconds", "stride": 4}),
    ],
)  # fmt: skip
def test_extract_options_become_the_sampling(tmp_path, overrides, expected):
    sampling = extract_config(tmp_path / "m.jsonl", tmp_path / "s.zarr", **overrides).sampling
    assert expected.items() <= sampling.to_dict().items()


def test_the_extract_command_offers_the_stride_options_with_help():
    from tests.extract_helpers import invoke_cli

    code, output = invoke_cli("extract", "--help")
    assert code == 0
    assert "--clip-every " in output and "--clip-every-unit" in output
    assert "sequence or stride" in output


@pytest.mark.parametrize(
    ("cfg", "words"),
    [
        (SEQUENCE, "sequence, 8 frames a clip, 6 clips a view, fixed positions, exact frames"),
        (stride(clip_every=0.5, clip_every_unit="seconds"),
         "stride, 4 frames a clip at stride 2, a clip every 0.5 seconds, at most 10 clips a "
         "view, fixed positions, exact frames"),
    ],
)  # fmt: skip
def test_info_says_an_ordered_sampling_in_words(cfg: SamplingConfig, words: str):
    from skill.cache.info import sampling_line

    assert sampling_line(cfg.to_dict()) == words
