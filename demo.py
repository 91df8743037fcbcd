"""`skill demo`: the whole job on built-in synthetic data, offline, in a few minutes on a CPU.

synth -> extract (tiny backbone) -> sweep of heads x view sets -> predict on the held-out
takes, then a results table and where every artifact is. It is the only module that chains
both stages; everything it does is what the CLI commands do one by one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skill.errors import ConfigError

DEMO_MARKER = ".skill-demo"


@dataclass
class DemoConfig:
    """Settings of `skill demo`; the defaults finish in about two minutes on two cores."""

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
    heads: list[str] = field(default_factory=lambda: ["mean", "concat", "late", "cvf", "lightgbm"])
    """Heads of the sweep."""
    view_sets: list[str] = field(default_factory=lambda: ["ego", "exo", "all"])
    """View sets of the sweep: the field's Ego / Exo / Ego+Exo comparison."""
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
class DemoResult:
    """Where everything went, the sweep rows and the two checks the demo makes."""

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

    @property
    def best_above_chance(self) -> bool:
        return self.best["test_top1_mean"] >= 0.6

    @property
    def fusion_beats_single_views(self) -> bool:
        return self.best_fusion["test_top1_mean"] > self.best_single_view["test_top1_mean"]


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print) -> DemoResult:
    """Run the demo end to end; `say` reports each stage as it starts."""
    seconds: dict[str, float] = {}
    _fresh_folder(cfg.out)
    manifest = _timed(seconds, "synth", lambda: _synth(cfg, say))
    store = _timed(seconds, "extract", lambda: _extract(cfg, manifest, say))
    sweep = _timed(seconds, "fit sweep", lambda: _sweep(cfg, store, say))
    best = max(sweep.rows, key=_score)
    best_run = _run_dir_of(sweep, best)
    csv, json_path = _timed(seconds, "predict", lambda: _predict(cfg, store, best_run, say))
    single = [row for row in sweep.rows if row["views"] != "all" and "," not in row["views"]]
    fused = [row for row in sweep.rows if row["views"] == "all"]
    return DemoResult(
        out=cfg.out, manifest=manifest, store=store, sweep_dir=sweep.sweep_dir,
        predictions=csv, prediction_json=json_path, rows=sweep.rows, best=best,
        best_single_view=max(single, key=_score), best_fusion=max(fused, key=_score),
        seconds=seconds,
    )  # fmt: skip


def _score(row: dict) -> tuple[float, float]:
    # Chosen on validation, as a user would; test is reported, never used to choose.
    return (row["val_top1_mean"], row["val_balanced_accuracy_mean"])


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
    from skill.synth import synthesize

    say(f"1/4 synthesising {cfg.takes} multi-view takes ({cfg.size} px) ...")
    return synthesize(cfg.out / "data", takes=cfg.takes, seed=cfg.seed, size=cfg.size)


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
    from skill.heads.config import FitConfig
    from skill.heads.sweep import sweep

    n = len(cfg.heads) * len(cfg.view_sets)
    say(f"3/4 fitting {n} heads x view sets on the store ...")
    base = FitConfig(store=str(store), out_dir=str(cfg.out / "runs"), seed=cfg.seed, plots=True)
    return sweep(base, heads=cfg.heads, view_sets=cfg.view_sets, seeds=[cfg.seed])


def _run_dir_of(sweep, row: dict) -> Path:
    for result in sweep.fits:
        if result.config.head == row["head"] and result.config.views == row["views"]:
            return result.run_dir
    raise LookupError(f"no run for {row['head']} on {row['views']}")


def _predict(cfg: DemoConfig, store: Path, run_dir: Path, say) -> tuple[Path, Path]:
    from skill.heads.predict import predict

    say(f"4/4 predicting every take with the best run ({run_dir.name}) ...")
    csv, json_path = cfg.out / "predictions.csv", cfg.out / "predictions_egoexo4d.json"
    predict(store, run_dir, csv, fmt="egoexo4d", out_json=json_path)
    return csv, json_path
