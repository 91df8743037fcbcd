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
    ORDER_FIELDS,
    SCORE_RANGE,
    SPLITS,
    TASK_FIELDS,
    SynthConfig,
)
from skill.synth.moments import (
    MOMENT_FRAMES,
    moments_scene,
    take_events,
    write_demonstration_files,
)
from skill.synth.motion import take_scene
from skill.synth.plan import TakeSpec, plan_takes
from skill.synth.procedure import procedure_scene, render_procedure_view
from skill.synth.render import render_view
from skill.synth.video import encode_video, pick_codec
from skill.synth.world import (
    ELBOW_RAISE_M,
    PLACEMENT_ERROR_M,
    SCENARIOS,
    SPEED,
    STEPS,
    TREMOR_M,
)
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
    scores = take_scores(config, specs)
    if scores is not None:
        takes = [
            dataclasses.replace(take, scores=score)
            for take, score in zip(takes, scores, strict=True)
        ]
    if config.kind == "moments":  # the demonstration benchmark's files, not a JSONL
        manifest = write_demonstration_files(out_dir, takes, config)
    else:
        manifest = write_manifest(
            out_dir / MANIFEST_NAME, takes, root=out_dir, fmt="skill", **manifest_task(config)
        )
    pairs = take_pairs(config, specs) if config.task == "pairwise" else None
    if pairs is not None:
        write_pairs(out_dir / PAIRS_DIR, pairs)
    write_info(out_dir / INFO_NAME, config, specs, pairs)
    return manifest


PAIRS_DIR = "pairs"
"""The folder of a pairwise dataset's pairs files, ``<split>.txt`` each (BEST's layout)."""


def manifest_task(config: SynthConfig) -> dict:
    """The task and declared schema the manifest is written for: none for classification
    (the file stays what it was), the ordered levels for ordinal, the scores and their range
    for regression and pairwise (whose per-take score is what rankings are checked against)."""
    if config.task == "ordinal":
        return {"task": "ordinal", "schema": {"labels": list(LABELS), "ordered": True}}
    if config.task in ("regression", "pairwise"):
        low, high = SCORE_RANGE
        names = config.score_names if config.task == "regression" else ("score",)
        entries = [{"name": name, "low": low, "high": high} for name in names]
        return {"task": "regression", "schema": {"scores": entries, "group": "scenario"}}
    return {}


def take_scores(config: SynthConfig, specs: Sequence[TakeSpec]) -> list | None:
    """Each take's score (one name: a number; several: name -> number) from its latent skill
    on the 0-10 scale plus judges' noise (the n-th score n x --score-noise), clipped to the
    range and rounded to 2 decimals; None for a task without scores."""
    if config.task not in ("regression", "pairwise"):
        return None
    names = config.score_names if config.task == "regression" else ("score",)
    rng = np.random.default_rng([config.seed, 4])
    low, high = SCORE_RANGE
    levels = len(LABELS)
    out: list = []
    for spec in specs:
        noise = rng.normal(0.0, config.score_noise * np.arange(1, len(names) + 1))
        values = np.clip(low + (high - low) * spec.latent / levels + noise, low, high)
        rounded = [round(float(v), 2) for v in values]
        out.append(rounded[0] if len(names) == 1 else dict(zip(names, rounded, strict=True)))
    return out


