"""Benchmark 3: the extraction pipeline, and its decode path against SkillFormer's.

Part A, overlap: takes/s of `skill extract` (pipeline.extract.run_extract, what the CLI
calls) against decoding alone (the same decode jobs through pipeline.decode.pool.DecodePool
with the same workers) and the backbone alone (Backbone.encode on the already decoded clips,
same batch size), on the same takes: 448p H.264 videos, 16 uniform frames per view. The
backbone is TimeSformer-base with random weights (``--backbone base``; a registered name such
as ``tiny-timesformer`` shows the decode-bound regime). Extract time is counted from the start
of its loop (backbone already loaded, decode workers not yet started, as for decode alone).

Part B, decode path: the frames of one random 16-frame window at stride 4 (SkillFormer's
sampling) of a several-minute 448p video, decoded by pipeline.decode.view.decode_view (decord,
then PyAV; seeks to the keyframe before the window) and by SkillFormer's reader (PyAV,
every frame from the start up to the last sampled one, then its image processor), on the
same frame indices; plus 16 uniform frames over the whole video.

Part C, decoders: the same frames (the random windows and the 16 uniform frames of part B) by
each decode backend of pipeline.decode, decord, PyAV and (when installed) torchcodec, on the
448p video of part B and on a 1080p one, with 1 decoder thread (what each decode worker
uses) and with the decoder's own thread choice (torchcodec ``num_ffmpeg_threads=0``, decord
``num_threads=0``, PyAV one thread per core); rounds interleaved, best round reported, wall
and CPU seconds (window columns: the mean of the 5 random windows). Every backend must return
the same frame indices and timestamps as PyAV (checked). The default decoder order
(``pipeline.decode.registry.DEFAULT_ORDER``) follows from the 1-thread rows.

Run from the repository root: ``python -m bench.extract_pipeline``.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python bench/extract_pipeline.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    VideoSpec,
    base_parser,
    bench_backbone,
    data_dir,
    machine_info,
    print_machine,
    print_table,
    skillformer_processor,
    skillformer_read,
    synthetic_video,
    timed,
    video_takes,
)
from skill.pipeline.manifest import write_manifest  # noqa: E402


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="base", help="base (TimeSformer-base) or a name")
    parser.add_argument("--takes", type=int, default=2, help="takes of part A")
    parser.add_argument("--views", type=int, default=2, help="views per take of part A (1-5)")
    parser.add_argument("--take-seconds", type=float, default=60.0, help="video length, part A")
    parser.add_argument("--workers", type=int, default=2, help="decode worker processes")
    parser.add_argument("--batch-size", type=int, default=2, help="clips per backbone batch")
    parser.add_argument("--video-seconds", type=float, default=180.0, help="video of part B")
    parser.add_argument("--width", type=int, default=448, help="width of the part B video")
    parser.add_argument("--windows", type=int, default=5, help="random windows in part B")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of part A")
    parser.add_argument("--skip-overlap", action="store_true", help="skip part A")
    parser.add_argument("--skip-paths", action="store_true", help="skip part B")
    parser.add_argument("--skip-decoders", action="store_true", help="skip part C")
    parser.add_argument("--hd-seconds", type=float, default=30.0, help="1080p video of part C")
    parser.add_argument("--decoder-rounds", type=int, default=3, help="rounds of part C")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- part A


@dataclass
class Overlap:
    """Seconds of each way of processing the same takes, one entry per round."""

    decode_s: list[float]
    decode_cpu_s: list[float]  # CPU seconds of the decode worker processes
    backbone_s: list[float]
    extract_s: list[float]  # from the start of the extract loop to the last take written
    extract_total_s: list[float]  # run_extract as a whole (backbone loading included)
    backbone_load_s: float
    clips: int


def overlap_data(folder: Path, args) -> tuple[Path, list[Path]]:
    """A manifest of ``takes`` takes, each view its own 448p video of ``take_seconds``."""
    videos = [
        synthetic_video(folder, VideoSpec(seconds=args.take_seconds, seed=1 + v))[0]
        for v in range(args.views)
    ]
    manifest = folder / f"manifest-overlap-{args.takes}x{args.views}-{args.take_seconds:g}s.jsonl"
    write_manifest(manifest, video_takes(videos, args.takes, args.views))
    return manifest, videos


def extract_config(manifest: Path, store: Path, backbone: str, args):
    from skill.pipeline.extract_config import ExtractConfig

    return ExtractConfig(manifest=manifest, store=store, backbone=backbone, frames=16,
                         workers=args.workers, batch_size=args.batch_size, device="cpu")  # fmt: skip


def decode_alone(cfg, backbone) -> tuple[list[np.ndarray], float, float]:
    """Every decode job of the manifest through a DecodePool: (clips, seconds, worker CPU s)."""
    from skill.pipeline.decode.pool import DecodePool
    from skill.pipeline.extract_loop import key_of
    from skill.pipeline.manifest import read_takes

    takes = read_takes(cfg.manifest, root=cfg.root, fmt=cfg.manifest_format).takes
    jobs = [
        ((take.take_id, view), (path, cfg.sampling, key_of(take, view), backbone.geometry))
        for take in takes
        for view, path in take.videos.items()
        if path
    ]
    cpu_before = _children_cpu()
    start = time.perf_counter()
    clips = []
    pool = DecodePool(num_workers=cfg.workers, timeout_s=cfg.timeout_s,
                      max_outstanding=max(2, 2 * cfg.workers))  # fmt: skip
    with pool:
        for job_id, decoded, error in pool.imap_unordered(jobs):
            if error:
                raise SystemExit(f"decode of {job_id} failed: {error}")
            clips.extend(decoded.frames)
    seconds = time.perf_counter() - start
    return clips, seconds, _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def backbone_alone(backbone, clips: list[np.ndarray], batch_size: int) -> float:
    """Seconds to encode the decoded clips in batches, as the extract loop does."""
    import torch

    start = time.perf_counter()
    for first in range(0, len(clips), batch_size):
        batch = torch.from_numpy(np.stack(clips[first : first + batch_size]))
        with torch.inference_mode():
            backbone.encode(batch)
    return time.perf_counter() - start


def extract_run(cfg) -> tuple[float, float]:
    """(seconds from the loop start to the end, seconds of run_extract) on a fresh store."""
    from skill.pipeline.extract import run_extract

    shutil.rmtree(cfg.store, ignore_errors=True)
    loop_started: list[float] = []

    def progress(done: int, total: int, failed: int) -> None:
        if not loop_started:
            loop_started.append(time.perf_counter())
        if failed:
            raise SystemExit(f"extract failed {failed} takes")

    summary, total_s = timed(run_extract, cfg, progress)
    if summary.completed != summary.total:
        raise SystemExit(f"extract completed {summary.completed} of {summary.total} takes")
    return time.perf_counter() - loop_started[0], total_s


def measure_overlap(folder: Path, args) -> Overlap:
    from skill.pipeline.backbones import load_backbone

    manifest, _ = overlap_data(folder, args)
    name = bench_backbone(args.backbone, folder)
    store = folder / f"extract-overlap-{os.getpid()}.zarr"
    cfg = extract_config(manifest, store, name, args)
    backbone, load_s = timed(load_backbone, name, device="cpu", token_mode="frame",
                             num_frames=16, batch_size=args.batch_size)  # fmt: skip
    result = Overlap([], [], [], [], [], load_s, 0)
    try:
        for _ in range(args.rounds):
            clips, decode_s, decode_cpu = decode_alone(cfg, backbone)
            result.decode_s.append(decode_s)
            result.decode_cpu_s.append(decode_cpu)
            result.backbone_s.append(backbone_alone(backbone, clips, args.batch_size))
            result.clips = len(clips)
            del clips
            extract_s, extract_total = extract_run(cfg)
            result.extract_s.append(extract_s)
            result.extract_total_s.append(extract_total)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    return result


def report_overlap(result: Overlap, args) -> float:
    """Print part A (best round of each path); return extract over the slower of the two."""
    takes = args.takes
    decode_s, backbone_s, extract_s = (
        min(result.decode_s), min(result.backbone_s), min(result.extract_s))  # fmt: skip
    slower = max(decode_s, backbone_s)
    rows = [
        ["decode alone (DecodePool)", decode_s, takes / decode_s, _rounds(result.decode_s)],
        ["backbone alone (Backbone.encode)", backbone_s, takes / backbone_s,
         _rounds(result.backbone_s)],
        ["skill extract (run_extract loop)", extract_s, takes / extract_s,
         _rounds(result.extract_s)],
    ]  # fmt: skip
    print_table(f"part A: {takes} takes x {args.views} views ({result.clips} clips), "
                f"{args.workers} decode workers, batch {args.batch_size}, backbone "
                f"{args.backbone}; best of {args.rounds} round(s)",
                ["path", "seconds", "takes/s", "every round, s"], rows)  # fmt: skip
    cores = len(os.sched_getaffinity(0))
    decode_cpu = min(result.decode_cpu_s)
    shared = backbone_s + decode_cpu / cores
    print(
        f"decode workers used {decode_cpu:.1f} CPU-s; backbone load "
        f"{result.backbone_load_s:.1f} s; run_extract in all {min(result.extract_total_s):.1f} s"
    )
    print(f"bound when decode and backbone share {cores} cores: backbone + decode CPU / cores "
          f"= {shared:.1f} s ({shared / slower:.2f}x the slower)")  # fmt: skip
    ratio = extract_s / slower
    verdict = "met" if ratio <= 1.15 else f"missed by {100 * (ratio - 1.15):.0f} points"
    print(f"extract / slower of the two = {ratio:.2f} (goal <= 1.15: {verdict})")
    return ratio


def _rounds(seconds: list[float]) -> str:
    return ", ".join(f"{s:.1f}" for s in seconds)


# ----------------------------------------------------------------------------- part B


@dataclass
class DecodeRow:
    """Seconds of one set of frames by each path."""

    what: str
    span: str  # sampled frame range
    project_auto: float
    project_pyav: float
    skillformer_decode: float
    skillformer_process: float

    @property
    def skillformer(self) -> float:
        return self.skillformer_decode + self.skillformer_process


def project_decode(video: Path, sampling, key: str, backend: str):
    from skill.pipeline.decode.geometry import FrameGeometry
    from skill.pipeline.decode.view import decode_view

    geometry = FrameGeometry(shortest_edge=224, crop_height=224, crop_width=224)
    return timed(decode_view, video, sampling, key, geometry, backend)


def compare_once(video: Path, sampling, key: str, what: str, processor) -> DecodeRow:
    """Project path (auto and PyAV) then SkillFormer's reader on the same frame indices."""
    decoded, auto_s = project_decode(video, sampling, key, "auto")
    _, pyav_s = project_decode(video, sampling, key, "pyav")
    indices = decoded.indices.reshape(-1)
    frames, decode_s = timed(skillformer_read, video, indices)
    _, process_s = timed(processor, list(frames), return_tensors="pt")
    span = f"{indices[0]}-{indices[-1]}"
    return DecodeRow(what, span, auto_s, pyav_s, decode_s, process_s)


