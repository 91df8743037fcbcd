"""The `skill` command. Each command builds its stage's config and calls the stage function.

Heavy modules (torch, transformers, decoders, zarr) are imported inside commands so that
`skill --help` stays instant.
"""

from __future__ import annotations

import functools
import inspect
import json
from pathlib import Path

import typer
from rich.console import Console

from skill.adapt.config import AdaptConfig, cli_exclude
from skill.cli_checks import check_adapt, check_fit, check_manifest, check_predict, check_sweep
from skill.cli_config import Typer, from_config
from skill.demo import DemoConfig
from skill.heads.config import FitConfig, PredictConfig, SweepConfig
from skill.interop.export import ExportConfig
from skill.interop.import_features import ImportFeaturesConfig
from skill.pipeline.extract_config import ExtractConfig
from skill.synth.config import SynthConfig

app = Typer(
    help="Skill estimation from multi-view video: decode the videos and extract backbone "
    "tokens once into a Zarr store (skill extract), then train and compare fusion heads on "
    "that store as often as you like (skill fit, skill sweep).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class OutputConsole(Console):
    """A rich console that, writing to a terminal, fits the terminal's width, and writing to
    anything else (a log file, a pipe, a test's capture) never cuts or wraps a line: rich
    would lay tables and long lines out in 80 columns there, cutting cells short."""

    UNBOUNDED = 100_000

    @property
    def size(self):
        size = super().size
        return size if self.is_terminal else size._replace(width=self.UNBOUNDED)

    @size.setter
    def size(self, new_size) -> None:
        Console.size.fset(self, new_size)


console = OutputConsole(stderr=True)
out = OutputConsole()
_debug = {"on": False}

EXIT_BAD_INPUT = 2


@app.callback()
def main(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="Show no progress (no bar, no progress lines); results and errors still print. "
        "Before the command: skill --quiet fit ...",
    ),
    progress_every: float = typer.Option(
        30.0,
        "--progress-every",
        min=0,
        metavar="SECONDS",
        help="When stderr is not a terminal (a log file, nohup, a batch job), long steps print "
        "a progress line this often, and at each tenth of the step.",
    ),
) -> None:
    from skill import progress

    _debug["on"] = debug
    progress.configure(enabled=not quiet, every_s=progress_every)
    ctx.call_on_close(lambda: progress.configure(enabled=False))


