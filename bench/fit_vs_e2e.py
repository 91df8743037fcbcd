"""Benchmark 1: an epoch of `skill fit` on cached tokens vs. SkillFormer-style end-to-end LoRA.

Cached side: an EgoExo4D-sized token store (2,370 takes x 5 views x 16 frame tokens x 768,
float16, built synthetically through TokenStore/zarr), loaded with heads.data.load_selection;
one `cvf` epoch (train pass over the train split + validation pass) with the project's own
training functions (also at 1 torch thread, to show what other jobs on the machine cost);
`fit` of `cvf` trained to its early-stopping point, loading included, on all views (with
``--ablation``: on ego, exo and ego+exo, SkillFormer's three configurations); with
``--sweep``, a 12-configuration sweep (heads.sweep.sweep: 4 heads x 3 view sets).

End-to-end side (SkillFormer's recipe): per take, PyAV decoding of every frame up to the last
sampled one of a 448p video + its image processor, then TimeSformer-base (random weights,
transformers TimesformerConfig defaults, 16 frames) with PEFT LoRA r=32 on SkillFormer's
targets and gradient checkpointing (as SkillFormer does), forward + backward + AdamW through
the same `cvf` head. A few steps at batch 1 are timed and multiplied by the steps of an
epoch; by default only one view goes through the backbone per step and the step time is
scaled by 5 (the backbone's cost is linear in views; ``--e2e-views 5`` measures all five).

Run from the repository root: ``python -m bench.fit_vs_e2e`` (``--help`` for the options).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python bench/fit_vs_e2e.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    EGOEXO_TRAIN,
    VIEWS,
    StoreSpec,
    VideoSpec,
    base_parser,
    data_dir,
    describe_build,
    load_timesformer_base,
    machine_info,
    num_video_frames,
    print_machine,
    print_table,
    skillformer_indices,
    skillformer_processor,
    skillformer_read,
    synthetic_store,
    synthetic_video,
    timed,
)

VIEW_SETS = ("ego", "exo", "all")
SWEEP_HEADS = ("mean", "concat", "late", "cvf")
SKILLFORMER_EPOCHS = 4  # SkillFormer trains 4 epochs (arXiv 2505.08665)


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=2370, help="takes in the store")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of every fit (skill fit --threads; its default: 1)",
    )
    parser.add_argument("--epoch-repeats", type=int, default=2, help="timed cvf epochs")
    parser.add_argument("--ablation", action="store_true", help="cvf fits on ego, exo and all")
    parser.add_argument("--sweep", action="store_true", help="also the 12-configuration sweep")
    parser.add_argument("--sweep-heads", default=",".join(SWEEP_HEADS), help="heads of the sweep")
    parser.add_argument("--e2e-views", type=int, default=1, help="views through the backbone")
    parser.add_argument("--e2e-batch", type=int, default=1, help="takes per end-to-end step")
    parser.add_argument("--e2e-steps", type=int, default=1, help="timed end-to-end steps")
    parser.add_argument("--video-seconds", type=float, default=180.0, help="448p video length")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- cached side


@dataclass
class CachedEpoch:
    """Seconds of one cvf epoch on the loaded selection (best of the repeats)."""

    train_pass: float
    val_pass: float
    one_epoch_fit: float  # heads.train.fit with epochs=1: epoch + predictions + run folder
    n_train: int
    n_val: int

    @property
    def epoch(self) -> float:
        return self.train_pass + self.val_pass


def time_loads(store: Path) -> dict[str, tuple[float, object]]:
    """load_selection per view set: {views: (seconds, Selection)} (only 'all' is kept)."""
    from skill.heads.data import load_selection

    out = {}
    for views in VIEW_SETS:
        selection, seconds = timed(load_selection, store, views)
        out[views] = (seconds, selection if views == "all" else None)
    return out


def time_cvf_epochs(
    store: Path, selection, repeats: int, out_dir: Path, threads: int
) -> CachedEpoch:
    """A cvf epoch with the project's training functions, as `skill fit` runs it."""
    from skill.heads.data import split_takes
    from skill.heads.train import FitConfig, fit

    cfg = FitConfig(store=str(store), views="all", head="cvf", epochs=1, plots=False,
                    out_dir=str(out_dir), name="one-epoch", threads=threads)  # fmt: skip
    splits = split_takes(selection, cfg.val_frac, cfg.split_seed)
    trains, vals = [], []
    for _ in range(repeats):
        train_s, val_s = _one_epoch(selection, splits, cfg)
        trains.append(train_s)
        vals.append(val_s)
    _, one_epoch_fit = timed(fit, cfg, selection)
    return CachedEpoch(min(trains), min(vals), one_epoch_fit, len(splits.train), len(splits.val))


