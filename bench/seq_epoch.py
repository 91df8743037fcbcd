"""Benchmark 9: one training epoch of each sequence head on an EgoExo4D-size sequence store.

The store is held in memory as the fit holds it (a ``heads.data.Selection``): 1,904 training
and 466 validation takes x 5 views x 48 clips x 1 token x 768, float16 (about 870 MB), every
clip present, about 5 % of views missing, clips one every 3.75 s (48 clips over a 3-minute
take). Each head (every head registered with ``reads="sequence"``, default options) is
trained as ``skill fit`` trains it: ``heads.trainer.train_epoch`` fed by
``heads.trainer.SequenceBatches`` (whole sequences, view dropout as the head's default), the
default batch size, AdamW and the warmup/cosine schedule, deterministic kernels on the CPU.
Reported per head: seconds per training epoch (each of ``--epochs``), optimiser steps per
second, and the seconds of scoring the validation split once (what early stopping adds per
epoch). Goal on a 2-core CPU: a training epoch under 10 s.

Run from the repository root: ``python -m bench.seq_epoch`` (CPU, 2 threads, about a
minute), ``python -m bench.seq_epoch --device cuda``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/seq_epoch.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    EGOEXO_TRAIN,
    EGOEXO_TRAIN_LABEL_COUNTS,
    EGOEXO_VAL,
    LABELS,
    SCENARIOS,
    VIEWS,
    base_parser,
    print_machine,
    print_table,
)

GOAL_S = 10.0  # seconds per training epoch on a 2-core CPU
CLIPS, DIM, TAKE_SECONDS, CLIP_SECONDS = 48, 768, 180.0, 8 / 30
MISSING_VIEWS = 0.05


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs timed per head")
    parser.add_argument("--heads", default=None, help="comma list (default: every sequence head)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: skill fit's")
    parser.add_argument(
        "--train-takes", type=int, default=EGOEXO_TRAIN, help="takes of the training split"
    )
    return parser.parse_args(argv)


def sequence_selection(train: int, val: int, seed: int = 0):
    """An in-memory sequence-store Selection of EgoExo4D's shape: ``train + val`` takes, the
    training labels in EgoExo4D's proportions, a weak class signal in the tokens."""
    from skill.heads.data import Selection

    rng = np.random.default_rng(seed)
    n = train + val
    counts = np.array(EGOEXO_TRAIN_LABEL_COUNTS, dtype=float)
    targets = rng.choice(len(LABELS), size=n, p=counts / counts.sum()).astype(np.int64)
    x = np.empty((n, len(VIEWS), CLIPS, 1, DIM), dtype=np.float16)
    for start in range(0, n, 256):  # bounded float32 temporaries
        block = rng.standard_normal((min(256, n - start), len(VIEWS), CLIPS, 1, DIM), np.float32)
        block[..., :8] += targets[start : start + 256, None, None, None, None] * 0.1
        x[start : start + 256] = block.astype(np.float16)
    mask = rng.random((n, len(VIEWS))) >= MISSING_VIEWS
    mask[~mask.any(axis=1), 0] = True
    starts = np.arange(CLIPS, dtype=np.float32) * (TAKE_SECONDS / CLIPS)
    times = np.stack([starts, starts + CLIP_SECONDS], axis=-1)  # (K, 2)
    clip_mask = np.repeat(mask[:, :, None], CLIPS, axis=2)
    clip_times = np.where(clip_mask[..., None], times, np.float32(np.nan)).astype(np.float32)
    ids = np.array([f"take{i:04d}" for i in range(n)])
    return Selection(
        x=x,
        mask=mask,
        targets=targets,
        take_ids=ids,
        scenario=np.array([SCENARIOS[i % len(SCENARIOS)] for i in range(n)]),
        participant=np.array([f"p{i // 4:03d}" for i in range(n)]),
        split=np.array(["train"] * train + ["val"] * val),
        store_rows=np.arange(n, dtype=np.int64),
        view_names=list(VIEWS),
        task_name="classification",
        schema={"labels": list(LABELS)},
        provenance={"clip_axis": "sequence"},
        store_path="(in memory)",
        store_views=list(VIEWS),
        geometry={"clips": CLIPS, "tokens": 1, "dim": DIM},
        clip_axis="sequence",
        clip_mask=clip_mask,
        clip_times=clip_times,
    )


