"""Every registered decoder, alone: the frame it returns at a position is the frame at that
position, and a file it cannot be trusted with is read correctly or refused with its name in the
reason, never returned shifted. The registry itself: a decoder registered outside the package
joins the orders by name, and importing the package loads no decoder library."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import skill.pipeline.decode.registry as registry
from skill.pipeline.decode.errors import BackendUnsuitable, DecodeError
from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.registry import BACKENDS, Backend, backend_names, register
from skill.pipeline.decode.view import decode_view
from skill.pipeline.sampling import SamplingConfig
from tests.test_decode import SYNTHETIC_SAMPLINGS, _brightness_video

GEOMETRY = FrameGeometry(48, 48, 64)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """64x48, 60 frames at 30 fps, frame i uniformly grey at level 20 + 3 i: H.264 with
    B-frames and a keyframe every 12 frames (reordering, seeks), and MPEG-4 in AVI."""
    folder = tmp_path_factory.mktemp("registry")
    h264, avi = folder / "bframes.mp4", folder / "mpeg4.avi"
    _brightness_video(h264, "libx264", {"x264-params": "keyint=12:bframes=3", "crf": "10"}, None)
    _brightness_video(avi, "mpeg4", {"g": "12", "bf": "2", "qmin": "1", "qmax": "1"}, "avi")
    return {"h264": h264, "avi": avi}


def usable(name: str) -> None:
    """Skip, saying why, where the decoder's library cannot be used here."""
    missing = BACKENDS[name].available()
    if missing:
        pytest.skip(f"decoder {name} unusable here: {missing}")


def frame_levels(view) -> np.ndarray:
    """(K, T) mean grey level of each decoded frame."""
    return view.frames.reshape(*view.indices.shape, -1).mean(axis=-1)


@pytest.mark.parametrize("name", sorted(BACKENDS))
@pytest.mark.parametrize("sampling", SYNTHETIC_SAMPLINGS, ids=lambda s: s.strategy)
def test_each_decoder_gives_the_frame_at_each_index(
    videos, name: str, sampling: SamplingConfig
) -> None:
    """B-frames and a keyframe every 12 frames: reordering and seeks; frame i has grey level
    20 + 3 i, so a frame one position off is 3 levels off."""
    usable(name)
    view = decode_view(videos["h264"], sampling, "registry", GEOMETRY, backend=name)
    assert view.backend == name and view.fallback_reason == ""
    np.testing.assert_allclose(frame_levels(view), 20 + 3 * view.indices, atol=1.4)
    np.testing.assert_allclose(
        np.diff(view.timestamps, axis=-1), np.diff(view.indices, axis=-1) / 30, atol=1e-6
    )


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_decoder_reads_avi_right_or_refuses_it_by_name(videos, name: str) -> None:
    """AVI stores decode times, so timestamps cannot identify frames: a decoder that numbers
    frames itself could return them shifted without an error."""
    usable(name)
    sampling = SamplingConfig("uniform", frames=16, clips=2)
    try:
        view = decode_view(videos["avi"], sampling, "avi", GEOMETRY, backend=name)
    except DecodeError as refused:
        assert refused.reason.startswith(f"{name}: "), refused.reason
        fallback = decode_view(videos["avi"], sampling, "avi", GEOMETRY, (name, "pyav"))
        assert fallback.backend == "pyav" and fallback.note == f"decoded by pyav ({refused.reason})"
        return
    assert view.backend == name
    np.testing.assert_allclose(frame_levels(view), 20 + 3 * view.indices, atol=1.4)


def _refuse(path, info, index, wanted, geometry, threads, device):
    raise BackendUnsuitable("refuses every file")


def test_a_decoder_registered_outside_the_package_joins_the_orders(videos, monkeypatch) -> None:
    monkeypatch.setattr(registry, "BACKENDS", dict(BACKENDS))  # the test's decoder goes after it
    register(Backend(name="refuser", read=_refuse, available=lambda: ""))
    assert "refuser" in backend_names() and "refuser" not in registry.DEFAULT_ORDER
    video, sampling = videos["h264"], SamplingConfig(frames=4)
    view = decode_view(video, sampling, "r", GEOMETRY, backend=("refuser", "pyav"))
    assert view.backend == "pyav" and view.note == "decoded by pyav (refuser: refuses every file)"
    with pytest.raises(DecodeError, match=r"bframes\.mp4: refuser: refuses every file"):
        decode_view(video, sampling, "r", GEOMETRY, backend="refuser")
    with pytest.raises(ValueError, match="'refuser' is registered twice"):
        register(Backend(name="refuser", read=_refuse, available=lambda: ""))
    with pytest.raises(ValueError, match="'auto' stands for the default order"):
        register(Backend(name="auto", read=_refuse, available=lambda: ""))


def test_the_package_and_its_geometry_load_no_decoder_library() -> None:
    """A backbone names its FrameGeometry without loading decoders; importing the package
    registers every decoder without importing av, decord, torchcodec, torch or PIL."""
    check = (
        "import sys\n"
        "from skill.pipeline.decode.geometry import FrameGeometry\n"
        "from skill.pipeline.decode.registry import BACKENDS\n"
        "assert {'pyav', 'decord', 'torchcodec'} <= set(BACKENDS), BACKENDS\n"
        "heavy = [m for m in ('av', 'decord', 'torchcodec', 'torch', 'PIL') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
