"""Shared pieces of the benchmarks: machine facts, tables, timing and cached bench data.

Bench data (synthetic token stores, a random-weight TimeSformer-base checkpoint, long 448p
videos, manifests) is built on first use under the data folder (``--data-dir``, else
``$SKILL_BENCH_DIR``, else ``<tmp>/skill-bench``) and reused by later runs; it is never
committed. Every builder writes to a staging path and renames it into place, so an
interrupted build is never mistaken for a finished one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skill.pipeline.backbones import TIMESFORMER_BASE_PREPROCESSING
from skill.pipeline.takes import Take
from skill.tasks import task_record
from skill.tasks.classification import EGOEXO4D_LEVELS as LABELS

REPO_ROOT = Path(__file__).resolve().parents[1]
VIEWS: tuple[str, ...] = ("ego", "exo1", "exo2", "exo3", "exo4")
SCENARIOS: tuple[str, ...] = ("Cooking", "Basketball", "Dance", "Music", "Bouldering", "Soccer")
# EgoExo4D demonstrator proficiency, Dec-2023 release: takes, train/val split, train labels.
EGOEXO_TAKES, EGOEXO_TRAIN, EGOEXO_VAL = 2370, 1904, 466
EGOEXO_TRAIN_LABEL_COUNTS = (336, 480, 512, 576)
# Bumped whenever a builder below changes what it writes (cached data is keyed by it).
GENERATOR_VERSION = 1
STORE_LAYOUT_VERSION = 2
"""Bumped when skill writes the same store differently (2: packed chunks carry the
`skill_finite_chunks` record): a store built by an earlier skill is rebuilt, not reused."""


# ----------------------------------------------------------------------------- CLI helpers


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has (``--data-dir``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where cached bench data lives (default $SKILL_BENCH_DIR or <tmp>/skill-bench)",
    )
    return parser


def data_dir(given: str | None) -> Path:
    """The bench data folder, created if needed."""
    folder = Path(
        given or os.environ.get("SKILL_BENCH_DIR") or Path(tempfile.gettempdir()) / "skill-bench"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ----------------------------------------------------------------------------- machine


def machine_info() -> dict[str, str]:
    """CPU model, cores, RAM, load, GPU and library versions of this machine."""
    import psutil
    import torch

    info = {
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable",
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} threads)",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
    }
    for module in ("numpy", "zarr", "h5py", "av", "transformers", "peft"):
        info[module] = _version_of(module)
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version_of(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except Exception:  # not installed, or no __version__
        return "n/a"


def print_machine(info: dict[str, str] | None = None) -> None:
    """Print the machine block every benchmark starts with."""
    info = info or machine_info()
    print("machine:")
    for key, value in info.items():
        print(f"  {key}: {value}")


# ----------------------------------------------------------------------------- tables


def fmt(value: Any) -> str:
    """A table cell: floats with 3 significant digits (at least), ints with separators."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return "-"
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        digits = max(0, 2 - int(math.floor(math.log10(abs(value)))))
        return f"{value:.{digits}f}"
    return str(value)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a plain-text table with right-aligned numbers."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


# ----------------------------------------------------------------------------- timing


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), wall seconds)``."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def best_and_median(seconds: Sequence[float]) -> tuple[float, float]:
    """(min, median) of repeated timings: min is the least disturbed by other jobs."""
    return float(np.min(seconds)), float(np.median(seconds))


# ----------------------------------------------------------------------------- atomic builds


def build_once(target: Path, build: Callable[[Path], None]) -> float | None:
    """Run ``build(staging)`` and rename staging to ``target`` unless ``target`` exists.

    Returns the build seconds, or None when ``target`` was reused.
    """
    from skill.cache.files import publish_folder, staging_folder

    if target.exists():
        return None
    start = time.perf_counter()
    with staging_folder(target, create=False) as staging:  # removed if the build fails
        build(staging)
        publish_folder(staging, target)
    return time.perf_counter() - start


def describe_build(seconds: float | None) -> str:
    """'built in 12.3 s' or 'reused' for what build_once returned."""
    return "reused" if seconds is None else f"built in {seconds:.1f} s"


# ----------------------------------------------------------------------------- token stores


