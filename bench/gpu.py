"""Benchmark 4: any registered backbone on a GPU: clips/s, fraction of bf16 peak, decode
keep-up, best batch size.

``--backbone NAME`` takes any name `skill backbones` lists (default: TimeSformer-base). No
weights are downloaded: a real name is built with random weights from its family's
transformers config at the registered geometry (width, patch, crop, frames; the family's
default depth and heads), saved once as a checkpoint folder and loaded through
``from_pretrained`` as `skill extract` loads it; a tiny preset is used as it is.

For each batch size: clips/s of the backbone's forward pass under bf16 autocast on clips
already on the GPU (the model alone), and of ``Backbone.encode`` on uint8 clips in host
memory (what `skill extract` runs: copy, normalise, forward, tokens back to the host). FLOPs
per clip are counted per family with torch.utils.flop_counter.FlopCounterMode over one
clip's forward (cross-check for TimeSformer-base: about 196 GMACs per 8-frame clip at
224 px, the published figure). The fraction of peak uses the dense bf16 peak of the GPU
(table below, or ``--peak-tflops``). Decoding: clips/s of pipeline.decode.pool.DecodePool
with one worker per core on 448p H.264 videos, against the GPU's best clips/s.

Needs an NVIDIA GPU (refuses without one); ``--cpu-smoke`` runs one batch of one clip on the
CPU through the same code, at the backbone's real dimensions, to check the script. Run from the repository root:
``python -m bench.gpu --backbone videomae-base-k400``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python bench/gpu.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    VideoSpec,
    base_parser,
    bench_backbone,
    build_once,
    data_dir,
    fmt,
    machine_info,
    print_machine,
    print_table,
    synthetic_video,
)

DEFAULT_FRAMES = 16
DEFAULT_BACKBONE = "timesformer-base-k600"
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from the vendor data sheets; the
# first name contained in torch.cuda.get_device_name() wins, so specific names come first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100", 989.4),
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)
GMACS_PER_8_FRAME_CLIP = 196.0


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="a registered name")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help="frames per clip")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128", help="comma list")
    parser.add_argument("--iters", type=int, default=10, help="timed batches per batch size")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="override the peak")
    parser.add_argument("--decode-workers", type=int, default=0, help="0 = one per core")
    parser.add_argument("--decode-jobs", type=int, default=0, help="0 = 4 per worker")
    parser.add_argument("--video-seconds", type=float, default=60.0, help="decode test videos")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run of the script")
    return parser.parse_args(argv)


def smoke_overrides(args) -> None:
    """--cpu-smoke: the same backbone at its real dimensions, one batch of one clip, one
    decode job per worker, a short video."""
    args.batch_sizes, args.iters, args.warmup = "1", 1, 0
    args.decode_workers = args.decode_workers or 2
    args.decode_jobs = args.decode_jobs or 2
    args.video_seconds = min(args.video_seconds, 10.0)


# ----------------------------------------------------------------------------- FLOPs, peak


def flops_per_clip(backbone, frames: int) -> float:
    """Forward FLOPs of one clip through the loaded backbone (its own family's forward)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    crop = backbone.geometry.crop_height
    clip = torch.zeros((1, frames, crop, crop, 3), dtype=torch.uint8)
    pixels = backbone._pixels(clip)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        backbone._mode.tokens(backbone.model, pixels)
    return float(counter.get_total_flops())


def random_weight_checkpoint(name: str, folder: Path) -> str:
    """What to load for registered backbone `name` without downloading: a tiny preset as it
    is; a real name as a random-weight checkpoint folder at its registered geometry."""
    from skill.pipeline.backbones import BACKBONES

    spec = BACKBONES.get(name)
    if spec is None:
        raise SystemExit(f"--backbone {name!r} is not registered (see `skill backbones`)")
    if spec.is_tiny:
        return name
    if name.startswith("timesformer-base"):
        return bench_backbone("base", folder)  # the random TimeSformer-base the bench keeps
    path = folder / f"random-{name}"
    build_once(path, lambda p: _save_random_checkpoint(spec, p))
    return str(path)


def _save_random_checkpoint(spec, path: Path) -> None:
    import json

    import torch

    from skill.pipeline.backbones import BACKBONES, get_family

    family = get_family(spec.family)
    geometry = spec.geometry
    config = family.transformers_class("config")()
    updates = {family.image_size_key: geometry.crop, "patch_size": geometry.patch}
    updates["hidden_size"] = geometry.dim
    if family.frames_key and geometry.frames:
        updates[family.frames_key] = geometry.frames
    for key, value in updates.items():
        setattr(config, key, value)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = family.transformers_class()(config)
    model.save_pretrained(str(path))
    tiny = next(s for s in BACKBONES.values() if s.is_tiny and s.family == spec.family)
    preprocessing = {
        **tiny.tiny_preprocessing,
        "size": {"shortest_edge": geometry.crop},
        "crop_size": {"height": geometry.crop, "width": geometry.crop},
    }
    (path / family.preprocessor_files[0]).write_text(json.dumps(preprocessing, indent=2))


def peak_tflops(device_name: str, override: float) -> float | None:
    if override:
        return override
    for name, peak in PEAK_BF16_TFLOPS:
        if name in device_name:
            return peak
    return None


# ----------------------------------------------------------------------------- throughput


@dataclass
class BatchResult:
    batch: int
    model_clips_s: float | None  # forward of pixels already on the device
    encode_clips_s: float | None  # Backbone.encode on uint8 host clips
    error: str = ""


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def clips_per_second(run, batch: int, iters: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        run()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        run()
    synchronize(device)
    return batch * iters / (time.perf_counter() - start)


def measure_batch(backbone, batch: int, args, device: str) -> BatchResult:
    """Model-only and Backbone.encode clips/s at one batch size (OOM is reported, not raised)."""
    import torch

    backbone.batch_size = batch
    crop = backbone.geometry.crop_height
    clips = torch.randint(0, 256, (batch, args.frames, crop, crop, 3), dtype=torch.uint8)
    try:
        pixels = backbone._pixels(clips)  # normalised (B, T, 3, H, W) on the device

        def model_only():
            with torch.inference_mode(), backbone._autocast():
                backbone._mode.tokens(backbone.model, pixels)

        def encode():
            backbone.encode(clips)

        model_s = clips_per_second(model_only, batch, args.iters, args.warmup, device)
        encode_s = clips_per_second(encode, batch, args.iters, args.warmup, device)
        return BatchResult(batch, model_s, encode_s)
    except torch.OutOfMemoryError as error:
        return BatchResult(batch, None, None, f"out of memory: {str(error)[:60]}")
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def load(args, folder: Path, device: str):
    from skill.pipeline.backbones import load_backbone

    return load_backbone(random_weight_checkpoint(args.backbone, folder), device=device,
                         token_mode="frame", num_frames=args.frames, batch_size=1)  # fmt: skip


def measure_batches(backbone, args, device: str) -> list[BatchResult]:
    import torch

    if args.compile:
        backbone.model = torch.compile(backbone.model)
    results = []
    for batch in (int(b) for b in args.batch_sizes.split(",") if b):
        result = measure_batch(backbone, batch, args, device)
        results.append(result)
        print(f"  batch {batch}: {result.error or f'{fmt(result.model_clips_s)} clips/s'}",
              flush=True)  # fmt: skip
        if result.error:
            break
    return results


# ----------------------------------------------------------------------------- decoding


def decode_clips_per_second(folder: Path, args, crop: int) -> tuple[float, int]:
    """(clips/s, workers) of DecodePool decoding --frames uniform frames of 448p videos."""
    from skill.pipeline.decode.geometry import FrameGeometry
    from skill.pipeline.decode.pool import DecodePool
    from skill.pipeline.sampling import SamplingConfig

    workers = args.decode_workers or len(os.sched_getaffinity(0))
    jobs_n = args.decode_jobs or 4 * workers
    videos = [synthetic_video(folder, VideoSpec(seconds=args.video_seconds, seed=10 + i))[0]
              for i in range(min(4, jobs_n))]  # fmt: skip
    geometry = FrameGeometry(shortest_edge=crop, crop_height=crop, crop_width=crop)
    sampling = SamplingConfig(strategy="uniform", frames=args.frames)
    jobs = [(i, (videos[i % len(videos)], sampling, f"v{i}", geometry)) for i in range(jobs_n)]
    with DecodePool(num_workers=workers, timeout_s=600) as pool:
        pool.start()  # worker start-up is not decoding
        start = time.perf_counter()
        for job_id, _, error in pool.imap_unordered(jobs):
            if error:
                raise SystemExit(f"decode job {job_id} failed: {error}")
        seconds = time.perf_counter() - start
    return jobs_n / seconds, workers


# ----------------------------------------------------------------------------- report


def report(
    results: list[BatchResult], flops: float, peak: float | None, title: str
) -> BatchResult | None:
    """Print the batch table; return the batch size with the most encode clips/s."""
    rows = []
    for r in results:
        achieved = r.model_clips_s * flops / 1e12 if r.model_clips_s else None
        fraction = achieved / peak if achieved and peak else None
        rows.append([r.batch, r.model_clips_s, r.encode_clips_s, achieved, fraction,
                     r.error])  # fmt: skip
    header = ["batch", "model clips/s", "encode clips/s", "model TFLOP/s", "of bf16 peak", "note"]
    print_table(title, header, rows)
    ok = [r for r in results if r.encode_clips_s]
    return max(ok, key=lambda r: r.encode_clips_s) if ok else None


def refuse_without_cuda() -> None:
    print("bench.gpu needs an NVIDIA GPU with CUDA, and torch sees none "
          "(torch.cuda.is_available() is False). Run it on a GPU machine, "
          "or pass --cpu-smoke to check the script on the CPU.", file=sys.stderr)  # fmt: skip
    print("KEY gpu: not run (no CUDA device)")
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        refuse_without_cuda()
    if args.cpu_smoke:
        smoke_overrides(args)
    device = "cpu" if args.cpu_smoke else "cuda"
    folder = data_dir(args.data_dir)
    print_machine(machine_info())
    backbone = load(args, folder, device)
    crop = backbone.geometry.crop_height
    flops = flops_per_clip(backbone, args.frames)
    print(f"{args.backbone}: FLOPs per {args.frames}-frame {crop} px clip: {flops / 1e9:.1f} "
          "GFLOP counted")  # fmt: skip
    if args.backbone.startswith("timesformer-base"):
        scaled = 2 * GMACS_PER_8_FRAME_CLIP * 1e9 * args.frames / 8
        print(f"  (~{scaled / 1e9:.0f} GFLOP from 196 GMACs per 8-frame clip scaled)")
    peak = None if args.cpu_smoke else peak_tflops(torch.cuda.get_device_name(0), args.peak_tflops)
    print(f"bf16 peak: {f'{peak:.0f} TFLOP/s' if peak else 'unknown (give --peak-tflops)'}")
    results = measure_batches(backbone, args, device)
    title = f"{args.backbone}, {args.frames}x{crop}, bf16 autocast"
    best = report(results, flops, peak, title)
    decode_rate, workers = decode_clips_per_second(folder, args, crop)
    print(f"\ndecoding: {decode_rate:.1f} clips/s with {workers} workers (448p, "
          f"{args.frames} frames)")  # fmt: skip
    if best is None:
        print("KEY gpu: no batch size ran")
        return
    keeps_up = decode_rate / best.encode_clips_s
    print(f"best batch size: {best.batch} ({best.encode_clips_s:.1f} clips/s through encode); "
          f"decoding keeps up: {'yes' if keeps_up >= 1 else 'no'} ({keeps_up:.2f}x)")  # fmt: skip
    fastest = max((r for r in results if r.model_clips_s), key=lambda r: r.model_clips_s)
    fraction = fastest.model_clips_s * flops / 1e12 / peak if peak else float("nan")
    if peak:
        verdict = "met" if fraction >= 0.4 else f"missed by {100 * (0.4 - fraction):.0f} points"
        print(f"goal >= 40% of bf16 peak: {verdict}")
    mode = " (CPU smoke run: no peak, not a GPU result)" if args.cpu_smoke else ""
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"KEY gpu {args.backbone}: fraction of bf16 peak (model, batch {fastest.batch}) = "
        f"{fraction:.2f}; decode / encode clips/s at batch {best.batch} = {keeps_up:.2f}{mode}"
    )


if __name__ == "__main__":
    main()