def _one_epoch(selection, splits, cfg) -> tuple[float, float]:
    """Seconds of one train pass and one validation pass, as `fit` runs them."""
    from skill.heads.registry import resolve_head
    from skill.heads.trainer import (
        TokenBatches,
        deterministic_torch,
        start_training,
        train_epoch,
        validation_row,
    )

    spec = resolve_head(cfg.head)
    cfg = cfg.resolved(spec, selection.num_views, selection.task)  # the head's defaults, as fit
    with deterministic_torch(cfg.seed, cfg.device, cfg.threads):
        state = start_training(cfg, selection, splits, spec)
        batches = TokenBatches(state.cfg, selection, splits.train, spec)
        _, train_s = timed(train_epoch, state, batches)
        _, val_s = timed(validation_row, state, batches, selection, splits)
    return train_s, val_s


@dataclass
class FitRow:
    """One `fit` trained to its stopping point; seconds include loading the selection."""

    head: str
    views: str
    seconds: float
    epochs_run: int
    best_epoch: int
    val_top1: float
    threads: int = 1


def time_cvf_fits(store: Path, view_sets: list[str], out_dir: Path, threads: int) -> list[FitRow]:
    """`fit` of cvf per view set, each loading its own selection as `skill fit` does."""
    from skill.heads.train import FitConfig, fit

    rows = []
    for views in view_sets:
        cfg = FitConfig(store=str(store), views=views, head="cvf", plots=False,
                        out_dir=str(out_dir), threads=threads)  # fmt: skip
        result, seconds = timed(fit, cfg)
        rows.append(fit_row(result, seconds))
    return rows


def fit_row(result, seconds: float) -> FitRow:
    metrics = result.metrics
    return FitRow(result.config.head, result.config.views, seconds, metrics["epochs_run"],
                  metrics["best_epoch"], metrics["val"]["top1"], result.config.threads)  # fmt: skip


def time_train_pass_at(threads: int, store: Path, selection, out_dir: Path) -> float:
    """A cvf train pass with ``skill fit --threads threads``."""
    from skill.heads.config import FitConfig
    from skill.heads.data import split_takes

    cfg = FitConfig(store=str(store), views="all", head="cvf", epochs=1, plots=False,
                    out_dir=str(out_dir), threads=threads)  # fmt: skip
    splits = split_takes(selection, cfg.val_frac, cfg.split_seed)
    return _one_epoch(selection, splits, cfg)[0]


def time_sweep(store: Path, heads: list[str], out_dir: Path, threads: int):
    """(seconds, SweepResult) of heads x (ego, exo, all) x seed 0, loading included."""
    from skill.heads.config import FitConfig, SweepConfig
    from skill.heads.sweep import sweep

    base = FitConfig(store=str(store), plots=False, out_dir=str(out_dir), threads=threads)
    cfg = SweepConfig(fit=base, heads=heads, view_sets=list(VIEW_SETS), seeds=[0])
    return timed(sweep, cfg)


# ----------------------------------------------------------------------------- end to end


def build_end_to_end(folder: Path, views: int):
    """(LoRA TimeSformer-base, cvf head, AdamW): SkillFormer's trainable parts (r=32)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from skill.heads import build_head
    from skill.pipeline.backbones import SKILLFORMER_LORA_TARGETS

    backbone = load_timesformer_base(folder, num_frames=16)
    lora = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.1, bias="none",
                      target_modules=list(SKILLFORMER_LORA_TARGETS))  # fmt: skip
    backbone = get_peft_model(backbone, lora)
    # transformers 5 renamed gradient checkpointing to activation checkpointing and warns
    # about the old name at every forward pass; SkillFormer calls the old name.
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)
    backbone.gradient_checkpointing_enable()  # SkillFormer enables it
    backbone.train()
    tokens = backbone.config.num_frames * (224 // 16) ** 2 + 1
    head = build_head("cvf", dim=768, num_views=views, outputs=4, tokens=tokens)
    params = [p for p in backbone.parameters() if p.requires_grad] + list(head.parameters())
    return backbone, head, torch.optim.AdamW(params, lr=2e-5)


def trainable_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def decode_take(video: Path, views: int, rng: np.random.Generator, processor):
    """SkillFormer's data path for one take: (pixels (V, 16, 3, 224, 224), decode s, process s)."""
    import torch

    total = num_video_frames(video)
    clips, decode_s, process_s = [], 0.0, 0.0
    for _ in range(views):
        frames, seconds = timed(skillformer_read, video, skillformer_indices(total, rng))
        decode_s += seconds
        pixels, seconds = timed(processor, list(frames), return_tensors="pt")
        process_s += seconds
        clips.append(pixels["pixel_values"][0])
    return torch.stack(clips), decode_s, process_s


