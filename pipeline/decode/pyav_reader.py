"""PyAV as a decoder: the default one, and the one that reads every file it can open. Only
the sampled frames are decoded, in increasing order: a seek to the keyframe before each group
of wanted frames, decoding forward while matching frames to positions by presentation time,
skipping H.264 pictures no other frame refers to, and, when timestamps cannot identify frames
(AVI), one pass from the start whose frame count is verified packet by packet. Any decoder
error up to the last wanted frame fails the view: a damaged frame is never replaced by
another (docs/decoding.md, "Reading only what is sampled" and "Corrupt data")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from skill.pipeline.decode.errors import DecodeError
from skill.pipeline.decode.frames import to_clip_frame
from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.index import (
    StreamIndex,
    VideoInfo,
    configure_decoder,
    ffmpeg_message,
    open_container,
    undecodable_reason,
)
from skill.pipeline.decode.registry import Backend, register


class _TimestampsUnusable(Exception):
    """Decoded frames cannot be matched to positions by timestamp; verify an in-order decode."""


def read_pyav(
    path: str,
    info: VideoInfo,
    index: StreamIndex,
    wanted: np.ndarray,
    geometry: FrameGeometry,
    threads: int,
) -> dict[int, np.ndarray]:
    """Frames at the sorted unique positions ``wanted`` with PyAV."""
    reader = PyAVFrameReader(path, info, geometry, threads)
    if index.pts is not None:
        try:
            return reader.read_by_timestamp(index, wanted)
        except _TimestampsUnusable:
            pass
    return reader.read_in_order(index, wanted)


class PyAVFrameReader:
    """Decodes wanted frames with PyAV, each turned into a clip frame as soon as decoded."""

    def __init__(self, path: str, info: VideoInfo, geometry: FrameGeometry, threads: int):
        self.path, self.info, self.geometry, self.threads = path, info, geometry, threads
        self.size = geometry.resized_size(info.width, info.height)
        self.turns = (-info.rotation // 90) % 4  # PyAV never applies the display rotation

    def open(self) -> tuple[Any, Any]:
        """(container, the chosen stream), the stream set up with this reader's threads."""
        container = open_container(self.path)
        stream = container.streams[self.info.stream_index]
        configure_decoder(stream, self.threads)
        return container, stream

    def read_by_timestamp(self, index: StreamIndex, wanted: np.ndarray) -> dict[int, np.ndarray]:
        """Seek to the keyframe before each group of wanted frames, match frames by pts.
        When a seek lands on a frame the decoder does not decode as a keyframe (the
        container's keyframe flags are wrong), everything is decoded from the start."""
        try:
            return self._read_seeking(index, wanted, index.key_positions)
        except _SeekUntrusted:
            return self._read_seeking(index, wanted, index.key_positions[:0])

    def _read_seeking(
        self, index: StreamIndex, wanted: np.ndarray, key_positions: np.ndarray
    ) -> dict[int, np.ndarray]:
        """``read_by_timestamp`` seeking to ``key_positions`` (none: one pass from the start)."""
        out: dict[int, np.ndarray] = {}
        container, stream = self.open()
        try:
            for group in _seek_groups(wanted, key_positions):
                keyframe = _keyframe_before(int(group[0]), key_positions)
                seek = bool(out) or keyframe > 0
                if seek:
                    container.seek(int(index.pts[keyframe]), stream=stream, backward=True)
                try:
                    self._read_group(container, stream, index, group, out, from_start=not seek)
                except _SeekLate:
                    # The seek landed after the group: decode it from the very start instead.
                    container.close()
                    container, stream = self.open()
                    self._read_group(container, stream, index, group, out, from_start=True)
        finally:
            container.close()
        _check_all_read(self.path, self.info, wanted, out)
        return out

    def _read_group(
        self,
        container: Any,
        stream: Any,
        index: StreamIndex,
        group: np.ndarray,
        out: dict,
        from_start: bool = False,
    ) -> None:
        """Decode forward from the current seek point to the last frame of ``group``; packets
        of other frames are decoded only when they are references (H.264: ``_skips_safely``)."""
        wanted_set, last_wanted, previous = {int(i) for i in group}, int(group[-1]), -1
        first_wanted = int(group[0])
        needed_pts = {int(index.pts[i]) for i in group} if _skips_safely(stream) else None
        frames = _decoded_frames(container, stream, self.path, self.info, needed_pts)
        for frame in frames:
            position = _frame_position(frame, index)
            if position <= previous:
                raise _TimestampsUnusable("decoder output is not in pts order")
            if previous < 0 and position > first_wanted:
                if from_start:
                    raise DecodeError(self.path, undecodable_reason(index, position))
                raise _SeekLate()
            if previous < 0 and not from_start and (not frame.key_frame or frame.is_corrupt):
                raise _SeekUntrusted()
            previous = position
            if position in wanted_set:
                out[position] = self.clip_frame(frame, position)
            if position >= last_wanted:
                return

    def read_in_order(self, index: StreamIndex, wanted: np.ndarray) -> dict[int, np.ndarray]:
        """Decode from the start when timestamps cannot identify frames (AVI stores decode
        times; missing or duplicate pts): frame ``k`` in output order is position ``k`` only
        when that is verified, else the view fails. Verified means: the first packet is a
        keyframe, the first frame out is a keyframe, and after the decoder's initial delay
        every packet gives exactly one frame, and the whole stream gives as many frames as
        it has packets (a frame the decoder drops or cannot decode, even before its first
        output, shows as a packet without a frame and fails the view). The stream is
        therefore decoded to its end; frames after the last wanted one are not converted."""
        if not index.starts_with_keyframe:
            raise DecodeError(
                self.path,
                "frame positions cannot be verified: timestamps cannot identify frames and "
                "the stream does not start with a keyframe",
            )
        wanted_set = {int(i) for i in wanted}
        out: dict[int, np.ndarray] = {}
        container, stream = self.open()
        stream.thread_type = "SLICE"  # frame threads would add a varying output delay
        delay, position, packets = -1, -1, 0
        with container:
            for packets, flushing, frame in _frames_with_packet_count(
                container, stream, self.path, self.info
            ):
                position += 1
                lag = packets - position - 1
                if position == 0:
                    if not frame.key_frame:
                        raise DecodeError(self.path, _unverified_reason(0, packets))
                    delay = lag
                elif not flushing and lag != delay:
                    raise DecodeError(self.path, _unverified_reason(position, packets))
                if position in wanted_set:
                    out[position] = self.clip_frame(frame, position)
        if position + 1 != packets:
            raise DecodeError(
                self.path,
                f"frame positions cannot be verified: timestamps cannot identify frames and "
                f"the stream's {packets} packets gave {position + 1} frames (frames were "
                "dropped or could not be decoded)",
            )
        _check_all_read(self.path, self.info, wanted, out)
        return out

    def clip_frame(self, frame: Any, position: int) -> np.ndarray:
        """(crop_height, crop_width, 3) uint8 from a decoded frame; corrupt ones refused."""
        if frame.is_corrupt:
            raise DecodeError(self.path, f"corrupt bitstream: frame {position} is flagged corrupt")
        rgb = frame.to_ndarray(format="rgb24")
        return to_clip_frame(rgb, self.turns, self.size, self.geometry)


