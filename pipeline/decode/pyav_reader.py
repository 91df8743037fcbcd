"""PyAV as a decoder: the default one, and the one that reads every file it can open. Only
the sampled frames are decoded, in increasing order, following the read plan of ``plan.py``:
each keyframe interval holding wanted frames is decoded from its keyframe, reached by a seek
across a long gap or by reading on and dropping the packets of a short one, while frames are
matched to positions by presentation time and H.264 pictures no other frame refers to are
skipped; when timestamps cannot identify frames (AVI), one pass from the start whose frame
count is verified packet by packet. Any decoder error up to the last wanted frame fails the
view: a damaged frame is never replaced by another (docs/decoding.md, "Reading only what is
sampled" and "Corrupt data")."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
from skill.pipeline.decode.plan import Span, one_pass, plan_spans, runs_of
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
    seek_gap: int | None = None,
) -> dict[int, np.ndarray]:
    """Frames at the sorted unique positions ``wanted`` with PyAV; ``seek_gap``: the read
    plan's (``plan.plan_spans``; None: its default)."""
    reader = PyAVFrameReader(path, info, geometry, threads)
    if index.pts is not None:
        try:
            return reader.read_by_timestamp(index, wanted, seek_gap)
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

    def read_by_timestamp(
        self, index: StreamIndex, wanted: np.ndarray, seek_gap: int | None = None
    ) -> dict[int, np.ndarray]:
        """Decode the spans of the read plan, matching frames by pts. When a restart at a
        keyframe gives a frame the decoder does not decode as a keyframe (the container's
        keyframe flags are wrong), everything is decoded from the start."""
        try:
            return self._read_spans(
                index, wanted, plan_spans(wanted, index.key_positions, seek_gap)
            )
        except _SeekUntrusted:
            return self._read_spans(index, wanted, one_pass(wanted))

    def _read_spans(
        self, index: StreamIndex, wanted: np.ndarray, spans: list[Span]
    ) -> dict[int, np.ndarray]:
        """``read_by_timestamp`` for one plan: each run of spans after its seek (the first
        run from the start when it has none). A seek that lands late shows that the
        container's seeks cannot be trusted: that run and all later spans are then read in
        one pass from the start."""
        out: dict[int, np.ndarray] = {}
        container, stream = self.open()
        runs = runs_of(spans)
        try:
            for number, run in enumerate(runs):
                if run[0].seek:
                    container.seek(int(index.pts[run[0].keyframe]), stream=stream, backward=True)
                try:
                    self._read_run(container, stream, index, run, out, sought=run[0].seek)
                except _SeekLate:
                    container.close()
                    container, stream = self.open()
                    rest = [span for later in runs[number:] for span in later]
                    self._read_run(container, stream, index, rest, out, sought=False)
                    break
        finally:
            container.close()
        _check_all_read(self.path, self.info, wanted, out)
        return out

    def _read_run(
        self,
        container: Any,
        stream: Any,
        index: StreamIndex,
        run: list[Span],
        out: dict,
        sought: bool,
    ) -> None:
        """Decode a run of spans from the container's position: just sought to the first
        span's keyframe, or the start of the stream. Packets before a span's keyframe are
        dropped once the spans before it are complete, and the decoder restarts at the
        keyframe; packets of other frames are decoded only when they are references (H.264:
        ``_skips_safely``)."""
        cursor = _RunCursor(index, run, sought)
        wanted_set = {int(i) for s in run for i in s.wanted}
        needed_pts = {int(index.pts[i]) for i in wanted_set} if _skips_safely(stream) else None
        previous = -1
        frames = _decoded_frames(container, stream, self.path, self.info, needed_pts, cursor.gate)
        for frame in frames:
            position = _frame_position(frame, index)
            if cursor.first_out:
                self._check_first_frame(frame, position, index, cursor)
                previous, cursor.first_out = -1, ""
            if position <= previous:
                raise _TimestampsUnusable("decoder output is not in pts order")
            previous = position
            if position in wanted_set:
                out[position] = self.clip_frame(frame, position)
            if cursor.passed(position):
                return
        if cursor.first_out == "seek":  # the seek landed at or near the end: nothing came out
            raise _SeekLate()

    def _check_first_frame(
        self, frame: Any, position: int, index: StreamIndex, cursor: _RunCursor
    ) -> None:
        """The first frame out after the start, a seek or a restart must be at or before the
        span's first wanted frame, and after a seek or restart a keyframe to the decoder."""
        late = position > int(cursor.span.wanted[0])
        if cursor.first_out == "start":
            if late:
                raise DecodeError(self.path, undecodable_reason(index, position))
            return
        if late and cursor.first_out == "seek":
            raise _SeekLate()
        if late or not frame.key_frame or frame.is_corrupt:
            raise _SeekUntrusted()

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
    """A seek landed after the first wanted frame of its span, or on no frame at all."""


