"""Probing a video: the checks every file passes before any decoder reads it (it exists, holds
a video stream, is not encrypted), the stream chosen, its rotation, pixel aspect and frame rate,
and the packet index, built by demuxing the stream's packets with PyAV: how many frames there
are and each frame's position and presentation time, its keyframes, and what is known about the
frames that cannot be decoded. Every decoder is checked against this one index, so a frame
position means the same whichever decoder read it (docs/decoding.md, "Opening a file" to
"Frame positions")."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from skill.pipeline.decode.errors import DecodeError
from skill.pipeline.decode.frames import grey_thumbnail


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` finds out about a video (the chosen video stream)."""

    path: str
    """The file."""
    num_frames: int
    """Frames of the chosen stream: its packets, those FFmpeg marks discarded left out."""
    fps: float
    """Average frame rate of the stream (frames per second)."""
    width: int
    """Display width: after the sample aspect ratio and the rotation."""
    height: int
    """Display height: after the sample aspect ratio and the rotation."""
    rotation: int
    """Clockwise quarter-turn applied for display: 0, 90, 180 or 270 degrees."""
    stream_index: int
    """Index of the chosen stream among all streams of the container."""
    sar: float
    """Sample (pixel) aspect ratio, width / height of one pixel; 1.0 for square pixels."""
    duration_s: float
    """From the first frame's start to the last frame's end, in seconds."""
    num_video_streams: int
    """Video streams in the container."""


@dataclass
class StreamIndex:
    """Packet index of the chosen stream, built by ``probe_index``."""

    times_s: np.ndarray
    """(num_frames,) float64 presentation time of each frame, seconds."""
    pts: np.ndarray | None
    """(num_frames,) int64 sorted packet pts, or None when they cannot identify frames."""
    key_positions: np.ndarray
    """Sorted positions of the keyframes (meaningful only when ``pts`` is not None)."""
    time_base: Fraction
    coded_width: int
    coded_height: int
    first_thumb: np.ndarray | None
    """(THUMB_SIDE, THUMB_SIDE) grey frame 0 before rotation (``frames.grey_thumbnail``); only
    kept for rotation 180."""
    same_size_streams: tuple[int, ...] = ()
    """Other video streams with the chosen stream's coded size (decord cannot tell them apart)."""
    starts_with_keyframe: bool = True
    """Whether the stream's first packet (in file order) is a keyframe."""
    first_decodable: int = 0
    """Position of the first frame the decoder outputs (the frame ``probe`` decoded, found by
    its pts); the frames before it cannot be decoded. 0 when pts cannot identify frames."""
    leading_error: str = ""
    """The decoder's error on the packets before the first frame ("" when none)."""
    keyframes_doubtful: bool = False
    """Every packet of an inter-coded stream is flagged a keyframe: the container's flags
    cannot be right (an intra-only codec's can)."""


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Open and index a video (no frame is decoded except the first)."""
    return probe_index(str(path))[0]


def probe_index(path: str, threads: int = 1) -> tuple[VideoInfo, StreamIndex]:
    """``probe`` plus the packet index that ``decode_view`` reads frames with."""
    _check_file(path)
    with open_container(path) as container:
        stream = _select_video_stream(container, path)
        configure_decoder(stream, threads)
        declared = int(stream.frames or 0)
        scan, first_frame, decode_error = _scan_packets(container, stream, path)
        if first_frame is None:
            raise DecodeError(path, _no_frame_reason(len(scan.pts), declared, decode_error))
        rotation = _clockwise_rotation(first_frame, stream)
        sar = _sample_aspect_ratio(stream)
        fps = _frame_rate(stream, len(scan.pts))
        time_base = stream.time_base or Fraction(1, 1)
        num_video_streams = len(container.streams.video)
        pts_usable = container.format.name != "avi"
        stream_index = stream.index
        intra_only = bool(getattr(stream.codec_context.codec, "intra_only", False))
        same_size = tuple(
            s.index
            for s in container.streams.video
            if s.index != stream.index and (s.width, s.height) == (stream.width, stream.height)
        )
    index = _build_index(scan, time_base, fps, pts_usable, first_frame, rotation)
    index.same_size_streams = same_size
    index.leading_error = decode_error
    index.keyframes_doubtful = len(scan.keys) > 1 and all(scan.keys) and not intra_only
    info = _video_info(path, index, fps, rotation, sar, stream_index, num_video_streams)
    return info, index


def _check_file(path: str) -> None:
    """Missing and empty files, with a reason better than FFmpeg's 'invalid data'."""
    if not os.path.exists(path):
        raise DecodeError(path, "file not found")
    if os.path.isdir(path):
        raise DecodeError(path, "is a directory, not a video file")
    if os.path.getsize(path) == 0:
        raise DecodeError(path, "empty file (0 bytes)")


