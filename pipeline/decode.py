"""Decoding one video into sampled, resized and centre-cropped clips.

Rules (the same for every file, whichever decoder reads it):

1. **Opening.** A missing file, a 0-byte file, a container FFmpeg cannot parse, a file with
   no video stream, or an encrypted stream (MP4 Common Encryption) is a ``DecodeError``
   with a readable reason. PyAV opens and indexes every file first (``probe``).
2. **Stream.** With several video streams the one with the most pixels (width * height
   of the coded picture) is used; ties go to the lowest stream index. decord always reads
   the stream FFmpeg's ``av_find_best_stream`` picks and cannot be told otherwise, so decord
   is only used when its stream is the chosen one (same frame count and frame size, and no
   other video stream of that size); otherwise PyAV reads the file.
3. **Frame positions.** Frame ``i`` is the ``i``-th frame in presentation order. The video is
   indexed by demuxing its packets (no decoding; this is what decord does too): the number of
   frames is the number of packets of the stream (packets FFmpeg marks as discarded are not
   frames), and the timestamp of frame ``i`` is the ``i``-th smallest packet presentation
   time, in seconds, as stored in the container (``pts * time_base``; decord's own
   timestamps are not used, they are wrong for AVI). Timestamps therefore follow variable
   frame rates exactly. If packets lack timestamps, times are ``i / fps``.
4. **Reading.** Only the sampled frames are read, in increasing order. decord:
   ``get_batch`` on sorted unique indices, a few frames at a time. PyAV: seek to the
   keyframe before the first needed frame and decode forward, keeping only needed frames
   (identified by their presentation timestamp), seeking again whenever a keyframe lies
   between one needed frame and the next, and stopping after the last one; a seek that lands
   after its target is redone by decoding from the start, and a seek whose first frame out
   is not a keyframe to the decoder (or is flagged corrupt) means the container's keyframe
   flags are wrong: every wanted frame is then decoded in one pass from the start. H.264
   packets of frames not needed are decoded with ``skip_frame="NONREF"``: FFmpeg drops a
   picture whose ``nal_ref_idc`` is 0 (no other picture may refer to it: most B-frames),
   which cannot change any other frame, and decodes reference pictures as usual; the packet
   of a needed frame is always decoded. Other codecs decode every packet (dav1d, for one, applies
   the setting per sequence, and AV1 packets can show frames decoded from earlier ones).
   Frames not needed are never converted to RGB.
   **A stored index is always the frame's real position, never a count of decoded frames.**
   Frames before the first frame the decoder outputs (a stream that starts without a
   keyframe, undecodable leading frames: found by ``probe`` from the pts of its first
   decoded frame) fail the view when a sampled frame lies among them, with the true
   positions ("frames 0-64 cannot be decoded (the stream starts without a keyframe; its
   first keyframe is frame 65)"); decord is not used on such streams. When timestamps cannot
   identify frames (AVI, which stores decode times; missing, duplicate or out-of-order
   timestamps), PyAV decodes the whole stream and frame ``k`` out of the decoder is position
   ``k`` only where that is verified: the stream starts with a keyframe, the first frame
   out is a keyframe, after the decoder's initial delay every packet gives exactly one
   frame, and the stream gives as many frames as it has packets; otherwise the view fails ("frame positions cannot be verified: ..."). Each kept frame is resized and cropped as soon as it is
   decoded, so memory holds at most the output clips, whatever the video length.
5. **Corrupt data is an error, never a substitute.** decord runs with ``fault_tol`` so that
   a frame it would replace by the nearest good one raises instead; any PyAV decoder error
   while decoding up to the last needed frame, a frame flagged corrupt, or a needed frame
   the decoder never outputs is a ``DecodeError`` (``"corrupt bitstream: ..."``). Frames
   that are not needed are not always decoded (after the last needed one, or in a skipped
   keyframe interval), so damage there goes unnoticed and the clips are still returned.
6. **Backends.** A registry (``_READERS``) maps each backend name to its reader; a
   reader either returns the frames, or finds it cannot be trusted with the file
   (``BackendUnsuitable``), and then the next backend of the order reads it; a ``DecodeError``
   (the file itself is bad) is final. ``backend`` is one name (that decoder only: unsuitable
   is then a ``DecodeError``), a sequence of names (that order), or ``"auto"``:
   ``DEFAULT_ORDER``, PyAV alone, the fastest in benchmark 3 (BENCHMARKS.md). PyAV is never
   unsuitable, so nothing after it in an order is tried. A backend that is not installed
   (torchcodec is an optional extra) is unsuitable. decord is unsuitable when it cannot open
   or read the file, reads another stream, returns frames of an unexpected shape (it fails on
   a 1x1 video), when every frame of an inter-coded stream is flagged a keyframe (decord would seek
   to frames that cannot be decoded alone), or when timestamps cannot identify frames (AVI: decord's seeks then return
   wrong frames without an error); torchcodec (``pipeline/decode_torchcodec.py``) when it
   cannot open or read the file, counts other frames, or returns frames whose timestamps are
   not the index's. The reasons are kept in ``DecodedView.fallback_reason`` and, with the
   decoder that made the frames, in ``DecodedView.note`` (the store's ``view_note``). decord is
   imported lazily, and after torch (importing decord before torch can freeze a torch
   DataLoader). ``device`` is where torchcodec decodes (``"cuda"``: NVDEC); decord and PyAV
   decode on the CPU.
7. **Orientation.** The display rotation (MP4/MOV display matrix or ``rotate`` tag) is always
   applied, as a lossless quarter-turn. decord applies it itself; its output is checked
   (frame shape for 90/270, pixels of frame 0 for 180) and only rotated when it is not.
   PyAV never applies it, so its frames are rotated by the rotation found by ``probe``
   (``frame.rotation`` of the first frame: the display matrix, or the ``rotate`` tag).
8. **Pixel aspect.** Non-square pixels (sample aspect ratio != 1) are corrected: the display
   size is ``(round(width * sar), height)`` before rotation, and the resize below targets the
   display aspect ratio directly from the coded frame (one resampling, not two).
9. **Geometry.** The geometric part of a Hugging Face image processor: resize so that the
   short side of the *display* frame is ``shortest_edge`` (long side
   ``int(shortest_edge * long / short)``) with PIL (default bilinear, as the processors use),
   then centre crop ``crop_height x crop_width`` (zero-padded when the frame is smaller).
   Output is uint8 RGB; normalisation belongs to the backbone.
10. **Short videos.** The last frame is repeated (see ``pipeline.sampling``); the count is in
   ``DecodedView.padded``.
11. **Decoder log.** What FFmpeg (PyAV's and decord's own copy) and decord print while a view
   is decoded never reaches the terminal: file descriptor 2 goes to a temporary file during
   ``decode_view``. When the view fails, the last line is quoted in the reason
   ("(decoder log, 2 lines, last: h264: ...)"); otherwise the lines are dropped and counted
   in ``DecodedView.decoder_log_lines``.
12. **Keyframe mode** (``SamplingConfig.snap == "keyframe"``, see ``pipeline.sampling``): the
   sampled positions move to the nearest keyframe of the packet index, and each is read
   with PyAV (whatever ``backend`` says: it is the reader that checks every keyframe) by
   one seek and one packet decoded, then the decoder drained. A keyframe is verified as
   decoded: the seek must land on its packet and the frame out must carry its pts, be
   flagged a keyframe by the decoder and not be flagged corrupt. When the index has no
   usable keyframes (timestamps cannot identify frames, e.g. AVI; no keyframe flags; a
   keyframe before the first decodable frame) or a keyframe fails that check (a container
   flagging non-keyframes as keyframes), the view is decoded exactly, at the unsnapped
   positions (after wrong flags with PyAV from the start of the stream, no seek trusting
   them), and ``DecodedView.note`` says why; extraction stores the note in the store's
   ``view_note``. Never a frame at a position it does not come from.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np

from skill.pipeline.sampling import SamplingConfig, sample_indices, snap_to_keyframes

BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav", "torchcodec")
# The order of backend "auto" (rule 6), from benchmark 3 (BENCHMARKS.md, part C): with one
# decoder thread per worker PyAV was the fastest on 448p and 1080p H.264, and as it reads every
# file it can open, nothing after it would ever be tried: decord and torchcodec are for
# --decoders. An optional backend listed here would be passed over where it is not installed.
DEFAULT_ORDER: tuple[str, ...] = ("pyav",)
RESAMPLE_FILTERS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
# Frames per decord get_batch call: bounds the full-resolution frames held at once.
DECORD_BATCH = 8
# decord's fault_tol as a ratio: any recovered (substituted) frame in a video of fewer than
# a million frames raises instead of silently returning the nearest good frame.
DECORD_FAULT_TOL = 1e-6
# Side of the grey thumbnail of frame 0 used to check decord's 180-degree rotation.
THUMB_SIDE = 32
# decord's C++ log prefixes: "[03:51:15] /path/video_reader.cc:270: " and "[/the/file] ".
_DECORD_LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: |\[/[^\]]*\] ")
# FFmpeg's log prefix: "[h264 @ 0x55d07b029b00] ".
_FFMPEG_LOG_PREFIX = re.compile(r"\[(\w+) @ 0x[0-9a-f]+\] ")
# Characters of decoder log a failure reason quotes (its last line).
LOG_TAIL_CHARS = 100
# One capture of file descriptor 2 at a time (decode_view called from several threads).
_CAPTURE_LOCK = threading.Lock()


class DecodeError(Exception):
    """A video that cannot be decoded; ``reason`` is short and readable."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Two-argument constructor: tell pickle how to rebuild it in another process.
        return (DecodeError, (self.path, self.reason))