@dataclass(frozen=True)
class StoreSpec:
    """An EgoExo4D-shaped synthetic token store (frame tokens of TimeSformer-base)."""

    takes: int = EGOEXO_TAKES
    """Number of takes (EgoExo4D demonstrator proficiency: 2,370)."""
    views: int = len(VIEWS)
    """Views per take (ego + 4 exo)."""
    tokens: int = 16
    """Tokens per view: one per sampled frame (``--tokens frame``, 16 frames)."""
    dim: int = 768
    """Token width (TimeSformer-base hidden size)."""
    takes_per_participant: int = 5
    """Takes of one participant (labels are per participant, as in EgoExo4D)."""
    signal: float = 0.1
    """Scale of the class signal in the tokens (noise has scale 1)."""
    seed: int = 0
    """Seed of labels, splits and token values."""

    @property
    def name(self) -> str:
        # The store format is in the name: a store of an older format is rebuilt, not reused.
        from skill.cache.store import FORMAT_VERSION

        return (
            f"egoexo-t{self.takes}-v{self.views}-n{self.tokens}-d{self.dim}"
            f"-p{self.takes_per_participant}-c{self.signal:g}-s{self.seed}"
            f"-g{GENERATOR_VERSION}-f{FORMAT_VERSION}-l{STORE_LAYOUT_VERSION}.zarr"
        )

    @property
    def nbytes(self) -> int:
        return self.takes * self.views * self.tokens * self.dim * 2


@dataclass
class _TakePlan:
    """Per-take metadata of a synthetic store."""

    label: np.ndarray  # (n,) int index into LABELS
    participant: np.ndarray  # (n,) int
    split: list[str]  # (n,) train / val
    scenario: list[str]  # (n,)


def synthetic_store(
    folder: Path, spec: StoreSpec, packed: bool = True
) -> tuple[Path, float | None]:
    """A real token store (written through TokenStore and zarr) for ``spec``, built once.

    ``packed``: in the layout `skill extract` leaves when a run finishes (large chunks);
    False: in the write layout (one chunk per take and view), as while extracting.
    Returns (path, build seconds or None when it was already there).
    """

    path = folder / (spec.name if packed else spec.name.replace(".zarr", "-write.zarr"))
    return path, build_once(path, lambda staging: _write_store(staging, spec, packed))


def _plan_takes(spec: StoreSpec, rng: np.random.Generator) -> _TakePlan:
    """Labels per participant (EgoExo4D train proportions), ~466/2370 of participants in val."""
    n_people = math.ceil(spec.takes / spec.takes_per_participant)
    proportions = np.asarray(EGOEXO_TRAIN_LABEL_COUNTS, dtype=float)
    person_label = rng.choice(4, size=n_people, p=proportions / proportions.sum())
    n_val = max(1, round(n_people * EGOEXO_VAL / EGOEXO_TAKES))
    val_people = set(rng.permutation(n_people)[:n_val].tolist())
    participant = np.arange(spec.takes) // spec.takes_per_participant
    return _TakePlan(
        label=person_label[participant],
        participant=participant,
        split=["val" if p in val_people else "train" for p in participant],
        scenario=[SCENARIOS[p % len(SCENARIOS)] for p in participant],
    )


def _write_store(path: Path, spec: StoreSpec, packed: bool) -> None:
    from skill.cache.store import TakeRow, TokenStore
    from skill.tasks.classification import EGOEXO4D_LEVELS as LABELS

    rng = np.random.default_rng(spec.seed)
    plan = _plan_takes(spec, rng)
    store = TokenStore.create(
        path,
        provenance={"backbone": {"name": "synthetic-timesformer-base"}, "tokens": "frame"},
        views=list(VIEWS[: spec.views]),
        task=task_record("classification", {"labels": list(LABELS)}),
        clips=1,
        tokens=spec.tokens,
        dim=spec.dim,
        frames=spec.tokens,
    )
    rows = [
        TakeRow(f"take{i:05d}", LABELS[plan.label[i]], plan.scenario[i], f"p{p:04d}", plan.split[i])
        for i, p in enumerate(plan.participant)
    ]
    store.add_takes(rows)
    _write_takes(store, spec, plan, rng)
    if packed:
        TokenStore.open(path, "a").pack()  # as `skill extract` does when a run finishes


