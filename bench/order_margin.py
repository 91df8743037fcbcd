"""Benchmark 10: order carries skill; do the sequence heads see it and the clip heads not?

An order dataset (`skill synth --kind order`: a procedure of 8 steps, 16 frames each; Late
Experts do them in order, Novices swap two pairs; every step looks the same at both levels)
is extracted twice with the demo's tiny backbone (tiny-timesformer, frame tokens), with the
same K clips of T frames: (a) ``--sampling windows`` (a samples store: today's clip heads
train on one random clip per epoch and average their scores over the clips) and (b)
``--sampling sequence`` (a sequence store: the clips in order, with their times). K equals
the number of steps, so every clip lies inside one step. Fitted with default settings for
each seed: every clip head on (a), every sequence head on (b), and every sequence head on (b)
with each take's clips shuffled (tokens permuted along the clip axis, the same permutation for
all its views; clip times left in place). The table gives test top-1 (mean ± std over seeds;
two balanced levels, chance 0.5) and the margin of the best sequence head over the best clip
head, which the shuffled order should lose.

Run from the repository root: ``python -m bench.order_margin``.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/order_margin.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import base_parser, data_dir, print_machine, print_table, timed  # noqa: E402

BACKBONE = "tiny-timesformer"  # the demo's (skill.demo.DemoConfig.backbone)
GOAL = 0.15


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=200, help="synthetic takes")
    parser.add_argument("--participants", type=int, default=20, help="synthetic participants")
    parser.add_argument("--size", type=int, default=32, help="video size in pixels")
    parser.add_argument("--exo-views", type=int, default=4, help="exo cameras (1-4)")
    parser.add_argument("--steps", type=int, default=8, help="steps of the procedure")
    parser.add_argument("--swaps", type=int, default=2, help="pairs of steps a Novice swaps")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--clips", type=int, default=None, help="K (default: --steps)")
    parser.add_argument("--frames", type=int, default=8, help="T, frames per clip")
    parser.add_argument("--stride", type=int, default=2, help="frame step of a window in (a)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--clip-heads", default=None, help="default: every head reading clips")
    parser.add_argument("--sequence-heads", default=None, help="default: every sequence head")
    parser.add_argument("--workers", type=int, default=2, help="render and decode processes")
    return parser.parse_args(argv)


def synth_dataset(folder: Path, args) -> Path:
    """The order dataset's manifest, synthesised on first use."""
    from skill.synth import MANIFEST_NAME, SynthConfig, synthesize

    cfg = SynthConfig(
        kind="order", takes=args.takes, participants=args.participants, size=args.size,
        exo_views=args.exo_views, procedure_steps=args.steps, swaps=args.swaps,
        seed=args.data_seed,
    )  # fmt: skip
    out = folder / (
        f"order-t{args.takes}-p{args.participants}-x{args.size}-e{args.exo_views}"
        f"-s{args.steps}-w{args.swaps}-d{args.data_seed}"
    )
    if not (out / "built").is_file():
        shutil.rmtree(out, ignore_errors=True)
        _, seconds = timed(synthesize, cfg, out / "data", args.workers)
        print(f"synthesised {args.takes} takes in {seconds:.1f} s", flush=True)
        (out / "built").write_text("ok\n")
    return out / "data" / MANIFEST_NAME


def extract_store(manifest: Path, strategy: str, args) -> Path:
    """The store of one sampling strategy, extracted on first use (a finished store is
    reused; an unfinished one resumes)."""
    from skill.pipeline.extract import ExtractConfig, run_extract

    clips = args.clips or args.steps
    name = f"{strategy}-k{clips}-t{args.frames}" + (
        f"-s{args.stride}" if strategy == "windows" else ""
    )
    store = manifest.parent.parent / f"{name}.zarr"
    if (store.parent / f"{name}.built").is_file():
        return store
    cfg = ExtractConfig(
        manifest=manifest, store=store, backbone=BACKBONE, tokens="frame", frames=args.frames,
        clips=clips, strategy=strategy, stride=args.stride if strategy == "windows" else None,
        device="cpu", workers=args.workers, seed=0,
    )  # fmt: skip
    summary, seconds = timed(run_extract, cfg)
    if summary.failed:
        raise RuntimeError(f"{summary.failed} takes failed to extract: {summary.failures}")
    print(f"extracted {store.name} in {seconds:.1f} s", flush=True)
    (store.parent / f"{name}.built").write_text("ok\n")
    return store


