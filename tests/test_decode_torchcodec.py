"""torchcodec as a decode backend: the same frames, indices and timestamps as PyAV on every
file of the media corpus (or a refusal that passes the file on, or PyAV's failure reason), the
same rules for rotation, streams, VFR and short videos, and the decoder order.

The tests that decode with torchcodec skip when it (or FFmpeg's shared libraries) is
missing: ``pip install -e ".[torchcodec]"`` plus FFmpeg 4-7 (README, "Optional: torchcodec").
The order, fallback and configuration tests run everywhere.
"""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from skill.errors import ConfigError
from skill.pipeline.decode.errors import DecodeError
from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.index import probe_index
from skill.pipeline.decode.pool import DecodePool
from skill.pipeline.decode.registry import DEFAULT_ORDER, backend_order
from skill.pipeline.decode.torchcodec_reader import TorchcodecUnsuitable, available, read_frames
from skill.pipeline.decode.view import decode_view
from skill.pipeline.sampling import SamplingConfig
from tests.test_decode import (
    EXPECTED_FAILURES,
    GEOMETRY,
    MEDIA,
    SAMPLING,
    _brightness_video,
    _media_files,
)

MISSING = available()
needs_torchcodec = pytest.mark.skipif(
    bool(MISSING) or not MEDIA.is_dir(),
    reason=f"torchcodec unusable here: {MISSING}"
    if MISSING
    else f"real media corpus not found at {MEDIA}",
)
# 10-bit files: torchcodec's and PyAV's conversions to 8-bit RGB differ slightly (rounding,
# chroma interpolation); mean absolute difference of the clips measured 2.3 grey levels.
MEAN_TOLERANCE = {"torchcodec__h264_10bits.mp4": 3.0, "torchcodec__h265_10bits.mp4": 3.0}
# Refusals that pass a file on to the next backend instead of decoding it.
REFUSED = {"mmaction2__test.avi": "timestamps cannot identify frames"}


@pytest.fixture(scope="module")
def corpus() -> dict[str, dict[str, tuple]]:
    """Every media file decoded by PyAV and by torchcodec alone, in a DecodePool (worker
    processes, timeout): {name: {backend: (view or None, error or None)}}."""
    jobs = [
        ((f.name, backend), (str(f), SAMPLING, f.name, GEOMETRY), {"backend": backend})
        for f in _media_files()
        for backend in ("pyav", "torchcodec")
    ]
    results: dict[str, dict[str, tuple]] = {}
    with DecodePool(num_workers=2, timeout_s=120) as pool:
        for (name, backend), view, error in pool.imap_unordered(jobs):
            results.setdefault(name, {})[backend] = (view, error)
        assert pool.stats.timed_out == 0 and pool.stats.crashed == 0
    return results


@needs_torchcodec
def test_every_file_gives_pyavs_frames_or_pyavs_failure(corpus) -> None:
    assert len(corpus) >= 35
    for name, by in corpus.items():
        (reference, pyav_error), (view, error) = by["pyav"], by["torchcodec"]
        if name in EXPECTED_FAILURES:
            assert pyav_error and EXPECTED_FAILURES[name] in pyav_error, (name, pyav_error)
            assert view is None and EXPECTED_FAILURES[name] in error, (name, error)
            continue
        if name in REFUSED:
            assert view is None and error.startswith(f"torchcodec: {REFUSED[name]}"), error
            continue
        assert error is None, f"{name}: {error}"
        assert view.backend == "torchcodec" and reference.backend == "pyav"
        np.testing.assert_array_equal(view.indices, reference.indices, err_msg=name)
        np.testing.assert_array_equal(view.timestamps, reference.timestamps, err_msg=name)
        assert view.padded == reference.padded
        assert view.frames.shape == reference.frames.shape == (2, 8, 32, 36, 3)
        difference = np.abs(view.frames.astype(int) - reference.frames.astype(int)).mean()
        assert difference <= MEAN_TOLERANCE.get(name, 0.5), (name, difference)