def measure_decode_paths(folder: Path, args) -> tuple[list[DecodeRow], VideoSpec]:
    from skill.pipeline.sampling import SamplingConfig

    spec = VideoSpec(seconds=args.video_seconds, width=args.width)
    video, built = synthetic_video(folder, spec)
    if built:
        print(f"encoded {video.name} in {built:.1f} s")
    processor = skillformer_processor()
    rows = []
    for seed in range(args.windows):
        window = SamplingConfig(strategy="windows", frames=16, stride=4, jitter=True, seed=seed)
        rows.append(compare_once(video, window, "bench/long", "random window", processor))
    uniform = SamplingConfig(strategy="uniform", frames=16)
    rows.append(compare_once(video, uniform, "bench/long", "16 uniform frames", processor))
    return rows, spec


def report_decode_paths(rows: list[DecodeRow], spec: VideoSpec, video: Path) -> float:
    """Print part B; return SkillFormer / project (auto) over the random windows."""
    size_mb = video.stat().st_size / 1e6
    header = ["frames", "indices", "project auto s", "project pyav s", "SkillFormer decode s",
              "+ processor s", "SkillFormer / project"]  # fmt: skip
    table = [[r.what, r.span, r.project_auto, r.project_pyav, r.skillformer_decode,
              r.skillformer_process, r.skillformer / r.project_auto] for r in rows]  # fmt: skip
    windows = [r for r in rows if r.what == "random window"]
    mean = [np.mean([getattr(r, k) for r in windows]) for k in
            ("project_auto", "project_pyav", "skillformer_decode", "skillformer_process")]  # fmt: skip
    table.append(["random windows, mean", "", *mean, (mean[2] + mean[3]) / mean[0]])
    print_table(f"part B: {spec.width}x{spec.height} {spec.fps} fps {spec.seconds:g} s "
                f"({spec.frames} frames, {8 * size_mb / spec.seconds:.2f} Mbit/s, x264 "
                f"{spec.preset} crf {spec.crf}, keyframe every 250 frames)", header, table)  # fmt: skip
    return (mean[2] + mean[3]) / mean[0]