def open_container(path: str) -> Any:
    """av.open with FFmpeg errors turned into DecodeError."""
    import av

    try:
        return av.open(path, metadata_errors="ignore")
    except av.FFmpegError as error:
        raise DecodeError(path, f"unreadable container: {ffmpeg_message(error)}") from error
    except (OSError, ValueError) as error:
        raise DecodeError(path, f"cannot open: {error}") from error


def _select_video_stream(container: Any, path: str) -> Any:
    """The video stream with the most pixels, ties to the lowest index."""
    videos = list(container.streams.video)
    if not videos:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise DecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    return min(videos, key=lambda s: (-(s.width or 0) * (s.height or 0), s.index))


def configure_decoder(stream: Any, threads: int) -> None:
    """Decoder threads: 1 by default, as decode workers already run in parallel."""
    stream.codec_context.thread_count = max(1, threads)
    stream.thread_type = "AUTO" if threads > 1 else "SLICE"


@dataclass
class _PacketScan:
    """Timestamps and keyframe flags of a stream's packets, in file order."""

    pts: list[int | None]
    dts: list[int | None]
    keys: list[bool]


def _scan_packets(container: Any, stream: Any, path: str) -> tuple[_PacketScan, Any, str]:
    """Demux every packet of ``stream`` and decode until the first frame comes out.

    Returns (the packets' timestamps and keyframe flags, first decoded frame or None,
    decoder error text or "").
    """
    import av

    pts: list[int | None] = []
    dts: list[int | None] = []
    keys: list[bool] = []
    first_frame, decode_error = None, ""
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or getattr(packet, "is_discard", False):
                continue
            if not pts and _is_encrypted(packet):
                raise DecodeError(
                    path, "encrypted (MP4 Common Encryption): cannot be decoded without the key"
                )
            pts.append(packet.pts)
            dts.append(packet.dts)
            keys.append(bool(packet.is_keyframe))
            if first_frame is None:
                first_frame, decode_error = _first_good_frame(packet, None, decode_error)
        if first_frame is None and pts:  # flush delayed frames
            first_frame, decode_error = _first_good_frame(None, stream, decode_error)
    except av.FFmpegError as error:
        raise DecodeError(
            path, f"unreadable container at packet {len(pts)}: {ffmpeg_message(error)}"
        ) from error
    return _PacketScan(pts, dts, keys), first_frame, decode_error


def _is_encrypted(packet: Any) -> bool:
    """MP4 Common Encryption puts 'encryption_info' side data on every packet (PyAV >= 16
    exposes it; older versions then fail later with 'corrupt bitstream')."""
    has_sidedata = getattr(packet, "has_sidedata", None)
    return bool(has_sidedata and has_sidedata("encryption_info"))


def _first_good_frame(packet: Any, stream: Any, decode_error: str) -> tuple[Any, str]:
    """Decode one packet (or flush) while looking for the first frame. After a decoder error
    (undecodable leading frames) only a frame not flagged corrupt counts as the first frame,
    and decoding goes on: that frame's pts tells how many frames are lost."""
    frame, error = _try_decode(packet, stream)
    if decode_error and frame is not None and frame.is_corrupt:
        frame = None
    return frame, decode_error or error


