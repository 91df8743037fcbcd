"""Benchmark 5: fit time and extract time at 1x, 2x and 4x the number of takes.

Fit: synthetic EgoExo4D-shaped stores of N/4, N/2 and N takes (N = 2,370 by default, so 4x is
the full dataset), each loaded with heads.data.load_selection and fitted with a fixed number
of epochs (no early stopping, so that the work per take is the same at every size).
Extract: pipeline.extract.run_extract (what `skill extract` calls) on M, 2M and 4M takes of
448p videos with TimeSformer-base (random weights) on the CPU; the loop time excludes loading
the backbone, the total includes it.

Run from the repository root: ``python -m bench.scaling``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python bench/scaling.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    StoreSpec,
    VideoSpec,
    base_parser,
    bench_backbone,
    data_dir,
    describe_build,
    machine_info,
    print_machine,
    print_table,
    synthetic_store,
    synthetic_video,
    timed,
    video_takes,
)
from skill.pipeline.manifest import write_manifest  # noqa: E402

FACTORS = (1, 2, 4)


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=2370, help="fit: takes at 4x")
    parser.add_argument("--head", default="cvf", help="fit: head")
    parser.add_argument("--epochs", type=int, default=3, help="fit: epochs (fixed)")
    parser.add_argument("--extract-takes", type=int, default=1, help="extract: takes at 1x")
    parser.add_argument("--views", type=int, default=1, help="extract: views per take")
    parser.add_argument("--take-seconds", type=float, default=30.0, help="extract: video length")
    parser.add_argument("--backbone", default="base", help="extract: base or a backbone name")
    parser.add_argument("--workers", type=int, default=2, help="extract: decode workers")
    parser.add_argument("--batch-size", type=int, default=1, help="extract: clips per batch")
    parser.add_argument("--skip-extract", action="store_true", help="fit only")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- fit


def fit_sizes(total: int) -> list[int]:
    """Takes at 1x, 2x, 4x, with 4x = ``total``."""
    return [round(total * f / FACTORS[-1]) for f in FACTORS]


def time_fit(folder: Path, takes: int, args) -> tuple[float, float]:
    """(load_selection seconds, fit seconds for ``args.epochs`` epochs) on a store of ``takes``."""
    from skill.heads.data import load_selection
    from skill.heads.train import FitConfig, fit

    store, built = synthetic_store(folder, StoreSpec(takes=takes))
    print(f"  store of {takes} takes: {describe_build(built)}", flush=True)
    selection, load_s = timed(load_selection, store, "all")
    runs = folder / f"runs-scaling-{os.getpid()}"
    cfg = FitConfig(store=str(store), head=args.head, epochs=args.epochs, patience=0,
                    plots=False, out_dir=str(runs))  # fmt: skip
    try:
        _, fit_s = timed(fit, cfg, selection)
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    return load_s, fit_s


def report_fit(sizes: list[int], times: list[tuple[float, float]], args) -> float:
    rows = []
    for factor, takes, (load_s, fit_s) in zip(FACTORS, sizes, times, strict=True):
        total = load_s + fit_s
        base = times[0][0] + times[0][1]
        rows.append([f"{factor}x", takes, load_s, fit_s, fit_s / args.epochs,
                     1e3 * total / takes, total / base])  # fmt: skip
    header = ["size", "takes", "load s", "fit s", "s/epoch", "ms/take", "time vs 1x"]
    print_table(f"fit: {args.head}, all views, {args.epochs} epochs (no early stopping)",
                header, rows)  # fmt: skip
    return (times[-1][0] + times[-1][1]) / (times[0][0] + times[0][1])


# ----------------------------------------------------------------------------- extract


def time_extract(folder: Path, takes: int, videos: list[Path], args) -> tuple[float, float]:
    """(loop seconds, run_extract seconds) for ``takes`` takes on a fresh store."""
    from skill.pipeline.extract import ExtractConfig, run_extract

    manifest = write_manifest(folder / f"manifest-scaling-{takes}x{args.views}.jsonl",
                              video_takes(videos, takes, args.views))  # fmt: skip
    store = folder / f"extract-scaling-{os.getpid()}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    cfg = ExtractConfig(manifest=manifest, store=store, frames=16, device="cpu",
                        backbone=bench_backbone(args.backbone, folder), workers=args.workers,
                        batch_size=args.batch_size)  # fmt: skip
    loop_started: list[float] = []

    def progress(done: int, total: int, failed: int) -> None:
        if not loop_started:
            loop_started.append(time.perf_counter())

    try:
        summary, total_s = timed(run_extract, cfg, progress)
    finally:
        shutil.rmtree(store, ignore_errors=True)
    if summary.completed != takes:
        raise SystemExit(f"extract completed {summary.completed} of {takes} takes")
    return time.perf_counter() - loop_started[0], total_s


def report_extract(sizes: list[int], times: list[tuple[float, float]], args) -> float:
    rows = []
    for factor, takes, (loop_s, total_s) in zip(FACTORS, sizes, times, strict=True):
        rows.append([f"{factor}x", takes, takes * args.views, total_s, loop_s,
                     total_s - loop_s, loop_s / takes, loop_s / times[0][0],
                     total_s / times[0][1]])  # fmt: skip
    header = ["size", "takes", "clips", "total s", "loop s", "startup s", "loop s/take",
              "loop vs 1x", "total vs 1x"]  # fmt: skip
    print_table(f"extract: backbone {args.backbone}, {args.views} view(s) per take, "
                f"{args.workers} workers, batch {args.batch_size}", header, rows)  # fmt: skip
    return times[-1][1] / times[0][1]


def fixed_and_marginal(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares ``seconds = fixed + marginal * takes``."""
    marginal, fixed = np.polyfit(np.asarray(sizes, float), np.asarray(seconds, float), 1)
    return float(fixed), float(marginal)


def linearity(name: str, sizes: list[int], seconds: list[float]) -> str:
    """4x/1x and the verdict: linear when ``fixed + marginal x takes`` (least squares) is
    within 10 % of every measured time. A per-run start-up (building the head, loading the
    backbone) is such a fixed cost: it keeps 4x/1x below 4 at small sizes, not the per-take
    cost from being constant."""
    fixed, marginal = fixed_and_marginal(sizes, seconds)
    worst = max(abs(t / (fixed + marginal * n) - 1) for n, t in zip(sizes, seconds, strict=True))
    shape = "linear" if worst <= 0.10 else "not linear"
    return (f"{name} 4x/1x = {seconds[-1] / seconds[0]:.2f} ({shape}: {fixed:.2f} s fixed + "
            f"{marginal:.3g} s per take, every size within {worst:.0%} of that line)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = data_dir(args.data_dir)
    print_machine(machine_info())
    sizes = fit_sizes(args.takes)
    fit_times = [time_fit(folder, takes, args) for takes in sizes]
    report_fit(sizes, fit_times, args)
    lines = [linearity("fit (load + fit)", sizes, [a + b for a, b in fit_times])]
    if not args.skip_extract:
        videos = [synthetic_video(folder, VideoSpec(seconds=args.take_seconds, seed=1 + v))[0]
                  for v in range(args.views)]  # fmt: skip
        sizes = [args.extract_takes * f for f in FACTORS]
        extract_times = [time_extract(folder, takes, videos, args) for takes in sizes]
        report_extract(sizes, extract_times, args)
        lines.append(linearity("extract (total)", sizes, [b for _, b in extract_times]))
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("KEY scaling: " + "; ".join(lines))


if __name__ == "__main__":
    main()