def time_head(name: str, sel, splits, args) -> dict:
    """Train head ``name`` for ``args.epochs`` epochs as `skill fit` does, timing each epoch
    and one scoring of the validation split."""
    import torch

    from skill.heads.config import FitConfig
    from skill.heads.registry import resolve_head
    from skill.heads.trainer import deterministic_torch, start_training, token_source, train_epoch

    spec = resolve_head(name)
    options = {} if args.batch_size is None else {"batch_size": args.batch_size}
    cfg = FitConfig(store="(in memory)", head=name, device=args.device, epochs=args.epochs,
                    threads=args.threads, plots=False, **options)  # fmt: skip
    cfg = cfg.resolved(spec, sel.num_views, sel.task)
    synchronize = torch.cuda.synchronize if cfg.device.startswith("cuda") else (lambda: None)
    with deterministic_torch(cfg.seed, cfg.device, cfg.threads):
        state = start_training(cfg, sel, splits, spec)
        source = token_source(state.cfg, sel, splits.train, spec)
        epochs = []
        for epoch in range(1, args.epochs + 1):
            synchronize()
            start = time.perf_counter()
            loss = train_epoch(state, source, epoch)
            synchronize()
            epochs.append(time.perf_counter() - start)
        start = time.perf_counter()
        source.scores(state.model, splits.val)
        synchronize()
        val_s = time.perf_counter() - start
    steps = state.budget.steps_per_epoch
    params = sum(p.numel() for p in state.model.parameters())
    return {"name": name, "epochs": epochs, "steps": steps, "val_s": val_s, "loss": loss,
            "params": params, "batch": cfg.batch_size, "options": state.options}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import torch

    from skill.heads.data import Splits
    from skill.heads.registry import HEAD_READS, head_names

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print_machine()
    names = args.heads.split(",") if args.heads else None
    names = names or [n for n in head_names() if HEAD_READS[n] == "sequence"]
    start = time.perf_counter()
    sel = sequence_selection(args.train_takes, EGOEXO_VAL)
    built = time.perf_counter() - start
    splits = Splits(
        train=np.arange(args.train_takes),
        val=np.arange(args.train_takes, sel.n),
        test=np.zeros(0, dtype=np.int64),
        source="store",
    )
    print(
        f"\nselection: {sel.n} takes ({len(splits.train)} train, {len(splits.val)} val) x "
        f"{sel.num_views} views x {sel.clips} clips x {sel.tokens} x {sel.dim} float16, "
        f"{sel.x.nbytes / 2**20:.0f} MiB, built in {built:.1f} s; device {args.device}, "
        f"{args.threads} threads"
    )
    rows, slowest = [], 0.0
    for name in names:
        result = time_head(name, sel, splits, args)
        best = min(result["epochs"])
        slowest = max(slowest, best)
        rows.append([
            name, f"{result['params'] / 1e6:.2f} M", result["batch"],
            " / ".join(f"{s:.2f}" for s in result["epochs"]), result["steps"],
            f"{result['steps'] / best:.1f}", f"{result['val_s']:.2f}",
            "yes" if best < GOAL_S else "NO", f"{result['loss']:.3f}",
        ])  # fmt: skip
        print(f"{name} options: {result['options']}")
    print_table(
        f"one training epoch of each sequence head ({args.device})",
        ["head", "params", "batch", "s/epoch (each)", "steps/epoch", "steps/s (best)",
         "val scoring s", f"< {GOAL_S:.0f} s", "last loss"],
        rows,
    )  # fmt: skip
    print(f"KEY seq_epoch: slowest sequence head's training epoch {slowest:.2f} s on "
          f"{args.device} ({args.threads} threads; goal < {GOAL_S:.0f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
