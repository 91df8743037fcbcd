"""torchcodec as a decode backend: the frames ``pipeline.decode`` asks for, read by torchcodec
on the CPU or on an NVIDIA GPU (NVDEC), and checked against the packet index ``probe`` built.

An optional extra (``pip install -e ".[torchcodec]"``, plus FFmpeg's shared libraries
4-7: Debian ``libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4
libavfilter8 libavdevice59``). ``pipeline.decode`` calls ``read_frames`` through its
backend registry and turns each frame into a clip frame; the rules of ``pipeline.decode``
hold unchanged:

- **Stream.** torchcodec is told the stream ``probe`` chose (rule 2); unlike decord it can
  read any stream.
- **Frame positions.** ``VideoDecoder(seek_mode="exact")`` scans the file and numbers frames
  in presentation order, as rule 3 does. This is checked, never assumed: torchcodec must count
  the same frames, and every frame it returns must carry the presentation time the index has
  for its position (within half a time-base tick), otherwise torchcodec is unsuitable for the
  file and the next backend reads it. Files whose timestamps cannot identify frames (AVI) or
  whose stream does not start with a decodable keyframe are refused before opening
  (``pipeline.decode._seek_refused``, shared with decord).
- **Reading.** ``get_frames_at`` on the sorted unique positions, a few at a time (bounded
  full-resolution memory), ``num_ffmpeg_threads`` = the ``threads`` of ``decode_view``
  (0 = FFmpeg picks; 1 suits one decode per worker process).
- **Corrupt data.** A torchcodec error while reading makes torchcodec unsuitable, so the next
  backend (PyAV, which reports corruption exactly: rule 5) decides; forced alone it fails the
  view with torchcodec's message. torchcodec exposes no per-frame "corrupt" flag, so a frame
  FFmpeg conceals without an error is not detected by this backend alone (PyAV's is).
- **Orientation.** torchcodec applies the display rotation itself (0.13); its output is
  checked like decord's (frame shape for 90/270, frame 0 for 180) and rotated where it is not.
- **Device.** ``device="cuda"`` / ``"cuda:N"`` decodes with NVDEC; frames come back to the
  CPU for the resize and crop. Written, not tested here (no GPU on this machine).

Imports nothing of skill (``pipeline.decode`` imports this module lazily, never the other way
round); torchcodec and torch are imported on first use, so in a decode worker (which starts
without torch) the first torchcodec video also pays torch's import, a few seconds of its
timeout.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

# Frames per get_frames_at call: bounds the full-resolution frames held at once.
TORCHCODEC_BATCH = 8
# torchcodec's C++ messages start "decodeAVFrame, /path/SingleStreamDecoder.cpp:1436, ".
_CPP_PREFIX = re.compile(r"^\w+, \S+\.(?:cpp|h):\d+, ")


class TorchcodecUnsuitable(Exception):
    """torchcodec cannot give the frames the rules ask for; the next backend should read."""


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
    info: Any,
    index: Any,
    wanted: np.ndarray,
    threads: int,
    device: str,
    missing_turns: Callable[[tuple[int, ...], Callable[[], np.ndarray]], int | None],
) -> Iterator[tuple[int, np.ndarray, int]]:
    """(position, (H, W, 3) uint8 RGB frame, counter-clockwise quarter-turns still needed)
    for each of the sorted unique positions ``wanted``, in order.

    ``info`` / ``index``: the ``VideoInfo`` and ``_StreamIndex`` of ``pipeline.decode``;
    ``missing_turns(shape, frame 0)``: ``pipeline.decode.missing_turns`` for this video, the
    turns still needed on frames of that shape (None: a shape it does not expect). Raises
    TorchcodecUnsuitable.
    """
    decoder = _open(path, info, threads, device)
    turns: int | None = None
    for start in range(0, len(wanted), TORCHCODEC_BATCH):
        chunk = [int(i) for i in wanted[start : start + TORCHCODEC_BATCH]]
        frames, pts_s = _get_frames(decoder, chunk)
        _check_times(chunk, pts_s, index)
        if turns is None:
            turns = missing_turns(frames.shape[1:], lambda: _get_frames(decoder, [0])[0][0])
            if turns is None:
                coded = (index.coded_height, index.coded_width, 3)
                raise TorchcodecUnsuitable(
                    f"torchcodec returned frames of shape {tuple(frames.shape[1:])}, "
                    f"expected {coded}"
                )
        for position, rgb in zip(chunk, frames, strict=True):
            yield position, rgb, turns


def _open(path: str, info: Any, threads: int, device: str) -> Any:
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


def _check_times(positions: list[int], pts_s: np.ndarray, index: Any) -> None:
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
