"""The moments kind: a long take of short slots, a few of them marked moments.

The take is a run of slots of `MOMENT_FRAMES` frames, each showing one drawing of the order
kind's (``world.STEPS``) on the table, seen by every camera. Most slots show a filler drawing
(``STEPS[2:]``, at random); a few (1 to `MOST_MOMENTS`, at least `MOMENT_GAP_SLOTS` slots
apart; moment_plan.py) are marked moments: a good execution (``STEPS[GOOD_STEP]``) or a
faulty one (``STEPS[FAULT_STEP]``), at random. Each marked moment is an event of the EgoExo4D
demonstration benchmark (``good_executions`` or ``tips_for_improvement``) at its slot's middle,
in seconds. The manifest is written in the benchmark's layout (`write_demonstration_files`:
``proficiency_demonstration.json`` and ``takes.json``), read back by the
``egoexo4d-demonstration`` format.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skill.pipeline.takes import Event, Take
from skill.synth.config import SynthConfig
from skill.synth.moment_plan import FAULT_STEP, GOOD_STEP, MOMENT_FRAMES
from skill.synth.motion import head_trajectory
from skill.synth.procedure import Procedure, step_path, vary
from skill.synth.world import MAT_COLOUR, STEPS, WORK_XY
from skill.tasks.demonstration_metrics import CATEGORIES

if TYPE_CHECKING:
    from skill.synth.plan import TakeSpec

MANIFEST = "proficiency_demonstration.json"
TAKES_JSON = "takes.json"
CATEGORY_OF_STEP = {GOOD_STEP: CATEGORIES[0], FAULT_STEP: CATEGORIES[1]}


def take_events(spec: TakeSpec) -> tuple[Event, ...]:
    """The marked moments of a take, in time order: at each one's slot middle, in seconds."""
    fps = spec.config.fps
    return tuple(
        Event(round((slot + 0.5) * MOMENT_FRAMES / fps, 4), CATEGORY_OF_STEP[step], "synth")
        for slot, step in enumerate(spec.order)
        if step in CATEGORY_OF_STEP
    )


def moments_scene(spec: TakeSpec, rng: np.random.Generator) -> Procedure:
    """One take's scene, drawn by the order kind's renderer: every drawing's path over one
    slot, its colour, the head and the surroundings."""
    config = spec.config
    centre = np.array(WORK_XY) + rng.normal(0.0, 0.02, 2)
    local = np.arange(MOMENT_FRAMES) / MOMENT_FRAMES
    paths = [step_path(drawing, centre, local, rng) for drawing in STEPS]
    step_colours = [vary(drawing.colour, 0.04, rng) for drawing in STEPS]
    head = head_trajectory(np.arange(config.frames) / config.fps, rng)
    look_at = np.tile([*centre, 0.05], (config.frames, 1))
    sc = spec.scenario
    colours = {
        "wall": vary(sc.wall, 0.08, rng),
        "floor": vary(sc.floor, 0.08, rng),
        "table": vary(sc.table, 0.06, rng),
        "target": vary(MAT_COLOUR, 0.05, rng),
    }
    return Procedure(spec.order, MOMENT_FRAMES, paths, step_colours, head, look_at, colours, centre)


def write_demonstration_files(out_dir: Path, takes: Sequence[Take], config: SynthConfig) -> Path:
    """``proficiency_demonstration.json`` (the benchmark's annotation layout, each record with
    its split and ``video_paths`` relative to `out_dir`) and ``takes.json`` (each take's
    ``duration_sec``) in `out_dir`; returns the annotation file."""
    duration = config.frames / config.fps
    records = [demonstration_record(take, out_dir) for take in takes]
    metadata = [
        {"take_uid": take.uid, "take_name": take.take_id, "duration_sec": duration}
        for take in takes
    ]
    (out_dir / TAKES_JSON).write_text(json.dumps(metadata, indent=1) + "\n")
    manifest = out_dir / MANIFEST
    manifest.write_text(json.dumps({"annotations": records}, indent=1) + "\n")
    return manifest


def demonstration_record(take: Take, out_dir: Path) -> dict:
    """One take as an annotation record of the benchmark's files."""
    moments = {category: [] for category in CATEGORIES}
    for event in take.events:
        moments[event.category].append(
            {
                "video_time": event.time,
                "expert_uid": event.expert,
                "list": "[]",
                "video_name": take.take_id,
            }  # fmt: skip
        )
    paths = {
        view: str(Path(path).relative_to(out_dir)) for view, path in take.videos.items() if path
    }
    return {
        "take_uid": take.uid, "take_name": take.take_id, "scenario_name": take.scenario,
        "university_id": "synth", "origin_participant_id": take.participant,
        "split": take.split, "video_paths": paths, **moments,
    }  # fmt: skip