def end_to_end_step(backbone, head, optimizer, pixels) -> float:
    """One training step on pixels (B, V, T, 3, H, W): backbone, head, loss, backward, AdamW."""
    import torch

    start = time.perf_counter()
    batch, views = pixels.shape[:2]
    hidden = backbone(pixel_values=pixels.flatten(0, 1)).last_hidden_state  # (B*V, 1+P*T, D)
    mask = torch.ones(batch, views, dtype=torch.bool)
    logits = head(hidden.reshape(batch, views, *hidden.shape[1:]), mask)
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(batch, dtype=torch.long))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


@dataclass
class EndToEnd:
    """Measured end-to-end costs, per take with all 5 views."""

    step_s: list[float]  # measured steps (batch x measured views)
    per_take_compute: float  # backbone + head fwd/bwd + AdamW, scaled to 5 views
    per_take_decode: float  # SkillFormer decode of 5 views
    per_take_process: float  # its image processor on 5 views
    trainable: int
    measured_views: int
    batch: int


def measure_end_to_end(folder: Path, video: Path, args) -> EndToEnd:
    rng = np.random.default_rng(0)
    processor = skillformer_processor()
    backbone, head, optimizer = build_end_to_end(folder, args.e2e_views)
    trainable = trainable_parameters(backbone) + trainable_parameters(head)
    steps, decode_s, process_s = [], 0.0, 0.0
    for _ in range(args.e2e_steps):
        batch = []
        for _ in range(args.e2e_batch):
            pixels, dec, proc = decode_take(video, args.e2e_views, rng, processor)
            batch.append(pixels)
            decode_s, process_s = decode_s + dec, process_s + proc
        steps.append(end_to_end_step(backbone, head, optimizer, _stack(batch)))
    takes = args.e2e_steps * args.e2e_batch
    scale = len(VIEWS) / args.e2e_views
    return EndToEnd(
        step_s=steps,
        per_take_compute=min(steps) / args.e2e_batch * scale,
        per_take_decode=decode_s / takes * scale,
        per_take_process=process_s / takes * scale,
        trainable=trainable,
        measured_views=args.e2e_views,
        batch=args.e2e_batch,
    )


def _stack(batch):
    import torch

    return torch.stack(batch)


# ----------------------------------------------------------------------------- report


def report_cached(loads: dict, epoch: CachedEpoch) -> None:
    rows = [[f"load_selection views={v}", seconds] for v, (seconds, _) in loads.items()]
    rows += [
        [f"cvf train pass ({epoch.n_train} takes)", epoch.train_pass],
        [f"cvf validation pass ({epoch.n_val} takes)", epoch.val_pass],
        ["cvf epoch (train + validation)", epoch.epoch],
        ["fit(epochs=1): epoch + predictions + run folder", epoch.one_epoch_fit],
    ]
    print_table("cached tokens (skill fit), seconds", ["what", "seconds"], rows)


def report_fits(rows: list[FitRow], title: str) -> None:
    header = ["head", "views", "threads", "seconds", "epochs run", "best epoch", "val top-1"]
    table = [[r.head, r.views, r.threads, r.seconds, r.epochs_run, r.best_epoch, r.val_top1]
             for r in rows]  # fmt: skip
    print_table(title, header, table)


def report_threads(by_threads: dict[int, float]) -> None:
    rows = [[f"skill fit --threads {n}" + (" (default)" if n == 1 else ""), seconds]
            for n, seconds in by_threads.items()]  # fmt: skip
    print_table("cvf train pass by torch threads (other jobs share the cores)",
                ["threads", "seconds"], rows)  # fmt: skip


def report_end_to_end(e2e: EndToEnd) -> None:
    rows = [
        ["trainable parameters (LoRA r=32 + cvf head)", e2e.trainable],
        [f"measured steps (batch {e2e.batch}, {e2e.measured_views} view(s)), s",
         ", ".join(f"{s:.1f}" for s in e2e.step_s)],
        ["per take, 5 views: backbone+head fwd/bwd+AdamW, s", e2e.per_take_compute],
        ["per take, 5 views: SkillFormer PyAV decode, s", e2e.per_take_decode],
        ["per take, 5 views: its image processor, s", e2e.per_take_process],
    ]  # fmt: skip
    print_table("end to end (SkillFormer recipe), measured", ["what", "value"], rows)