def user_errors(fn):
    """Expected errors (`SkillError`) become one line and exit code 2; anything else is a bug
    and keeps its traceback. --debug shows tracebacks for expected errors too."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from skill.errors import SkillError

        try:
            return fn(*args, **kwargs)
        except SkillError as err:
            _user_error(str(err))
        except OSError as err:
            if err.filename is None:  # not about a path the user gave: a bug, keep its trace
                raise
            # a file the user named cannot be read or written (missing, permission, full)
            _user_error(f"{err.filename}: {err.strerror or err}")
        except KeyboardInterrupt:
            from skill.progress import interrupted

            interrupted("interrupted: completed work is kept; run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


def _user_error(message: str) -> None:
    if _debug["on"]:
        raise
    # soft_wrap: one line however long (paths), so it greps and pastes whole
    console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT) from None


# ---- synth -------------------------------------------------------------------------------
@app.command()
@user_errors
@from_config(
    SynthConfig,
    exclude=("codec",),  # chosen by what this machine's encoder offers, recorded in synth_info
    extra=[
        inspect.Parameter(
            "out_dir",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Argument(
                ..., help="Folder to write the videos and manifest.jsonl into.", metavar="OUT"
            ),
            annotation=Path,
        ),
        inspect.Parameter(
            "workers",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, help="Render processes. Default: one per CPU."),
            annotation=int | None,
        ),
    ],
)
def synth(cfg: SynthConfig, out_dir: Path, workers: int | None) -> None:
    """Write a synthetic multi-view skill dataset (real encoded videos + a manifest)."""
    import time

    from skill.synth import synthesize

    started = time.perf_counter()
    manifest = synthesize(cfg, out_dir, workers)
    seconds = time.perf_counter() - started
    out.print(f"wrote {cfg.takes} takes to {out_dir} in {seconds:.1f} s; manifest: {manifest}")


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
    out.print(table)  # a terminal cuts the hub ids to fit; a pipe or file gets them whole


# ---- extract -----------------------------------------------------------------------------
@app.command()
@user_errors
@from_config(
    ExtractConfig,
    arguments=("manifest",),
    flags={"strategy": "--sampling", "timeout_s": "--timeout"},
    short={"store": "-s"},
    check=check_manifest,
)
def extract(cfg: ExtractConfig) -> None:
    """Decode every take once and write backbone tokens into a Zarr store (resumable)."""
    from skill.pipeline.extract import run_extract

    summary = run_extract(cfg)  # its progress: skill.progress, set by --quiet
    if summary.rank == 0:  # under torchrun every rank holds the whole run's summary
        _print_extract_summary(summary)


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
    if summary.missing_videos:
        out.print(
            f"  {summary.missing_videos} video files missing, recorded as failed views "
            f"(--skip-missing); list: {summary.missing_list or 'could not be written'}",
            highlight=False,
            soft_wrap=True,
        )
    for take, view, reason in summary.failures[:20]:
        out.print(f"  failed: take {take} view {view}: {reason}", highlight=False)
    if len(summary.failures) > 20:
        out.print(f"  ... and {len(summary.failures) - 20} more (see `skill info`)")


# ---- adapt -------------------------------------------------------------------------------
@app.command()
@user_errors
@from_config(
    AdaptConfig,
    arguments=("manifest",),
    flags={"strategy": "--sampling", "timeout_s": "--timeout"},
    short={"out": "-o"},
    check=check_adapt,
    exclude=cli_exclude(),  # the stage settings adapt has no option for
)
def adapt(cfg: AdaptConfig) -> None:
    """Fine-tune a LoRA adapter on the backbone together with a head, end to end, on frames
    decoded once (SkillFormer's recipe; resumable)."""
    from skill.adapt.train import run_adapt
    from skill.progress import say

    result = run_adapt(cfg, report=say)  # epoch lines are progress: --quiet silences them
    if result.rank != 0:  # under torchrun rank 0 speaks for the run
        return
    if not result.finished:
        out.print(
            f"{cfg.out}: stopped after epoch {result.epochs_done} of {result.epochs_planned}; "
            "run the same command to resume"
        )
        return
    _print_metrics(result.task_name, result.metrics, ("val", "test"))
    out.print(f"adapter: {result.adapter_dir}\nrun folder: {result.run_dir}")
    out.print(f"tokens for the run: {cfg.extract_command()}", highlight=False, soft_wrap=True)


# ---- import ------------------------------------------------------------------------------
import_app = Typer(
    help="Bring what was made elsewhere over: a trained model, or features.",
    no_args_is_help=True,
)
app.add_typer(import_app, name="import")


@import_app.command(name="skillformer")
@user_errors
def import_skillformer_command(
    folder: Path = typer.Argument(
        ...,
        help="SkillFormer's output folder (config.json, vision_encoder, components.pt).",
        metavar="FOLDER",
    ),
    out_dir: Path = typer.Option(
        ..., "--out", "-o", help="Folder to write the adapter and run folders into."
    ),
    backbone: str = typer.Option(
        None,
        help="The base TimeSformer. Default: the one the folder's config.json names, as a "
        "registered name when there is one.",
    ),
    strategy: str = typer.Option(
        "skillformer-windows",
        "--sampling",
        help="Sampling of the store the run will read: uniform, windows, skillformer-windows or "
        "segments. SkillFormer's own is skillformer-windows: a window's frames evenly over "
        "frames x stride frames, rounded down.",
    ),
    stride: int = typer.Option(4, help="Frame step inside each window (SkillFormer's rate: 4)."),
    clips: int = typer.Option(1, help="Clips per view of that store."),
    device: str = typer.Option(
        "auto",
        help="Where the backbone is loaded to check the adapter: cpu, cuda, cuda:N or auto "
        "(CUDA when available).",
    ),
) -> None:
    """Import a trained SkillFormer model: OUT/adapter for skill extract --adapter, and OUT/run
    (a cvf run folder) for skill predict."""
    from skill.interop.skillformer import import_skillformer

    result = import_skillformer(folder, out_dir, backbone=backbone, strategy=strategy,
                                stride=stride, clips=clips, device=device)  # fmt: skip
    out.print(f"adapter: {result.adapter_dir}\nrun folder: {result.run_dir}")
    out.print(f"tokens for the run: {result.extract_command}", highlight=False, soft_wrap=True)


@import_app.command(name="features")
@user_errors
@from_config(
    ImportFeaturesConfig,
    arguments=("features",),
    flags={"tokens": "--tokens-per-clip"},  # --tokens is extract's token mode
    short={"store": "-s"},
)
def import_features_command(cfg: ImportFeaturesConfig) -> None:
    """Import features extracted elsewhere (a skill export, a video_features folder of
    <stem>_<feature>.npy files, or HDF5) into a new store that skill fit trains on."""
    from skill.interop.import_features import import_features

    result = import_features(cfg)
    out.print(
        f"imported {result.takes} takes x {result.views} views ({result.source_kind}) into "
        f"{result.store}",
        highlight=False,
        soft_wrap=True,
    )


# ---- export ------------------------------------------------------------------------------
@app.command()
@user_errors
@from_config(ExportConfig, arguments=("store", "out"))
def export(cfg: ExportConfig) -> None:
    """Write a store's completed takes as HDF5 or per-video .npy files (+ takes.csv)."""
    from skill.interop.export import export_store

    result = export_store(cfg)
    out.print(
        f"exported {result.takes} completed takes ({result.files} files) to {result.out}",
        highlight=False,
        soft_wrap=True,
    )


# ---- info --------------------------------------------------------------------------------
@app.command()
@user_errors
def info(
    store: Path = typer.Argument(..., help="A store written by skill extract.", metavar="STORE"),
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
    from skill.cache.info import summary_lines

    for line in summary_lines(s):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


# ---- verify ------------------------------------------------------------------------------
@app.command()
@user_errors
def verify(
    store: Path = typer.Argument(..., help="A store written by skill extract.", metavar="STORE"),
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Mark the damaged takes pending, so that the next skill extract redoes them.",
    ),
) -> None:
    """Check every completed take of a store (chunks present, whole and finite, shapes,
    take table) and name what is damaged; exit 1 if anything is."""
    from skill.cache.verify import repair_store, verify_store

    report = verify_store(store)
    for problem in report.store_problems:
        out.print(f"damaged: {problem}", highlight=False, soft_wrap=True)
    for d in report.damage:
        out.print(
            f"damaged: take {d.take} view {d.view}: {d.problem} ({d.file})",
            highlight=False,
            soft_wrap=True,
        )
    if report.ok:
        out.print(
            f"{store}: ok ({report.takes} takes, {report.complete_checked} complete takes checked)"
        )
        return
    takes = len(report.damaged_rows())
    out.print(f"{store}: {takes} damaged takes, {len(report.store_problems)} store problems")
    if repair:
        rows = repair_store(store, report)
        out.print(
            f"repaired: {len(rows)} takes marked pending; run the same `skill extract` again "
            "to extract exactly those"
        )
    raise typer.Exit(1)


# ---- fit and sweep ---------------------------------------------------------------------
@app.command()
@user_errors
@from_config(
    FitConfig,
    arguments=("store",),
    flags={"out_dir": "--out"},
    short={"out_dir": "-o"},
    check=check_fit,
)
def fit(cfg: FitConfig) -> None:
    """Train a fusion head on a store (a grid of them: skill sweep)."""
    _run_fit(cfg)


@app.command(name="sweep")
@user_errors
@from_config(
    SweepConfig,
    arguments=("store",),
    flags={"name": "--sweep-name", "out_dir": "--out"},
    short={"fit.out_dir": "-o"},
    check=check_sweep,
    # every fit of the grid gets its own head, views, seed and name
    exclude=("fit.head", "fit.views", "fit.seed", "fit.name"),
    separators={"view_sets": ";"},
)
def sweep_command(cfg: SweepConfig) -> None:
    """Fit a grid of heads x view sets x seeds on a store (or on several stores, one per
    backbone, with --stores), and write one table of them (CSV and Markdown)."""
    _run_sweep(cfg)


def _run_fit(cfg) -> None:
    from skill.heads.train import fit as fit_head

    result = fit_head(cfg)
    _print_metrics(result.task_name, result.metrics, ("val", "test"))
    out.print(f"run folder: {result.run_dir}")


def _print_metrics(task_name: str, metrics: dict, splits) -> None:
    """Each split's metrics as its task describes them, baselines beside them."""
    from skill.tasks import get_task

    task = get_task(task_name)
    for split in splits:
        if split in metrics:
            out.print(task.describe(split, metrics[split]), highlight=False)


def _run_sweep(cfg) -> None:
    from skill.heads.sweep import sweep as run_sweep

    result = run_sweep(cfg)
    print_sweep_table(result.rows)
    out.print(f"sweep folder: {result.sweep_dir} (sweep.csv, sweep.md, one run folder per fit)")
    for note in result.passed_over:
        out.print(f"not resumed, other settings: {note}", highlight=False, soft_wrap=True)
    if result.reused:
        out.print(
            f"resumed: {result.reused} of {len(result.fits)} runs were already complete in "
            "that folder (same settings) and were not fitted again"
        )


def print_sweep_table(rows: list[dict]) -> None:
    from rich.table import Table

    from skill.heads.sweep import format_mean_std, several_backbones
    from skill.heads.sweep_rows import rows_task

    several_seeds = any(row["seeds"] > 1 for row in rows)
    title = "mean ± std over seeds" if several_seeds else "one seed"
    task = rows_task(rows)
    shown = task.table_metrics[:2]  # the headline and the next
    name = {m: getattr(task, "metric_labels", {}).get(m, m) for m in shown}
    table = Table(title=f"sweep: {' and '.join(name.values())} ({title})")
    backbone = several_backbones(rows)  # one store: no backbone column, as before --stores
    metrics = [f"{split}_{m}" for split in ("val", "test") for m in shown]
    headers = [f"{split} {name[m]}" for split in ("val", "test") for m in shown]
    columns = ("head", "views", *headers, "s/fit")
    for column in ("backbone",) * backbone + columns:
        # a narrow terminal folds a cell onto two lines rather than cut it; elsewhere
        # (a log, a pipe) the console is wide enough for every cell whole
        table.add_column(column, overflow="fold")

    def cell(row: dict, key: str) -> str:
        if several_seeds:
            return format_mean_std(row, key)
        value = row.get(f"{key}_mean")
        return "-" if value is None or value != value else f"{value:.3f}"

    for row in rows:
        cells = [cell(row, key) for key in metrics]
        first = [row.get("backbone", "")] * backbone + [row["head"], row["views"]]
        table.add_row(*first, *cells, f"{row['fit_seconds_mean']:.1f}")
    out.print(table)
    out.print(baselines_line(rows), highlight=False)


def baselines_line(rows: list[dict]) -> str:
    """The task's baseline and chance, below the table (`sweep_rows.baselines_text`)."""
    from skill.heads.sweep_rows import baselines_text

    return baselines_text(rows)


# ---- predict -----------------------------------------------------------------------------
def _read_take_order(path: Path) -> list[str]:
    from skill.interop.egoexo4d import read_take_order

    return read_take_order(path)


@app.command()
@user_errors
@from_config(
    PredictConfig,
    arguments=("store",),
    flags={"out_csv": "--out"},
    short={"out_csv": "-o"},
    types={"order": Path | None},  # a file of take ids, read into the list
    convert={"order": _read_take_order},
    check=check_predict,
)
def predict(cfg: PredictConfig) -> None:
    """Apply a trained head to the completed takes of a store."""
    from skill.heads.predict import predict as predict_csv
    from skill.heads.sweep import format_number
    from skill.interop.demonstration_predict import FORMAT as DEMONSTRATION
    from skill.interop.demonstration_predict import predict_demonstration
    from skill.interop.egoexo4d import predict_egoexo4d

    writers = {"csv": predict_csv, DEMONSTRATION: predict_demonstration}
    result = writers.get(cfg.format, predict_egoexo4d)(cfg)
    which = f" of split {result.split}" if result.split else ""
    out.print(f"predicted {len(result.take_ids)} takes{which} -> {result.out_csv}")
    if result.aggregate == "participant":
        out.print(
            "[yellow]note:[/] probabilities are means over each participant's predicted takes: "
            "outside the benchmark's input rules (each take is to be predicted from its own "
            "videos)",
            highlight=False,
        )
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if result.out_json:
        out.print(
            f"EgoExo4D prediction file ({cfg.format}): {result.file_takes} takes{which} "
            f"-> {result.out_json}"
        )
    if result.filled:
        out.print(
            f"{len(result.filled)} takes of the file had nothing to predict from: written with "
            "a uniform guess (zero logits; labels: the most frequent training class)"
        )
    elif result.skipped:
        out.print(f"{len(result.skipped)} takes had no usable view (not in the CSV)")
    if result.benchmark:
        figures = ", ".join(f"{k} {v:.3f}" for k, v in result.benchmark.items())
        majority = format_number(result.benchmark_majority)
        filled = (
            f", {result.benchmark_filled} of them filled with the uniform guess, which the "
            f"scorer reads as {result.schema['labels'][0]}"
            if result.benchmark_filled
            else ""
        )
        out.print(
            f"the scorer's top-1 on the {result.benchmark_takes} labelled takes of the file"
            f"{filled}: {figures} (majority baseline of the training labels {majority})",
            highlight=False,
        )
    _print_metrics(result.task_name, result.metrics, list(result.metrics))


# ---- demo --------------------------------------------------------------------------------
@app.command()
@user_errors
@from_config(DemoConfig, short={"out": "-o"}, separators={"view_sets": ";"})
def demo(cfg: DemoConfig) -> None:
    """The whole job on built-in synthetic data: synth, extract, sweep, predict (offline)."""
    from skill.demo import run_demo

    result = run_demo(cfg, say=lambda line: out.print(line, highlight=False))
    print_sweep_table(result.rows)
    _print_demo_verdict(result)


def _print_demo_verdict(result) -> None:
    from skill.demo import cpu_count
    from skill.heads.sweep import format_number

    def mark(ok: bool) -> str:
        return "[green]yes[/]" if ok else "[red]NO[/]"

    best, single, fused = result.best, result.best_single_view, result.best_fusion
    out.print(
        f"best (chosen on val): {best['head']} on {best['views']}: test top-1 "
        f"{best['test_top1_mean']:.3f} (chance 0.25, majority "
        f"{format_number(best.get('test_majority_top1'))}) - at least 0.6: "
        f"{mark(result.best_above_chance)}"
    )
    out.print(
        f"fusion of all views {fused['test_top1_mean']:.3f} ({fused['head']}) vs best single view "
        f"{single['test_top1_mean']:.3f} ({single['head']} on {single['views']}) - fusion ahead: "
        f"{mark(result.fusion_beats_single_views)}"
    )
    score = result.file_score
    out.print(
        f"{result.predictions.name}: the {score.takes} held-out {score.split} takes (not trained "
        f"on, not used to choose the run): top-1 {format_number(score.top1)} read back from the "
        f"file, majority baseline {format_number(score.majority_top1)} ({score.majority_class} "
        "for every take)",
        highlight=False,
        soft_wrap=True,
    )
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    out.print(
        f"time on this machine ({cpu_count()} CPUs): {timing}; total "
        f"{sum(result.seconds.values()):.0f} s wall, {result.cpu_seconds:.0f} CPU-s",
        highlight=False,
        soft_wrap=True,
    )
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
