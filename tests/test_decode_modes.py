"""The two sampling modes against a full sequential decode: exact mode (which skips
non-reference frames it does not need) gives frame for frame the pixels and positions of
decoding every frame in order; keyframe mode gives the frames at the nearest keyframes, or,
when the container's keyframe flags cannot be trusted, falls back to exact decoding with a
note, never to a frame at a wrong position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skill.errors import ConfigError
from skill.pipeline.decode.frames import to_clip_frame
from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.index import probe, probe_index
from skill.pipeline.decode.view import decode_view
from skill.pipeline.extract_config import ExtractConfig
from skill.pipeline.sampling import SamplingConfig, sample_indices, snap_to_keyframes
from tests.test_decode import record_decoded_frames

GEOMETRY = FrameGeometry(48, 48, 64)
FRAMES = 150
KEYINT = 25  # six keyframe intervals


def _textured_video(path: Path, fmt: str | None = None, codec: str = "libx264") -> None:
    """96x64 at 30 fps: a panning random texture with a moving square, so that P and B frames
    carry real motion and residuals (a wrong reference would change pixels)."""
    import av

    rng = np.random.default_rng(3)
    texture = rng.integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        if codec == "libx264":
            stream.options = {"x264-params": f"keyint={KEYINT}:min-keyint={KEYINT}:bframes=3"}
        else:
            stream.options = {"g": str(KEYINT), "bf": "2"}
        for i in range(FRAMES):
            frame = np.roll(texture, shift=(i // 3, i), axis=(0, 1)).copy()
            frame[(i * 2) % 40 : (i * 2) % 40 + 16, (i * 3) % 70 : (i * 3) % 70 + 16] = 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _flag_every_packet_as_keyframe(source: Path, target: Path) -> None:
    """The same stream in a container whose index calls every frame a keyframe (MPEG-4
    part 2 in MP4: FFmpeg keeps the container's flags; for H.264 it re-derives them from the
    bitstream)."""
    import av

    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        stream_in = inp.streams.video[0]
        stream_out = out.add_stream_from_template(stream_in)
        for packet in inp.demux(stream_in):
            if packet.size == 0:
                continue
            packet.is_keyframe = True
            packet.stream = stream_out
            out.mux(packet)


def _every_frame_in_order(path: Path) -> np.ndarray:
    """(FRAMES, 48, 64, 3): every frame decoded from the start without seeking or skipping,
    position k = k-th frame out, resized and cropped like decode_view does."""
    import av

    info = probe(path)
    size = GEOMETRY.resized_size(info.width, info.height)
    with av.open(str(path)) as container:
        frames = [
            to_clip_frame(f.to_ndarray(format="rgb24"), 0, size, GEOMETRY)
            for f in container.decode(video=0)
        ]
    return np.stack(frames)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("modes")
    h264 = folder / "h264.mp4"
    _textured_video(h264)
    mpeg4 = folder / "mpeg4.mp4"
    _textured_video(mpeg4, codec="mpeg4")
    all_key = folder / "all_key.mp4"
    _flag_every_packet_as_keyframe(mpeg4, all_key)
    avi = folder / "mpeg4.avi"
    _textured_video(avi, fmt="avi", codec="mpeg4")
    return {"h264": h264, "all_key": all_key, "avi": avi}


@pytest.fixture(scope="module")
def reference(videos) -> np.ndarray:
    return _every_frame_in_order(videos["h264"])


SAMPLINGS = [
    SamplingConfig("uniform", frames=16),
    SamplingConfig("uniform", frames=7, clips=3),
    SamplingConfig("windows", frames=16, stride=4),
    SamplingConfig("segments", frames=8, n_segments=4, segment_len=2, jitter=True, seed=2),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: f"{s.strategy}{s.frames}x{s.clips}")
def test_exact_mode_is_a_full_sequential_decode_frame_for_frame(
    videos, reference, sampling: SamplingConfig, threads: int
) -> None:
    view = decode_view(videos["h264"], sampling, "k", GEOMETRY, backend="pyav", threads=threads)
    expected = sample_indices(FRAMES, sampling, "k").indices
    np.testing.assert_array_equal(view.indices, expected)
    np.testing.assert_array_equal(view.frames, reference[view.indices])
    np.testing.assert_allclose(view.timestamps, view.indices / 30, atol=1e-6)
    assert view.note == ""


def test_exact_mode_skips_non_reference_frames_it_does_not_need(videos, monkeypatch) -> None:
    decoded = record_decoded_frames(monkeypatch)
    sampling = SamplingConfig("uniform", frames=6)
    view = decode_view(videos["h264"], sampling, "k", GEOMETRY, backend="pyav")
    keys = probe_index(str(videos["h264"]))[1].key_positions
    # Without skipping, each wanted frame costs the frames from its keyframe up to it.
    from_keyframes = sum(int(i) - int(keys[keys <= i].max()) + 1 for i in view.indices[0])
    assert len(decoded) < from_keyframes


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: f"{s.strategy}{s.frames}x{s.clips}")
def test_keyframe_mode_gives_the_frames_at_the_nearest_keyframes(
    videos, reference, sampling: SamplingConfig
) -> None:
    snapping = SamplingConfig(**{**sampling.to_dict(), "snap": "keyframe"})
    view = decode_view(videos["h264"], snapping, "k", GEOMETRY)
    keys = probe_index(str(videos["h264"]))[1].key_positions
    assert len(keys) == FRAMES // KEYINT
    exact = sample_indices(FRAMES, sampling, "k").indices
    np.testing.assert_array_equal(view.indices, snap_to_keyframes(exact, keys))
    assert np.isin(view.indices, keys).all()
    # Nearest: no keyframe is closer to the unsnapped position than the chosen one.
    distance = np.abs(exact[..., None] - keys).min(axis=-1)
    np.testing.assert_array_equal(np.abs(view.indices - exact), distance)
    np.testing.assert_array_equal(view.frames, reference[view.indices])
    np.testing.assert_allclose(view.timestamps, view.indices / 30, atol=1e-6)
    assert (view.note, view.backend) == ("", "pyav")


def test_keyframe_flags_on_every_frame_fall_back_to_exact_decoding(videos) -> None:
    keys = probe_index(str(videos["all_key"]))[1].key_positions
    assert len(keys) == FRAMES  # the index the container gives is wrong
    sampling = SamplingConfig("uniform", frames=8, snap="keyframe")
    view = decode_view(videos["all_key"], sampling, "k", GEOMETRY)
    assert view.note.startswith("keyframe sampling fell back to exact decoding: ")
    expected = sample_indices(FRAMES, sampling, "k").indices
    np.testing.assert_array_equal(view.indices, expected)
    every_frame = _every_frame_in_order(videos["all_key"])
    np.testing.assert_array_equal(view.frames, every_frame[expected])


def test_timestamps_that_cannot_locate_keyframes_fall_back_to_exact_decoding(videos) -> None:
    sampling = SamplingConfig("uniform", frames=8, snap="keyframe")
    view = decode_view(videos["avi"], sampling, "k", GEOMETRY)
    assert "timestamps cannot identify frames" in view.note
    exact = decode_view(videos["avi"], SamplingConfig("uniform", frames=8), "k", GEOMETRY)
    np.testing.assert_array_equal(view.indices, exact.indices)
    np.testing.assert_array_equal(view.frames, exact.frames)


def test_snap_rounds_to_the_nearest_keyframe_ties_to_the_earlier() -> None:
    keys = np.array([0, 10, 30])
    got = snap_to_keyframes(np.array([[0, 4, 5, 6, 19, 20, 21, 99]]), keys)
    assert got.tolist() == [[0, 0, 0, 10, 10, 10, 30, 30]]
    with pytest.raises(ValueError, match="at least one keyframe"):
        snap_to_keyframes(np.array([1]), np.array([], dtype=np.int64))


def test_snap_is_a_sampling_setting_recorded_only_when_not_exact() -> None:
    keyframe = ExtractConfig(manifest="m", store="s", snap="keyframe").sampling
    exact = ExtractConfig(manifest="m", store="s").sampling
    assert keyframe.to_dict()["snap"] == "keyframe"
    assert "snap" not in exact.to_dict()  # equal to the records of stores made before it
    assert SamplingConfig.from_dict(keyframe.to_dict()) == keyframe
    assert SamplingConfig.from_dict(exact.to_dict()) == exact
    with pytest.raises(ConfigError, match="--snap must be one of exact, keyframe"):
        ExtractConfig(manifest="m", store="s", snap="nearest")
    with pytest.raises(ValueError, match="sampling snap"):
        SamplingConfig(snap="sometimes")


def test_a_keyframe_store_refuses_exact_settings_and_keeps_its_notes(videos, tmp_path) -> None:
    """Keyframe mode is in the store's provenance (an exact run cannot append to it), its
    stored indices are the snapped ones, and a view that fell back says so in view_note."""
    from skill.cache.info import store_summary
    from skill.cache.store import TokenStore
    from skill.pipeline.extract import run_extract
    from skill.pipeline.manifest import write_manifest
    from skill.pipeline.takes import Take
    from tests.extract_helpers import extract_config, invoke_cli

    manifest = tmp_path / "takes.jsonl"
    takes = [
        Take("t0", {"ego": str(videos["h264"]), "exo1": str(videos["all_key"])}, "Novice"),
        Take("t1", {"ego": str(videos["h264"]), "exo1": str(videos["h264"])}, "Late Expert"),
    ]
    write_manifest(manifest, takes)
    store = tmp_path / "key.zarr"
    summary = run_extract(extract_config(manifest, store, snap="keyframe"))
    assert (summary.completed, summary.failed, summary.failed_views) == (2, 0, 0)
    opened = TokenStore.open(store)
    assert opened.provenance["sampling"]["snap"] == "keyframe"
    keys = probe_index(str(videos["h264"]))[1].key_positions
    index, notes = opened.frame_index(), opened.view_notes()
    assert np.isin(index[:, 0], keys).all() and np.isin(index[1, 1], keys).all()
    assert notes[0, 1].startswith("keyframe sampling fell back to exact decoding")
    assert (notes[0, 0], notes[1, 0], notes[1, 1]) == ("", "", "")
    assert [n["view"] for n in store_summary(store)["notes"]] == ["exo1"]
    code, output = invoke_cli(
        "extract", str(manifest), "--store", str(store), "--backbone", "tiny-timesformer",
        "--frames", "4", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert code == 2, output
    assert 'sampling.snap: store "keyframe" vs requested null' in output


@pytest.mark.parametrize("backend", [("decord", "pyav"), "auto", "pyav"])
def test_exact_mode_does_not_trust_keyframe_flags_on_every_frame(videos, backend) -> None:
    """Seeking to a frame the container wrongly calls a keyframe would give garbage: decord
    is not used, and PyAV decodes from the start once a seek lands on a non-keyframe."""
    sampling = SamplingConfig("uniform", frames=8)
    view = decode_view(videos["all_key"], sampling, "k", GEOMETRY, backend=backend)
    assert view.backend == "pyav"
    if backend == ("decord", "pyav"):
        assert "flagged a keyframe" in view.fallback_reason
    expected = sample_indices(FRAMES, sampling, "k").indices
    np.testing.assert_array_equal(view.indices, expected)
    np.testing.assert_array_equal(view.frames, _every_frame_in_order(videos["all_key"])[expected])


def test_extract_help_documents_the_keyframe_mode() -> None:
    from tests.extract_helpers import invoke_cli

    code, output = invoke_cli("extract", "--help")
    assert code == 0, output
    output = " ".join(output.split())
    assert "--snap" in output and "nearest keyframe" in output and "the store notes it" in output
