"""Shared pieces of the extraction tests: small synthetic datasets, running `skill extract`
in this process or as a real command, and comparing two stores bit for bit."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from skill.cache.store import TokenStore

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
TINY = "tiny-timesformer"
# Small enough that a run is dominated by process start, big enough to have several clips.
SMALL = {"size": 32, "frames": 16, "exo_views": 3}


def make_dataset(folder: Path, takes: int, seed: int = 0) -> Path:
    """A synthetic dataset of real encoded videos (ego + 3 exo views); returns the manifest,
    which lists the first `takes` takes (synthesize writes at least 12)."""
    from skill.synth import SynthConfig, synthesize

    manifest = synthesize(SynthConfig(takes=max(takes, 12), seed=seed, **SMALL), folder, workers=1)
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join(lines[:takes]))
    return manifest


def extract_config(manifest: Path, store: Path, **overrides):
    """The extract settings every test uses unless it says otherwise (inline decoding)."""
    from skill.pipeline.extract_config import ExtractConfig

    settings = {"backbone": TINY, "frames": 4, "device": "cpu", "workers": 0, "batch_size": 8}
    settings.update(overrides)
    return ExtractConfig(manifest=manifest, store=store, **settings)


def extract_args(manifest: Path, store: Path, *extra: str) -> list[str]:
    """`skill extract` arguments matching `extract_config` (with decode workers)."""
    return [
        "extract", str(manifest), "--store", str(store), "--backbone", TINY, "--frames", "4",
        "--device", "cpu", "--batch-size", "8", *extra,
    ]  # fmt: skip


def cli_command(*args: str) -> list[str]:
    """The `skill` command as a subprocess (python -m cli, so no install is needed)."""
    return [sys.executable, "-m", "skill", *args]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """Run `skill <args>` to completion in a fresh process, from the repository root."""
    return subprocess.run(
        cli_command(*args),
        cwd=REPO,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def invoke_cli(*args: str):
    """Run `skill <args>` in this process (typer's runner): (exit code, flat output)."""
    from typer.testing import CliRunner

    from skill.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, flat(result.output)


def flat(text: str) -> str:
    """Output with rich's line wrapping undone (every run of whitespace becomes a space)."""
    return " ".join(text.split())


# ---- reading stores ------------------------------------------------------------------------
def snapshot(path: Path) -> dict[str, np.ndarray]:
    """Everything extraction decides, as arrays: the take table, completion records, frames
    and the tokens (as raw float16 bits, so that comparisons are bitwise)."""
    store = TokenStore.open(path)
    n, views = store.n_takes, list(range(len(store.views)))
    group = store._group
    return {
        "ids": store.take_table().ids,
        "label": store.take_table().target,
        "status": store.status(),
        "valid": store.valid(),
        "view_error": store.view_errors(),
        "frame_index": store.frame_index(),
        "timestamp": np.asarray(group["timestamp"][:n]),
        "clip_time": store.clip_times(),
        "padded": store.padded_frames(),
        "tokens": store.read_tokens(np.arange(n), views).view(np.uint16),
    }


def by_take(snap: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """The snapshot per take id (rows may be ordered differently in two stores)."""
    return {
        str(take): {k: v[i] for k, v in snap.items() if k != "ids"}
        for i, take in enumerate(snap["ids"])
    }


def assert_same_stores(got: Path, want: Path) -> None:
    """Same takes, same completion records, bitwise-identical tokens and frames, same
    provenance (paths and versions aside)."""
    from skill.cache.store import provenance_identity

    a, b = TokenStore.open(got), TokenStore.open(want)
    assert provenance_identity(a.provenance) == provenance_identity(b.provenance)
    assert (a.views, a.task, a.n_takes) == (b.views, b.task, b.n_takes)
    got_takes, want_takes = by_take(snapshot(got)), by_take(snapshot(want))
    assert sorted(got_takes) == sorted(want_takes)
    for take, want_arrays in want_takes.items():
        for name, expected in want_arrays.items():
            np.testing.assert_array_equal(
                got_takes[take][name], expected, err_msg=f"take {take}: {name} differs"
            )


def file_digests(path: Path) -> dict[str, str]:
    """sha256 of every file under `path`, by relative path: detects any change at all."""
    out = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = Path(folder) / name
            out[str(full.relative_to(path))] = hashlib.sha256(full.read_bytes()).hexdigest()
    return out


def temp_files(path: Path) -> list[Path]:
    """zarr's temporary files (`*.<hex>.partial`) under `path`."""
    return sorted(p for p in Path(path).rglob("*.partial"))


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# ---- read-only locations (root writes through chmod, so a real read-only mount is needed) --
def read_only_mount_problem(folder: Path) -> str | None:
    """Why this machine cannot make a read-only bind mount (None when it can)."""
    import shutil

    if shutil.which("unshare") is None:
        return "needs unshare(1) to make a read-only mount"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{folder}" "{folder}"'],
        capture_output=True,
    )
    if probe.returncode != 0:
        return f"cannot make a read-only bind mount here: {probe.stderr.decode().strip()}"
    return None


def run_in_read_only_mount(
    source: Path, mount: Path, command: list[str]
) -> subprocess.CompletedProcess:
    """`command` in a private mount namespace where `mount` is a read-only view of `source`."""
    script = 'mount --bind -o ro "$0" "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, str(source), str(mount), *command],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


# ---- a decoder that hangs (for the per-video timeout) ---------------------------------------
HANG_MARKER = "hang"


def hanging_decode(path: str, *args, **kwargs):
    """decode_view, except that a file whose name starts with "hang" blocks forever, like a
    decoder stuck on a bad file. A top-level function: decode workers import it by name."""
    from skill.pipeline.decode.view import decode_view

    if Path(path).name.startswith(HANG_MARKER):
        time.sleep(3600)
    return decode_view(path, *args, **kwargs)
