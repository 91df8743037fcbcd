"""`skill demo`: the whole job on built-in synthetic data, offline, on a CPU.

synth -> extract (tiny backbone) -> sweep of heads x view sets -> predict the held-out test
split with the run chosen on validation, then a results table, the test top-1 read back from
the prediction file beside the majority baseline, the time each stage took on this machine,
and where every artifact is. It is the only module that chains both stages; everything it
does is what the CLI commands do one by one.
"""

from __future__ import annotations

import csv
import os
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skill.errors import ConfigError
from skill.heads.registry import heads_in_order

DEMO_MARKER = ".skill-demo"
LEFT_OUT_HEADS = ("temporal", "seqformer", "viewselect", "spotter")
"""Heads the demo's default sweep leaves out: temporal attends over every frame token of every
view, the slowest head to train on a CPU; seqformer and viewselect read ordered clip sequences,
and the demo's store samples its clips; spotter finds moments (the demonstration task)."""
PREDICTED_SPLIT = "test"
"""The split the demo predicts: held out from training and from choosing the run."""


def demo_heads() -> list[str]:
    """The demo's default heads: every registered head but LEFT_OUT_HEADS, in the registry's
    order (a new head file joins the demo unedited)."""
    return [head for head in heads_in_order() if head not in LEFT_OUT_HEADS]


@dataclass
class DemoConfig:
    """Settings of `skill demo` (the time it takes is measured and printed by each run)."""

    out: Path = Path("skill-demo")
    """Folder for everything the demo writes (a previous demo folder is replaced)."""
    takes: int = 200
    """Synthetic takes (participant-grouped train/val/test splits)."""
    seed: int = 0
    """Seed of the synthetic data and of training."""
    size: int = 64
    """Synthetic frame size in pixels."""
    frames: int = 8
    """Frames sampled per view (T)."""
    backbone: str = "tiny-timesformer"
    """Backbone for extraction: a tiny randomly initialised preset, so nothing is downloaded."""
    heads: list[str] = field(default_factory=demo_heads)
    """Heads of the sweep, a comma list. Default: every registered head but temporal."""
    view_sets: list[str] = field(default_factory=lambda: ["ego", "exo", "all"])
    """View sets of the sweep, separated by semicolons: the field's Ego, Exo and Ego+Exo
    comparison."""
    workers: int = 2
    """Decode worker processes."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.takes < 24:
            raise ConfigError("--takes must be at least 24 (four levels x three splits)")
        if self.out.exists() and any(self.out.iterdir()) and not (self.out / DEMO_MARKER).exists():
            raise ConfigError(
                f"{self.out} exists and is not a demo folder; choose another --out "
                "(the demo replaces only folders it made itself)"
            )


@dataclass
class FileScore:
    """Top-1 of a prediction CSV, computed from the file as written, beside the majority
    baseline (the run's most common training label predicted for every take of the file)."""

    split: str
    takes: int  # rows of the file
    labelled: int  # of them, with a label: what top1 and majority_top1 count
    top1: float
    majority_class: str
    majority_top1: float


@dataclass
class DemoResult:
    """Where everything went, the sweep rows, the prediction file's score and the two checks
    the demo makes."""

    out: Path
    manifest: Path
    store: Path
    sweep_dir: Path
    predictions: Path
    prediction_json: Path
    rows: list[dict]
    best: dict
    best_single_view: dict
    best_fusion: dict
    seconds: dict[str, float]
    file_score: FileScore
    warnings: list[str]  # leakage warnings of the prediction (none for the test split)
    cpu_seconds: float  # CPU time of the demo's process and of its finished child processes

    @property
    def best_above_chance(self) -> bool:
        return self.best["test_top1_mean"] >= 0.6

    @property
    def fusion_beats_single_views(self) -> bool:
        return self.best_fusion["test_top1_mean"] > self.best_single_view["test_top1_mean"]


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print) -> DemoResult:
    """Run the demo end to end; `say` reports each stage as it starts."""
    seconds: dict[str, float] = {}
    cpu_started = _cpu_seconds()
    _fresh_folder(cfg.out)
    manifest = _timed(seconds, "synth", lambda: _synth(cfg, say))
    store = _timed(seconds, "extract", lambda: _extract(cfg, manifest, say))
    sweep = _timed(seconds, "fit sweep", lambda: _sweep(cfg, store, say))
    best = max(sweep.rows, key=_score)
    best_run = _run_dir_of(sweep, best)
    predicted = _timed(seconds, "predict", lambda: _predict(cfg, store, best_run, say))
    single = [row for row in sweep.rows if row["views"] != "all" and "," not in row["views"]]
    fused = [row for row in sweep.rows if row["views"] == "all"]
    return DemoResult(
        out=cfg.out, manifest=manifest, store=store, sweep_dir=sweep.sweep_dir,
        predictions=predicted.out_csv, prediction_json=predicted.out_json, rows=sweep.rows,
        best=best, best_single_view=max(single, key=_score), best_fusion=max(fused, key=_score),
        seconds=seconds, file_score=score_prediction_csv(predicted.out_csv, best_run),
        warnings=predicted.warnings, cpu_seconds=_cpu_seconds() - cpu_started,
    )  # fmt: skip