@needs_torchcodec
def test_a_refused_file_goes_to_the_next_decoder_with_the_reason() -> None:
    path = MEDIA / "mmaction2__test.avi"
    view = decode_view(path, SAMPLING, "a", GEOMETRY, backend=("torchcodec", "pyav"))
    assert view.backend == "pyav"
    assert view.fallback_reason.startswith("torchcodec: timestamps cannot identify frames")
    corrupt = MEDIA / "decord__corrupted.mp4"  # torchcodec errors: PyAV's exact reason decides
    with pytest.raises(DecodeError) as pyav_alone:
        decode_view(corrupt, SAMPLING, "c", GEOMETRY, backend="pyav")
    assert re.search(r"mp4: corrupt bitstream: .* after \d+ decoded frames", str(pyav_alone.value))
    with pytest.raises(DecodeError) as in_order:
        decode_view(corrupt, SAMPLING, "c", GEOMETRY, backend=("torchcodec", "pyav"))
    assert str(in_order.value) == str(pyav_alone.value)


@needs_torchcodec
@pytest.mark.parametrize(
    "name",
    ["decord__video_90.mov", "decord__video_180.mov", "decord__video_270.mov",
     "mp4parse__video_rotation_90.mp4"],
)  # fmt: skip
def test_rotation_is_applied_like_pyav(name: str) -> None:
    info = probe_index(str(MEDIA / name))[0]
    width, height = FrameGeometry(48, 1, 1).resized_size(info.width, info.height)
    geometry = FrameGeometry(48, height, width)  # the whole display frame: orientation shows
    by_torchcodec = decode_view(MEDIA / name, SamplingConfig(frames=3), "r", geometry, "torchcodec")
    by_pyav = decode_view(MEDIA / name, SamplingConfig(frames=3), "r", geometry, "pyav")
    assert by_torchcodec.frames.shape == by_pyav.frames.shape == (1, 3, height, width, 3)
    difference = np.abs(by_torchcodec.frames.astype(int) - by_pyav.frames.astype(int)).mean()
    assert difference < 1.0
    turned = np.rot90(by_pyav.frames, 2, axes=(2, 3)).astype(int)
    assert np.abs(by_torchcodec.frames.astype(int) - turned).mean() > 10 * (difference + 1)


@needs_torchcodec
def test_the_stream_with_most_pixels_vfr_and_short_videos() -> None:
    nasa = decode_view(MEDIA / "torchcodec__nasa_13013.mp4", SAMPLING, "n", GEOMETRY, "torchcodec")
    assert (nasa.info.stream_index, nasa.info.num_frames) == (3, 390)  # not torchcodec's "best"
    vfr_path = MEDIA / "torchcodec__var_fps_video.mp4"
    vfr = decode_view(vfr_path, SAMPLING, "v", GEOMETRY, "torchcodec")
    steps = np.diff(probe_index(str(vfr_path))[1].times_s)
    assert steps.max() - steps.min() > 1e-3  # the file's frame rate really varies
    np.testing.assert_array_equal(
        vfr.timestamps, probe_index(str(vfr_path))[1].times_s[vfr.indices]
    )
    short = decode_view(MEDIA / "sleap__small_robot_3_frame.mp4", SAMPLING, "s", GEOMETRY,
                        "torchcodec")  # fmt: skip
    assert short.padded > 0 and short.indices.max() == 2


@needs_torchcodec
@pytest.mark.parametrize("threads", [1, 0])
def test_each_frame_is_the_frame_at_its_index(tmp_path, threads: int) -> None:
    """B-frames and a keyframe every 12 frames: reordering and seeks, both thread settings."""
    video = tmp_path / "bframes.mp4"
    _brightness_video(video, "libx264", {"x264-params": "keyint=12:bframes=3", "crf": "10"}, None)
    sampling = SamplingConfig("windows", frames=5, clips=4, stride=3)
    view = decode_view(video, sampling, "b", FrameGeometry(48, 48, 64), "torchcodec", threads)
    brightness = view.frames.reshape(*view.indices.shape, -1).mean(axis=-1)
    np.testing.assert_allclose(brightness, 20 + 3 * view.indices, atol=1.4)


@needs_torchcodec
def test_frames_that_are_not_the_indexs_are_refused() -> None:
    """torchcodec's frames carry their timestamps; an index that disagrees refuses them."""
    path = str(MEDIA / "mmaction2__demo.mp4")
    info, index = probe_index(path)
    index.times_s = index.times_s + 1.0 / info.fps  # every frame one position off
    frames = read_frames(path, info, index, np.array([0, 5]), 1, "cpu")
    with pytest.raises(TorchcodecUnsuitable, match="numbers frames differently"):
        list(frames)