# ----------------------------------------------------------------------------- part C

# (backend, threads, label): 1 thread is what each decode worker uses; 0 lets the decoder pick
# (torchcodec num_ffmpeg_threads=0, decord num_threads=0); PyAV has no "auto", so it gets one
# thread per core.
DECODER_RUNS = [
    ("decord", 1, "decord, 1 thread"),
    ("pyav", 1, "pyav, 1 thread"),
    ("torchcodec", 1, "torchcodec, num_ffmpeg_threads=1"),
    ("decord", 0, "decord, num_threads=0 (auto)"),
    ("pyav", -1, "pyav, 1 thread per core"),
    ("torchcodec", 0, "torchcodec, num_ffmpeg_threads=0 (auto)"),
]


def decoder_samplings() -> list[tuple[str, object]]:
    from skill.pipeline.sampling import SamplingConfig

    windows = [("random window", SamplingConfig(strategy="windows", frames=16, stride=4,
                                                jitter=True, seed=seed)) for seed in range(5)]  # fmt: skip
    return [*windows, ("16 uniform frames", SamplingConfig(strategy="uniform", frames=16))]


def torchcodec_missing() -> str:
    from skill.pipeline.decode.registry import BACKENDS

    return BACKENDS["torchcodec"].available()


def measure_decoders(video: Path, runs, rounds: int) -> dict[str, list[float]]:
    """label -> [window wall s, window CPU s, uniform wall s, uniform CPU s]: per sampling the
    best of ``rounds`` (rounds and backends interleaved), windows averaged; CPU seconds are
    this process's (decoder threads included). Every backend is checked against the first's
    (PyAV's) indices and timestamps."""
    samplings = decoder_samplings()
    cores = len(os.sched_getaffinity(0))
    best: dict[tuple[str, int], np.ndarray] = {}
    for _ in range(rounds):
        for s, (_, sampling) in enumerate(samplings):
            reference = None
            for backend, threads, label in runs:
                cpu_before = time.process_time()
                view, seconds = timed(_decode, video, sampling, backend,
                                      cores if threads < 0 else threads)  # fmt: skip
                cpu = time.process_time() - cpu_before
                if reference is None:
                    reference = view
                elif not (np.array_equal(view.indices, reference.indices)
                          and np.array_equal(view.timestamps, reference.timestamps)):  # fmt: skip
                    raise SystemExit(f"{label} returned other frames than {runs[0][2]}")
                previous = best.get((label, s), np.array([np.inf, np.inf]))
                best[(label, s)] = np.minimum(previous, [seconds, cpu])
    windows = [s for s, (what, _) in enumerate(samplings) if what == "random window"]
    uniform = [s for s, (what, _) in enumerate(samplings) if what != "random window"]
    return {label: [*np.mean([best[(label, s)] for s in windows], axis=0),
                    *np.mean([best[(label, s)] for s in uniform], axis=0)]
            for _, _, label in runs}  # fmt: skip