def _try_decode(packet: Any, stream: Any = None) -> tuple[Any, str]:
    """First frame out of one packet (or of a flush when ``packet`` is None), or the error."""
    import av

    try:
        frames = packet.decode() if packet is not None else stream.decode(None)
    except av.FFmpegError as error:
        return None, ffmpeg_message(error)
    return (frames[0] if frames else None), ""


def _no_frame_reason(num_packets: int, declared: int, decode_error: str) -> str:
    """Why not even the first frame could be decoded."""
    truncated = ""
    if declared > num_packets:
        truncated = (
            f" (the container lists {declared} frames but only {num_packets} packets are "
            "present: truncated file?)"
        )
    if decode_error:
        return f"corrupt bitstream: {decode_error}{truncated}"
    if num_packets == 0:
        return f"no video frames{truncated}"
    return f"no frame could be decoded from {num_packets} packets{truncated}"


def _clockwise_rotation(frame: Any, stream: Any) -> int:
    """Display rotation as a clockwise quarter-turn (0, 90, 180, 270).

    ``frame.rotation`` (PyAV >= 14, from the display matrix) is counter-clockwise; older
    PyAV only has the clockwise ``rotate`` stream tag of older FFmpeg builds.
    """
    if hasattr(frame, "rotation"):
        clockwise = -float(frame.rotation or 0)
    else:
        try:
            clockwise = float(stream.metadata.get("rotate", 0))
        except ValueError:
            clockwise = 0.0
    return int(round(clockwise / 90.0)) % 4 * 90


def _sample_aspect_ratio(stream: Any) -> Fraction:
    """Stream SAR, falling back to the codec's; 1 when unknown or invalid."""
    for candidate in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if candidate is not None and candidate > 0:
            return Fraction(candidate)
    return Fraction(1, 1)


def _frame_rate(stream: Any, num_frames: int) -> float:
    """Average frame rate; guessed rate, then frames / duration, when missing."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and rate > 0:
            return float(rate)
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
        if seconds > 0:
            return num_frames / seconds
    return 30.0  # no timing at all (raw bitstreams): the most common camera rate


def _build_index(
    scan: _PacketScan,
    time_base: Fraction,
    fps: float,
    pts_usable: bool,
    first_frame: Any,
    rotation: int,
) -> StreamIndex:
    """Presentation times of all frames, and whether pts can identify decoded frames."""
    pts, dts = scan.pts, scan.dts
    have_pts = all(p is not None for p in pts)
    sorted_pts = np.sort(np.asarray(pts if have_pts else [0], dtype=np.int64))
    unique = have_pts and len(np.unique(sorted_pts)) == len(pts)
    if have_pts:
        times = sorted_pts.astype(np.float64) * float(time_base)
    elif all(d is not None for d in dts):
        times = np.sort(np.asarray(dts, dtype=np.int64)).astype(np.float64) * float(time_base)
    else:
        times = np.arange(len(pts), dtype=np.float64) / fps
    thumb = grey_thumbnail(first_frame.to_ndarray(format="rgb24")) if rotation == 180 else None
    usable = have_pts and unique and pts_usable
    key_pts = np.asarray([p for p, key in zip(pts, scan.keys, strict=True) if key], np.int64)
    first_decodable = 0
    if usable and first_frame.pts is not None:
        at = int(np.searchsorted(sorted_pts, first_frame.pts))
        if at < len(sorted_pts) and sorted_pts[at] == first_frame.pts:
            first_decodable = at
    return StreamIndex(
        times_s=times,
        pts=sorted_pts if usable else None,
        key_positions=np.searchsorted(sorted_pts, np.sort(key_pts)) if usable else np.zeros(1, int),
        time_base=time_base,
        coded_width=int(first_frame.width),
        coded_height=int(first_frame.height),
        first_thumb=thumb,
        starts_with_keyframe=bool(scan.keys and scan.keys[0]),
        first_decodable=first_decodable,
    )


def _video_info(
    path: str,
    index: StreamIndex,
    fps: float,
    rotation: int,
    sar: Fraction,
    stream_index: int,
    num_video_streams: int,
) -> VideoInfo:
    """Display size (the pixel aspect applied, then the rotation) and duration from the index."""
    width = max(1, round(index.coded_width * sar))
    height = index.coded_height
    if rotation in (90, 270):
        width, height = height, width
    times = index.times_s
    duration = float(times[-1] - times[0]) + 1.0 / fps
    return VideoInfo(
        path=path,
        num_frames=len(times),
        fps=fps,
        width=width,
        height=height,
        rotation=rotation,
        stream_index=stream_index,
        sar=float(sar),
        duration_s=duration,
        num_video_streams=num_video_streams,
    )


def ffmpeg_message(error: Exception) -> str:
    """FFmpeg's message without the errno and file name PyAV adds."""
    strerror = getattr(error, "strerror", None)
    if strerror:
        origin = getattr(error, "filename", None)
        if origin and not os.path.exists(str(origin)):  # e.g. 'avcodec_send_packet()'
            return f"{strerror} ({origin})"
        return str(strerror)
    return str(error) or type(error).__name__


