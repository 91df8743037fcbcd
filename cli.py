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
        from cache.store import StoreError
        from pipeline.takes import ManifestError

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

    from pipeline.synth import synthesize

    started = time.perf_counter()
    manifest = synthesize(
        out_dir, takes=takes, seed=seed, size=size, frames=frames, exo_views=exo_views
    )
    seconds = time.perf_counter() - started
    out.print(f"wrote {takes} takes to {out_dir} in {seconds:.1f} s; manifest: {manifest}")


# ---- extract -----------------------------------------------------------------------------
@app.command()
@user_errors
def extract(
    manifest: Path = typer.Argument(
        ..., help="JSONL manifest, EgoExo4D annotation JSON or SkillFormer JSONL."
    ),
    store: Path = typer.Option(
        ..., "--store", "-s", help="Zarr store to create, append to or resume."
    ),
    root: Path = typer.Option(
        None, help="Folder relative video paths start from (EgoExo4D: dataset root)."
    ),
    format: str = typer.Option("auto", "--format", help="auto, skill, egoexo4d or skillformer."),
    backbone: str = typer.Option(
        "timesformer-base-k600", help="Registered name, hub id or checkpoint folder."
    ),
    adapter: Path = typer.Option(None, help="PEFT LoRA adapter folder (safetensors)."),
    tokens: str = typer.Option("frame", help="Token mode: frame, cls or patch."),
    frames: int = typer.Option(16, help="Frames per clip (T)."),
    clips: int = typer.Option(1, help="Clips per view (K)."),
    sampling: str = typer.Option("uniform", help="uniform, windows or segments."),
    stride: int = typer.Option(4, help="Frame stride inside windows / segments."),
    segments: int = typer.Option(4, help="Dense segments (segments sampling)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    batch_size: int = typer.Option(8, help="Clips per backbone batch."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    workers: int = typer.Option(2, help="Decode worker processes."),
    timeout: float = typer.Option(120.0, help="Seconds per video before its decode is abandoned."),
    min_views: int = typer.Option(1, help="Fail a take with fewer decodable views than this."),
    retry_failed: bool = typer.Option(False, help="Extract takes recorded as failed again."),
    limit: int = typer.Option(None, help="Only the first N takes."),
) -> None:
    """Decode every take once and write backbone tokens into a Zarr store (resumable)."""
    from pipeline.extract import ExtractConfig, run_extract

    cfg = ExtractConfig(
        manifest=manifest, store=store, root=root, format=format, backbone=backbone,
        adapter=adapter, tokens=tokens, frames=frames, clips=clips, strategy=sampling,
        stride=stride, segments=segments, seed=seed, batch_size=batch_size, device=device,
        workers=workers, timeout_s=timeout, min_views=min_views, retry_failed=retry_failed,
        limit=limit,
    )  # fmt: skip
    with _progress_bar("extracting") as progress:
        summary = run_extract(cfg, progress=progress)
    _print_extract_summary(summary)


def _progress_bar(what: str):
    from pipeline.progress import TakeProgress

    return TakeProgress(console, what, enabled=sys.stderr.isatty() or _debug["on"])


def _print_extract_summary(summary) -> None:
    out.print(
        f"{summary.store}: {summary.completed} takes extracted, {summary.failed} failed, "
        f"{summary.skipped} already done, {summary.failed_views} views failed "
        f"({summary.seconds:.1f} s)"
    )
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
    from cache.info import store_summary

    summary = store_summary(store)
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    _print_store_summary(summary)


def _print_store_summary(s: dict) -> None:
    from rich.table import Table

    state = "INTERRUPTED or in progress" if s["interrupted"] else "all takes processed"
    out.print(
        f"[bold]{s['store']}[/]  format v{s['format_version']}  {s['size_bytes'] / 1e6:.1f} MB"
    )
    out.print(
        f"takes: {s['takes']}  completed: {s['completed']}  failed: {s['failed']}  "
        f"pending: {s['pending']}  ({state})"
    )
    out.print(f"views: {', '.join(s['views'])}  tokens per view: {s['geometry']}")
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


if __name__ == "__main__":
    app()