def shuffled(sel, seed: int):
    """`sel` with each take's clips in a random order (one permutation per take, for all its
    views), the clip times where they were: the order no longer says anything."""
    rng = np.random.default_rng([seed, 18])
    order = np.stack([rng.permutation(sel.clips) for _ in range(sel.n)])  # (n, K)
    rows = np.arange(sel.n)[:, None]
    x = sel.x[rows, :, order].transpose(0, 2, 1, 3, 4)  # (n, K, V, N, D) -> (n, V, K, N, D)
    mask = sel.clip_mask[rows, :, order].transpose(0, 2, 1)
    return dataclasses.replace(sel, x=np.ascontiguousarray(x), clip_mask=mask, _pooled=None)


def heads_reading(reads: str, given: str | None) -> list[str]:
    """The heads to fit: those given, else every registered head that reads `reads`."""
    from skill.heads.registry import head_names, resolve_head

    if given:
        return [h.strip() for h in given.split(",") if h.strip()]
    return [h for h in head_names() if resolve_head(h).reads == reads]


def fit_seeds(store: Path, head: str, seeds: list[int], runs: Path, selection) -> list[float]:
    """Test top-1 of one head fitted once per seed with default settings."""
    from skill.heads.config import FitConfig
    from skill.heads.train import fit

    tests = []
    for seed in seeds:
        cfg = FitConfig(store=str(store), head=head, views="all", seed=seed,
                        out_dir=str(runs), plots=False)  # fmt: skip
        sel = selection(seed)
        result = fit(cfg, sel)
        tests.append(float(result.metrics["test"]["top1"]))
    return tests


def main(argv: list[str] | None = None) -> None:
    from skill.heads.data import load_selection
    from skill.pipeline.sampling import STRATEGIES

    args = parse_args(argv)
    print_machine()
    folder = data_dir(args.data_dir)
    manifest = synth_dataset(folder, args)
    runs = manifest.parent.parent / "runs"
    seeds = [int(s) for s in args.seeds.split(",")]
    samples = extract_store(manifest, "windows", args)
    plans = []  # (head, store label, store, selection per seed)
    clip_sel = load_selection(samples, "all")
    plans += [
        (h, "windows", samples, lambda s: clip_sel) for h in heads_reading("clip", args.clip_heads)
    ]
    sequence_heads = heads_reading("sequence", args.sequence_heads)
    if "sequence" in STRATEGIES and sequence_heads:
        ordered = extract_store(manifest, "sequence", args)
        seq_sel = load_selection(ordered, "all")
        plans += [(h, "sequence", ordered, lambda s: seq_sel) for h in sequence_heads]
        plans += [(h, "shuffled", ordered, lambda s: shuffled(seq_sel, s)) for h in sequence_heads]
    else:
        print("no sequence sampling or no sequence head yet: clip heads on (a) only")
    rows, means = [], {}
    for head, label, store, selection in plans:
        tests, seconds = timed(fit_seeds, store, head, seeds, runs, selection)
        means[(head, label)] = float(np.mean(tests))
        rows.append([head, label, f"{np.mean(tests):.3f} ± {np.std(tests):.3f}",
                     " ".join(f"{t:.3f}" for t in tests), seconds / len(seeds)])  # fmt: skip
        print(f"{head} on {label}: test top-1 {tests}", flush=True)
    print_table(f"test top-1 (chance 0.5), seeds {args.seeds}",
                ["head", "store", "mean ± std", "per seed", "s/fit"], rows)  # fmt: skip
    report_margin(means)


def report_margin(means: dict[tuple[str, str], float]) -> None:
    """The margin of the best sequence head over the best clip head: ordered clips should
    reach the goal, shuffled ones lose it."""
    best = {}
    for label in ("windows", "sequence", "shuffled"):
        scored = {h: m for (h, lb), m in means.items() if lb == label}
        if scored:
            best[label] = max(scored.items(), key=lambda item: item[1])
    if "windows" not in best or "sequence" not in best:
        return
    clip_head, clip = best["windows"]
    for label in ("sequence", "shuffled"):
        head, score = best[label]
        margin = score - clip
        reached = margin >= GOAL
        verdict = {
            ("sequence", True): "goal met",
            ("sequence", False): "goal missed",
            ("shuffled", True): "NOT lost: something besides the order tells the levels",
            ("shuffled", False): "lost, as it should be",
        }[(label, reached)]
        print(f"KEY order_margin {label}: best {head} {score:.3f} - best clip head {clip_head} "
              f"{clip:.3f} = {margin:+.3f} (goal >= {GOAL}: {verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