def _write_takes(store, spec: StoreSpec, plan: _TakePlan, rng: np.random.Generator) -> None:
    """Tokens = per-view class signal + per-participant offset + noise, written in blocks of
    takes through the store (every view valid, frames 0..T-1 at 25 fps, status complete).

    The class signal is weak and differs per view, so a head learns over several epochs
    (a realistic stopping point), not in one. Noise comes from a bank of random tensors
    (cheap: generating 145 M normal values per store would dominate the build).
    """
    from skill.cache.store import STATUS_COMPLETE, TakeResult

    shape = (spec.tokens, spec.dim)
    class_signal = rng.standard_normal((4, *shape), dtype=np.float32) * spec.signal
    view_strength = np.linspace(1.0, 0.5, spec.views, dtype=np.float32)
    n_people = int(plan.participant.max()) + 1
    person_offset = rng.standard_normal((n_people, 1, spec.dim), dtype=np.float32) * 0.3
    bank = rng.standard_normal((1024, *shape), dtype=np.float32).astype(np.float16)
    v, t = spec.views, spec.tokens
    frames = np.broadcast_to(np.arange(t, dtype=np.int32) * 60, (v, 1, t))
    block = 256
    for start in range(0, spec.takes, block):
        stop = min(start + block, spec.takes)
        pick = rng.integers(len(bank), size=(stop - start, spec.views))
        signal = class_signal[plan.label[start:stop]][:, None] * view_strength[None, :, None, None]
        signal += person_offset[plan.participant[start:stop]][:, None]
        values = (bank[pick].astype(np.float32) + signal).astype(np.float16)
        results = [
            TakeResult(
                tokens=take[:, None],  # (V, K=1, N, D)
                valid=np.ones(v, dtype=bool),
                frame_index=frames,
                timestamp=(frames / 25.0).astype(np.float32),
                padded=np.zeros(v, dtype=np.int16),
                view_error=[""] * v,
                status=STATUS_COMPLETE,
            )
            for take in values
        ]
        store.write_takes(start, results)


# ----------------------------------------------------------------------------- backbone


def timesformer_base_checkpoint(folder: Path) -> tuple[Path, float | None]:
    """A local TimeSformer-base checkpoint folder with random weights, built once.

    transformers ``TimesformerConfig`` defaults (768-dim, 12 layers, 12 heads, patch 16,
    224 px, 8 frames, divided space-time attention), safetensors weights, and the hub's
    preprocessing (short side 224, centre crop 224, mean 0.45, std 0.225). Loading it with
    ``from_pretrained`` is much faster than a fresh random initialisation.
    """
    path = folder / f"timesformer-base-random-g{GENERATOR_VERSION}"
    return path, build_once(path, _save_timesformer_base)


def _save_timesformer_base(path: Path) -> None:
    import torch
    from transformers import TimesformerConfig, TimesformerModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TimesformerModel(TimesformerConfig())
    model.save_pretrained(str(path))
    (path / "preprocessor_config.json").write_text(
        json.dumps(TIMESFORMER_BASE_PREPROCESSING, indent=2)
    )


def bench_backbone(name: str, folder: Path) -> str:
    """What to pass as ``--backbone``: ``base`` is the random-weight TimeSformer-base folder,
    anything else (a registered name such as ``tiny-timesformer``, a folder) is kept."""
    if name == "base":
        return str(timesformer_base_checkpoint(folder)[0])
    return name


def load_timesformer_base(folder: Path, num_frames: int = 16):
    """The random-weight TimeSformer-base as a ``TimesformerModel`` set to ``num_frames``."""
    from transformers import TimesformerModel
    from transformers.utils import logging as hf_logging

    checkpoint, _ = timesformer_base_checkpoint(folder)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = TimesformerModel.from_pretrained(str(checkpoint))
    model.config.num_frames = num_frames  # the time embeddings are interpolated
    return model


# ----------------------------------------------------------------------------- videos


