"""Benchmark 11: every neural head on synthetic stores of the ordinal, regression and pairwise
tasks, beside each task's baseline.

`skill synth --task ...` (a continuous latent skill drives the cues; the level is the latent
binned, the scores and pairs come from it) for ordinal, regression (two scores, ``tes`` and
``pcs``, with different judges' noise) and pairwise (pairs within each split, the better take
first), each extracted with the demo's tiny backbone (tiny-timesformer, frame tokens) and
fitted with default settings by every neural head that reads clips, once per seed. The table
gives test metrics (mean ± std over seeds): ordinal MAE in levels against the majority
level's and against the classification head's on the same tokens (the ordinal store read as
plain classes: its argmax level); regression Spearman's rho (mean over the scores; overall
and the Fisher-z mean of the per-group rho) and the relative L2 x100 against the training
mean's; pairwise accuracy on the test pairs (chance 0.5) with the pair count.

A second arm (``--source tokens``; ``--source all`` runs both) skips the videos: token stores
written through the store API (`bench.task_tokens`) where a continuous latent skill per take
is a direction in token space scaled by ``--signal``, with participants' offsets and each
view's noise; ordinal levels are the latent binned, regression has one score and a two-score
variant, pairs come from the latent within each split. The same heads, seeds and tables.

Run from the repository root: ``python -m bench.tasks_bench [--source video|tokens|all]``.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/tasks_bench.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import base_parser, data_dir, print_machine, print_table, timed  # noqa: E402

BACKBONE = "tiny-timesformer"  # the demo's (skill.demo.DemoConfig.backbone)
TASKS = ("ordinal", "regression", "pairwise")
SCORES = "tes,pcs"
RHO_GOAL = 0.7
PAIR_GOAL = 0.8
SOURCES = ("video", "tokens")


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=160, help="synthetic takes per task")
    parser.add_argument("--participants", type=int, default=40, help="synthetic participants")
    parser.add_argument("--size", type=int, default=32, help="video size in pixels")
    parser.add_argument("--frames", type=int, default=8, help="T, frames per clip")
    parser.add_argument("--pairs-per-take", type=int, default=4, help="pairwise: pairs a take")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--heads", default=None, help="default: every neural clip head")
    parser.add_argument("--tasks", default=",".join(TASKS), help="tasks to run")
    parser.add_argument("--workers", type=int, default=2, help="render and decode processes")
    parser.add_argument("--source", default="video", choices=[*SOURCES, "all"],
                        help="synthetic videos, synthetic token stores, or both")  # fmt: skip
    parser.add_argument("--signal", type=float, default=3.0,
                        help="tokens: the latent's scale along its direction")  # fmt: skip
    return parser.parse_args(argv)


def synth_dataset(folder: Path, task: str, args) -> Path:
    """The task's dataset folder (manifest.jsonl, pairs/), synthesised on first use."""
    from skill.synth import SynthConfig, synthesize

    cfg = SynthConfig(
        task=task, takes=args.takes, participants=args.participants, size=args.size,
        seed=args.data_seed, scores=SCORES, pairs_per_take=args.pairs_per_take,
    )  # fmt: skip
    out = folder / (
        f"task-{task}-t{args.takes}-p{args.participants}-x{args.size}"
        f"-q{args.pairs_per_take}-d{args.data_seed}"
    )
    if not (out / "built").is_file():
        shutil.rmtree(out, ignore_errors=True)
        _, seconds = timed(synthesize, cfg, out / "data", args.workers)
        print(f"synthesised {task}: {args.takes} takes in {seconds:.1f} s", flush=True)
        (out / "built").write_text("ok\n")
    return out / "data"


