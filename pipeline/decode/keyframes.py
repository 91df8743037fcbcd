"""Keyframe mode (``--snap keyframe``): every sampled position moves to the nearest keyframe
of the packet index, and each is read by one seek and one packet decoded, with PyAV whatever
the decoder order says, since it is the reader that verifies every keyframe: the seek must land
on its packet, and the frame out must carry its pts, be a keyframe to the decoder and not be
flagged corrupt. Where the index has no usable keyframes, or one fails that check, the view is
decoded exactly instead and the store's note says why; never a frame at a position it does not
come from (docs/decoding.md, "Keyframe mode")."""

from __future__ import annotations

from typing import Any

import numpy as np

from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.index import StreamIndex, VideoInfo, ffmpeg_message
from skill.pipeline.decode.pyav_reader import PyAVFrameReader
from skill.pipeline.sampling import snap_to_keyframes


class KeyframesUnusable(Exception):
    """The view must be decoded exactly: the message is the note the store keeps, and
    ``flags_wrong`` says that a keyframe the container flags did not decode as one, so that no
    seek may trust the flags."""

    def __init__(self, why: str, flags_wrong: bool):
        super().__init__(f"keyframe sampling fell back to exact decoding: {why}")
        self.flags_wrong = flags_wrong


class _KeyframeIndexWrong(Exception):
    """A position the index calls a keyframe does not decode as one."""


def snapped_clips(
    path: str, info: VideoInfo, index: StreamIndex, indices: np.ndarray, geometry: FrameGeometry
) -> tuple[np.ndarray, np.ndarray]:
    """(frames (K, T, crop_height, crop_width, 3) uint8, their positions (K, T)): the clips at
    the keyframes nearest to ``indices``. Raises KeyframesUnusable when they cannot be read."""
    why = _keyframe_index_unusable(index)
    if why:
        raise KeyframesUnusable(why, flags_wrong=False)
    snapped = snap_to_keyframes(indices, index.key_positions)
    try:
        frames_at = read_keyframes(path, info, index, np.unique(snapped), geometry)
    except _KeyframeIndexWrong as wrong:
        raise KeyframesUnusable(
            f"{wrong}; decoded from the start instead, without seeking", flags_wrong=True
        ) from None
    flat = [frames_at[int(i)] for i in snapped.reshape(-1)]
    return np.stack(flat).reshape(*snapped.shape, *flat[0].shape), snapped


def _keyframe_index_unusable(index: StreamIndex) -> str:
    """Why the packet index cannot give keyframes to snap to ("" when it can)."""
    if index.pts is None:
        return "timestamps cannot identify frames (e.g. AVI), so keyframes cannot be located"
    keys = index.key_positions
    if len(keys) == 0:
        return "the container flags no keyframe"
    if int(keys[0]) < index.first_decodable:
        return f"keyframe {int(keys[0])} lies before the first decodable frame"
    return ""


def read_keyframes(
    path: str, info: VideoInfo, index: StreamIndex, wanted: np.ndarray, geometry: FrameGeometry
) -> dict[int, np.ndarray]:
    """Clip frames at the sorted unique keyframe positions ``wanted``: per keyframe one seek,
    one packet decoded and the decoder drained. Raises _KeyframeIndexWrong when a
    keyframe does not decode as one."""
    import av

    reader = PyAVFrameReader(path, info, geometry, threads=1)  # one frame per seek
    out: dict[int, np.ndarray] = {}
    container, stream = reader.open()
    with container:
        for position in (int(i) for i in wanted):
            target = int(index.pts[position])
            if out or position > 0:
                container.seek(target, stream=stream, backward=True)  # flushes the decoder
            try:
                frame = _decode_one_packet(container, stream, target, position)
            except av.FFmpegError as error:
                raise _KeyframeIndexWrong(
                    f"keyframe {position} does not decode ({ffmpeg_message(error)})"
                ) from error
            out[position] = reader.clip_frame(frame, position)
    return out


def _decode_one_packet(container: Any, stream: Any, target: int, position: int) -> Any:
    """The frame of the next packet, which must be the keyframe with pts ``target``: that
    packet alone is decoded, then the decoder is drained so the frame comes out at once."""
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if packet.pts != target:
            raise _KeyframeIndexWrong(
                f"seeking to keyframe {position} (pts {target}) landed on pts {packet.pts}"
            )
        frames = [*packet.decode(), *stream.codec_context.decode(None)]
        if not frames or frames[0].pts != target:
            raise _KeyframeIndexWrong(
                f"keyframe {position} gives no frame of its own (the container's keyframe "
                "flag is wrong)"
            )
        frame = frames[0]
        if not frame.key_frame or frame.is_corrupt:
            raise _KeyframeIndexWrong(
                f"frame {position} is flagged a keyframe by the container but the decoder "
                "does not decode it as one"
            )
        return frame
    raise _KeyframeIndexWrong(f"keyframe {position} (pts {target}) has no packet")
