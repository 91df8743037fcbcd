"""Which frames of a video make up each clip.

Four strategies, all deterministic for a given (config, number of frames, key):

- ``uniform``: ``T`` frames spread over the whole video. The video is cut into ``T`` equal
  bins and one frame is taken per bin. Clip ``k`` of ``K`` takes the point at fraction
  ``(k + 0.5) / K`` of each bin (``K = 1``: the bin centres, the usual test-time choice), or
  a random point per bin with ``jitter=True`` (TSN-style training sampling).
- ``windows``: ``K`` windows of ``T`` frames at stride ``s`` (span ``(T - 1) * s + 1``),
  window ``k`` centred in the ``k``-th of ``K`` equal parts of the video (or at a random
  point of that part with ``jitter=True``), clamped to the video.
- ``skillformer-windows``: SkillFormer's placement of such windows (EdoWhite/SkillFormer,
  ``sample_frame_indices`` at rate ``s``): ``np.linspace(start, start + T * s, T)``, clipped
  to ``start + T * s - 1`` and cast to int, so the steps are ``T * s / (T - 1)`` truncated
  (4 and 5 for T = 16, s = 4: offsets 0, 4, 8, 12, 17, ..., 59, 63), not exactly ``s``. The
  window fits the video when ``num_frames > T * s``; window ``k`` starts in the ``k``-th of
  ``K`` equal parts of the starts that keep it inside (the middle of that part, or a uniformly
  random start with ``jitter=True``; ``K = 1`` with jitter is SkillFormer's random window).
  A video of ``T + 1`` to ``T * s`` frames gets SkillFormer's own rule for it, the same
  formula from frame 0 to the last frame (``np.linspace(0, n - 1, T)`` clipped to ``n - 2``);
  one of at most ``T`` frames follows the short-video rule below.
- ``segments`` (PATS-style): ``n_segments`` short dense segments of ``segment_len``
  frames at ``segment_stride``, segment ``j`` inside the ``j``-th of ``n_segments`` equal
  parts of the video, so ``T = n_segments * segment_len``. When the parts are too short
  for the requested stride, the stride is reduced (down to 1) so that segments never
  overlap.

Short videos: whenever a clip cannot hold ``T`` distinct frames in the way the strategy
asks (``num_frames < T``, or a ``windows`` window longer than the video), the clip takes the
frames it can, in order, and fills the remaining positions at its end with the last frame of
the video; ``padded`` counts those positions per clip (it is the same for every clip).

Keyframe snapping (``snap="keyframe"``, an explicit option; the default ``"exact"`` keeps the
positions above): every sampled position moves to the nearest keyframe of the video (ties to
the earlier one), so that each sampled frame costs one keyframe decode instead of decoding
from the keyframe before it (``pipeline.decode``, benchmark 6). Positions that snap to the
same keyframe are kept as they are: the clip repeats that frame (decoded once), the stored
indices and timestamps show the repetition, and rows stay sorted. A window or segment
shorter than the keyframe interval therefore collapses onto one or two frames: the mode
suits ``uniform`` sampling over long videos.

Randomness (only with ``jitter=True``) comes from a generator seeded by a SHA-256 of
``(seed, key)``, never from Python's salted ``hash()``, so a take samples the same frames
in every process and every run.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

STRATEGIES: tuple[str, ...] = ("uniform", "windows", "skillformer-windows", "segments")
SNAP_MODES: tuple[str, ...] = ("exact", "keyframe")


@dataclass(frozen=True)
class SamplingConfig:
    """How clips are sampled from one video."""

    strategy: str = "uniform"
    """One of ``uniform``, ``windows``, ``skillformer-windows``, ``segments`` (see the module
    docstring)."""
    frames: int = 16
    """T: frames per clip."""
    clips: int = 1
    """K: clips per video."""
    stride: int = 4
    """Step between the frames of a window (``windows``; ``skillformer-windows``: the rate of
    its linspace, a window of ``T * stride`` frames); ignored otherwise."""
    n_segments: int | None = None
    """Number of dense segments per clip (``segments`` only, required there)."""
    segment_len: int | None = None
    """Frames per segment (``segments`` only, required there); n_segments * segment_len = T."""
    segment_stride: int = 1
    """Step between the frames of a segment (``segments`` only)."""
    jitter: bool = False
    """Random positions (seeded by ``seed`` and the video key) instead of fixed ones."""
    seed: int = 0
    """Seed of the jitter; unused when ``jitter`` is False."""
    snap: str = "exact"
    """``exact``: the positions the strategy chooses; ``keyframe``: each moved to the nearest
    keyframe (see the module docstring)."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"sampling strategy {self.strategy!r} is not one of {STRATEGIES}")
        if self.snap not in SNAP_MODES:
            raise ValueError(f"sampling snap {self.snap!r} is not one of {SNAP_MODES}")
        for name in ("frames", "clips", "stride", "segment_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"sampling {name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"sampling seed must be an integer >= 0, got {self.seed!r}")
        self._check_segment_fields()

    def _check_segment_fields(self) -> None:
        """Segment settings are required by, and only allowed with, strategy 'segments'."""
        given = {"n_segments": self.n_segments, "segment_len": self.segment_len}
        if self.strategy != "segments":
            set_ones = [name for name, value in given.items() if value is not None]
            if set_ones or self.segment_stride != 1:
                names = ", ".join(
                    set_ones + (["segment_stride"] if self.segment_stride != 1 else [])
                )
                raise ValueError(
                    f"{names} only apply to strategy 'segments', not {self.strategy!r}"
                )
            return
        for name, value in given.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"strategy 'segments' needs {name} as an integer >= 1, got {value!r}"
                )
        if self.n_segments * self.segment_len != self.frames:
            raise ValueError(
                f"strategy 'segments': n_segments * segment_len = {self.n_segments} * "
                f"{self.segment_len} = {self.n_segments * self.segment_len} must equal "
                f"frames = {self.frames}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, for provenance records. ``snap`` is written only when it is
        not ``exact``: records made before the option existed were exact, and stay equal to
        new exact ones, while a keyframe record never equals an exact one."""
        record = asdict(self)
        if record["snap"] == "exact":
            del record["snap"]
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingConfig:
        """Inverse of ``to_dict``; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown sampling settings: {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class SampledIndices:
    """Frame positions chosen for one video.

    ``indices``: (K, T) int64, positions in presentation order, each row sorted, all in
    ``[0, num_frames - 1]``. ``padded``: positions per clip filled by repeating the last
    frame of the video because the video is shorter than the clip asks for.
    """

    indices: np.ndarray
    padded: int


def sample_indices(num_frames: int, cfg: SamplingConfig, key: str) -> SampledIndices:
    """Choose K clips of T frame positions from a video of ``num_frames`` frames.

    ``key`` identifies the video (e.g. ``"<take>/<view>"``) and seeds the jitter.
    Returns indices of shape (K, T), int64.
    """
    if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_frames!r} frames")
    num_frames = int(num_frames)
    rng = _rng_for(cfg.seed, key) if cfg.jitter else None
    if num_frames < cfg.frames:
        return _all_frames_then_pad(num_frames, cfg)
    if cfg.strategy == "uniform":
        rows = [_uniform_clip(num_frames, cfg, k, rng) for k in range(cfg.clips)]
        return SampledIndices(np.stack(rows).astype(np.int64), padded=0)
    if cfg.strategy == "windows":
        return _windows(num_frames, cfg, rng)
    if cfg.strategy == "skillformer-windows":
        return _skillformer_windows(num_frames, cfg, rng)
    rows = [_segments_clip(num_frames, cfg, k, rng) for k in range(cfg.clips)]
    return SampledIndices(np.stack(rows).astype(np.int64), padded=0)


def _rng_for(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, key), identical across processes and runs."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _fraction(rng: np.random.Generator | None, k: int, clips: int, size: int) -> np.ndarray:
    """Where inside its bin/part each sample sits, in [0, 1): fixed per clip, or random."""
    if rng is None:
        return np.full(size, (k + 0.5) / clips)
    return rng.random(size)


def _all_frames_then_pad(num_frames: int, cfg: SamplingConfig) -> SampledIndices:
    """Every frame once, in order, then the last frame repeated up to T (all clips alike)."""
    row = np.concatenate([np.arange(num_frames), np.full(cfg.frames - num_frames, num_frames - 1)])
    indices = np.tile(row.astype(np.int64), (cfg.clips, 1))
    return SampledIndices(indices, padded=cfg.frames - num_frames)


def _uniform_clip(
    num_frames: int, cfg: SamplingConfig, k: int, rng: np.random.Generator | None
) -> np.ndarray:
    """One frame per each of T equal bins; needs num_frames >= T (so bins are >= 1 frame)."""
    position = (np.arange(cfg.frames) + _fraction(rng, k, cfg.clips, cfg.frames)) * (
        num_frames / cfg.frames
    )
    return np.minimum(np.floor(position).astype(np.int64), num_frames - 1)


def _windows(
    num_frames: int, cfg: SamplingConfig, rng: np.random.Generator | None
) -> SampledIndices:
    """K strided windows, each centred (or placed at random) in its part of the video."""
    span = (cfg.frames - 1) * cfg.stride + 1
    if span > num_frames:
        # Clamped to the start: the frames that fit, then the last frame as padding.
        real = np.arange(0, num_frames, cfg.stride)[: cfg.frames]
        row = np.concatenate([real, np.full(cfg.frames - len(real), num_frames - 1)])
        indices = np.tile(row.astype(np.int64), (cfg.clips, 1))
        return SampledIndices(indices, padded=cfg.frames - len(real))
    part = num_frames / cfg.clips
    rows = []
    for k in range(cfg.clips):
        where = 0.5 if rng is None else float(rng.random())
        centre = (k + where) * part
        start = int(np.clip(round(centre - span / 2), 0, num_frames - span))
        rows.append(start + cfg.stride * np.arange(cfg.frames))
    return SampledIndices(np.stack(rows).astype(np.int64), padded=0)


def _skillformer_windows(
    num_frames: int, cfg: SamplingConfig, rng: np.random.Generator | None
) -> SampledIndices:
    """K windows placed as SkillFormer places its one (see the module docstring)."""
    length = cfg.frames * cfg.stride  # SkillFormer's converted_len
    if num_frames <= cfg.frames:
        return _all_frames_then_pad(num_frames, cfg)
    if num_frames <= length:  # too short for a window: SkillFormer spreads it over the video
        row = _skillformer_positions(0, num_frames - 1, cfg.frames)
        return SampledIndices(np.tile(row, (cfg.clips, 1)), padded=0)
    starts = num_frames - length  # starts 0 .. num_frames - 1 - length keep the window inside
    rows = []
    for k in range(cfg.clips):
        where = 0.5 if rng is None else float(rng.random())
        start = min(int((k + where) * starts / cfg.clips), starts - 1)
        rows.append(_skillformer_positions(start, start + length, cfg.frames))
    return SampledIndices(np.stack(rows), padded=0)


def _skillformer_positions(start: int, end: int, frames: int) -> np.ndarray:
    """SkillFormer's arithmetic, operation for operation (float linspace, clip, truncate), so
    that its rounding is reproduced: ``(frames,)`` int64."""
    return np.clip(np.linspace(start, end, num=frames), start, end - 1).astype(np.int64)


def _segments_clip(
    num_frames: int, cfg: SamplingConfig, k: int, rng: np.random.Generator | None
) -> np.ndarray:
    """n dense segments, segment j inside the j-th of n equal parts; needs num_frames >= T."""
    n, length = cfg.n_segments, cfg.segment_len
    bounds = (np.arange(n + 1) * num_frames) // n
    shortest_part = int(np.min(np.diff(bounds)))
    stride = cfg.segment_stride
    if length > 1 and (length - 1) * stride + 1 > shortest_part:
        # Reduce the stride so a segment fits its part: segments then never overlap.
        stride = max(1, (shortest_part - 1) // (length - 1))
    span = (length - 1) * stride + 1
    offsets = _fraction(rng, k, cfg.clips, n)
    rows = []
    for j in range(n):
        slack = int(bounds[j + 1] - bounds[j]) - span
        start = int(bounds[j]) + min(int(offsets[j] * (slack + 1)), slack)
        rows.append(start + stride * np.arange(length))
    return np.concatenate(rows)


def snap_to_keyframes(indices: np.ndarray, key_positions: np.ndarray) -> np.ndarray:
    """Each position moved to the nearest of the sorted ``key_positions`` (ties to the
    earlier keyframe); same shape as ``indices``, int64. Sorted rows stay sorted."""
    keys = np.asarray(key_positions, dtype=np.int64)
    if keys.ndim != 1 or len(keys) == 0:
        raise ValueError("snapping to keyframes needs at least one keyframe position")
    flat = np.asarray(indices, dtype=np.int64).reshape(-1)
    after = np.clip(np.searchsorted(keys, flat, side="left"), 0, len(keys) - 1)
    before = np.clip(after - 1, 0, len(keys) - 1)
    take_before = np.abs(flat - keys[before]) <= np.abs(keys[after] - flat)
    return np.where(take_before, keys[before], keys[after]).reshape(np.shape(indices))