def _score(row: dict) -> tuple[float, float]:
    # Chosen on validation, as a user would; test is reported, never used to choose.
    return (row["val_top1_mean"], row["val_balanced_accuracy_mean"])


def _cpu_seconds() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cpu_count() -> int:
    """The CPUs this process may run on (what the demo's timings were measured with)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _fresh_folder(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / DEMO_MARKER).write_text("made by skill demo; `skill demo` replaces this folder\n")


def _timed(seconds: dict, name: str, step: Callable):
    started = time.perf_counter()
    value = step()
    seconds[name] = time.perf_counter() - started
    return value


def _synth(cfg: DemoConfig, say) -> Path:
    from skill.synth import SynthConfig, synthesize

    say(f"1/4 synthesising {cfg.takes} multi-view takes ({cfg.size} px) ...")
    return synthesize(SynthConfig(takes=cfg.takes, seed=cfg.seed, size=cfg.size), cfg.out / "data")


def _extract(cfg: DemoConfig, manifest: Path, say) -> Path:
    from skill.pipeline.extract import ExtractConfig, run_extract

    say(f"2/4 extracting {cfg.backbone} frame tokens into a Zarr store ...")
    store = cfg.out / "store.zarr"
    summary = run_extract(
        ExtractConfig(
            manifest=manifest,
            store=store,
            backbone=cfg.backbone,
            frames=cfg.frames,
            device="cpu",
            workers=cfg.workers,
            seed=cfg.seed,
        )
    )
    if summary.failed:
        raise RuntimeError(
            f"{summary.failed} synthetic takes failed to extract: {summary.failures}"
        )
    return store


def _sweep(cfg: DemoConfig, store: Path, say):
    from skill.heads.config import FitConfig, SweepConfig
    from skill.heads.sweep import sweep

    n = len(cfg.heads) * len(cfg.view_sets)
    say(f"3/4 fitting {n} heads x view sets on the store ...")
    base = FitConfig(store=str(store), out_dir=str(cfg.out / "runs"), seed=cfg.seed, plots=True)
    return sweep(SweepConfig(fit=base, heads=cfg.heads, view_sets=cfg.view_sets, seeds=[cfg.seed]))


def _run_dir_of(sweep, row: dict) -> Path:
    for result in sweep.fits:
        if result.config.head == row["head"] and result.config.views == row["views"]:
            return result.run_dir
    raise LookupError(f"no run for {row['head']} on {row['views']}")


def _predict(cfg: DemoConfig, store: Path, run_dir: Path, say):
    from skill.heads.config import PredictConfig
    from skill.interop.egoexo4d import predict_egoexo4d

    say(
        f"4/4 predicting the held-out {PREDICTED_SPLIT} takes with the run chosen on val "
        f"({run_dir.name}) ..."
    )
    csv_path, json_path = cfg.out / "predictions.csv", cfg.out / "predictions_egoexo4d.json"
    return predict_egoexo4d(
        PredictConfig(
            store=store,
            run=run_dir,
            out_csv=csv_path,
            format="egoexo4d",
            out_json=json_path,
            split=PREDICTED_SPLIT,
        )
    )


def score_prediction_csv(path: Path, run_dir: Path) -> FileScore:
    """Read a prediction CSV back and score it: top-1 of its ``predicted`` column against its
    ``label`` column, and the majority baseline of ``run_dir``'s training labels."""
    import numpy as np

    from skill.heads.run_folder import read_run_record

    record = read_run_record(run_dir)
    # ties go to the first class, as every majority baseline skill prints
    labels = record.task["schema"]["labels"]  # the demo's task is classification
    majority = labels[int(np.argmax(record.train_summary["class_counts"]))]
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    labelled = [row for row in rows if row.get("label")]
    splits = sorted({row["split"] for row in rows})
    n = len(labelled)
    return FileScore(
        split=",".join(splits),
        takes=len(rows),
        labelled=n,
        top1=sum(row["predicted"] == row["label"] for row in labelled) / n if n else float("nan"),
        majority_class=majority,
        majority_top1=sum(row["label"] == majority for row in labelled) / n if n else float("nan"),
    )
