"""Peak memory of `skill extract` against video length: a 10-minute and a 10-second video.

Each video is extracted by `skill extract` (``python -m cli extract``) in its own subprocess:
one take, one view, 16 uniform frames, 2 decode workers, on the CPU. While it runs, the
resident memory (RSS) of its whole process tree (the CLI process and its decode workers) is
sampled every 20 ms; the peak of the sum is the figure compared. ``os.wait4`` also gives
the kernel's ru_maxrss: the peak of the largest single process of the tree. RSS counts pages
shared between processes (libraries) once per process, the same way for both videos.

The videos are 448p, 25 fps H.264 of cheap content at a low bitrate. By default both the
random-weight TimeSformer-base and the tiny preset are run: the tiny model leaves the
decoder's memory visible instead of hiding it under the model's.

Run from the repository root: ``python -m bench.extract_memory``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python bench/extract_memory.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    REPO_ROOT,
    VideoSpec,
    base_parser,
    bench_backbone,
    data_dir,
    describe_build,
    machine_info,
    print_machine,
    print_table,
    synthetic_video,
    video_takes,
)
from skill.pipeline.manifest import write_manifest  # noqa: E402

POLL_S = 0.02
GOAL = 1.20  # peak RSS of the long video at most 20 % above the short one's


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--backbones", default="base,tiny-timesformer", help="comma list")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="long video")
    parser.add_argument("--short-seconds", type=float, default=10.0, help="short video")
    parser.add_argument("--workers", type=int, default=2, help="decode workers")
    return parser.parse_args(argv)


@dataclass
class Peak:
    """Memory of one extract run."""

    tree_rss: int  # bytes: peak of the sum over the process tree (sampled)
    largest_process: int  # bytes: ru_maxrss of the largest process (kernel)
    seconds: float
    samples: int


def extract_command(manifest: Path, store: Path, backbone: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "skill", "extract", str(manifest), "--store", str(store),
            "--backbone", backbone, "--frames", "16", "--workers", str(workers),
            "--batch-size", "1", "--device", "cpu"]  # fmt: skip


def tree_rss(root) -> int:
    """Sum of RSS over a process and all its descendants (processes that vanish are skipped)."""
    import psutil

    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def run_and_watch(command: list[str]) -> Peak:
    """Run ``command``, sampling its tree's RSS until it exits; its output goes to a log."""
    import psutil

    start = time.perf_counter()
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as process:  # fmt: skip
        root = psutil.Process(process.pid)
        peak, samples = 0, 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak, samples = max(peak, tree_rss(root)), samples + 1
            time.sleep(POLL_S)
        process.returncode = os.waitstatus_to_exitcode(status)
        output = process.stdout.read().decode(errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{output}")
    return Peak(peak, usage.ru_maxrss * 1024, time.perf_counter() - start, samples)


def measure(folder: Path, backbone: str, video: Path, workers: int) -> Peak:
    manifest = write_manifest(folder / f"manifest-memory-{video.stem}.jsonl",
                              video_takes([video], 1, 1))  # fmt: skip
    store = folder / f"extract-memory-{os.getpid()}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    try:
        return run_and_watch(extract_command(manifest, store, backbone, workers))
    finally:
        shutil.rmtree(store, ignore_errors=True)


def duration(seconds: float) -> str:
    """'10-min' for 600 s, '10-s' for 10 s."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}-min"
    return f"{seconds:g}-s"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = data_dir(args.data_dir)
    print_machine(machine_info())
    videos = {}
    for label, seconds in (("long", args.long_seconds), ("short", args.short_seconds)):
        spec = VideoSpec(seconds=seconds, crf=35)
        videos[label], built = synthetic_video(folder, spec)
        size = videos[label].stat().st_size
        print(f"{label}: {videos[label].name}, {spec.frames} frames, {size / 1e6:.1f} MB, "
              f"{8 * size / seconds / 1e6:.2f} Mbit/s ({describe_build(built)})")  # fmt: skip
    rows, ratios = [], []
    for name in (b for b in args.backbones.split(",") if b):
        peaks = {label: measure(folder, bench_backbone(name, folder), video, args.workers)
                 for label, video in videos.items()}  # fmt: skip
        for label, peak in peaks.items():
            rows.append([name, label, peak.tree_rss / 2**20, peak.largest_process / 2**20,
                         peak.seconds, peak.samples])  # fmt: skip
        ratios.append((name, peaks["long"].tree_rss / peaks["short"].tree_rss))
    header = ["backbone", "video", "peak tree RSS MiB", "largest process MiB", "seconds",
              "samples"]  # fmt: skip
    print_table("skill extract, 1 take x 1 view, peak memory", header, rows)
    worst_name, worst = max(ratios, key=lambda item: item[1])
    for name, ratio in ratios:
        print(f"{name}: long / short peak tree RSS = {ratio:.3f} "
              f"({'within' if ratio <= GOAL else 'beyond'} 20 %)")  # fmt: skip
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"KEY extract_memory: peak RSS {duration(args.long_seconds)} / "
        f"{duration(args.short_seconds)} video = {worst:.3f} "
        f"(worst backbone: {worst_name}; goal <= {GOAL})"
    )


if __name__ == "__main__":
    main()