class _SeekUntrusted(Exception):
    """A seek or restart at a flagged keyframe gave a frame the decoder does not decode as
    one."""


class _RunCursor:
    """Where the reading of a run of spans stands: the span being read, whether packets are
    dropped until its keyframe, and which check the next frame out must pass."""

    def __init__(self, index: StreamIndex, run: list[Span], sought: bool):
        self.run, self.current = run, 0
        self.keyframe_pts = {int(index.pts[s.keyframe]): n for n, s in enumerate(run)}
        self.keyframes_fed: set[int] = set()
        self.waiting = not sought and run[0].keyframe > 0
        self.fed = False  # whether the decoder holds packets that a restart must flush
        self.first_out = "seek" if sought else "restart" if self.waiting else "start"

    @property
    def span(self) -> Span:
        return self.run[self.current]

    def gate(self, packet: Any) -> str:
        """What to do with the next packet: "drop" it, "feed" it, or "restart" the decoder
        at it (flush, then feed)."""
        if self.waiting:
            if not packet.size or self.keyframe_pts.get(packet.pts) != self.current:
                return "drop"
            self.waiting, self.first_out = False, "restart"
            action = "restart" if self.fed else "feed"
        else:
            action = "feed"
        if packet.size and packet.pts in self.keyframe_pts:
            self.keyframes_fed.add(self.keyframe_pts[packet.pts])
        self.fed = True
        return action

    def passed(self, position: int) -> bool:
        """Move past the spans complete once ``position`` is out; True when all are. A next
        span whose keyframe was not fed yet is reached by dropping packets up to it."""
        moved = False
        while self.current < len(self.run) and position >= int(self.span.wanted[-1]):
            self.current, moved = self.current + 1, True
        if self.current == len(self.run):
            return True
        if moved and self.current not in self.keyframes_fed:
            self.waiting = True
        return False


def _unverified_reason(position: int, packets: int) -> str:
    return (
        "frame positions cannot be verified: timestamps cannot identify frames and the "
        f"decoder's output does not follow its input (frame {position} came out after "
        f"{packets} packets: a frame was dropped or could not be decoded)"
    )


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
    gate: Callable[[Any], str] | None = None,
) -> Iterator[Any]:
    """Frames in presentation order; FFmpeg errors become DecodeError ('corrupt bitstream').

    With ``needed_pts``, a packet whose pts is not among them is decoded with
    ``skip_frame="NONREF"``: dropped by the decoder unless another frame refers to it. The
    setting is read by the decoder per packet (frame threads copy it when the packet is
    submitted), so a needed frame's packet is always decoded in full. ``gate(packet)`` says
    what to do with each packet: "feed" it, "drop" it undecoded, or "restart" the decoder at
    it (flushed as a seek flushes it, then fed); it is asked as the frames are consumed."""
    import av

    produced, context, skipping = 0, stream.codec_context, None  # None: not set here yet
    try:
        for packet in container.demux(stream):
            action = gate(packet) if gate is not None else "feed"
            if action == "drop":
                continue
            if action == "restart":
                context.flush_buffers()
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
