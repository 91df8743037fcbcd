"""decord as a decoder, on request (``--decoders decord``): its ``get_batch`` on the sorted
wanted positions, a few frames at a time, with ``fault_tol`` set so that a frame it would
replace by the nearest good one raises instead. decord numbers frames itself, always reads the
stream FFmpeg picks and seeks by the container's keyframe flags, so it is used only where the
packet index shows it will read the chosen stream at the right positions, and its frame count
and orientation are checked; anywhere else it passes the file on. decord is imported lazily and
after torch: importing it before torch can freeze a torch DataLoader (docs/decoding.md,
"Decoders and their order")."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import numpy as np

from skill.pipeline.decode.errors import BackendUnsuitable
from skill.pipeline.decode.frames import to_clip_frame
from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.index import StreamIndex, VideoInfo, missing_turns, seek_refused
from skill.pipeline.decode.log_capture import DECORD_LOG_PREFIX
from skill.pipeline.decode.registry import Backend, register

# Frames per decord get_batch call: bounds the full-resolution frames held at once.
DECORD_BATCH = 8
# decord's fault_tol as a ratio: any recovered (substituted) frame in a video of fewer than
# a million frames raises instead of silently returning the nearest good frame.
DECORD_FAULT_TOL = 1e-6


class _DecordUnsuitable(BackendUnsuitable):
    """decord cannot be trusted with this file; the next backend of the order reads it (the
    message names decord's reason)."""


# Decode worker processes never run torch, so they skip importing it (seconds and ~300 MB
# per worker start); any other process imports torch before decord.
_TORCH_FREE_PROCESS = False


def _import_decord() -> Any:
    """decord, imported after torch (decord imported before torch can freeze a torch
    DataLoader)."""
    if "torch" not in sys.modules and not _TORCH_FREE_PROCESS:
        with contextlib.suppress(ImportError):
            import torch  # noqa: F401
    import decord

    return decord


def _read_decord(
    path: str,
    info: VideoInfo,
    index: StreamIndex,
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
            out[position] = to_clip_frame(rgb, turns, size, geometry)
    return out


def _check_decord_stream(reader: Any, info: VideoInfo) -> None:
    """decord must be reading the chosen stream, with the same frames."""
    if len(reader) != info.num_frames:
        raise _DecordUnsuitable(
            f"decord counts {len(reader)} frames where the chosen stream "
            f"#{info.stream_index} has {info.num_frames} (another stream, or a bad index)"
        )


def _first_line(error: Exception) -> str:
    """decord's message without its log prefixes ('[hh:mm:ss] file.cc:123: ') and trace."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    text = DECORD_LOG_PREFIX.sub("", lines[0] if lines else "").strip()
    return text[:200] or type(error).__name__


def _read(path, info, index, wanted, geometry, threads, device) -> dict[int, np.ndarray]:
    """The registry's reader: decord after the refusals known from the packet index (another
    stream it might read, timestamps that cannot identify frames, doubtful keyframe flags)."""
    unsuitable = seek_refused(index, "decord") or _decord_refused(index, info)
    if unsuitable:
        raise _DecordUnsuitable(unsuitable)
    return _read_decord(path, info, index, wanted, geometry, threads)


def _decord_refused(index: StreamIndex, info: VideoInfo) -> str:
    """Why decord, beyond ``seek_refused``, cannot be trusted with this file.

    decord reads the stream FFmpeg picks, recognised by its frame count and size, so another video
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


def _available() -> str:
    """ "" when decord imports, else why not."""
    try:
        _import_decord()
    except ImportError as error:
        return f"decord is not installed ({error})"
    return ""


def _preload() -> None:
    """In a decode worker: decord imported now, and without torch (workers never run it)."""
    global _TORCH_FREE_PROCESS
    _TORCH_FREE_PROCESS = True
    with contextlib.suppress(ImportError):
        _import_decord()


register(Backend(name="decord", read=_read, available=_available, preload=_preload))
