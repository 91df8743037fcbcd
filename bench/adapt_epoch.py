"""Benchmark 8: an epoch of `skill adapt` read from the frame store vs SkillFormer's epoch
(every video decoded again), and vs the backbone's forward + backward alone.

Same backbone (TimeSformer-base geometry: 768 wide, 12 layers, 224 px, from a
``TimesformerConfig`` with random weights, no download), same LoRA (SkillFormer's targets, r
and alpha of ``--lora-r``), same ``cvf`` head, same batch, same takes, measured side by side
in one run, each a full training pass over the training split:

- ``compute alone``: forward + backward + AdamW on pixels already normalised and on the
  device (nothing is read or decoded in the loop);
- ``adapt epoch``: ``heads.trainer.train_epoch`` fed by ``adapt.train.FrameBatches``, as
  ``skill adapt`` trains, reading one stored window per
  (take, view) from ``frames.zarr`` (zstd), prefetching ``--prefetch`` batches in a thread,
  uint8 -> float and normalisation on the device; also with ``--prefetch 0`` (read inline);
- ``frame store reads alone``: the same batches read and copied to the device, no training;
- ``SkillFormer epoch``: per take and view, its random 16-frame window, decoded with PyAV from
  frame 0 up to the last sampled frame of a 448p H.264 video and put through its image
  processor (``bench.common.skillformer_read`` / ``skillformer_processor``), then the same step.

Goal: the adapt epoch within 15 % of compute alone. On CUDA (bf16 autocast, as adapt trains)
it also prints takes/s and the fraction of the GPU's dense bf16 peak, counting the model's
FLOPs as 3 x the forward's (``torch.utils.flop_counter`` over one clip; the recomputation of
gradient checkpointing is not counted as useful work).

Run from the repository root: ``python -m bench.adapt_epoch --quick`` (CPU, a few minutes),
``python -m bench.adapt_epoch --device cuda`` (TimeSformer-base at 16 frames, 5 views).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/adapt_epoch.py`
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
    skillformer_indices,
    skillformer_processor,
    skillformer_read,
    synthetic_video,
    video_takes,
)

GOAL = 1.15  # adapt epoch / compute alone


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--backbone",
        default="base",
        help="base (random TimeSformer-base) or a registered name (tiny-timesformer: a smoke test)",
    )
    parser.add_argument("--takes", type=int, default=40, help="takes (about 80 %% train)")
    parser.add_argument("--views", type=int, default=5, help="views per take")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (T)")
    parser.add_argument("--clips", type=int, default=2, help="windows stored per view (K)")
    parser.add_argument("--batch", type=int, default=4, help="takes per forward pass")
    parser.add_argument("--lora-r", type=int, default=64, help="LoRA rank (alpha = 2 r)")
    parser.add_argument("--hidden", type=int, default=2560, help="cvf hidden width")
    parser.add_argument("--prefetch", type=int, default=2, help="batches read ahead")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (on a busy shared machine 2 threads ran 7-17x slower than 1)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (min kept)")
    parser.add_argument("--workers", type=int, default=2, help="decode workers (frame store)")
    parser.add_argument("--video-seconds", type=float, default=180.0, help="448p video length")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="override the bf16 peak")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CPU-sized: 3 takes (2 train), 1 view, 4 frames, 1 clip, batch 1, 20 s videos, r 16",
    )
    args = parser.parse_args(argv)
    if args.quick:  # CPU-sized defaults; options given explicitly win
        quick = {"takes": 3, "views": 1, "frames": 4, "clips": 1, "batch": 1,
                 "video_seconds": 20.0, "lora_r": 16, "hidden": 512}  # fmt: skip
        given = {word.split("=")[0] for word in (sys.argv[1:] if argv is None else argv)}
        for name, value in quick.items():
            if "--" + name.replace("_", "-") not in given:
                setattr(args, name, value)
    return args


# ----------------------------------------------------------------------------- setup


def make_dataset(folder: Path, args) -> Path:
    """``--takes`` takes of ``--views`` distinct 448p videos (one per view), as a manifest."""
    from skill.pipeline.manifest import write_manifest

    videos = [synthetic_video(folder, VideoSpec(seconds=args.video_seconds, seed=s))[0]
              for s in range(args.views)]  # fmt: skip
    work = folder / f"adapt-epoch-t{args.takes}-v{args.views}-{args.video_seconds:g}s"
    work.mkdir(parents=True, exist_ok=True)
    return write_manifest(work / "manifest.jsonl", video_takes(videos, args.takes, args.views))


def make_trainer(args, manifest: Path, backbone_path: str, out: Path):
    """The objects `skill adapt` builds, up to the first epoch, through the same steps;
    returns (trainer, seconds to decode the frame store)."""
    from skill.adapt.config import AdaptConfig
    from skill.adapt.train import adapt_backbone, adapt_dataset, adapt_frames, adapt_trainer

    cfg = AdaptConfig.from_settings(
        manifest, out, backbone=backbone_path, frames=args.frames,
        clips=args.clips, batch_size=args.batch, epochs=1, lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r, hidden=args.hidden, device=args.device,
        threads=args.threads, workers=args.workers, plots=False, prefetch=args.prefetch,
        timeout_s=600.0,
    )  # fmt: skip
    dataset = adapt_dataset(cfg)
    backbone = adapt_backbone(cfg, args.device)
    start = time.perf_counter()
    frames, _ = adapt_frames(cfg, backbone, dataset)
    decode_s = time.perf_counter() - start
    trainer = adapt_trainer(cfg, args.device, backbone, frames)
    trainer.setup()
    return trainer, decode_s


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- the three loops


def step_on_pixels(trainer, pixels, mask, rows, step_takes: int) -> None:
    """Forward + backward of one batch of normalised pixels ``(M, T, 3, H, W)`` (the valid
    views of the batch, on the device): what ``AdaptModel.forward`` does after ``pixels``."""
    import torch

    from skill.adapt.train import autocast

    model, device = trainer.model, trainer.device
    target = trainer.state.targets[torch.from_numpy(rows)].to(device)  # as the loss takes them
    mask = mask.to(device)
    with autocast(device):
        tokens = trainer.backbone.tokens_of(model.encoder, pixels).float()
        full = tokens.new_zeros((*mask.shape, *tokens.shape[1:]))
        full[mask] = tokens
        logits = model.head(full, mask)
    loss = trainer.state.loss_fn(logits.float(), target)
    (loss * (len(rows) / step_takes)).backward()


def optimiser_step(trainer) -> None:
    trainer.optimizer.step()
    trainer.scheduler.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def compute_alone(trainer, plan) -> float:
    """Seconds of a training pass on pixels prepared beforehand (outside the timing)."""
    prepared = []
    for item in plan:
        clips, mask = trainer.source.batch(item)
        prepared.append(trainer.backbone.pixels(clips.to(trainer.device)[mask]))
    sync(trainer.device)
    trainer.model.train()
    start = time.perf_counter()
    for (rows, _, step_takes), pixels in zip(plan, prepared, strict=True):
        step_on_pixels(trainer, pixels, _mask(trainer, rows), rows, step_takes)
        optimiser_step(trainer)
    sync(trainer.device)
    return time.perf_counter() - start


def _mask(trainer, rows):
    import torch

    return torch.from_numpy(trainer.sel.mask[rows])


def reads_alone(trainer, plan) -> float:
    """Seconds to read every batch of the plan from the frame store (``FrameBatches.batch``)
    and copy it to the device, with no training: the part of the adapt epoch that is not
    compute."""
    sync(trainer.device)
    start = time.perf_counter()
    for item in plan:
        clips, _ = trainer.source.batch(item)
        clips.to(trainer.device, non_blocking=True)
    sync(trainer.device)
    return time.perf_counter() - start


def adapt_epoch(trainer, epoch: int, prefetch: int) -> float:
    """Seconds of the training pass of ``skill adapt`` (``heads.trainer.train_epoch`` on the
    frame store's batches of ``epoch``)."""
    from skill.heads.trainer import train_epoch

    trainer.cfg.prefetch = prefetch
    sync(trainer.device)
    start = time.perf_counter()
    train_epoch(trainer.state, trainer.source, epoch)
    sync(trainer.device)
    return time.perf_counter() - start


def skillformer_epoch(trainer, plan, videos: dict, frames: int) -> tuple[float, float]:
    """Seconds of SkillFormer's training pass (decode + processor + step) and of its decoding
    and processing alone."""
    import torch

    processor = skillformer_processor()
    geometry = trainer.backbone.geometry  # 224 for TimeSformer-base (a tiny smoke run: its own)
    processor.size = {"shortest_edge": geometry.shortest_edge}
    processor.crop_size = {"height": geometry.crop_height, "width": geometry.crop_width}
    rng = np.random.default_rng(0)
    counts = {path: _frame_count(path) for path in set(videos.values())}
    trainer.model.train()
    decode_s = 0.0
    sync(trainer.device)
    start = time.perf_counter()
    for rows, _, step_takes in plan:
        t0 = time.perf_counter()
        clips = []
        for row in rows:
            for view in trainer.sel.view_names:
                path = videos[(int(trainer.sel.store_rows[row]), view)]
                indices = skillformer_indices(counts[path], rng, clip_len=frames)
                decoded = skillformer_read(Path(path), indices)
                pixels = processor(list(decoded), return_tensors="pt")["pixel_values"]
                clips.append(pixels[0])
        pixels = torch.stack(clips).to(trainer.device)
        decode_s += time.perf_counter() - t0
        step_on_pixels(trainer, pixels, _mask(trainer, rows), rows, step_takes)
        optimiser_step(trainer)
    sync(trainer.device)
    return time.perf_counter() - start, decode_s


def _frame_count(path: str) -> int:
    from bench.common import num_video_frames

    return num_video_frames(Path(path))


# ----------------------------------------------------------------------------- report


def model_flops_per_take(trainer, frames: int) -> float:
    """Useful FLOPs of one training take: 3 x the forward FLOPs of its views' clips."""
    from bench.gpu import flops_per_clip

    backbone = trainer.backbone
    saved = backbone.model
    backbone.model = trainer.model.encoder  # with LoRA, as trained
    try:
        forward = flops_per_clip(backbone, frames)
    finally:
        backbone.model = saved
    return 3.0 * forward * len(trainer.sel.view_names)


def main(argv: list[str] | None = None) -> None:
    import shutil

    import torch

    from skill.heads.trainer import deterministic_torch
    from skill.pipeline.manifest import read_takes

    args = parse_args(argv)
    folder = data_dir(args.data_dir)
    print_machine(machine_info())
    print(f"command: python -m bench.adapt_epoch {' '.join(argv or sys.argv[1:])}")
    manifest = make_dataset(folder, args)
    backbone_path = bench_backbone(args.backbone, folder)
    out = manifest.parent / f"out-{time.time_ns()}"
    with deterministic_torch(0, args.device, args.threads):
        trainer, decode_once_s = make_trainer(args, manifest, backbone_path, out)
        frames_store = trainer.frames
        videos = {}
        for row, take in enumerate(read_takes(manifest).takes):
            for view, path in take.videos.items():
                videos[(row, view)] = path
        n_train = len(trainer.splits.train)
        print(f"\n{n_train} training takes x {len(trainer.sel.view_names)} views, T="
              f"{args.frames}, batch {args.batch}, K={args.clips}, {args.device}; frame store "
              f"decoded once in {decode_once_s:.1f} s ({frames_store.path})")  # fmt: skip
        plan = trainer.source.epoch_plan(np.random.default_rng([0, 1]))  # epoch 1's
        compute_alone(trainer, plan[:1])  # warm-up: first-call allocations
        timings: dict[str, list[float]] = {}
        loops = {
            "compute alone (pixels on the device)": lambda: compute_alone(trainer, plan),
            "frame store reads alone (no training)": lambda: reads_alone(trainer, plan),
            f"adapt epoch, frame store, prefetch {args.prefetch}":
                lambda: adapt_epoch(trainer, 1, args.prefetch),
            "adapt epoch, frame store, prefetch 0": lambda: adapt_epoch(trainer, 1, 0),
        }  # fmt: skip
        for round_ in range(args.rounds):  # interleaved: load changes hit every loop alike
            for name, loop in loops.items():
                timings.setdefault(name, []).append(loop())
                print(f"  round {round_ + 1}: {name}: {timings[name][-1]:.2f} s", flush=True)
        best = {name: min(seconds) for name, seconds in timings.items()}
        alone = best["compute alone (pixels on the device)"]
        epoch = best[f"adapt epoch, frame store, prefetch {args.prefetch}"]
        rows = [(name, seconds, seconds / alone) for name, seconds in best.items()]
        sf, sf_decode = skillformer_epoch(trainer, plan, videos, args.frames)
        rows.append(("SkillFormer epoch (decode every video)", sf, sf / alone))
        print(f"  SkillFormer epoch: {sf:.2f} s", flush=True)
        flops = model_flops_per_take(trainer, args.frames)
    shutil.rmtree(out, ignore_errors=True)  # this run's frame store
    table = [(name, s, n_train / s, ratio) for name, s, ratio in rows]
    print_table(f"one training pass (epoch), best of {args.rounds} interleaved rounds "
                "(SkillFormer: one)", ["loop", "seconds", "takes/s", "x compute"], table)  # fmt: skip
    print(f"\nSkillFormer's decoding + processing alone: {sf_decode:.1f} s of its {sf:.1f} s")
    print(f"SkillFormer epoch / adapt epoch: {sf / epoch:.2f}x")
    verdict = "met" if epoch / alone <= GOAL else "NOT met"
    print(f"goal adapt epoch <= {GOAL:.2f} x compute alone: {epoch / alone:.3f} ({verdict})")
    achieved = n_train * flops / epoch / 1e12
    print(f"model FLOPs per take (3 x forward, {len(trainer.sel.view_names)} views): "
          f"{flops / 1e9:.0f} GFLOP; adapt epoch: {achieved:.3f} TFLOP/s")  # fmt: skip
    if args.device.startswith("cuda"):
        from bench.gpu import peak_tflops

        peak = peak_tflops(torch.cuda.get_device_name(0), args.peak_tflops)
        if peak:
            print(f"fraction of dense bf16 peak ({peak:.0f} TFLOP/s): {achieved / peak:.1%}")
    print(f"KEY adapt_epoch: adapt epoch / compute alone = {epoch / alone:.3f}; SkillFormer "
          f"epoch / adapt epoch = {sf / epoch:.2f}x")  # fmt: skip
    if not math.isfinite(epoch):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