def extract_store(data: Path, task: str, args) -> Path:
    """The task's store (with its pairs files for pairwise), extracted on first use."""
    from skill.pipeline.extract import ExtractConfig, run_extract

    store = data.parent / f"{task}-t{args.frames}.zarr"
    built = data.parent / f"{task}-t{args.frames}.built"
    if built.is_file():
        return store
    pairs = sorted((data / "pairs").glob("*.txt")) if task == "pairwise" else []
    cfg = ExtractConfig(
        manifest=data / "manifest.jsonl", store=store, backbone=BACKBONE, tokens="frame",
        frames=args.frames, device="cpu", workers=args.workers, seed=0, task=task, pairs=pairs,
    )  # fmt: skip
    summary, seconds = timed(run_extract, cfg)
    if summary.failed:
        raise RuntimeError(f"{summary.failed} takes failed to extract: {summary.failures}")
    print(f"extracted {store.name} in {seconds:.1f} s", flush=True)
    built.write_text("ok\n")
    return store


def neural_heads(given: str | None) -> list[str]:
    """The heads to fit: those given, else every registered neural head reading clips."""
    from skill.heads.registry import head_names, resolve_head

    if given:
        return [h.strip() for h in given.split(",") if h.strip()]
    return [h for h in head_names() if resolve_head(h).reads == "clip" and h != "lightgbm"]


def fit_once(store: Path, head: str, seed: int, runs: Path, sel) -> dict:
    """Test metrics (and the test predictions) of one default fit."""
    from skill.heads.config import FitConfig
    from skill.heads.train import fit

    cfg = FitConfig(store=str(store), head=head, views="all", seed=seed,
                    out_dir=str(runs), name=f"{sel.task_name}-{head}-s{seed}",
                    plots=False)  # fmt: skip
    result = fit(cfg, sel)
    return {"test": result.metrics["test"], "predictions": result.predictions.get("test")}


def as_classification(sel):
    """The ordinal store's selection read as plain classes (the same tokens and levels)."""
    schema = {key: value for key, value in sel.schema.items() if key != "ordered"}
    return dataclasses.replace(sel, task_name="classification", schema=schema)


def class_mae(sel, predictions) -> float:
    """Mean absolute error in levels of a classification run's argmax levels."""
    take_ids, scores = predictions
    row_of = {str(take): row for row, take in enumerate(sel.take_ids)}
    truth = np.array([int(sel.targets[row_of[str(t)]]) for t in take_ids])
    return float(np.mean(np.abs(np.argmax(scores, axis=1) - truth)))


def mean_std(values: list[float]) -> str:
    array = np.asarray(values, dtype=float)
    spread = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return f"{array.mean():.3f} ± {spread:.3f}"


def ordinal_rows(store: Path, heads: list[str], seeds: list[int], runs: Path) -> list[list]:
    from skill.heads.data import load_selection

    sel = load_selection(store, "all")
    rows = []
    for head in heads:
        ordinal, classes, majority = [], [], None
        for seed in seeds:
            got = fit_once(store, head, seed, runs, sel)
            ordinal.append(got["test"]["mae"])
            majority = got["test"]["baselines"]["majority"]["mae"]
            plain = fit_once(store, head, seed, runs, as_classification(sel))
            classes.append(class_mae(sel, plain["predictions"]))
        verdict = "yes" if np.mean(ordinal) < min(np.mean(classes), majority) else "no"
        rows.append([head, mean_std(ordinal), mean_std(classes), majority, verdict])
        print(f"  ordinal {head}: MAE {rows[-1][1]} (classification {rows[-1][2]})", flush=True)
    return rows


def regression_rows(store: Path, heads: list[str], seeds: list[int], runs: Path) -> list[list]:
    from skill.heads.data import load_selection

    sel = load_selection(store, "all")
    rows = []
    for head in heads:
        rho, fisher, l2, per_score, mean_l2 = [], [], [], {}, None
        for seed in seeds:
            test = fit_once(store, head, seed, runs, sel)["test"]
            rho.append(test["spearman"])
            fisher.append(test["spearman_fisher_z"])
            l2.append(test["rel_l2"])
            for name, one in test["scores"].items():
                per_score.setdefault(name, []).append(one["spearman"])
            mean_l2 = test["baselines"]["mean"]["rel_l2"]
        scores = ", ".join(f"{name} {np.mean(v):.3f}" for name, v in per_score.items())
        verdict = "yes" if np.mean(rho) >= RHO_GOAL and np.mean(l2) < mean_l2 else "no"
        rows.append([head, mean_std(rho), mean_std(fisher), scores, mean_std(l2), mean_l2, verdict])
        print(f"  regression {head}: rho {rows[-1][1]}, rel-L2 {rows[-1][4]}", flush=True)
    return rows


