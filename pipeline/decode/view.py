"""The view driver: one video in, the K sampled clips of T frames out. ``decode_view`` probes
the file and builds its packet index, samples the positions, reads them with keyframe mode or
with the first suitable decoder of the order, turns each frame upright and crops it, and keeps
what the decoders print off the terminal; a video that cannot be decoded is a ``DecodeError``
with a one-line reason. This is the job decode worker processes run (docs/decoding.md)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from skill.pipeline.decode.errors import DecodeError
from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.index import VideoInfo, probe_index, undecodable_reason
from skill.pipeline.decode.keyframes import KeyframesUnusable, snapped_clips
from skill.pipeline.decode.log_capture import decoder_log_captured, with_log_tail
from skill.pipeline.decode.registry import backend_order, read_with_backend
from skill.pipeline.sampling import SamplingConfig, sample_indices


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
    """Why the decoders before ``backend`` in the order could not read the file ("" when the
    first one did)."""
    decoder_log_lines: int = 0
    """Lines the decoders (FFmpeg, decord) logged while decoding; dropped, not printed."""
    note: str = ""
    """Something the store should say about this view although it decoded (keyframe sampling
    fell back to exact decoding, and why; a decoder after the first in the order made its
    frames, and why the ones before it could not); "" when nothing."""


def decode_view(
    path: str | os.PathLike[str],
    sampling: SamplingConfig,
    key: str,
    geometry: FrameGeometry,
    backend: str | Sequence[str] = "auto",
    threads: int = 1,
    device: str = "cpu",
) -> DecodedView:
    """Sample, decode, rotate, resize and crop the clips of one video.

    ``key`` names the video for the sampling jitter (e.g. ``"<take>/<view>"``);
    ``backend``: a backend name, an order of names, or "auto" (``registry.backend_order``);
    ``threads`` are decoder threads (1 suits one decode per worker process; 0 lets torchcodec
    and decord choose, PyAV then uses 1); ``device``: where torchcodec decodes.
    Returns frames of shape (K, T, crop_height, crop_width, 3), uint8 RGB.
    Raises DecodeError with a readable reason.
    """
    order = backend_order(backend)
    path = str(path)
    log: list[str] = []
    try:
        with decoder_log_captured(log):
            view = _decode_view(path, sampling, key, geometry, order, threads, device)
    except DecodeError as error:
        raise DecodeError(path, with_log_tail(error.reason, log)) from error
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
    info, index = probe_index(path, threads)
    sampled = sample_indices(info.num_frames, sampling, key, fps=info.fps)
    note = ""
    if sampling.snap == "keyframe":
        try:
            frames, snapped = snapped_clips(path, info, index, sampled.indices, geometry)
        except KeyframesUnusable as why:
            note = str(why)
            if why.flags_wrong:  # no seek may trust these keyframes: from the start, with PyAV
                index = replace(index, key_positions=index.key_positions[:0])
                order = ("pyav",)
        else:
            times = index.times_s[snapped]
            return DecodedView(frames, snapped, times, sampled.padded, "pyav", info)
    wanted = np.unique(sampled.indices)
    if wanted[0] < index.first_decodable:  # known from probe: fail before any decoding
        raise DecodeError(path, undecodable_reason(index, index.first_decodable))
    frames_at, used, fallback_reason = read_with_backend(
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