@pytest.mark.gpu
@needs_torchcodec
def test_nvdec_gives_the_cpus_frames() -> None:
    """CUDA (NVDEC) path; needs a CUDA build of torchcodec and a GPU (not run here)."""
    path = MEDIA / "mmaction2__demo.mp4"
    on_gpu = decode_view(path, SAMPLING, "g", GEOMETRY, "torchcodec", device="cuda")
    on_cpu = decode_view(path, SAMPLING, "g", GEOMETRY, "torchcodec")
    np.testing.assert_array_equal(on_gpu.indices, on_cpu.indices)
    assert np.abs(on_gpu.frames.astype(int) - on_cpu.frames.astype(int)).mean() < 3.0


# ----------------------------------------------------------------------------- order, config


def test_auto_is_the_measured_order_of_installed_backends() -> None:
    assert backend_order("auto") == DEFAULT_ORDER
    assert set(DEFAULT_ORDER) <= {"decord", "pyav"}  # what the two-command install has
    assert backend_order("torchcodec") == ("torchcodec",)
    assert backend_order(["torchcodec", "pyav", "torchcodec"]) == ("torchcodec", "pyav")
    refused = {"opencv": "names from auto, decord", "": "not none", "auto pyav": "by itself"}
    for bad, message in refused.items():
        with pytest.raises(ValueError, match=message):
            backend_order(bad.split())


@pytest.mark.skipif(not MEDIA.is_dir(), reason=f"real media corpus not found at {MEDIA}")
def test_without_torchcodec_an_order_falls_through_and_alone_it_fails(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # `import torchcodec` raises
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    path = MEDIA / "mmaction2__demo.mp4"
    view = decode_view(path, SAMPLING, "m", GEOMETRY, backend=("torchcodec", "pyav"))
    assert view.backend == "pyav"
    assert view.fallback_reason.startswith("torchcodec: torchcodec is not installed")
    with pytest.raises(DecodeError, match=": torchcodec: torchcodec is not installed"):
        decode_view(path, SAMPLING, "m", GEOMETRY, backend="torchcodec")


def test_extract_config_checks_decoders_and_device(tmp_path) -> None:
    from skill.pipeline.extract_config import ExtractConfig

    def config(**fields):
        return ExtractConfig(manifest=tmp_path / "m.jsonl", store=tmp_path / "s.zarr", **fields)

    assert config().decode_options == {"backend": DEFAULT_ORDER, "device": "cpu"}
    chosen = config(decoders=["torchcodec", "pyav"], decode_device="cuda:1")
    assert chosen.decode_options == {"backend": ("torchcodec", "pyav"), "device": "cuda:1"}
    refused = {
        "opencv": {"decoders": ["opencv"]},
        "auto is an order by itself": {"decoders": ["auto", "pyav"]},
        "decodes with torchcodec only": {"decode_device": "cuda"},
        "cpu, cuda or cuda:N": {"decoders": ["torchcodec"], "decode_device": "gpu"},
    }
    for message, fields in refused.items():
        with pytest.raises(ConfigError, match=message):
            config(**fields)


@needs_torchcodec
def test_extract_with_torchcodec_stores_pyavs_frame_positions(tmp_path) -> None:
    """The --decoders setting reaches the decode workers; the store gets the same indices."""
    from skill.cache.store import TokenStore
    from skill.pipeline.extract import run_extract
    from skill.pipeline.extract_loop import key_of
    from skill.pipeline.manifest import read_takes
    from tests.extract_helpers import extract_config, make_dataset

    manifest = make_dataset(tmp_path / "data", takes=1)
    store = tmp_path / "s.zarr"
    cfg = extract_config(manifest, store, workers=1, decoders=["torchcodec"])
    summary = run_extract(cfg)
    assert summary.completed == 1 and summary.failed_views == 0
    opened = TokenStore.open(store)
    take = read_takes(manifest).takes[0]
    geometry = FrameGeometry(16, 16, 16)  # positions do not depend on the geometry
    for v, view in enumerate(opened.views):
        expected = decode_view(take.videos[view], cfg.sampling, key_of(take, view), geometry,
                               "pyav")  # fmt: skip
        np.testing.assert_array_equal(opened.frame_index()[0, v], expected.indices)