class _SeekLate(Exception):
    """A seek landed after the first frame of its group."""


class _SeekUntrusted(Exception):
    """A seek to a flagged keyframe gave a frame the decoder does not decode as one."""


def _unverified_reason(position: int, packets: int) -> str:
    return (
        "frame positions cannot be verified: timestamps cannot identify frames and the "
        f"decoder's output does not follow its input (frame {position} came out after "
        f"{packets} packets: a frame was dropped or could not be decoded)"
    )


def _keyframe_before(position: int, key_positions: np.ndarray) -> int:
    """Position of the last keyframe at or before ``position`` (0 when none is known)."""
    at = int(np.searchsorted(key_positions, position, side="right")) - 1
    return int(key_positions[at]) if at >= 0 else 0


def _seek_groups(wanted: np.ndarray, key_positions: np.ndarray) -> list[np.ndarray]:
    """Split sorted wanted positions where a keyframe lies after one wanted frame and at or
    before the next: seeking there skips decoding the frames in between."""
    starts = [0]
    for i in range(1, len(wanted)):
        if _keyframe_before(int(wanted[i]), key_positions) > int(wanted[i - 1]):
            starts.append(i)
    return [wanted[a:b] for a, b in zip(starts, [*starts[1:], len(wanted)], strict=True)]


