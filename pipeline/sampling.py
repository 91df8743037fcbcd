"""Which frames of a video make up each clip.

Four strategies draw ``K`` interchangeable samples of a take (``uniform``, ``windows``,
``skillformer-windows``, ``segments``: the clip axis is ``samples``); two lay the clips out in
order over the whole take (``sequence``: K clips evenly; ``stride``: a clip every few frames
or seconds, as many as fit: the clip axis is ``sequence``). Each is deterministic for a given
(config, number of frames, key). A clip that cannot hold ``T`` distinct frames repeats the
video's last frame at its end (``padded`` counts them); a video the ordered strategies cannot
cover as asked is refused with a one-line reason (`ClipsRefused`), which fails its view.
``snap="keyframe"`` moves every position to the nearest keyframe. Randomness (only with
``jitter=True``) comes from a generator seeded by a SHA-256 of ``(seed, key)``, never from
Python's salted ``hash()``, so a take samples the same frames in every process and every run.
The rules of each strategy are in docs/sampling.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

STRATEGIES: tuple[str, ...] = (
    "uniform", "windows", "skillformer-windows", "segments", "sequence", "stride",
)  # fmt: skip
SEQUENCE_STRATEGIES: tuple[str, ...] = ("sequence", "stride")
"""The strategies whose clips form an ordered sequence over the take (`clip_axis`)."""
SNAP_MODES: tuple[str, ...] = ("exact", "keyframe")
CLIP_EVERY_UNITS: tuple[str, ...] = ("frames", "seconds")


class ClipsRefused(ValueError):
    """A video that the sampling cannot cover as asked; ``reason`` is one line naming the
    settings (its view fails with it, the run goes on)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SamplingConfig:
    """How clips are sampled from one video."""

    strategy: str = "uniform"
    """One of ``uniform``, ``windows``, ``skillformer-windows``, ``segments``, ``sequence``,
    ``stride`` (see the module docstring)."""
    frames: int = 16
    """T: frames per clip."""
    clips: int = 1
    """K: clips per video (``stride``: the most a video may have)."""
    stride: int = 4
    """Step between the frames of a window (``windows``, ``stride``; ``skillformer-windows``:
    the rate of its linspace, a window of ``T * stride`` frames); ignored otherwise."""
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
    clip_every: float | None = None
    """A clip starts every this many ``clip_every_unit`` (``stride`` only, required there)."""
    clip_every_unit: str = "frames"
    """``frames`` or ``seconds``: the unit of ``clip_every`` (``stride`` only)."""

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
        self._check_stride_fields()

    def _check_stride_fields(self) -> None:
        """``clip_every`` is required by, and only allowed with, strategy 'stride'; a stride
        clip grid is fixed (no jitter), and a step in frames is a whole number of frames."""
        if self.strategy != "stride":
            given = ["clip_every"] if self.clip_every is not None else []
            given += ["clip_every_unit"] if self.clip_every_unit != "frames" else []
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply to strategy 'stride', not {self.strategy!r}"
                )
            return
        every, unit = self.clip_every, self.clip_every_unit
        if unit not in CLIP_EVERY_UNITS:
            raise ValueError(f"sampling clip_every_unit {unit!r} is not one of {CLIP_EVERY_UNITS}")
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not every > 0:
            raise ValueError(f"strategy 'stride' needs clip_every > 0, got {every!r}")
        if unit == "frames":
            if not float(every).is_integer():
                raise ValueError(f"clip_every {every!r} frames is not a whole number of frames")
            object.__setattr__(self, "clip_every", int(every))  # 2.0 from a CLI float: 2
        if self.jitter:
            raise ValueError(
                "strategy 'stride' places clips on a fixed grid: jitter does not apply"
            )

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
        not ``exact``, and ``clip_every`` with its unit only for ``stride``: records made
        before those options existed stay equal to new ones that do not use them."""
        record = asdict(self)
        if record["snap"] == "exact":
            del record["snap"]
        if record["clip_every"] is None:
            del record["clip_every"], record["clip_every_unit"]
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


def clip_axis(cfg: SamplingConfig) -> str:
    """``"sequence"`` when the clips are the take in order (strategies ``sequence`` and
    ``stride``), ``"samples"`` when they are interchangeable samples of it (the others)."""
    return "sequence" if cfg.strategy in SEQUENCE_STRATEGIES else "samples"


def sample_indices(
    num_frames: int, cfg: SamplingConfig, key: str, fps: float | None = None
) -> SampledIndices:
    """Choose K clips of T frame positions from a video of ``num_frames`` frames.

    ``key`` identifies the video (e.g. ``"<take>/<view>"``) and seeds the jitter; ``fps``,
    its frame rate, is needed by ``stride`` sampling in seconds only.
    Returns indices of shape (K, T), int64; ``stride``: (K_take, T), the clips that fit, at
    most K. `ClipsRefused` for a video the ordered strategies cannot cover as asked.
    """
    if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"cannot sample from a video with {num_frames!r} frames")
    num_frames = int(num_frames)
    rng = _rng_for(cfg.seed, key) if cfg.jitter else None
    if cfg.strategy == "sequence":
        return _sequence(num_frames, cfg, rng)
    if cfg.strategy == "stride":
        return _stride(num_frames, cfg, fps)
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


def _sequence(
    num_frames: int, cfg: SamplingConfig, rng: np.random.Generator | None
) -> SampledIndices:
    """K * T positions spread over the whole video, one per equal bin (its centre, or a
    random point with jitter), cut in order into K clips of T."""
    if num_frames < cfg.frames:
        raise ClipsRefused(
            f"a clip of --frames {cfg.frames} is longer than the video ({num_frames} frames)"
        )
    total = cfg.clips * cfg.frames
    where = np.full(total, 0.5) if rng is None else rng.random(total)
    position = np.floor((np.arange(total) + where) * (num_frames / total)).astype(np.int64)
    indices = np.minimum(position, num_frames - 1).reshape(cfg.clips, cfg.frames)
    return SampledIndices(indices, padded=0)


def _stride(num_frames: int, cfg: SamplingConfig, fps: float | None) -> SampledIndices:
    """A clip of T frames at ``stride`` starting every ``clip_every`` frames or seconds from
    the first frame, as many as fit whole in the video (K_take <= K)."""
    span = (cfg.frames - 1) * cfg.stride + 1
    if span > num_frames:
        raise ClipsRefused(
            f"a clip of --frames {cfg.frames} at --stride {cfg.stride} spans {span} frames, "
            f"longer than the video ({num_frames} frames)"
        )
    every = f"--clip-every {cfg.clip_every:g} {cfg.clip_every_unit}"
    if cfg.clip_every_unit == "frames":
        step = float(cfg.clip_every)
    elif fps is None or not fps > 0:
        raise ClipsRefused(f"{every} needs the video's frame rate, which it does not state")
    else:
        step = cfg.clip_every * fps
        if step < 1:
            raise ClipsRefused(
                f"{every} is less than one frame at the video's {fps:g} fps: it gives no clip "
                "of its own (use a longer --clip-every)"
            )
    count = int(np.floor((num_frames - span) / step + 1e-9)) + 1
    if count > cfg.clips:
        raise ClipsRefused(
            f"stride sampling needs {count} clips ({every} over {num_frames} frames), more "
            f"than --clips {cfg.clips}"
        )
    starts = np.minimum(np.floor(np.arange(count) * step + 0.5).astype(np.int64), num_frames - span)
    indices = starts[:, None] + cfg.stride * np.arange(cfg.frames, dtype=np.int64)
    return SampledIndices(indices, padded=0)


def clip_bounds(timestamps: np.ndarray, fps: float) -> np.ndarray:
    """``(K, 2)`` float [start, end) seconds of clips whose frames lie at ``timestamps (K, T)``
    (rows sorted): the first frame's time, and the last frame's time plus one frame
    (``1 / fps``; nothing when the rate is unknown)."""
    times = np.asarray(timestamps, dtype=np.float64)
    frame = 1.0 / fps if fps and fps > 0 else 0.0
    return np.stack([times[:, 0], times[:, -1] + frame], axis=1)


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