class BackendUnsuitable(Exception):
    """A backend cannot give the frames the rules ask for; the next one should read the file."""


class _DecordUnsuitable(BackendUnsuitable):
    """decord cannot give the frames the rules ask for; the next backend of the order reads
    the file (its message names decord's reason)."""


class _TimestampsUnusable(Exception):
    """Decoded frames cannot be matched to positions by timestamp; verify an in-order decode."""


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` finds out about a video (the chosen video stream)."""

    path: str
    """The file."""
    num_frames: int
    """Frames of the chosen stream (its packets, see rule 3)."""
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


@dataclass(frozen=True)
class FrameGeometry:
    """Resize-then-centre-crop applied to every frame (rule 9)."""

    shortest_edge: int
    """Short side of the display frame after resizing, in pixels."""
    crop_height: int
    """Height of the centre crop, in pixels."""
    crop_width: int
    """Width of the centre crop, in pixels."""
    resample: str = "bilinear"
    """PIL filter: nearest, bilinear, bicubic, lanczos, box or hamming."""

    def __post_init__(self) -> None:
        for name in ("shortest_edge", "crop_height", "crop_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"frame geometry {name} must be an integer >= 1, got {value!r}")
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample {self.resample!r} is not one of {RESAMPLE_FILTERS}")

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after resizing a ``width x height`` display frame."""
        short, long = min(width, height), max(width, height)
        new_long = max(1, int(self.shortest_edge * long / short))
        if width <= height:
            return self.shortest_edge, new_long
        return new_long, self.shortest_edge


@dataclass
class DecodedView:
    """The clips of one video.

    ``frames``: (K, T, crop_height, crop_width, 3) uint8 RGB. ``indices``: (K, T) int64
    frame positions. ``timestamps``: (K, T) float64 seconds of those frames.
    """

    frames: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    padded: int
    backend: str
    info: VideoInfo
    fallback_reason: str = ""
    """Why decord was not used when ``backend`` is "pyav" under "auto" ("" otherwise)."""
    decoder_log_lines: int = 0
    """Lines the decoders (FFmpeg, decord) logged while decoding; dropped, not printed."""
    note: str = ""
    """Something the store should say about this view although it decoded (rule 12: keyframe
    sampling fell back to exact decoding, and why; rule 6: a decoder after the first in the
    order made its frames, and why the ones before it could not); "" when nothing."""


@dataclass
class _StreamIndex:
    """Packet index of the chosen stream, built by ``_probe`` (rule 3)."""

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
    """(THUMB_SIDE, THUMB_SIDE) grey frame 0 before rotation; only kept for rotation 180."""
    same_size_streams: tuple[int, ...] = ()
    """Other video streams with the chosen stream's coded size (rule 2)."""
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


# ----------------------------------------------------------------------------- probing


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Open and index a video (no frame is decoded except the first); see rules 1-3."""
    return _probe(str(path))[0]


def _probe(path: str, threads: int = 1) -> tuple[VideoInfo, _StreamIndex]:
    """``probe`` plus the packet index that ``decode_view`` reads frames with."""
    _check_file(path)
    with _open_container(path) as container:
        stream = _select_video_stream(container, path)
        _configure_decoder(stream, threads)
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


def _open_container(path: str) -> Any:
    """av.open with FFmpeg errors turned into DecodeError."""
    import av

    try:
        return av.open(path, metadata_errors="ignore")
    except av.FFmpegError as error:
        raise DecodeError(path, f"unreadable container: {_ffmpeg_message(error)}") from error
    except (OSError, ValueError) as error:
        raise DecodeError(path, f"cannot open: {error}") from error


def _select_video_stream(container: Any, path: str) -> Any:
    """Rule 2: most pixels, ties to the lowest index."""
    videos = list(container.streams.video)
    if not videos:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise DecodeError(path, f"no video stream (streams: {', '.join(kinds)})")
    return min(videos, key=lambda s: (-(s.width or 0) * (s.height or 0), s.index))


def _configure_decoder(stream: Any, threads: int) -> None:
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
            path, f"unreadable container at packet {len(pts)}: {_ffmpeg_message(error)}"
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
    and decoding goes on: that frame's pts tells how many frames are lost (rule 4)."""
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
        return None, _ffmpeg_message(error)
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
) -> _StreamIndex:
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
    thumb = _grey_thumbnail(first_frame.to_ndarray(format="rgb24")) if rotation == 180 else None
    usable = have_pts and unique and pts_usable
    key_pts = np.asarray([p for p, key in zip(pts, scan.keys, strict=True) if key], np.int64)
    first_decodable = 0
    if usable and first_frame.pts is not None:
        at = int(np.searchsorted(sorted_pts, first_frame.pts))
        if at < len(sorted_pts) and sorted_pts[at] == first_frame.pts:
            first_decodable = at
    return _StreamIndex(
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
    index: _StreamIndex,
    fps: float,
    rotation: int,
    sar: Fraction,
    stream_index: int,
    num_video_streams: int,
) -> VideoInfo:
    """Display size (rule 8) and duration from the index."""
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


def _ffmpeg_message(error: Exception) -> str:
    """FFmpeg's message without the errno and file name PyAV adds."""
    strerror = getattr(error, "strerror", None)
    if strerror:
        origin = getattr(error, "filename", None)
        if origin and not os.path.exists(str(origin)):  # e.g. 'avcodec_send_packet()'
            return f"{strerror} ({origin})"
        return str(strerror)
    return str(error) or type(error).__name__


# ----------------------------------------------------------------------------- geometry


def _pil_filter(name: str) -> Any:
    from PIL import Image

    return getattr(Image.Resampling, name.upper())


def _to_clip_frame(
    rgb: np.ndarray, quarter_turns: int, size: tuple[int, int], geometry: FrameGeometry
) -> np.ndarray:
    """Rotate counter-clockwise by ``quarter_turns``, resize to ``size`` (w, h), centre crop.

    ``rgb``: (H, W, 3) uint8 coded frame. Returns (crop_height, crop_width, 3) uint8.
    """
    from PIL import Image

    if quarter_turns % 4:
        rgb = np.rot90(rgb, quarter_turns)
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if image.size != size:
        image = image.resize(size, resample=_pil_filter(geometry.resample))
    return _centre_crop(np.asarray(image), geometry.crop_height, geometry.crop_width)


def _centre_crop(image: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    """Centre crop as transformers' ``center_crop``: zero padding when the image is smaller.

    ``image``: (H, W, 3). Returns (crop_height, crop_width, 3).
    """
    height, width = image.shape[:2]
    if height < crop_height or width < crop_width:
        padded = np.zeros((max(height, crop_height), max(width, crop_width), 3), image.dtype)
        top_pad = math.ceil((padded.shape[0] - height) / 2)
        left_pad = math.ceil((padded.shape[1] - width) / 2)
        padded[top_pad : top_pad + height, left_pad : left_pad + width] = image
        image, height, width = padded, padded.shape[0], padded.shape[1]
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    return np.ascontiguousarray(image[top : top + crop_height, left : left + crop_width])


def _grey_thumbnail(rgb: np.ndarray) -> np.ndarray:
    """(THUMB_SIDE, THUMB_SIDE) float32 grey version of an (H, W, 3) frame."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb)).convert("L")
    return np.asarray(image.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR), np.float32)


# ----------------------------------------------------------------------------- decord


# Decode worker processes never run torch, so they skip importing it (seconds and ~300 MB
# per worker start); any other process imports torch before decord.
_TORCH_FREE_PROCESS = False


def _import_decord() -> Any:
    """decord, imported after torch (NOTES §4: decord before torch can freeze a DataLoader)."""
    if "torch" not in sys.modules and not _TORCH_FREE_PROCESS:
        with contextlib.suppress(ImportError):
            import torch  # noqa: F401
    import decord

    return decord


def preload_decoders() -> None:
    """Decode-worker initializer: import PyAV, PIL and decord now, so that the first video
    does not spend its timeout on imports. Marks the process as one that never runs torch."""
    global _TORCH_FREE_PROCESS
    _TORCH_FREE_PROCESS = True
    import av  # noqa: F401
    import PIL.Image  # noqa: F401

    with contextlib.suppress(ImportError):
        _import_decord()


def _read_decord(
    path: str,
    info: VideoInfo,
    index: _StreamIndex,
    wanted: np.ndarray,
    geometry: FrameGeometry,
    threads: int,
) -> dict[int, np.ndarray]:
    """Frames at the sorted unique positions ``wanted`` with decord, as clip frames."""
    try:
        decord = _import_decord()
    except ImportError as error:
        raise _DecordUnsuitable(f"decord is not installed ({error})") from error
    try:
        reader = decord.VideoReader(
            path, ctx=decord.cpu(0), num_threads=threads, fault_tol=DECORD_FAULT_TOL
        )
    except Exception as error:  # decord raises RuntimeError / DECORDError with C++ traces
        raise _DecordUnsuitable(f"cannot open: {_first_line(error)}") from error
    _check_decord_stream(reader, info)
    size = geometry.resized_size(info.width, info.height)
    out: dict[int, np.ndarray] = {}
    turns: int | None = None
    for start in range(0, len(wanted), DECORD_BATCH):
        chunk = [int(i) for i in wanted[start : start + DECORD_BATCH]]
        try:
            batch = reader.get_batch(chunk).asnumpy()
        except Exception as error:
            raise _DecordUnsuitable(f"cannot read frames {chunk}: {_first_line(error)}") from error
        if turns is None:
            turns = missing_turns(batch.shape[1:], info, index, lambda: reader[0].asnumpy())
            if turns is None:
                coded = (index.coded_height, index.coded_width, 3)
                raise _DecordUnsuitable(
                    f"decord returned frames of shape {tuple(batch.shape[1:])}, expected {coded}"
                )
        for position, rgb in zip(chunk, batch, strict=True):
            out[position] = _to_clip_frame(rgb, turns, size, geometry)
    return out


def _check_decord_stream(reader: Any, info: VideoInfo) -> None:
    """Rule 2: decord must be reading the chosen stream, with the same frames."""
    if len(reader) != info.num_frames:
        raise _DecordUnsuitable(
            f"decord counts {len(reader)} frames where the chosen stream "
            f"#{info.stream_index} has {info.num_frames} (another stream, or a bad index)"
        )


def missing_turns(
    shape: tuple[int, ...],
    info: VideoInfo,
    index: _StreamIndex,
    frame0: Callable[[], np.ndarray],
) -> int | None:
    """Counter-clockwise quarter-turns still needed on the frames of a decoder that may
    itself apply the display rotation (decord, torchcodec; rule 7), or None when their shape
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


def _half_turned(frame0: np.ndarray, index: _StreamIndex) -> bool:
    """Whether a decoder's (H, W, 3) frame 0 looks like PyAV's frame 0 turned by 180 degrees."""
    thumb = _grey_thumbnail(frame0)
    reference = index.first_thumb
    as_is = float(np.abs(thumb - reference).mean())
    turned = float(np.abs(thumb - np.rot90(reference, 2)).mean())
    return turned <= as_is


def _first_line(error: Exception) -> str:
    """decord's message without its log prefixes ('[hh:mm:ss] file.cc:123: ') and trace."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = _DECORD_LOG_PREFIX.sub("", lines[0] if lines else "").strip()
    return text[:200] or type(error).__name__


# ----------------------------------------------------------------------------- PyAV


def _read_pyav(
    path: str,
    info: VideoInfo,
    index: _StreamIndex,
    wanted: np.ndarray,
    geometry: FrameGeometry,
    threads: int,
) -> dict[int, np.ndarray]:
    """Frames at the sorted unique positions ``wanted`` with PyAV (rule 4)."""
    reader = _PyAVFrameReader(path, info, geometry, threads)
    if index.pts is not None:
        try:
            return reader.read_by_timestamp(index, wanted)
        except _TimestampsUnusable:
            pass
    return reader.read_in_order(index, wanted)


class _PyAVFrameReader:
    """Decodes wanted frames with PyAV, each turned into a clip frame as soon as decoded."""

    def __init__(self, path: str, info: VideoInfo, geometry: FrameGeometry, threads: int):
        self.path, self.info, self.geometry, self.threads = path, info, geometry, threads
        self.size = geometry.resized_size(info.width, info.height)
        self.turns = (-info.rotation // 90) % 4  # PyAV never rotates (rule 7)

    def _open(self) -> tuple[Any, Any]:
        container = _open_container(self.path)
        stream = container.streams[self.info.stream_index]
        _configure_decoder(stream, self.threads)
        return container, stream

    def read_by_timestamp(self, index: _StreamIndex, wanted: np.ndarray) -> dict[int, np.ndarray]:
        """Seek to the keyframe before each group of wanted frames, match frames by pts.
        When a seek lands on a frame the decoder does not decode as a keyframe (the
        container's keyframe flags are wrong), everything is decoded from the start."""
        try:
            return self._read_seeking(index, wanted, index.key_positions)
        except _SeekUntrusted:
            return self._read_seeking(index, wanted, index.key_positions[:0])

    def _read_seeking(
        self, index: _StreamIndex, wanted: np.ndarray, key_positions: np.ndarray
    ) -> dict[int, np.ndarray]:
        """``read_by_timestamp`` seeking to ``key_positions`` (none: one pass from the start)."""
        out: dict[int, np.ndarray] = {}
        container, stream = self._open()
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
                    container, stream = self._open()
                    self._read_group(container, stream, index, group, out, from_start=True)
        finally:
            container.close()
        _check_all_read(self.path, self.info, wanted, out)
        return out

    def _read_group(
        self,
        container: Any,
        stream: Any,
        index: _StreamIndex,
        group: np.ndarray,
        out: dict,
        from_start: bool = False,
    ) -> None:
        """Decode forward from the current seek point to the last frame of ``group``; packets
        of other frames are decoded only when they are references (rule 4)."""
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
                    raise DecodeError(self.path, _undecodable_reason(index, position))
                raise _SeekLate()
            if previous < 0 and not from_start and (not frame.key_frame or frame.is_corrupt):
                raise _SeekUntrusted()
            previous = position
            if position in wanted_set:
                out[position] = self._clip_frame(frame, position)
            if position >= last_wanted:
                return

    def read_in_order(self, index: _StreamIndex, wanted: np.ndarray) -> dict[int, np.ndarray]:
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
        container, stream = self._open()
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
                    out[position] = self._clip_frame(frame, position)
        if position + 1 != packets:
            raise DecodeError(
                self.path,
                f"frame positions cannot be verified: timestamps cannot identify frames and "
                f"the stream's {packets} packets gave {position + 1} frames (frames were "
                "dropped or could not be decoded)",
            )
        _check_all_read(self.path, self.info, wanted, out)
        return out

    def _clip_frame(self, frame: Any, position: int) -> np.ndarray:
        """(crop_height, crop_width, 3) uint8 from a decoded frame; corrupt ones refused."""
        if frame.is_corrupt:
            raise DecodeError(self.path, f"corrupt bitstream: frame {position} is flagged corrupt")
        rgb = frame.to_ndarray(format="rgb24")
        return _to_clip_frame(rgb, self.turns, self.size, self.geometry)


class _SeekLate(Exception):
    """A seek landed after the first frame of its group."""


class _SeekUntrusted(Exception):
    """A seek to a flagged keyframe gave a frame the decoder does not decode as one."""


class _KeyframeIndexWrong(Exception):
    """A position the index calls a keyframe does not decode as one (rule 12)."""


def read_keyframes(
    path: str, info: VideoInfo, index: _StreamIndex, wanted: np.ndarray, geometry: FrameGeometry
) -> dict[int, np.ndarray]:
    """Clip frames at the sorted unique keyframe positions ``wanted``: per keyframe one seek,
    one packet decoded and the decoder drained (rule 12). Raises _KeyframeIndexWrong when a
    keyframe does not decode as one."""
    import av

    reader = _PyAVFrameReader(path, info, geometry, threads=1)  # one frame per seek
    out: dict[int, np.ndarray] = {}
    container, stream = reader._open()
    with container:
        for position in (int(i) for i in wanted):
            target = int(index.pts[position])
            if out or position > 0:
                container.seek(target, stream=stream, backward=True)  # flushes the decoder
            try:
                frame = _decode_one_packet(container, stream, target, position)
            except av.FFmpegError as error:
                raise _KeyframeIndexWrong(
                    f"keyframe {position} does not decode ({_ffmpeg_message(error)})"
                ) from error
            out[position] = reader._clip_frame(frame, position)
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


def _undecodable_reason(index: _StreamIndex, first_out: int) -> str:
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


def _frame_position(frame: Any, index: _StreamIndex) -> int:
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
            f"corrupt bitstream: {_ffmpeg_message(error)}, after {produced} decoded frames "
            f"of {info.num_frames}",
        ) from error


def _skips_safely(stream: Any) -> bool:
    """Whether non-reference pictures may be skipped without changing any frame (rule 4)."""
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
            f"corrupt bitstream: {_ffmpeg_message(error)}, after {produced} decoded frames "
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


# ----------------------------------------------------------------------------- decode_view


def decode_view(
    path: str | os.PathLike[str],
    sampling: SamplingConfig,
    key: str,
    geometry: FrameGeometry,
    backend: str | Sequence[str] = "auto",
    threads: int = 1,
    device: str = "cpu",
) -> DecodedView:
    """Sample, decode, rotate, resize and crop the clips of one video (module rules 1-11).

    ``key`` names the video for the sampling jitter (e.g. ``"<take>/<view>"``);
    ``backend``: a backend name, an order of names, or "auto" (rule 6);
    ``threads`` are decoder threads (1 suits one decode per worker process; 0 lets torchcodec
    and decord choose, PyAV then uses 1); ``device``: where torchcodec decodes.
    Returns frames of shape (K, T, crop_height, crop_width, 3), uint8 RGB.
    Raises DecodeError with a readable reason.
    """
    order = backend_order(backend)
    path = str(path)
    log: list[str] = []
    try:
        with _decoder_log_captured(log):
            view = _decode_view(path, sampling, key, geometry, order, threads, device)
    except DecodeError as error:
        raise DecodeError(path, _with_log_tail(error.reason, log)) from error
    view.decoder_log_lines = len(log)
    return view


def _decode_view(
    path: str,
    sampling: SamplingConfig,
    key: str,
    geometry: FrameGeometry,
    order: tuple[str, ...],
    threads: int,
    device: str,
) -> DecodedView:
    info, index = _probe(path, threads)
    sampled = sample_indices(info.num_frames, sampling, key)
    note = ""
    if sampling.snap == "keyframe":
        snapped, note, index_wrong = _snapped_view(path, info, index, sampled.indices, geometry)
        if snapped is not None:
            snapped.padded = sampled.padded
            return snapped
        if index_wrong:  # no seek may trust these keyframes: decode from the start, with PyAV
            index = replace(index, key_positions=index.key_positions[:0])
            order = ("pyav",)
    wanted = np.unique(sampled.indices)
    if wanted[0] < index.first_decodable:  # known from probe: fail before any decoding
        raise DecodeError(path, _undecodable_reason(index, index.first_decodable))
    frames_at, used, fallback_reason = _read_with_backend(
        path, info, index, wanted, geometry, order, threads, device
    )
    if fallback_reason:  # the store says which decoder made a view's frames when not the first
        note = "; ".join(filter(None, [note, f"decoded by {used} ({fallback_reason})"]))
    flat = [frames_at[int(i)] for i in sampled.indices.reshape(-1)]
    frames = np.stack(flat).reshape(
        *sampled.indices.shape, geometry.crop_height, geometry.crop_width, 3
    )
    return DecodedView(
        frames=frames,
        indices=sampled.indices,
        timestamps=index.times_s[sampled.indices],
        padded=sampled.padded,
        backend=used,
        info=info,
        fallback_reason=fallback_reason,
        note=note,
    )


def _snapped_view(
    path: str, info: VideoInfo, index: _StreamIndex, indices: np.ndarray, geometry: FrameGeometry
) -> tuple[DecodedView | None, str, bool]:
    """Rule 12: (the clips at the keyframes nearest to ``indices``, "", False), or (None, why
    not, whether the keyframe flags proved wrong) when the view must be decoded exactly."""
    why = _keyframe_index_unusable(index)
    if why:
        return None, f"keyframe sampling fell back to exact decoding: {why}", False
    snapped = snap_to_keyframes(indices, index.key_positions)
    try:
        frames_at = read_keyframes(path, info, index, np.unique(snapped), geometry)
    except _KeyframeIndexWrong as wrong:
        why = f"{wrong}; decoded from the start instead, without seeking"
        return None, f"keyframe sampling fell back to exact decoding: {why}", True
    flat = [frames_at[int(i)] for i in snapped.reshape(-1)]
    frames = np.stack(flat).reshape(*snapped.shape, *flat[0].shape)
    return DecodedView(frames, snapped, index.times_s[snapped], 0, "pyav", info), "", False


def _keyframe_index_unusable(index: _StreamIndex) -> str:
    """Why the packet index cannot give keyframes to snap to ("" when it can)."""
    if index.pts is None:
        return "timestamps cannot identify frames (e.g. AVI), so keyframes cannot be located"
    keys = index.key_positions
    if len(keys) == 0:
        return "the container flags no keyframe"
    if int(keys[0]) < index.first_decodable:
        return f"keyframe {int(keys[0])} lies before the first decodable frame"
    return ""


@contextlib.contextmanager
def _decoder_log_captured(lines: list[str]) -> Iterator[None]:
    """Rule 11: file descriptor 2 goes to a temporary file while decoding; its non-empty lines
    are appended to ``lines`` at the end. FFmpeg (PyAV's and decord's own copy) and decord's
    C++ code write there directly, whatever Python's logging says."""
    if not _CAPTURE_LOCK.acquire(blocking=False):
        yield  # another thread is capturing already
        return
    try:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep off the terminal
            yield
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text = capture.read().decode("utf-8", errors="replace")
                lines.extend(line.strip() for line in text.splitlines() if line.strip())
    finally:
        _CAPTURE_LOCK.release()


def _with_log_tail(reason: str, log: list[str]) -> str:
    """A failure reason with the decoders' last log line (one line, short)."""
    if not log:
        return reason
    last = _FFMPEG_LOG_PREFIX.sub(r"\1: ", _DECORD_LOG_PREFIX.sub("", log[-1])).strip()
    if len(last) > LOG_TAIL_CHARS:
        last = last[: LOG_TAIL_CHARS - 3] + "..."
    count = f"{len(log)} line{'s' if len(log) > 1 else ''}"
    return f"{reason} (decoder log, {count}, last: {last})"


def backend_order(backend: str | Sequence[str]) -> tuple[str, ...]:
    """The backends to try, in order, for ``decode_view``'s ``backend`` (rule 6)."""
    names = [backend] if isinstance(backend, str) else list(backend)
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise ValueError(
            f"decoders must be names from {', '.join(BACKENDS)}, not {unknown or 'none'}"
        )
    if names == ["auto"]:
        return DEFAULT_ORDER
    if "auto" in names:
        raise ValueError("decoders auto is an order by itself; list names or auto alone")
    return tuple(dict.fromkeys(names))


def _read_with_backend(
    path: str,
    info: VideoInfo,
    index: _StreamIndex,
    wanted: np.ndarray,
    geometry: FrameGeometry,
    order: tuple[str, ...],
    threads: int,
    device: str,
) -> tuple[dict[int, np.ndarray], str, str]:
    """Rule 6: each backend of ``order`` in turn until one is suitable; (frames, backend,
    why the ones before it were not)."""
    reasons: list[str] = []
    for name in order:
        try:
            frames = _READERS[name](path, info, index, wanted, geometry, threads, device)
        except BackendUnsuitable as why:
            reasons.append(f"{name}: {why}")
            continue
        return frames, name, "; ".join(reasons)
    raise DecodeError(path, "; ".join(reasons))


def _decord_reader(path, info, index, wanted, geometry, threads, device) -> dict:
    """decord, after the refusals known from the index (rule 2, AVI timestamps)."""
    unsuitable = _seek_refused(index, "decord") or _decord_refused(index, info)
    if unsuitable:
        raise _DecordUnsuitable(unsuitable)
    return _read_decord(path, info, index, wanted, geometry, threads)


def _pyav_reader(path, info, index, wanted, geometry, threads, device) -> dict:
    return _read_pyav(path, info, index, wanted, geometry, threads)


def _torchcodec_reader(path, info, index, wanted, geometry, threads, device) -> dict:
    """torchcodec (``pipeline/decode_torchcodec.py``, which checks its frames against the
    index); each frame turned into a clip frame as it comes."""
    from skill.pipeline import decode_torchcodec

    unsuitable = _seek_refused(index, "torchcodec")
    if unsuitable:
        raise BackendUnsuitable(unsuitable)
    size = geometry.resized_size(info.width, info.height)

    def turns_still_needed(shape: tuple[int, ...], frame0: Callable[[], np.ndarray]) -> int | None:
        return missing_turns(shape, info, index, frame0)

    frames = decode_torchcodec.read_frames(
        path, info, index, wanted, threads, device, turns_still_needed
    )
    try:
        return {p: _to_clip_frame(rgb, turns, size, geometry) for p, rgb, turns in frames}
    except decode_torchcodec.TorchcodecUnsuitable as why:
        raise BackendUnsuitable(str(why)) from None


_READERS: dict[str, Callable[..., dict[int, np.ndarray]]] = {
    "decord": _decord_reader,
    "pyav": _pyav_reader,
    "torchcodec": _torchcodec_reader,
}
"""Rule 6's registry: backend name -> reader(path, info, index, wanted, geometry, threads,
device) -> {position: clip frame}, raising BackendUnsuitable to pass the file on."""


def _seek_refused(index: _StreamIndex, backend: str) -> str:
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


def _decord_refused(index: _StreamIndex, info: VideoInfo) -> str:
    """Why decord, beyond ``_seek_refused``, cannot be trusted with this file.

    decord's stream is recognised by its frame count and size (rule 2), so another video
    stream of the same size makes it ambiguous. decord seeks by keyframe flags, so flags on
    every frame of an inter-coded stream make it seek to frames that cannot be decoded.
    """
    if index.keyframes_doubtful:
        return (
            "every frame of an inter-coded stream is flagged a keyframe: decord would seek "
            "to frames that cannot be decoded on their own"
        )
    if index.same_size_streams:
        return (
            f"streams {list(index.same_size_streams)} have the same size as the chosen "
            f"stream #{info.stream_index}, decord might read any of them"
        )
    return ""