def _decode(video: Path, sampling, backend: str, threads: int):
    from skill.pipeline.decode.geometry import FrameGeometry
    from skill.pipeline.decode.view import decode_view

    geometry = FrameGeometry(shortest_edge=224, crop_height=224, crop_width=224)
    return decode_view(video, sampling, "bench/long", geometry, backend, threads)


def report_decoders(folder: Path, args) -> str:
    """Print part C for the 448p and the 1080p video; return its KEY text."""
    missing = torchcodec_missing()
    runs = [r for r in DECODER_RUNS if not (missing and r[0] == "torchcodec")]
    runs.sort(key=lambda r: r[0] != "pyav")  # PyAV first: the reference of the checks
    if missing:
        print(f"part C: torchcodec rows left out: {missing}")
    else:  # torch + torchcodec imported once, before any timing
        _decode(synthetic_video(folder, VideoSpec(seconds=2))[0], decoder_samplings()[-1][1],
                "torchcodec", 1)  # fmt: skip
    key = []
    for spec in (VideoSpec(seconds=args.video_seconds, width=args.width),
                 VideoSpec(seconds=args.hd_seconds, width=1920, height=1080)):  # fmt: skip
        video, built = synthetic_video(folder, spec)
        if built:
            print(f"encoded {video.name} in {built:.1f} s")
        seconds = measure_decoders(video, runs, args.decoder_rounds)
        pyav = seconds["pyav, 1 thread"]
        rows = [[label, *seconds[label], seconds[label][0] / pyav[0],
                 seconds[label][2] / pyav[2], sum(seconds[label][1::2]) / sum(pyav[1::2])]
                for _, _, label in DECODER_RUNS if label in seconds]  # fmt: skip
        print_table(f"part C: {spec.width}x{spec.height} {spec.fps} fps {spec.seconds:g} s, "
                    f"x264 {spec.preset} crf {spec.crf}; best of {args.decoder_rounds} "
                    "round(s); same indices and timestamps as PyAV (checked)",
                    ["decoder", "window s", "window CPU s", "uniform s", "uniform CPU s",
                     "window / pyav", "uniform / pyav", "CPU / pyav"], rows)  # fmt: skip
        single = {label: value for label, value in seconds.items() if "1 thread" in label
                  or label.endswith("=1")}  # fmt: skip
        by_cpu = min(single, key=lambda label: sum(single[label][1::2]))
        by_wall = min(single, key=lambda label: single[label][0] + single[label][2])
        key.append(f"{spec.height}p at 1 thread, least CPU: {by_cpu.split(',')[0]}, "
                   f"least wall time: {by_wall.split(',')[0]}")  # fmt: skip
    return "; ".join(key)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = data_dir(args.data_dir)
    print_machine(machine_info())
    key = []
    if not args.skip_overlap:
        overlap_ratio = report_overlap(measure_overlap(folder, args), args)
        key.append(f"extract / slower of decode and backbone = {overlap_ratio:.2f}")
    if not args.skip_paths:
        rows, spec = measure_decode_paths(folder, args)
        decode_ratio = report_decode_paths(rows, spec, synthetic_video(folder, spec)[0])
        key.append(f"SkillFormer decode / project decode (random window) = {decode_ratio:.1f}x")
    if not args.skip_decoders:
        key.append(report_decoders(folder, args))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"KEY extract_pipeline: {'; '.join(key)}")


if __name__ == "__main__":
    main()
