"""Writing a dataset: plan the takes, render and encode them (in worker processes), then the
manifest (through the manifest registry) and synth_info.json."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path

import av
import numpy as np

from skill.pipeline.manifest import write_manifest
from skill.pipeline.takes import Take
from skill.synth.config import (
    GENERATOR_VERSION,
    INFO_NAME,
    MANIFEST_NAME,
    SynthConfig,
)
from skill.synth.motion import take_scene
from skill.synth.plan import TakeSpec, plan_takes
from skill.synth.render import render_view
from skill.synth.video import encode_video, pick_codec
from skill.synth.world import ELBOW_RAISE_M, PLACEMENT_ERROR_M, SCENARIOS, SPEED, TREMOR_M
from skill.tasks.classification import EGOEXO4D_LEVELS as LABELS


def synthesize(cfg: SynthConfig, out_dir: Path, workers: int | None = None) -> Path:
    """Write the synthetic dataset `cfg` under `out_dir` and return the manifest path.

    Writes ``<take>/<view>.mp4`` for every take and view, ``manifest.jsonl`` (paths relative to
    `out_dir`) and ``synth_info.json``. `workers` processes render in parallel (default: one per
    CPU, 1 = in this process); the output does not depend on it. An empty ``cfg.codec`` is
    the one this machine's encoder offers (``pick_codec``).
    """
    config = cfg if cfg.codec else dataclasses.replace(cfg, codec=pick_codec())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = plan_takes(config)
    takes = run_takes(specs, out_dir, workers)
    manifest = write_manifest(out_dir / MANIFEST_NAME, takes, root=out_dir, fmt="skill")
    write_info(out_dir / INFO_NAME, config, specs)
    return manifest


def run_takes(specs: Sequence[TakeSpec], out_dir: Path, workers: int | None) -> list[Take]:
    """Render and encode every take; the takes in manifest order."""
    n_workers = min(workers or os.cpu_count() or 1, len(specs))
    jobs = [(spec, out_dir) for spec in specs]
    if n_workers <= 1:
        return [render_take_job(job) for job in jobs]
    with ProcessPoolExecutor(n_workers, mp_context=worker_context()) as pool:
        return list(pool.map(render_take_job, jobs, chunksize=4))


def worker_context() -> BaseContext:
    """fork when it is safe (no other Python threads; the workers use only numpy and a
    single-threaded encoder), else spawn, which needs the caller's script to have a
    ``if __name__ == "__main__":`` guard."""
    if "fork" in get_all_start_methods() and threading.active_count() == 1:
        return get_context("fork")
    return get_context("spawn")


def render_take_job(job: tuple[TakeSpec, Path]) -> Take:
    """Worker entry point: write one take's videos, return the take."""
    spec, out_dir = job
    rng = np.random.default_rng([spec.config.seed, 1, spec.index])
    scene = take_scene(spec, rng)
    take_dir = out_dir / spec.take_id
    take_dir.mkdir(parents=True, exist_ok=True)
    videos: dict[str, str | None] = {}
    for view in spec.config.views:
        frames = render_view(scene, view, spec.config, rng)
        encode_video(take_dir / f"{view}.mp4", frames, spec.config.fps, spec.config.codec)
        videos[view] = str(take_dir / f"{view}.mp4")
    return Take(
        take_id=spec.take_id,
        videos=videos,
        label=LABELS[spec.participant.level],
        scenario=spec.scenario.name,
        participant=spec.participant.pid,
        split=spec.participant.split,
    )


def write_info(path: Path, config: SynthConfig, specs: Sequence[TakeSpec]) -> None:
    """synth_info.json: generator parameters, seed and the cue tables (no timestamps)."""
    people = {s.participant.pid: s.participant for s in specs}
    info = {
        # Its module before it moved to skill.synth; kept: the same seed writes the same bytes.
        "generator": "pipeline.synth",
        "version": GENERATOR_VERSION,
        "config": asdict(config),
        # Byte-identical output needs the same encoder build, so name it.
        "encoder": {"pyav": av.__version__, "libavcodec": list(av.library_versions["libavcodec"])},
        "views": list(config.views),
        "labels": list(LABELS),
        "scenarios": [s.name for s in SCENARIOS],
        "cues_per_level": {
            "tremor_m": TREMOR_M,
            "placement_error_m": PLACEMENT_ERROR_M,
            "speed": SPEED,
            "elbow_raise_m": ELBOW_RAISE_M,
        },
        "participants": {
            pid: {"label": LABELS[p.level], "split": p.split} for pid, p in sorted(people.items())
        },
    }
    path.write_text(json.dumps(info, indent=2) + "\n")


def read_manifest(manifest: Path) -> list[dict]:
    """The records of a manifest.jsonl written by `synthesize`."""
    lines = Path(manifest).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