def missing_turns(
    shape: tuple[int, ...],
    info: VideoInfo,
    index: StreamIndex,
    frame0: Callable[[], np.ndarray],
) -> int | None:
    """Counter-clockwise quarter-turns still needed on the frames of a decoder that may
    itself apply the display rotation (decord, torchcodec), or None when their shape
    ``(H, W, C)`` is neither the coded nor the rotated one. A quarter or three-quarter turn
    shows in the shape; a half turn does not, so for a 180-degree rotation the decoder's
    frame 0 (``frame0()``, read only then) is compared with PyAV's."""
    coded = (index.coded_height, index.coded_width, 3)
    rotated = (index.coded_width, index.coded_height, 3)
    turns = (-info.rotation // 90) % 4
    if info.rotation in (90, 270) and tuple(shape) in (rotated, coded):
        return 0 if tuple(shape) == rotated else turns
    if info.rotation not in (90, 270) and tuple(shape) == coded:
        if info.rotation == 180 and not _half_turned(frame0(), index):
            return turns
        return 0
    return None


def _half_turned(frame0: np.ndarray, index: StreamIndex) -> bool:
    """Whether a decoder's (H, W, 3) frame 0 looks like PyAV's frame 0 turned by 180 degrees."""
    thumb = grey_thumbnail(frame0)
    reference = index.first_thumb
    as_is = float(np.abs(thumb - reference).mean())
    turned = float(np.abs(thumb - np.rot90(reference, 2)).mean())
    return turned <= as_is


def undecodable_reason(index: StreamIndex, first_out: int) -> str:
    """Why the frames before ``first_out`` cannot be read, with their true positions."""
    first_key = int(index.key_positions[0]) if len(index.key_positions) else 0
    if index.leading_error:
        why = (
            f"corrupt bitstream: {index.leading_error}; the first frame the decoder outputs "
            f"is frame {first_out}"
        )
    elif not index.starts_with_keyframe:
        why = f"the stream starts without a keyframe; its first keyframe is frame {first_key}"
        if first_out != first_key:
            why += f", the first frame the decoder outputs is frame {first_out}"
    else:
        why = f"the decoder outputs no frame before frame {first_out}"
    return f"frames 0-{first_out - 1} cannot be decoded ({why})"


def seek_refused(index: StreamIndex, backend: str) -> str:
    """Why a backend that numbers frames itself and seeks by pts (decord, torchcodec) cannot
    be trusted with this file, before opening it ("" when it can): without timestamps that
    identify frames (AVI) or a decodable keyframe at the start, its positions could differ
    from the index's, silently."""
    if index.pts is None:
        return (
            f"timestamps cannot identify frames (e.g. AVI): {backend}'s positions cannot be checked"
        )
    if not index.starts_with_keyframe or index.first_decodable > 0:
        return (
            f"the stream does not start with a decodable keyframe: {backend} could return "
            "frames at the wrong positions"
        )
    return ""