def pairwise_rows(store: Path, heads: list[str], seeds: list[int], runs: Path) -> list[list]:
    from skill.heads.data import load_selection

    sel = load_selection(store, "all")
    rows = []
    for head in heads:
        accuracy, rho, pairs = [], [], 0
        for seed in seeds:
            test = fit_once(store, head, seed, runs, sel)["test"]
            accuracy.append(test["pair_accuracy"])
            rho.append(test.get("spearman", float("nan")))
            pairs = test["pairs"]
        verdict = "yes" if np.mean(accuracy) >= PAIR_GOAL else "no"
        rows.append([head, mean_std(accuracy), pairs, mean_std(rho), verdict])
        print(f"  pairwise {head}: accuracy {rows[-1][1]} on {pairs} pairs", flush=True)
    return rows


TABLES = {
    "ordinal": (
        ordinal_rows,
        "ordinal: test MAE in levels (lower is better)",
        ["head", "ordinal MAE", "classification MAE", "majority MAE", "ordinal best"],
    ),
    "regression": (
        regression_rows,
        "regression: test rho and relative L2 x100",
        [
            "head",
            "rho (mean of scores)",
            "rho per group (Fisher-z)",
            "rho per score",
            "rel-L2x100",
            "mean rel-L2x100",
            f"rho >= {RHO_GOAL} and L2 < mean",
        ],
    ),  # fmt: skip
    "pairwise": (
        pairwise_rows,
        "pairwise: test pair accuracy (chance 0.5)",
        ["head", "pair accuracy", "test pairs", "rho vs score", f">= {PAIR_GOAL}"],
    ),
}


def token_stores(folder: Path, task: str, args) -> list[Path]:
    """The task's latent token stores (regression: one score and two), built on first use."""
    from bench.task_tokens import LatentSpec, build_latent_store

    variants = [("score",), tuple(SCORES.split(","))] if task == "regression" else [("score",)]
    per_participant = max(1, args.takes // args.participants)
    stores = []
    for scores in variants:
        spec = LatentSpec(
            task=task, participants=args.participants, takes_per_participant=per_participant,
            signal=args.signal, scores=scores, pairs_per_take=args.pairs_per_take,
            seed=args.data_seed,
        )  # fmt: skip
        store = folder / f"{spec.name}.zarr"
        if not (folder / f"{spec.name}.built").is_file():
            shutil.rmtree(store, ignore_errors=True)
            _, seconds = timed(build_latent_store, store, spec)
            print(f"built {store.name} in {seconds:.1f} s", flush=True)
            (folder / f"{spec.name}.built").write_text("ok\n")
        stores.append(store)
    return stores


def stores_of(source: str, folder: Path, task: str, args) -> list[Path]:
    """The stores one arm fits for a task: the extracted video store, or the token stores."""
    if source == "tokens":
        return token_stores(folder / "task-tokens", task, args)
    return [extract_store(synth_dataset(folder, task, args), task, args)]


def main(argv: list[str] | None = None) -> None:
    from skill.tasks import task_names

    args = parse_args(argv)
    print_machine()
    folder = data_dir(args.data_dir)
    (folder / "task-tokens").mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    heads = neural_heads(args.heads)
    sources = SOURCES if args.source == "all" else (args.source,)
    for source in sources:
        for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
            if task not in task_names():
                print(f"\ntask {task} is not registered in this checkout: left out", flush=True)
                continue
            for store in stores_of(source, folder, task, args):
                rows_of, title, header = TABLES[task]
                rows, seconds = timed(rows_of, store, heads, seeds, store.parent / "runs")
                label = f"{source} {store.name}: {title}"
                print_table(f"{label} ({len(seeds)} seeds, fits {seconds:.0f} s)", header, rows)


if __name__ == "__main__":
    main()