def report_ratios(epoch: CachedEpoch, e2e: EndToEnd, fits_s: float, fits_label: str,
                  sweep_s: float | None, n_configs: int) -> float:  # fmt: skip
    """Print the epoch and sweep comparison; return the per-epoch ratio."""
    steps = math.ceil(EGOEXO_TRAIN / e2e.batch)
    compute_epoch = e2e.per_take_compute * EGOEXO_TRAIN
    serial_epoch = (e2e.per_take_compute + e2e.per_take_decode + e2e.per_take_process) * (
        EGOEXO_TRAIN
    )
    rows = [
        ["end-to-end epoch, decode hidden by loader workers", compute_epoch, compute_epoch / 3600],
        ["end-to-end epoch, decode not overlapped", serial_epoch, serial_epoch / 3600],
        ["cached cvf epoch (train + validation)", epoch.epoch, epoch.epoch / 3600],
    ]
    if sweep_s is not None:
        e2e_sweep = n_configs * SKILLFORMER_EPOCHS * compute_epoch
        rows.append([f"end-to-end sweep: {n_configs} configs x {SKILLFORMER_EPOCHS} epochs",
                     e2e_sweep, e2e_sweep / 3600])  # fmt: skip
        rows.append([f"cached sweep: {n_configs} configs to their stopping point", sweep_s,
                     sweep_s / 3600])  # fmt: skip
    rows.append([f"cached {fits_label}, loading included", fits_s, fits_s / 3600])
    print_table(f"per epoch: {EGOEXO_TRAIN} train takes; end to end = {steps} steps x measured "
                "step (extrapolated)", ["what", "seconds", "hours"], rows)  # fmt: skip
    return compute_epoch / epoch.epoch


def report_goals(fits: list[FitRow], ratio: float) -> None:
    """The issue's goals. A cvf ablation is one configuration (head, views) of an ablation
    study, trained to its stopping point; the costliest one, all views, is the goal's row.
    With --ablation the three view sets together are shown too (a stricter reading)."""

    def verdict(seconds: float) -> str:
        return "met" if seconds < 30 else f"missed by {seconds / 30:.1f}x"

    rows = [["epoch >= 1,000x cheaper than end to end", f"{ratio:,.0f}x",
             "met" if ratio >= 1000 else f"missed by {1000 / ratio:.1f}x"]]  # fmt: skip
    for fit in fits:
        rows.append([f"cvf ablation, views={fit.views}, --threads {fit.threads}, to its "
                     "stopping point, loading included < 30 s", f"{fit.seconds:.1f} s",
                     verdict(fit.seconds)])  # fmt: skip
    first = [fit for fit in fits if fit.threads == fits[0].threads]
    if len(first) > 1:
        total = sum(fit.seconds for fit in first)
        rows.append([f"all {len(first)} view sets one after another < 30 s (stricter)",
                     f"{total:.1f} s", verdict(total)])  # fmt: skip
    print_table("goals", ["goal", "measured", "verdict"], rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    folder = data_dir(args.data_dir)
    print_machine(machine_info())
    spec = StoreSpec(takes=args.takes)
    store, built = synthetic_store(folder, spec)
    print(f"store: {store} ({spec.nbytes / 1e6:.0f} MB of tokens; {describe_build(built)})")
    video, _ = synthetic_video(folder, VideoSpec(seconds=args.video_seconds))
    runs = folder / f"runs-{os.getpid()}"
    view_sets = list(VIEW_SETS) if args.ablation else ["all"]
    fits_label = "cvf ablation (ego, exo, all)" if args.ablation else "cvf fit (all views)"
    heads = [h for h in args.sweep_heads.split(",") if h]
    sweep_s = None
    try:
        loads = time_loads(store)
        selection = loads["all"][1]
        epoch = time_cvf_epochs(store, selection, args.epoch_repeats, runs, args.threads)
        by_threads = {n: time_train_pass_at(n, store, selection, runs) for n in (1, 2)}
        loads = {v: (s, None) for v, (s, _) in loads.items()}
        del selection
        report_cached(loads, epoch)
        report_threads(by_threads)
        fits = time_cvf_fits(store, view_sets, runs, args.threads)
        if args.threads != 2:  # what both cores of a 2-core machine give
            fits += time_cvf_fits(store, ["all"], runs, threads=2)
        report_fits(fits, f"{fits_label}: fit to the stopping point, loading included")
        if args.sweep:
            result, sweep_s = time_sweep(store, heads, runs, args.threads)
            report_fits([fit_row(f, f.metrics["fit_seconds"]) for f in result.fits],
                        f"sweep of {len(result.fits)} configurations (fit seconds exclude "
                        f"loading); wall time {sweep_s:.1f} s with loading")  # fmt: skip
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    fits_s = sum(f.seconds for f in fits if f.threads == args.threads)
    e2e = measure_end_to_end(folder, video, args)
    report_end_to_end(e2e)
    ratio = report_ratios(epoch, e2e, fits_s, fits_label, sweep_s, len(heads) * len(VIEW_SETS))
    report_goals(fits, ratio)
    print(f"\nfits: skill fit --threads {args.threads}; load average at end: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print(f"KEY fit_vs_e2e: end-to-end epoch / cached cvf epoch = {ratio:,.0f}x")


if __name__ == "__main__":
    main()
