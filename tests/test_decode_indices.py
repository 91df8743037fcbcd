"""Stored frame indices are the frames' real positions: streams that start without a keyframe,
undecodable leading frames and AVI decode times give the real frames or fail the view with
the true positions, never shifted frames. Decoder log noise stays off the terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skill.pipeline.decode.errors import DecodeError
from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.index import probe
from skill.pipeline.decode.view import decode_view
from skill.pipeline.sampling import SamplingConfig

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
REPO = Path(__file__).resolve().parents[1]
GEOMETRY = FrameGeometry(48, 48, 64)
FRAMES = 60


def _grey(i: int) -> int:
    """Grey level of encoded frame ``i``: a shift of one frame changes it by 3."""
    return 20 + 3 * i


def _encode(path: Path, codec: str, options: dict[str, str], fmt: str | None) -> None:
    """64x48, FRAMES frames at 30 fps; frame i is uniformly grey with level _grey(i)."""
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = options
        for i in range(FRAMES):
            grey = np.full((48, 64, 3), _grey(i), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _remux(
    source: Path, target: Path, drop: int, fmt: str | None = None, garble: bool = False
) -> None:
    """Copy ``source`` without its first ``drop`` packets (in file order), timestamps kept;
    ``garble``: the first packet kept has its payload replaced by zeros (an undecodable
    keyframe)."""
    import av

    with av.open(str(source)) as inp, av.open(str(target), "w", format=fmt) as out:
        stream_in = inp.streams.video[0]
        stream_out = out.add_stream_from_template(stream_in)
        kept = 0
        for number, packet in enumerate(inp.demux(stream_in)):
            if packet.size == 0 or number < drop:
                continue
            if garble and kept == 0:
                damaged = av.Packet(bytes(packet)[:4] + bytes(packet.size - 4))
                damaged.pts, damaged.dts, damaged.time_base = (
                    packet.pts,
                    packet.dts,
                    packet.time_base,
                )
                damaged.is_keyframe = True
                packet = damaged
            packet.stream = stream_out
            out.mux(packet)
            kept += 1
    assert kept == FRAMES - drop


def _levels(view) -> np.ndarray:
    return view.frames.reshape(*view.indices.shape, -1).mean(axis=-1)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("indices")
    h264 = folder / "h264.mp4"  # no B-frames: file order is presentation order
    _encode(
        h264, "libx264", {"x264-params": "keyint=12:min-keyint=12:bframes=0", "crf": "10"}, None
    )
    no_key = folder / "no_key.mp4"  # the first GOP's keyframe is cut out: 11 P-frames first
    _remux(h264, no_key, drop=1)
    garbled = folder / "garbled.mp4"  # the first keyframe cannot be decoded: 12 frames lost
    _remux(h264, garbled, drop=0, garble=True)
    avi = folder / "mpeg4.avi"  # AVI stores decode times; one I-frame every 12, B-frames
    mpeg4 = {"g": "12", "bf": "2", "qmin": "1", "qmax": "1", "sc_threshold": "1000000000"}
    _encode(avi, "mpeg4", mpeg4, "avi")
    avi_no_key = folder / "no_key.avi"  # starts with a P-frame
    _remux(avi, avi_no_key, drop=1, fmt="avi")
    scene_cuts = folder / "scene_cuts.avi"  # the grey ramp makes the encoder add I-frames
    _encode(scene_cuts, "mpeg4", {k: v for k, v in mpeg4.items() if k != "sc_threshold"}, "avi")
    cut = folder / "cut.avi"  # starts with an I-frame whose next B-frames lost a reference
    _remux(scene_cuts, cut, drop=1, fmt="avi")
    return {
        "h264": h264,
        "no_key": no_key,
        "garbled": garbled,
        "avi": avi,
        "avi_no_key": avi_no_key,
        "avi_cut": cut,
    }


def test_the_cut_stream_starts_without_a_keyframe(videos) -> None:
    info = probe(videos["no_key"])
    assert info.num_frames == FRAMES - 1  # position p holds encoded frame p + 1


@pytest.mark.parametrize("backend", ["auto", "pyav", "decord"])
def test_frames_before_the_first_keyframe_fail_the_view_with_true_positions(
    videos, backend: str
) -> None:
    expected = (
        r"frames 0-10 cannot be decoded \(the stream starts without a keyframe; "
        r"its first keyframe is frame 11"
    )
    with pytest.raises(DecodeError, match=expected):
        decode_view(videos["no_key"], SamplingConfig("uniform", frames=8), "k", GEOMETRY, backend)


DECORD_THEN_PYAV = ("decord", "pyav")


@pytest.mark.parametrize("backend", ["auto", "pyav", DECORD_THEN_PYAV])
def test_frames_after_the_first_keyframe_are_the_real_ones(videos, backend) -> None:
    sampling = SamplingConfig("windows", frames=8, stride=3)
    view = decode_view(videos["no_key"], sampling, "k", GEOMETRY, backend)
    assert view.backend == "pyav"
    if backend == DECORD_THEN_PYAV:
        assert "does not start with a decodable keyframe" in view.fallback_reason
    assert view.indices.min() >= 11
    # position p of the cut file is encoded frame p + 1: its grey level shows any shift
    np.testing.assert_allclose(_levels(view), _grey(view.indices + 1), atol=1.4)
    np.testing.assert_allclose(view.timestamps, (view.indices + 1) / 30, atol=1e-3)  # 1/30 s apart


def test_undecodable_leading_frames_fail_the_view_with_true_positions(videos) -> None:
    for backend in ("auto", "pyav"):
        with pytest.raises(DecodeError, match=r"frames 0-11 cannot be decoded \(corrupt bitstream"):
            decode_view(videos["garbled"], SamplingConfig(frames=8), "g", GEOMETRY, backend)
    sampling = SamplingConfig("windows", frames=8, stride=3)  # frames 20-41: all decodable
    view = decode_view(videos["garbled"], sampling, "g", GEOMETRY)
    assert view.backend == "pyav" and view.indices.min() >= 12
    np.testing.assert_allclose(_levels(view), _grey(view.indices), atol=1.4)


def test_a_late_seek_is_redone_from_the_start(videos, monkeypatch) -> None:
    """A seek that lands after its target must not let later frames be counted from it."""
    import skill.pipeline.decode.plan as plan

    original = plan.keyframe_before
    monkeypatch.setattr(  # claim a keyframe after the target: the seek lands late
        plan, "keyframe_before", lambda p, keys: min(original(p, keys) + 13, FRAMES - 1)
    )
    monkeypatch.setattr(plan, "SEEK_GAP", 0)  # seek to every span, however short the gap
    sampling = SamplingConfig("uniform", frames=6)
    view = decode_view(videos["h264"], sampling, "s", GEOMETRY, backend="pyav")
    np.testing.assert_allclose(_levels(view), _grey(view.indices), atol=1.4)


def test_avi_positions_are_verified_not_counted(videos) -> None:
    view = decode_view(videos["avi"], SamplingConfig("uniform", frames=16), "a", GEOMETRY)
    assert view.backend == "pyav"
    np.testing.assert_allclose(_levels(view), _grey(view.indices), atol=1.4)


@pytest.mark.parametrize(
    ("video", "reason"),
    [
        ("avi_no_key", "does not start with a keyframe"),
        # the decoder drops the B-frames that lost a reference: counting would shift frames
        ("avi_cut", "(packets gave 5[0-8] frames|does not start with a keyframe)"),
    ],
)
def test_avi_without_its_first_keyframe_fails_instead_of_counting(
    videos, video: str, reason: str
) -> None:
    with pytest.raises(DecodeError, match=f"frame positions cannot be verified: .*{reason}"):
        decode_view(videos[video], SamplingConfig("uniform", frames=8), "a", GEOMETRY)


def test_a_dropped_frame_in_avi_fails_the_view(videos, monkeypatch) -> None:
    """The decoder losing a frame shows as a packet without a frame: the view fails."""
    import skill.pipeline.decode.pyav_reader as pyav_reader

    original = pyav_reader._frames_with_packet_count

    def dropping(*args, **kwargs):
        for number, item in enumerate(original(*args, **kwargs)):
            if number != 20:
                yield item

    monkeypatch.setattr(pyav_reader, "_frames_with_packet_count", dropping)
    with pytest.raises(DecodeError, match="frame positions cannot be verified"):
        decode_view(videos["avi"], SamplingConfig("uniform", frames=16), "a", GEOMETRY)


@pytest.mark.skipif(not MEDIA.is_dir(), reason=f"real media corpus not found at {MEDIA}")
def test_decoder_log_stays_off_the_terminal_and_goes_into_the_reason() -> None:
    # decord first: its C++ code and its FFmpeg log to the terminal (PyAV silences FFmpeg's).
    script = (
        "from skill.pipeline.decode.errors import DecodeError\n"
        "from skill.pipeline.decode.geometry import FrameGeometry\n"
        "from skill.pipeline.decode.view import decode_view\n"
        "from skill.pipeline.sampling import SamplingConfig\n"
        "try:\n"
        f"    decode_view({str(MEDIA / 'decord__corrupted.mp4')!r}, SamplingConfig(frames=8),"
        " 'c', FrameGeometry(32, 32, 32), backend=('decord', 'pyav'))\n"
        "except DecodeError as error:\n"
        "    print(error.reason)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.strip() == "", done.stderr[-2000:]
    reason = done.stdout.strip()
    assert reason.startswith("corrupt bitstream") and "(decoder log, " in reason, reason
    assert "\n" not in reason and len(reason) < 300 and " @ 0x" not in reason