@dataclass(frozen=True)
class VideoSpec:
    """A synthetic H.264 video with cheap content: a panning texture and a moving square."""

    seconds: float = 180.0
    """Duration."""
    width: int = 448
    """Frame width (EgoExo4D downscaled videos are 448 px on the short side)."""
    height: int = 448
    """Frame height."""
    fps: int = 25
    """Frame rate."""
    crf: int = 23
    """x264 constant rate factor (higher = lower bitrate)."""
    preset: str = "veryfast"
    """x264 preset; veryfast keeps CABAC and B-frames, as real encoders do."""
    seed: int = 0
    """Seed of the texture (different seeds give different files)."""

    @property
    def frames(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def name(self) -> str:
        return (
            f"video-{self.width}x{self.height}-{self.fps}fps-{self.seconds:g}s-crf{self.crf}"
            f"-{self.preset}-s{self.seed}-g{GENERATOR_VERSION}.mp4"
        )


def synthetic_video(folder: Path, spec: VideoSpec) -> tuple[Path, float | None]:
    """The video of ``spec`` under ``folder/videos``, encoded once with PyAV/libx264."""
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    path = videos / spec.name
    return path, build_once(path, lambda staging: _encode_video(staging, spec))


def _encode_video(path: Path, spec: VideoSpec) -> None:
    import av

    rng = np.random.default_rng(spec.seed)
    coarse = rng.integers(40, 216, size=(spec.height // 8 + 1, spec.width // 8 + 1, 3))
    texture = np.repeat(np.repeat(coarse.astype(np.uint8), 8, axis=0), 8, axis=1)
    texture = texture[: spec.height, : spec.width]
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = {"preset": spec.preset, "crf": str(spec.crf)}
        for i in range(spec.frames):
            frame = av.VideoFrame.from_ndarray(_video_frame(texture, i), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _video_frame(texture: np.ndarray, i: int) -> np.ndarray:
    """Frame ``i``: the texture panned by (i, i/2) pixels plus a bright 64 px square."""
    frame = np.roll(texture, shift=(i // 2, i), axis=(0, 1)).copy()
    height, width = frame.shape[:2]
    y = (i * 3) % max(1, height - 64)
    x = (i * 5) % max(1, width - 64)
    frame[y : y + 64, x : x + 64] = (250, 240, 40)
    return frame


def video_takes(videos: Sequence[Path], takes: int, views: int) -> list[Take]:
    """``takes`` takes whose ``views`` views cycle through ``videos``; write them with
    `skill.pipeline.manifest.write_manifest`."""
    return [
        Take(
            take_id=f"take{i:04d}",
            videos={VIEWS[v]: str(videos[(i * views + v) % len(videos)]) for v in range(views)},
            label=LABELS[i % len(LABELS)],
            scenario=SCENARIOS[i % len(SCENARIOS)],
            participant=f"p{i:03d}",
            split="train",
        )
        for i in range(takes)
    ]


# ----------------------------------------------------------------------------- SkillFormer


def skillformer_indices(num_frames: int, rng: np.random.Generator, clip_len: int = 16,
                        rate: int = 4) -> np.ndarray:  # fmt: skip
    """SkillFormer's sampling: one random window of ``clip_len`` frames at stride ``rate``.

    The window ends at a uniformly random frame in ``[clip_len * rate, num_frames)`` and the
    indices are spread evenly over it (its ``sample_frame_indices``).
    """
    span = clip_len * rate
    end = int(rng.integers(span, num_frames)) if num_frames > span else num_frames
    start = max(end - span, 0)
    indices = np.linspace(start, end, num=clip_len)
    return np.clip(indices, start, end - 1).astype(np.int64)


def skillformer_read(path: Path, indices: np.ndarray) -> np.ndarray:
    """SkillFormer's decode: PyAV from frame 0, every frame up to the last sampled one.

    Returns ``(len(indices), H, W, 3)`` uint8 RGB (full resolution, as its reader does).
    """
    import av

    wanted, last = {int(i) for i in indices}, int(indices[-1])
    kept = []
    with av.open(str(path)) as container:
        container.seek(0)
        for position, frame in enumerate(container.decode(video=0)):
            if position > last:
                break
            if position in wanted:
                kept.append(frame)
    return np.stack([frame.to_ndarray(format="rgb24") for frame in kept])


def skillformer_processor():
    """The image processor SkillFormer applies to decoded frames (resize, crop, normalise)."""
    try:
        from transformers import VideoMAEImageProcessorPil as processor_class
    except ImportError:  # older transformers: the PIL processor is the default one
        from transformers import VideoMAEImageProcessor as processor_class
    options = {
        k: v for k, v in TIMESFORMER_BASE_PREPROCESSING.items() if k != "image_processor_type"
    }
    return processor_class(**options)


def num_video_frames(path: Path) -> int:
    """Frames of the first video stream as the container declares them."""
    import av

    with av.open(str(path)) as container:
        return int(container.streams.video[0].frames)
