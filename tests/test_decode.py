"""Decoding real (and some broken) videos: every file gives a valid clip or a readable reason."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import skill.pipeline.decode.pyav_reader as pyav_reader
from skill.pipeline.decode.errors import DecodeError
from skill.pipeline.decode.frames import centre_crop
from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.index import probe, probe_index
from skill.pipeline.decode.pool import DecodePool
from skill.pipeline.decode.view import DecodedView, decode_view
from skill.pipeline.sampling import SamplingConfig

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
needs_media = pytest.mark.skipif(
    not MEDIA.is_dir(), reason=f"real media corpus not found at {MEDIA}"
)

SAMPLING = SamplingConfig("uniform", frames=8, clips=2)
GEOMETRY = FrameGeometry(shortest_edge=40, crop_height=32, crop_width=36)
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".webm", ".avi", ".3gp", ".mp3"}

# Files that must fail, and a piece of the reason each must give.
EXPECTED_FAILURES = {
    "decord__corrupted.mp4": "corrupt bitstream",
    "moviepy__result.webm": "empty file (0 bytes)",
    "mp4parse__short-cenc.mp4": "encrypted",
    "mp4parse__sine-3s-xhe-aac-44khz-mono.mp4": "no video stream",
    "torchcodec__nasa_13013.mp4.audio.mp3": "no video stream",
    "mp4parse__chunk_out_of_range.mp4": "unreadable container",
    "mp4parse__zero_empty_stsc.mp4": "truncated",
}


def _media_files() -> list[Path]:
    files = [*MEDIA.glob("*"), *MEDIA.glob("multiview/*")]
    return sorted(f for f in files if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)


@pytest.fixture(scope="module", params=["exact", "keyframe"])
def snap(request) -> str:
    """The corpus runs in every sampling mode (``SamplingConfig.snap``)."""
    return request.param


@pytest.fixture(scope="module")
def corpus_results(snap: str) -> dict[str, tuple[DecodedView | None, str | None]]:
    """Every media file through decode_view in a DecodePool (worker processes, timeout)."""
    if not MEDIA.is_dir():
        pytest.skip(f"real media corpus not found at {MEDIA}")
    sampling = SamplingConfig(**{**SAMPLING.to_dict(), "snap": snap})
    jobs = [(f.name, (str(f), sampling, f.name, GEOMETRY)) for f in _media_files()]
    with DecodePool(num_workers=2, timeout_s=120) as pool:
        results = {job_id: (view, error) for job_id, view, error in pool.imap_unordered(jobs)}
        assert pool.stats.timed_out == 0 and pool.stats.crashed == 0
    assert set(results) == {name for name, _ in jobs}
    return results


@needs_media
def test_every_file_gives_a_valid_clip_or_the_expected_reason(corpus_results, snap: str) -> None:
    assert len(corpus_results) >= 35
    expected_failures = dict(EXPECTED_FAILURES)
    if snap == "keyframe":
        # Its damage lies after its only keyframe, frame 0, the one frame keyframe mode reads
        # (frames not decoded are not checked: docs/decoding.md, "Corrupt data"): every
        # position snaps to frame 0.
        del expected_failures["decord__corrupted.mp4"]
        assert (corpus_results["decord__corrupted.mp4"][0].indices == 0).all()
    for name, (view, error) in corpus_results.items():
        if name in expected_failures:
            assert view is None, f"{name} should fail"
            assert expected_failures[name] in error, f"{name}: {error}"
            continue
        assert error is None, f"{name} failed: {error}"
        assert view.frames.shape == (2, 8, 32, 36, 3) and view.frames.dtype == np.uint8
        assert view.indices.shape == (2, 8) and view.indices.dtype == np.int64
        assert np.all((view.indices >= 0) & (view.indices < view.info.num_frames))
        assert view.timestamps.shape == (2, 8) and np.all(np.isfinite(view.timestamps))
        assert np.all(np.diff(view.timestamps, axis=1) >= 0)
        assert view.backend in ("decord", "pyav")
        if snap == "exact":  # a note only where a later decoder of the order made the frames
            fallback = f"decoded by {view.backend} ({view.fallback_reason})"
            assert view.note == (fallback if view.fallback_reason else ""), name
        elif not view.note:  # keyframe mode: every frame is a keyframe of the index
            keys = probe_index(view.info.path)[1].key_positions
            assert np.isin(view.indices, keys).all(), name


@needs_media
def test_keyframe_mode_frames_are_the_exact_frames_at_those_positions(
    corpus_results, snap: str
) -> None:
    """Each keyframe-mode clip equals exact decoding (PyAV, from the keyframe before) of the
    same positions: snapping changes which frames, never what a frame holds."""
    if snap != "keyframe":
        pytest.skip("keyframe mode only")
    for name, (view, _) in corpus_results.items():
        if view is None or view.note:
            continue
        path = view.info.path
        info, index = probe_index(path)
        wanted = np.unique(view.indices)
        exact = pyav_reader.read_pyav(path, info, index, wanted, GEOMETRY, 1)
        expected = np.stack([exact[int(i)] for i in view.indices.reshape(-1)])
        np.testing.assert_array_equal(view.frames.reshape(expected.shape), expected, err_msg=name)


@needs_media
def test_failure_reasons_are_readable(corpus_results) -> None:
    for name in EXPECTED_FAILURES:
        reason = corpus_results[name][1]
        if reason is None:  # decord__corrupted.mp4 in keyframe mode, see above
            continue
        assert "\n" not in reason and len(reason) < 300, reason
        assert "github/workspace" not in reason  # no decord C++ log noise


@needs_media
def test_av1_decodes_through_the_pyav_fallback() -> None:
    path = MEDIA / "torchcodec__av1_video.mkv"
    view = decode_view(path, SAMPLING, path.name, GEOMETRY, backend=("decord", "pyav"))
    assert view.backend == "pyav"
    if snap == "exact":  # keyframe mode reads with PyAV first (docs/decoding.md)
        assert view.fallback_reason.startswith("decord: cannot open")
    assert view.info.num_frames == 125


@needs_media
def test_two_stream_file_uses_the_stream_with_most_pixels() -> None:
    info = probe(MEDIA / "torchcodec__nasa_13013.mp4")
    assert info.num_video_streams == 2
    assert (info.stream_index, info.width, info.height, info.num_frames) == (3, 480, 270, 390)
    by_decord = decode_view(info.path, SAMPLING, "nasa", GEOMETRY, backend="decord")
    by_pyav = decode_view(info.path, SAMPLING, "nasa", GEOMETRY, backend="pyav")
    np.testing.assert_array_equal(by_decord.frames, by_pyav.frames)


@needs_media
@pytest.mark.parametrize(
    "name",
    [
        "decord__video_0.mov",
        "decord__video_90.mov",
        "decord__video_180.mov",
        "decord__video_270.mov",
        "mp4parse__video_rotation_90.mp4",
    ],
)
def test_rotation_is_applied_the_same_by_both_backends(name: str) -> None:
    path = MEDIA / name
    info = probe(path)
    expected_rotation = int(name.split("_")[-1].split(".")[0])
    assert info.rotation == expected_rotation
    portrait = expected_rotation in (90, 270)
    assert (info.height > info.width) == portrait
    # Non-square crop of the whole display frame: a wrong orientation changes the content.
    width, height = FrameGeometry(48, 1, 1).resized_size(info.width, info.height)
    geometry = FrameGeometry(48, height, width)
    by_decord = decode_view(path, SamplingConfig(frames=3), "r", geometry, backend="decord")
    by_pyav = decode_view(path, SamplingConfig(frames=3), "r", geometry, backend="pyav")
    assert by_decord.frames.shape == by_pyav.frames.shape == (1, 3, height, width, 3)
    difference = np.abs(by_decord.frames.astype(int) - by_pyav.frames.astype(int)).mean()
    assert difference < 1.0
    if expected_rotation == 180:  # same shape either way: check it is not left unrotated
        turned = np.rot90(by_pyav.frames, 2, axes=(2, 3)).astype(int)
        assert np.abs(by_decord.frames.astype(int) - turned).mean() > 10 * (difference + 1)


@needs_media
def test_non_square_pixels_are_resized_to_the_display_aspect() -> None:
    path = MEDIA / "mmaction2__demo.mp4"
    info = probe(path)
    assert info.sar == pytest.approx(64 / 51)
    assert (info.width, info.height) == (427, 256)  # coded 340x256
    width, height = FrameGeometry(64, 1, 1).resized_size(info.width, info.height)
    assert (width, height) == (106, 64)
    view = decode_view(path, SamplingConfig(frames=1), "sar", FrameGeometry(64, 64, 106))
    assert view.frames.shape == (1, 1, 64, 106, 3)


@needs_media
def test_a_three_frame_video_is_padded_with_its_last_frame() -> None:
    view = decode_view(MEDIA / "sleap__small_robot_3_frame.mp4", SAMPLING, "s", GEOMETRY)
    assert view.padded == 5
    assert view.indices.tolist() == [[0, 1, 2, 2, 2, 2, 2, 2]] * 2
    for position in range(3, 8):
        np.testing.assert_array_equal(view.frames[:, position], view.frames[:, 2])
    assert not np.array_equal(view.frames[0, 0], view.frames[0, 2])


@needs_media
def test_variable_frame_rate_timestamps_are_the_real_ones() -> None:
    path = MEDIA / "torchcodec__var_fps_video.mp4"
    view = decode_view(path, SamplingConfig(frames=300), "v", FrameGeometry(8, 8, 8))
    assert view.indices.tolist() == [list(range(300))]
    steps = np.diff(view.timestamps[0])
    assert np.all(steps > 0)
    assert steps.max() > 1.5 * steps.min(), "a variable frame rate must show in the timestamps"
    by_pyav = decode_view(path, SamplingConfig(frames=300), "v", FrameGeometry(8, 8, 8), "pyav")
    np.testing.assert_array_equal(view.timestamps, by_pyav.timestamps)


def record_decoded_frames(monkeypatch) -> list[int]:
    """The pts of every frame PyAV decodes from now on, appended as they are decoded."""
    decoded: list[int] = []
    original = pyav_reader._decoded_frames

    def counting(*args, **kwargs):
        for frame in original(*args, **kwargs):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(pyav_reader, "_decoded_frames", counting)
    return decoded


@needs_media
@pytest.mark.parametrize(
    ("sampling", "expected", "at_most"),
    [
        (SamplingConfig("windows", frames=4, stride=1), [[148, 149, 150, 151]], 100),
        (SamplingConfig("uniform", frames=4), [[37, 112, 187, 262]], 200),
    ],
)
def test_pyav_seeks_instead_of_decoding_the_whole_video(
    monkeypatch, sampling: SamplingConfig, expected: list, at_most: int
) -> None:
    decoded = record_decoded_frames(monkeypatch)
    # 300 frames, a keyframe every 60: each wanted frame needs at most its own GOP.
    view = decode_view(MEDIA / "mp4parse__white.mp4", sampling, "w", GEOMETRY, backend="pyav")
    assert view.indices.tolist() == expected
    assert len(decoded) <= at_most, f"decoded {len(decoded)} of 300 frames for 4 needed"


# ----------------------------------------------------------------------------- synthetic


def _brightness_video(path: Path, codec: str, options: dict[str, str], fmt: str | None) -> None:
    """64x48, 60 frames at 30 fps; frame i is uniformly grey with value 20 + 3 * i."""
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = options
        for i in range(60):
            grey = np.full((48, 64, 3), 20 + 3 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def synthetic_videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("synthetic")
    avi = folder / "mpeg4.avi"  # AVI stores decode times: frames must be counted
    _brightness_video(avi, "mpeg4", {"g": "12", "bf": "2", "qmin": "1", "qmax": "1"}, "avi")
    return {"avi": avi}


SYNTHETIC_SAMPLINGS = [
    SamplingConfig("uniform", frames=16, clips=2),
    SamplingConfig("windows", frames=5, clips=4, stride=3),
    SamplingConfig("segments", frames=6, n_segments=3, segment_len=2, jitter=True, seed=5),
]


@pytest.mark.parametrize("backend", ["pyav", "auto"])
@pytest.mark.parametrize("sampling", SYNTHETIC_SAMPLINGS, ids=lambda s: s.strategy)
def test_each_decoded_avi_frame_is_the_frame_at_its_index(
    synthetic_videos, backend: str, sampling: SamplingConfig
) -> None:
    """AVI: positions verified, not counted (every decoder on H.264, and on AVI alone:
    tests/test_decode_registry.py)."""
    view = decode_view(
        synthetic_videos["avi"], sampling, "synthetic", FrameGeometry(48, 48, 64), backend
    )
    assert view.backend == "pyav"
    brightness = view.frames.reshape(*view.indices.shape, -1).mean(axis=-1)
    np.testing.assert_allclose(brightness, 20 + 3 * view.indices, atol=1.4)
    np.testing.assert_allclose(
        np.diff(view.timestamps, axis=-1), np.diff(view.indices, axis=-1) / 30, atol=1e-6
    )


def test_decord_is_not_trusted_with_avi_timestamps(synthetic_videos) -> None:
    with pytest.raises(DecodeError, match="decord: timestamps cannot identify frames"):
        decode_view(synthetic_videos["avi"], SAMPLING, "a", GEOMETRY, backend="decord")


# ----------------------------------------------------------------------------- errors, geometry


def test_missing_file_and_bad_backend(tmp_path) -> None:
    with pytest.raises(DecodeError, match="file not found"):
        decode_view(tmp_path / "none.mp4", SAMPLING, "x", GEOMETRY)
    with pytest.raises(ValueError, match=r"decoders must be names from .*not \['opencv'\]"):
        decode_view(tmp_path / "none.mp4", SAMPLING, "x", GEOMETRY, backend="opencv")
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    with pytest.raises(DecodeError, match="unreadable container"):
        probe(not_video)


@pytest.mark.parametrize(
    "load, torch_expected",
    [
        # an ordinary process: decord only after torch (decord first can freeze a DataLoader)
        ("skill.pipeline.decode.decord_reader._import_decord()", True),
        # a decode worker never runs torch and starts without it
        ("skill.pipeline.decode.registry.preload_decoders()", False),
    ],
)
def test_decord_is_imported_lazily_and_after_torch(load: str, torch_expected: bool) -> None:
    check = (
        "import sys, skill.pipeline.decode.view, skill.pipeline.decode.pool\n"
        "assert 'decord' not in sys.modules and 'torch' not in sys.modules, 'eager import'\n"
        f"{load}\n"
        "names = list(sys.modules)\n"
        f"assert ('torch' in names) == {torch_expected}, 'torch import'\n"
        "assert 'decord' not in names or 'torch' not in names"
        " or names.index('torch') < names.index('decord'), names\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", check], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_decode_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(DecodeError("/v/a.mp4", "no video stream")))
    assert (error.path, error.reason, str(error)) == (
        "/v/a.mp4",
        "no video stream",
        "/v/a.mp4: no video stream",
    )


@pytest.mark.parametrize(
    ("size", "expected"), [((640, 480), (298, 224)), ((480, 640), (224, 298)), ((1, 1), (224, 224))]
)
def test_resize_keeps_the_display_aspect_like_transformers(size, expected) -> None:
    assert FrameGeometry(224, 224, 224).resized_size(*size) == expected


def test_centre_crop_pads_small_frames_with_zeros() -> None:
    image = np.full((4, 6, 3), 200, np.uint8)
    crop = centre_crop(image, 6, 4)
    assert crop.shape == (6, 4, 3)
    assert crop[0].max() == 0 and crop[-1].max() == 0 and crop[1:5].min() == 200


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shortest_edge": 0, "crop_height": 8, "crop_width": 8},
        {"shortest_edge": 8, "crop_height": 8, "crop_width": 8, "resample": "cubic-ish"},
    ],
)
def test_bad_geometry_is_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        FrameGeometry(**kwargs)