def _frame_position(frame: Any, index: StreamIndex) -> int:
    """Position of a decoded frame: its pts found in the packet index; raises when it is not
    there (the frame cannot be matched to a real position by timestamp)."""
    if frame.pts is None:
        raise _TimestampsUnusable("frame without pts")
    position = int(np.searchsorted(index.pts, frame.pts))
    if position >= len(index.pts) or index.pts[position] != frame.pts:
        raise _TimestampsUnusable(f"pts {frame.pts} not in the packet index")
    return position


def _frames_with_packet_count(
    container: Any, stream: Any, path: str, info: VideoInfo
) -> Iterator[tuple[int, bool, Any]]:
    """(packets of the stream sent so far, whether flushing, frame) in output order. Packets
    are counted as ``_scan_packets`` counts frames (empty and discarded ones are not)."""
    import av

    packets = produced = 0
    try:
        for packet in container.demux(stream):
            flushing = packet.size == 0
            if not flushing and not getattr(packet, "is_discard", False):
                packets += 1
            for frame in packet.decode():
                produced += 1
                yield packets, flushing, frame
    except av.FFmpegError as error:
        raise DecodeError(
            path,
            f"corrupt bitstream: {ffmpeg_message(error)}, after {produced} decoded frames "
            f"of {info.num_frames}",
        ) from error


def _skips_safely(stream: Any) -> bool:
    """Whether non-reference pictures may be skipped without changing any frame: H.264's
    ``nal_ref_idc`` 0 pictures are never referred to. Other codecs decode every packet (dav1d,
    for one, applies the setting per sequence, and AV1 packets can show frames decoded from
    earlier ones)."""
    return stream.codec_context.name == "h264"


def _decoded_frames(
    container: Any,
    stream: Any,
    path: str,
    info: VideoInfo,
    needed_pts: set[int] | None = None,
) -> Iterator[Any]:
    """Frames in presentation order; FFmpeg errors become DecodeError ('corrupt bitstream').

    With ``needed_pts``, a packet whose pts is not among them is decoded with
    ``skip_frame="NONREF"``: dropped by the decoder unless another frame refers to it. The
    setting is read by the decoder per packet (frame threads copy it when the packet is
    submitted), so a needed frame's packet is always decoded in full."""
    import av

    produced, context, skipping = 0, stream.codec_context, None  # None: not set here yet
    try:
        for packet in container.demux(stream):
            if needed_pts is not None and packet.size:
                skip = packet.pts not in needed_pts
                if skip is not skipping:
                    context.skip_frame, skipping = ("NONREF" if skip else "DEFAULT"), skip
            for frame in packet.decode():
                produced += 1
                yield frame
    except av.FFmpegError as error:
        raise DecodeError(
            path,
            f"corrupt bitstream: {ffmpeg_message(error)}, after {produced} decoded frames "
            f"of {info.num_frames}",
        ) from error


def _check_all_read(
    path: str, info: VideoInfo, wanted: np.ndarray, out: dict[int, np.ndarray]
) -> None:
    """A needed frame the decoder never produced is an error, never silently replaced."""
    missing = [int(i) for i in wanted if int(i) not in out]
    if missing:
        raise DecodeError(
            path,
            f"corrupt bitstream: the decoder produced no frame at position(s) {missing[:5]} "
            f"of {info.num_frames}",
        )


def _read(path, info, index, wanted, geometry, threads, device) -> dict[int, np.ndarray]:
    """The registry's reader: PyAV decodes on the CPU whatever ``device`` says."""
    return read_pyav(path, info, index, wanted, geometry, threads)


def _preload() -> None:
    """PyAV and PIL imported in a decode worker before its first video."""
    import av  # noqa: F401
    import PIL.Image  # noqa: F401


register(Backend(name="pyav", read=_read, available=lambda: "", preload=_preload))