def take_pairs(config: SynthConfig, specs: Sequence[TakeSpec]) -> dict[str, list[tuple[str, str]]]:
    """Per split, about --pairs-per-take pairs per take (each pair counted once per take it
    names, so takes x pairs-per-take / 2 pairs), of two takes of that split whose latent
    skills differ by at least --pair-gap, the better take first; no pair twice."""
    rng = np.random.default_rng([config.seed, 5])
    out: dict[str, list[tuple[str, str]]] = {}
    for split in SPLITS:
        mine = [s for s in specs if s.participant.split == split]
        candidates = [
            (a, b)
            for i, a in enumerate(mine)
            for b in mine[i + 1 :]
            if abs(a.latent - b.latent) >= config.pair_gap
        ]
        wanted = min(len(candidates), len(mine) * config.pairs_per_take // 2)
        chosen = sorted(rng.choice(len(candidates), wanted, replace=False)) if wanted else []
        pairs = []
        for index in chosen:
            a, b = candidates[index]
            better, worse = (a, b) if a.latent > b.latent else (b, a)
            pairs.append((better.take_id, worse.take_id))
        out[split] = pairs
    return out


def write_pairs(folder: Path, pairs: dict[str, list[tuple[str, str]]]) -> None:
    """``<split>.txt`` per split: one ``better worse`` pair a line (BEST's layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, chosen in pairs.items():
        text = "".join(f"{better} {worse}\n" for better, worse in chosen)
        (folder / f"{split}.txt").write_text(text)


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
    if spec.config.kind == "order":
        scene, render = procedure_scene(spec, rng), render_procedure_view
    elif spec.config.kind == "moments":
        scene, render = moments_scene(spec, rng), render_procedure_view
    else:
        scene, render = take_scene(spec, rng), render_view
    take_dir = out_dir / spec.take_id
    take_dir.mkdir(parents=True, exist_ok=True)
    videos: dict[str, str | None] = {}
    for view in spec.config.views:
        frames = render(scene, view, spec.config, rng)
        encode_video(take_dir / f"{view}.mp4", frames, spec.config.fps, spec.config.codec)
        videos[view] = str(take_dir / f"{view}.mp4")
    return Take(
        take_id=spec.take_id,
        videos=videos,
        label=LABELS[spec.participant.level],
        scenario=spec.scenario.name,
        participant=spec.participant.pid,
        split=spec.participant.split,
        **moments_fields(spec),
    )


def moments_fields(spec: TakeSpec) -> dict:
    """A moments take's events and uid (the benchmark's files name takes by both); none for
    the other kinds."""
    if spec.config.kind != "moments":
        return {}
    return {"events": take_events(spec), "uid": f"uid-{spec.take_id}"}


def write_info(
    path: Path, config: SynthConfig, specs: Sequence[TakeSpec], pairs: dict | None = None
) -> None:
    """synth_info.json: generator parameters, seed and the cue tables, or the steps and each
    take's order; with a latent skill, each take's latent (and the number of pairs per
    split); no timestamps."""
    people = {s.participant.pid: s.participant for s in specs}
    settings = asdict(config)
    if config.kind == "cues":  # what a cues dataset wrote before the order kind existed
        settings = {k: v for k, v in settings.items() if k not in ORDER_FIELDS}
    if not config.latent:  # what a classification dataset wrote before the tasks existed
        settings = {k: v for k, v in settings.items() if k not in TASK_FIELDS}
    info = {
        # Its module before it moved to skill.synth; kept: the same seed writes the same bytes.
        "generator": "pipeline.synth",
        "version": GENERATOR_VERSION,
        "config": settings,
        # Byte-identical output needs the same encoder build, so name it.
        "encoder": {"pyav": av.__version__, "libavcodec": list(av.library_versions["libavcodec"])},
        "views": list(config.views),
        "labels": list(LABELS),
        "scenarios": [s.name for s in SCENARIOS],
        **(order_tables(config, specs) if config.kind != "cues" else cue_tables()),
        "participants": {
            pid: {"label": LABELS[p.level], "split": p.split} for pid, p in sorted(people.items())
        },
        **(latent_tables(specs, pairs) if config.latent else {}),
    }
    path.write_text(json.dumps(info, indent=2) + "\n")


def latent_tables(specs: Sequence[TakeSpec], pairs: dict | None) -> dict:
    """Each take's latent skill in levels, and the pairs files' pair counts per split."""
    tables: dict = {"latents": {spec.take_id: spec.latent for spec in specs}}
    if pairs is not None:
        tables["pairs"] = {split: len(chosen) for split, chosen in pairs.items()}
    return tables


def cue_tables() -> dict:
    """The cues kind's per-level cues."""
    return {
        "cues_per_level": {
            "tremor_m": TREMOR_M,
            "placement_error_m": PLACEMENT_ERROR_M,
            "speed": SPEED,
            "elbow_raise_m": ELBOW_RAISE_M,
        }
    }


def order_tables(config: SynthConfig, specs: Sequence[TakeSpec]) -> dict:
    """The order kind's steps (canonical order), slot length and the step of each slot of
    every take; the moments kind's drawings, slot length, each slot's drawing and each take's
    marked moments."""
    if config.kind == "moments":
        return {
            "steps": [asdict(step) for step in STEPS],
            "step_frames": MOMENT_FRAMES,
            "orders": {spec.take_id: list(spec.order) for spec in specs},
            "moments": {
                spec.take_id: [[event.time, event.category] for event in take_events(spec)]
                for spec in specs
            },
        }
    return {
        "steps": [asdict(step) for step in STEPS[: config.procedure_steps]],
        "step_frames": config.frames // config.procedure_steps,
        "orders": {spec.take_id: list(spec.order) for spec in specs},
    }


def read_manifest(manifest: Path) -> list[dict]:
    """The records of a manifest.jsonl written by `synthesize`."""
    lines = Path(manifest).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]
