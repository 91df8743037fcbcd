"""The `skill` command. Each command builds its stage's config and calls the stage function.

Heavy modules (torch, transformers, decoders, zarr) are imported inside commands so that
`skill --help` stays instant.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from skill.cli_config import from_config
from skill.pipeline.extract_config import ExtractConfig

app = typer.Typer(
    help="Skill estimation from multi-view video: extract backbone tokens once into a Zarr "
    "store (`skill extract`), then train fusion heads on the store in seconds (`skill fit`).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()
_debug = {"on": False}

EXIT_BAD_INPUT = 2


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    _debug["on"] = debug


def user_errors(fn):
    """Expected errors become one clear message and exit code 2; --debug shows tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from skill.cache.store import StoreError
        from skill.pipeline.takes import ManifestError

        try:
            return fn(*args, **kwargs)
        except (ManifestError, StoreError, ValueError, FileNotFoundError, PermissionError) as err:
            if _debug["on"]:
                raise
            console.print(f"[bold red]error:[/] {err}", markup=True, highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            console.print("interrupted: completed work is kept; run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


# ---- synth -------------------------------------------------------------------------------
@app.command()
@user_errors
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the videos and manifest.jsonl into."),
    takes: int = typer.Option(200, help="Number of takes."),
    seed: int = typer.Option(0, help="Seed: the same seed writes the same dataset."),
    size: int = typer.Option(64, help="Frame size in pixels (square)."),
    frames: int = typer.Option(48, help="Frames per video."),
    exo_views: int = typer.Option(4, help="Exocentric cameras per take (3 or 4)."),
) -> None:
    """Write a synthetic multi-view skill dataset (real encoded videos + a manifest)."""
    import time

    from skill.synth import synthesize

    started = time.perf_counter()
    manifest = synthesize(
        out_dir, takes=takes, seed=seed, size=size, frames=frames, exo_views=exo_views
    )
    seconds = time.perf_counter() - started
    out.print(f"wrote {takes} takes to {out_dir} in {seconds:.1f} s; manifest: {manifest}")


# ---- backbones ---------------------------------------------------------------------------
@app.command()
def backbones() -> None:
    """List the registered backbones (real checkpoints and tiny test presets)."""
    from rich import box
    from rich.table import Table

    from skill.pipeline.backbones import describe_backbones

    rows = describe_backbones()
    table = Table(
        title="backbones (any hub id or checkpoint folder works too)",
        caption="tokens per clip at the checkpoint's frames; frames '-': an image model, per frame",
        box=box.SIMPLE_HEAD,
    )
    columns = [key for key in rows[0] if key != "description"]  # the columns say it all
    cells = [["-" if row[key] is None else str(row[key]) for key in columns] for row in rows]
    for index, column in enumerate(columns):
        header = column.replace("tokens_", "").replace("_", " ")
        width = max(len(header), *(len(line[index]) for line in cells))
        table.add_column(
            header,
            justify="right" if isinstance(rows[0][column], int | None) else "left",
            # One line per backbone; numbers and names never shrink: a narrow terminal cuts
            # the hub id short (describe_backbones has it whole).
            min_width=None if column == "source" else width,
            no_wrap=True,
            overflow="ellipsis",
        )
    for line in cells:
        table.add_row(*line)
    out.print(table)


# ---- extract -----------------------------------------------------------------------------
@app.command()
@user_errors
@from_config(
    ExtractConfig,
    arguments=("manifest",),
    flags={"strategy": "--sampling", "timeout_s": "--timeout"},
    short={"store": "-s"},
)
def extract(cfg: ExtractConfig) -> None:
    """Decode every take once and write backbone tokens into a Zarr store (resumable)."""
    from skill.pipeline.extract import run_extract

    with _progress_bar("extracting") as progress:
        summary = run_extract(cfg, progress=progress)
    if summary.rank == 0:  # under torchrun every rank holds the whole run's summary
        _print_extract_summary(summary)


def _progress_bar(what: str):
    import os

    from skill.pipeline.progress import TakeProgress

    first_rank = os.environ.get("RANK", "0") == "0"
    return TakeProgress(console, what, enabled=first_rank and (sys.stderr.isatty() or _debug["on"]))


def _print_extract_summary(summary) -> None:
    ranks = f" on {summary.world} ranks" if summary.world > 1 else ""
    out.print(
        f"{summary.store}: {summary.completed} takes extracted, {summary.failed} failed, "
        f"{summary.skipped} already done, {summary.failed_views} views failed "
        f"({summary.seconds:.1f} s{ranks})"
    )
    if "unpacked" in summary.relayout:
        out.print("  unpacked the store to write takes (one chunk per take)")
    if "packed" in summary.relayout:
        out.print("  packed the store into large chunks for fast reading")
    if summary.removed_temp_files:
        out.print(f"  removed {summary.removed_temp_files} temporary files of an interrupted run")
    for take, view, reason in summary.failures[:20]:
        out.print(f"  failed: take {take} view {view}: {reason}", highlight=False)
    if len(summary.failures) > 20:
        out.print(f"  ... and {len(summary.failures) - 20} more (see `skill info`)")


# ---- info --------------------------------------------------------------------------------
@app.command()
@user_errors
def info(
    store: Path = typer.Argument(..., help="A store written by `skill extract`."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Show a store: takes by split, label and scenario, completion, failures, provenance."""
    from skill.cache.info import store_summary

    summary = store_summary(store)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    _print_store_summary(summary)


def _print_store_summary(s: dict) -> None:
    from rich.table import Table

    state = {
        "in progress": f"IN PROGRESS: being written by {s['writer']}",
        "interrupted": "INTERRUPTED: run the same `skill extract` again to resume",
        "finished": "all takes processed",
    }[s["state"]]
    out.print(
        f"[bold]{s['store']}[/]  format v{s['format_version']}  {s['size_bytes'] / 1e6:.1f} MB"
        f"  layout: {s['layout']}"
    )
    out.print(
        f"takes: {s['takes']}  completed: {s['completed']}  failed: {s['failed']}  "
        f"pending: {s['pending']}  ({state})"
    )
    if s["leftover_temp_files"]:
        out.print(f"{s['leftover_temp_files']} temporary files of a killed write (never read)")
    geometry = ", ".join(f"{k} {v}" for k, v in s["geometry"].items())
    out.print(f"views: {', '.join(s['views'])}  per view: {geometry}")
    for title in ("by_split", "by_label", "by_scenario"):
        table = Table(title=title.replace("_", " "), show_header=False)
        for name, count in s[title].items():
            table.add_row(name, str(count))
        out.print(table)
    if s["failures"]:
        out.print(f"[red]failures ({len(s['failures'])}):[/]")
        for f in s["failures"][:50]:
            out.print(f"  take {f['take']} view {f['view']}: {f['reason']}", highlight=False)
    prov = s["provenance"]
    backbone = prov.get("backbone", {})
    out.print(
        f"backbone: {backbone.get('name')} ({backbone.get('source')}), adapter: "
        f"{(backbone.get('adapter') or {}).get('sha256', 'none')}, tokens: {prov.get('tokens')}, "
        f"sampling: {prov.get('sampling')}"
    )


# ---- fit ---------------------------------------------------------------------------------
@app.command()
@user_errors
def fit(
    store: Path = typer.Argument(..., help="A store written by `skill extract`."),
    views: str = typer.Option("all", help="ego, exo (all exo views), ego,exo2, or all."),
    head: str = typer.Option("cvf", help="mean, concat, late, cvf, temporal or lightgbm."),
    hidden: int = typer.Option(None, help="Hidden width (default: the head's own)."),
    dropout: float = typer.Option(0.1, help="Dropout inside the head."),
    epochs: int = typer.Option(30, help="Maximum epochs (early stopping may end sooner)."),
    batch_size: int = typer.Option(32, help="Takes per step."),
    lr: float = typer.Option(1e-3, help="Peak AdamW learning rate."),
    weight_decay: float = typer.Option(0.05, help="AdamW weight decay."),
    warmup_frac: float = typer.Option(0.1, help="Fraction of steps of linear warmup."),
    class_balanced: bool = typer.Option(False, help="Inverse-frequency class weights."),
    patience: int = typer.Option(8, help="Early-stopping patience in epochs (0 = off)."),
    monitor: str = typer.Option("balanced_accuracy", help="balanced_accuracy or loss."),
    seed: int = typer.Option(0, help="Training seed."),
    split_seed: int = typer.Option(0, help="Seed of the participant-grouped val split."),
    view_dropout: float = typer.Option(0.0, help="Probability of dropping each view in training."),
    val_frac: float = typer.Option(0.2, help="Held-out participants when the store has no split."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    out_dir: Path = typer.Option(Path("runs"), help="Folder of run folders."),
    name: str = typer.Option("", help="Run name (default <head>-<views>-s<seed>)."),
    plots: bool = typer.Option(True, help="Write confusion.png and curve.png."),
    threads: int = typer.Option(1, help="CPU threads for training (heads are small)."),
    sweep: bool = typer.Option(False, "--sweep", help="Fit a grid of heads x view sets x seeds."),
    heads: str = typer.Option("mean,concat,late,cvf,temporal,lightgbm", help="--sweep: heads."),
    view_sets: str = typer.Option("ego;exo;all", help="--sweep: view sets, ';'-separated."),
    seeds: str = typer.Option("0", help="--sweep: seeds, comma-separated."),
) -> None:
    """Train a fusion head on a store (or, with --sweep, a whole grid of them)."""
    from skill.heads.config import FitConfig

    cfg = FitConfig(
        store=str(store), views=views, head=head, hidden=hidden, dropout=dropout,
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        warmup_frac=warmup_frac, class_balanced=class_balanced, patience=patience,
        monitor=monitor, seed=seed, split_seed=split_seed, view_dropout=view_dropout,
        val_frac=val_frac, device=device, out_dir=str(out_dir), name=name, plots=plots,
        threads=threads,
    )  # fmt: skip
    if sweep:
        _run_sweep(cfg, _split_list(heads, ","), _split_list(view_sets, ";"), seeds)
    else:
        _run_fit(cfg)


def _split_list(text: str, separator: str) -> list[str]:
    return [part.strip() for part in text.split(separator) if part.strip()]


def _run_fit(cfg) -> None:
    from skill.heads.metrics import format_metrics
    from skill.heads.train import fit as fit_head

    result = fit_head(cfg)
    for split in ("val", "test"):
        if split in result.metrics:
            out.print(format_metrics(split, result.metrics[split]), highlight=False)
    out.print(f"run folder: {result.run_dir}")


def _run_sweep(cfg, heads: list[str], view_sets: list[str], seeds: str) -> None:
    from skill.heads.sweep import sweep as run_sweep

    try:
        seed_list = [int(s) for s in _split_list(seeds, ",")]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, not {seeds!r}") from None
    result = run_sweep(cfg, heads=heads, view_sets=view_sets, seeds=seed_list)
    print_sweep_table(result.rows)
    out.print(f"sweep folder: {result.sweep_dir} (sweep.csv, sweep.md, one run folder per fit)")


def print_sweep_table(rows: list[dict]) -> None:
    from rich.table import Table

    from skill.heads.sweep import format_mean_std

    several_seeds = any(row["seeds"] > 1 for row in rows)
    title = "mean ± std over seeds" if several_seeds else "one seed"
    table = Table(title=f"sweep: top-1 and balanced accuracy ({title})")
    columns = ("head", "views", "val top-1", "val bal.acc", "test top-1", "test bal.acc", "s/fit")
    for column in columns:
        table.add_column(column, no_wrap=True)

    def cell(row: dict, key: str) -> str:
        if several_seeds:
            return format_mean_std(row, key)
        value = row.get(f"{key}_mean")
        return "-" if value is None or value != value else f"{value:.3f}"

    metrics = ("val_top1", "val_balanced_accuracy", "test_top1", "test_balanced_accuracy")
    for row in rows:
        cells = [cell(row, key) for key in metrics]
        table.add_row(row["head"], row["views"], *cells, f"{row['fit_seconds_mean']:.1f}")
    out.print(table)


# ---- predict -----------------------------------------------------------------------------
@app.command()
@user_errors
def predict(
    store: Path = typer.Argument(..., help="A store with the takes to predict."),
    run: Path = typer.Option(..., "--run", help="A run folder written by `skill fit`."),
    out_csv: Path = typer.Option(Path("predictions.csv"), "--out", help="CSV to write."),
    format: str = typer.Option(
        "csv", "--format", help="csv, or egoexo4d (also the official JSON)."
    ),
    out_json: Path = typer.Option(None, help="egoexo4d: JSON path (default: --out with .json)."),
    views: str = typer.Option(None, help="Only these of the run's views (others masked)."),
    order: Path = typer.Option(None, help="egoexo4d: take order (txt, JSON list or ground truth)."),
    device: str = typer.Option("cpu", help="cpu, cuda or auto."),
) -> None:
    """Apply a trained head to the completed takes of a store."""
    from skill.heads.metrics import format_metrics
    from skill.heads.predict import predict as run_predict
    from skill.heads.predict import read_take_order

    result = run_predict(
        store, run, out_csv, fmt=format, out_json=out_json, views=views,
        order=read_take_order(order) if order else None, device=device,
    )  # fmt: skip
    out.print(f"predicted {len(result.take_ids)} takes -> {result.out_csv}")
    if result.out_json:
        out.print(f"EgoExo4D prediction file -> {result.out_json}")
    if result.skipped:
        out.print(f"{len(result.skipped)} takes had no usable view (uniform logits)")
    for split, metrics in result.metrics.items():
        out.print(format_metrics(split, metrics), highlight=False)


# ---- demo --------------------------------------------------------------------------------
@app.command()
@user_errors
def demo(
    out_dir: Path = typer.Option(
        Path("skill-demo"), "--out", help="Folder for everything it writes."
    ),
    takes: int = typer.Option(200, help="Synthetic takes."),
    seed: int = typer.Option(0, help="Seed of data and training."),
    workers: int = typer.Option(2, help="Decode worker processes."),
) -> None:
    """The whole job on built-in synthetic data: synth, extract, sweep, predict (offline)."""
    from skill.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=out_dir, takes=takes, seed=seed, workers=workers)
    result = run_demo(cfg, say=lambda line: out.print(line, highlight=False))
    print_sweep_table(result.rows)
    _print_demo_verdict(result)


def _print_demo_verdict(result) -> None:
    def mark(ok: bool) -> str:
        return "[green]yes[/]" if ok else "[red]NO[/]"

    best, single, fused = result.best, result.best_single_view, result.best_fusion
    out.print(
        f"best (chosen on val): {best['head']} on {best['views']}: test top-1 "
        f"{best['test_top1_mean']:.3f} (chance 0.25) - at least 0.6: {mark(result.best_above_chance)}"
    )
    out.print(
        f"fusion of all views {fused['test_top1_mean']:.3f} ({fused['head']}) vs best single view "
        f"{single['test_top1_mean']:.3f} ({single['head']} on {single['views']}) - fusion ahead: "
        f"{mark(result.fusion_beats_single_views)}"
    )
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    out.print(f"time: {timing}")
    for what, path in (
        ("synthetic videos + manifest", result.manifest),
        ("token store (skill info)", result.store),
        ("sweep table + run folders", result.sweep_dir),
        ("predictions CSV", result.predictions),
        ("EgoExo4D prediction file", result.prediction_json),
    ):
        out.print(f"  {what:30s} {path}")


if __name__ == "__main__":
    app()
