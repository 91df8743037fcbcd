"""The read plan of the PyAV reader: dense samples are read in one forward pass, dropping the
packets of short gaps, sparse ones seek; either way every frame returned is, bit for bit, the
frame a full sequential decode gives at that position, whether the reader seeks to every
keyframe interval (the rule before the plan), reads on through every gap, or follows the plan;
on real files, on a synthetic video with B-frames, in MPEG-TS (whose seeks land late) and with
the duplicate positions of a sequence longer than its video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.index import probe_index
from skill.pipeline.decode.plan import SEEK_GAP, keyframe_before, plan_spans, runs_of
from skill.pipeline.decode.pyav_reader import PyAVFrameReader, read_pyav
from skill.pipeline.decode.registry import BACKENDS
from skill.pipeline.decode.view import decode_view
from skill.pipeline.sampling import STRATEGIES, SamplingConfig, sample_indices
from tests.markers import one_fast
from tests.test_decode import MEDIA, _brightness_video
from tests.test_decode_modes import FRAMES, KEYINT, _textured_video

GEOMETRY = FrameGeometry(48, 48, 64)
NEVER = 10**9
"""A seek gap no video reaches: one forward pass, dropping the packets between spans."""
SEEK_GAPS = {"every span sought": 0, "planned": None, "one pass": NEVER}
MEDIA_FILES = [
    "decord__flipping_a_pancake.mkv",  # H.264 in Matroska, 3 keyframes
    "mmaction2__demo.mp4",  # 4 keyframes, irregular intervals
    "mp4parse__white.mp4",  # 300 frames, a keyframe every 60
    "torchcodec__nasa_13013.mp4",
    "torchcodec__var_fps_video.mp4",  # variable frame rate
    "torchcodec__h265_video.mp4",  # HEVC, a keyframe every 2 frames
    "torchcodec__av1_video.mkv",  # AV1: every packet decoded, none skipped
    "decord__video_90.mov",  # a quarter-turn rotation
]
needs_sequence = pytest.mark.skipif(
    "sequence" not in STRATEGIES, reason="pipeline/sampling.py has no 'sequence' strategy yet"
)


def every_frame_by_pts(path: Path) -> dict[int, np.ndarray]:
    """Every frame PyAV outputs decoding the whole stream in order, without seeking or
    skipping, placed at its position in the packet index by its pts, and converted as the
    reader converts frames."""
    import av

    info, index = probe_index(str(path))
    reader = PyAVFrameReader(str(path), info, GEOMETRY, 1)
    out = {}
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams[info.stream_index]):
            position = int(np.searchsorted(index.pts, frame.pts))
            assert index.pts[position] == frame.pts
            out[position] = reader.clip_frame(frame, position)
    assert len(out) == info.num_frames
    return out


def index_sets(num_frames: int) -> dict[str, np.ndarray]:
    """Sorted unique positions: a dense sequence (48 x 8 evenly, with duplicates where the
    video is shorter), frames a few apart, a sparse handful, and the last frame alone."""
    dense = np.floor((np.arange(384) + 0.5) * num_frames / 384).astype(np.int64)
    return {
        "dense": np.unique(np.minimum(dense, num_frames - 1)),
        "every 3rd": np.arange(1, num_frames, 3, dtype=np.int64),
        "sparse": np.unique(np.linspace(0, num_frames - 1, 4).round().astype(np.int64)),
        "last": np.array([num_frames - 1], dtype=np.int64),
    }


def assert_reads_like_every_frame(path: Path, reference: dict[int, np.ndarray]) -> None:
    info, index = probe_index(str(path))
    for name, wanted in index_sets(info.num_frames).items():
        for rule, seek_gap in SEEK_GAPS.items():
            got = read_pyav(str(path), info, index, wanted, GEOMETRY, 1, seek_gap=seek_gap)
            assert sorted(got) == wanted.tolist(), (name, rule)
            for position in wanted.tolist():
                assert np.array_equal(got[position], reference[position]), (name, rule, position)


# ----------------------------------------------------------------------------- the plan


def test_dense_samples_are_one_pass_and_sparse_ones_seek() -> None:
    keys = np.arange(0, 20_000, 250)  # x264's default interval over an 11-minute video
    dense = np.unique(np.floor((np.arange(384) + 0.5) * 18_000 / 384).astype(np.int64))
    spans = plan_spans(dense, keys)
    assert len(spans) == 72 and not any(span.seek for span in spans)  # every interval touched
    assert len(runs_of(spans)) == 1
    assert [span.keyframe for span in spans] == [keyframe_before(s.wanted[0], keys) for s in spans]
    sparse = np.array([100, 6_100, 12_100, 17_900])
    spans = plan_spans(sparse, keys)
    assert [span.keyframe for span in spans] == [0, 6_000, 12_000, 17_750]
    assert [span.seek for span in spans] == [False, True, True, True]
    assert len(runs_of(spans)) == 4


def test_a_span_is_sought_from_the_seek_gap_on() -> None:
    keys = np.array([0, 100, 200, 300 + SEEK_GAP])
    wanted = np.array([10, 99, 150, 320 + SEEK_GAP])
    spans = plan_spans(wanted, keys)
    assert [s.wanted.tolist() for s in spans] == [[10, 99], [150], [320 + SEEK_GAP]]
    assert [s.seek for s in spans] == [False, False, True]  # gaps 0 and SEEK_GAP + 99 frames
    assert [s.seek for s in plan_spans(wanted, keys, seek_gap=0)] == [False, True, True]
    assert [s.seek for s in plan_spans(wanted, keys, seek_gap=NEVER)] == [False] * 3
    # the first span is sought only when it starts after a keyframe SEEK_GAP frames in
    assert plan_spans(np.array([SEEK_GAP + 5]), np.array([0, SEEK_GAP]))[0].seek
    assert not plan_spans(np.array([SEEK_GAP - 5]), np.array([0, SEEK_GAP - 10]))[0].seek


def test_positions_before_any_known_keyframe_are_read_from_the_start() -> None:
    spans = plan_spans(np.array([3, 40]), np.array([20]))
    assert [(s.keyframe, s.seek) for s in spans] == [(0, False), (20, False)]
    assert [(s.keyframe, s.seek) for s in plan_spans(np.array([3, 40]), np.array([], int))] == [
        (0, False)
    ]


# ----------------------------------------------------------------------------- real files


@pytest.fixture(scope="module")
def textured(tmp_path_factory) -> dict[str, Path]:
    """The B-frame video of test_decode_modes (six keyframe intervals), in MP4 and remuxed
    into MPEG-TS."""
    import av

    folder = tmp_path_factory.mktemp("plan")
    mp4, ts = folder / "h264.mp4", folder / "h264.ts"
    _textured_video(mp4)
    with av.open(str(mp4)) as inp, av.open(str(ts), "w", format="mpegts") as out:
        stream_out = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.size:
                packet.stream = stream_out
                out.mux(packet)
    return {"mp4": mp4, "ts": ts}


@pytest.mark.parametrize("container", ["mp4", "ts"])
def test_every_plan_reads_the_frames_of_a_full_decode(textured, container: str) -> None:
    """In MPEG-TS a seek lands after its keyframe (and at the last keyframe on no frame at
    all): the span is read again from the start and no later one is sought."""
    path = textured[container]
    assert len(probe_index(str(path))[1].key_positions) == FRAMES // KEYINT
    assert_reads_like_every_frame(path, every_frame_by_pts(path))


@pytest.mark.parametrize("threads", [1, 2])
def test_dense_reads_with_decoder_threads_are_the_same_frames(textured, threads: int) -> None:
    path = textured["mp4"]
    info, index = probe_index(str(path))
    wanted = index_sets(info.num_frames)["every 3rd"]
    reference = every_frame_by_pts(path)
    for seek_gap in SEEK_GAPS.values():
        got = read_pyav(str(path), info, index, wanted, GEOMETRY, threads, seek_gap=seek_gap)
        for position in wanted.tolist():
            assert np.array_equal(got[position], reference[position])


@needs_sequence
def test_a_sequence_longer_than_its_video_repeats_the_right_frames(textured) -> None:
    sampling = SamplingConfig("sequence", frames=8, clips=48)  # 384 positions, 150 frames
    view = decode_view(textured["mp4"], sampling, "s", GEOMETRY, backend="pyav")
    expected = sample_indices(FRAMES, sampling, "s").indices
    assert len(np.unique(expected)) < expected.size  # duplicates across clips
    np.testing.assert_array_equal(view.indices, expected)
    reference = every_frame_by_pts(textured["mp4"])
    frames = np.stack([reference[int(i)] for i in expected.reshape(-1)])
    np.testing.assert_array_equal(view.frames, frames.reshape(view.frames.shape))


@needs_sequence
@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_each_decoder_reads_a_dense_sequence_with_duplicates(tmp_path, name: str) -> None:
    """Frame i of this video has grey level 20 + 3 i: a frame one position off is 3 off."""
    missing = BACKENDS[name].available()
    if missing:
        pytest.skip(f"decoder {name} unusable here: {missing}")
    path = tmp_path / "bframes.mp4"
    _brightness_video(path, "libx264", {"x264-params": "keyint=12:bframes=3", "crf": "10"}, None)
    sampling = SamplingConfig("sequence", frames=8, clips=12)  # 96 positions over 60 frames
    view = decode_view(path, sampling, "d", GEOMETRY, backend=name)
    assert view.backend == name and len(np.unique(view.indices)) < view.indices.size
    levels = view.frames.reshape(*view.indices.shape, -1).mean(axis=-1)
    np.testing.assert_allclose(levels, 20 + 3 * view.indices, atol=1.4)


@pytest.mark.parametrize("name", one_fast(MEDIA_FILES))
def test_media_files_read_like_a_full_decode_under_every_plan(name: str) -> None:
    path = MEDIA / name
    if not path.is_file():
        pytest.skip(f"real media file not found at {path}")
    assert_reads_like_every_frame(path, every_frame_by_pts(path))
