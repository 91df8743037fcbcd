"""torchcodec as a decoder, an optional extra (``pip install -e ".[torchcodec]"`` plus FFmpeg
4-7's shared libraries), on the CPU or on an NVIDIA GPU (NVDEC, ``--decode-device cuda``).
torchcodec numbers frames itself, so nothing it returns is assumed: it is told the stream the
index chose, must count the same frames, and every frame must carry the presentation time the
packet index has for its position; otherwise, or on any error of its own, it passes the file to
the next decoder of the order. torchcodec and torch are imported on first use, so a decode
worker (which starts without torch) pays torch's import with its first torchcodec video
(docs/decoding.md, "torchcodec")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from skill.pipeline.decode.errors import BackendUnsuitable
from skill.pipeline.decode.frames import to_clip_frame
from skill.pipeline.decode.index import StreamIndex, VideoInfo, missing_turns, seek_refused
from skill.pipeline.decode.registry import Backend, register

# Frames per get_frames_at call: bounds the full-resolution frames held at once.
TORCHCODEC_BATCH = 8
# torchcodec's C++ messages start "decodeAVFrame, /path/SingleStreamDecoder.cpp:1436, ".
_CPP_PREFIX = re.compile(r"^\w+, \S+\.(?:cpp|h):\d+, ")


class TorchcodecUnsuitable(BackendUnsuitable):
    """torchcodec cannot be trusted with this file; the next backend of the order should read it."""


def available() -> str:
    """ "" when torchcodec imports (with its FFmpeg libraries), else why not (one line)."""
    try:
        _import_decoder()
    except TorchcodecUnsuitable as why:
        return str(why)
    return ""


def _import_decoder() -> Any:
    """torchcodec's VideoDecoder class; not installed or no FFmpeg libraries: unsuitable."""
    try:
        import torch  # noqa: F401  (torchcodec needs torch imported first)
        from torchcodec.decoders import VideoDecoder
    except ImportError as error:
        raise TorchcodecUnsuitable(f"torchcodec is not installed ({error})") from None
    except (OSError, RuntimeError) as error:  # its libraries fail to load: FFmpeg missing
        raise TorchcodecUnsuitable(
            "torchcodec cannot load FFmpeg's shared libraries (install FFmpeg 4-7, e.g. "
            f"Debian libavcodec59 ...): {_first_line(error)}"
        ) from None
    return VideoDecoder


def read_frames(
    path: str,
    info: VideoInfo,
    index: StreamIndex,
    wanted: np.ndarray,
    threads: int,
    device: str,
) -> Iterator[tuple[int, np.ndarray, int]]:
    """(position, (H, W, 3) uint8 RGB frame, counter-clockwise quarter-turns still needed)
    for each of the sorted unique positions ``wanted``, in order, each frame checked against
    the packet index. Raises TorchcodecUnsuitable.
    """
    decoder = _open(path, info, threads, device)
    turns: int | None = None
    for start in range(0, len(wanted), TORCHCODEC_BATCH):
        chunk = [int(i) for i in wanted[start : start + TORCHCODEC_BATCH]]
        frames, pts_s = _get_frames(decoder, chunk)
        _check_times(chunk, pts_s, index)
        if turns is None:
            turns = missing_turns(
                frames.shape[1:], info, index, lambda: _get_frames(decoder, [0])[0][0]
            )
            if turns is None:
                coded = (index.coded_height, index.coded_width, 3)
                raise TorchcodecUnsuitable(
                    f"torchcodec returned frames of shape {tuple(frames.shape[1:])}, "
                    f"expected {coded}"
                )
        for position, rgb in zip(chunk, frames, strict=True):
            yield position, rgb, turns


def _open(path: str, info: VideoInfo, threads: int, device: str) -> Any:
    """A VideoDecoder on the chosen stream, frames in NHWC; checks it counts the same frames."""
    video_decoder = _import_decoder()
    try:
        decoder = video_decoder(
            path,
            stream_index=info.stream_index,
            seek_mode="exact",
            dimension_order="NHWC",
            num_ffmpeg_threads=max(0, int(threads)),
            device=device,
        )
    except Exception as error:  # RuntimeError / ValueError with C++ locations
        raise TorchcodecUnsuitable(f"cannot open: {_first_line(error)}") from None
    counted = decoder.metadata.num_frames
    if counted != info.num_frames:
        raise TorchcodecUnsuitable(
            f"torchcodec counts {counted} frames where stream #{info.stream_index} has "
            f"{info.num_frames} packets"
        )
    return decoder


def _get_frames(decoder: Any, positions: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """((N, H, W, 3) uint8 on the CPU, (N,) float64 presentation times in seconds)."""
    try:
        batch = decoder.get_frames_at(positions)
    except Exception as error:
        raise TorchcodecUnsuitable(
            f"corrupt bitstream: {_first_line(error)} (reading frames "
            f"{positions[0]}-{positions[-1]})"
        ) from None
    return batch.data.cpu().numpy(), batch.pts_seconds.double().cpu().numpy()


def _check_times(positions: list[int], pts_s: np.ndarray, index: StreamIndex) -> None:
    """Each frame torchcodec returned is the one at its position: same presentation time."""
    expected = index.times_s[positions]
    tolerance = 0.5 * float(index.time_base) + 1e-9
    wrong = np.flatnonzero(np.abs(pts_s - expected) > tolerance)
    if len(wrong):
        at = int(wrong[0])
        raise TorchcodecUnsuitable(
            f"frame {positions[at]} came back at {pts_s[at]:.6f} s, the index has "
            f"{expected[at]:.6f} s (torchcodec numbers frames differently)"
        )


def _first_line(error: BaseException) -> str:
    """torchcodec's message without its C++ source location, on one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = _CPP_PREFIX.sub("", lines[0] if lines else "")
    return text[:200] or type(error).__name__


def _read(path, info, index, wanted, geometry, threads, device) -> dict[int, np.ndarray]:
    """The registry's reader: refusals known from the packet index first, then each frame
    turned into a clip frame as it comes."""
    unsuitable = seek_refused(index, "torchcodec")
    if unsuitable:
        raise TorchcodecUnsuitable(unsuitable)
    size = geometry.resized_size(info.width, info.height)
    frames = read_frames(path, info, index, wanted, threads, device)
    return {p: to_clip_frame(rgb, turns, size, geometry) for p, rgb, turns in frames}


register(Backend(name="torchcodec", read=_read, available=available))
