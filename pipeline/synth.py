"""Synthetic multi-view skill dataset: real encoded videos plus a manifest.

Every take is one 3-D performance (reach for a red ball, carry it onto a yellow target disc,
withdraw the hand) filmed by a head-mounted ego camera (a close-up on the target that sways
with the head) and up to four fixed exo cameras. Proficiency shows in the motion through cues
that the cameras see differently, and each cue separates a different pair of levels:

* posture (Novice vs the rest): novices hold the elbow high, a bent arm the exo cameras see;
  the elbow moves along the ego camera's line of sight, so the ego forearm looks the same;
* tremor (Novice vs the rest, temporal): the hand shakes along the ego line of sight, large
  sideways jitter and motion blur in the exo views, only a slight size change in ego;
* placement error (Early vs Intermediate Expert): the ball lands beside the target, which
  uncovers a large yellow area in the ego close-up and a thin sliver in the low exo views;
* speed (Late Expert vs the rest): experts finish sooner, visible everywhere but blurred by
  per-take and per-person speed variation.

So the ego view cannot tell Novice from Early Expert, the exo views cannot tell Early from
Intermediate Expert, and fusing views beats every single view. Cues are large and change the
colour make-up of the frames (how much yellow disc, blue sleeve), not only positions, because
the intended consumers are tiny randomly initialised backbones whose per-frame token is a mean
over patch tokens; see the comment above SCENARIOS for the colour choices.

Everything is a pure function of the seed: the same seed gives byte-identical videos and
manifest whatever the number of worker processes (the encoder runs single-threaded).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path

import av
import numpy as np

from skill.pipeline.manifest import write_manifest
from skill.pipeline.takes import LABELS, Take

GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "synth_info.json"
SPLITS: tuple[str, ...] = ("train", "val", "test")
EXO_NAMES: tuple[str, ...] = ("exo1", "exo2", "exo3", "exo4")

# Per level (Novice .. Late Expert). Each cue changes at a different stage, see module doc.
TREMOR_M: tuple[float, ...] = (0.065, 0.020, 0.018, 0.016)
PLACEMENT_ERROR_M: tuple[float, ...] = (0.130, 0.120, 0.015, 0.012)
ELBOW_RAISE_M: tuple[float, ...] = (0.26, 0.05, 0.045, 0.04)
SPEED: tuple[float, ...] = (1.0, 1.0, 1.02, 1.45)

# Sizes of the scene, in metres. Table top is z=0, x to the performer's right, y away from them.
BALL_RADIUS = 0.09
HAND_RADIUS = 0.075
FOREARM_RADIUS = 0.042
UPPER_ARM_RADIUS = 0.06
TARGET_RADIUS = 0.07
HEAD_POS = np.array([0.0, -0.40, 0.58])
NEAR_M = 0.12  # nearest depth a camera renders; closer geometry is clipped

PROXY_GRID = 4  # thumbnail side of the proxy check; coarse, like one mean-pooled token per frame
PROXY_L2_GRID: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)


@dataclass(frozen=True)
class Scenario:
    """Look and layout of one scenario (colours are RGB in [0, 1])."""

    name: str
    """Scenario name written to the manifest."""
    wall: tuple[float, float, float]
    """Background colour of rays that miss the table and the floor."""
    floor: tuple[float, float, float]
    """Colour of the floor plane below the table."""
    table: tuple[float, float, float]
    """Colour of the table top (with a faint large checker)."""
    ball_xy: tuple[float, float]
    """Start of the ball on the table."""
    target_xy: tuple[float, float]
    """Centre of the target disc on the table."""
    lift_m: float
    """Height of the carrying arc."""


# Only the surroundings change with the scenario, and they are dark: a randomly initialised
# backbone normalises each patch token (LayerNorm), so it mostly sees a patch's colour
# *direction* after ImageNet normalisation. Mid-grey backgrounds sit where that direction flips
# and would swamp everything else; dark ones stay put under tints and lighting. The things
# whose look carries a skill cue (target, ball, hand, sleeve) keep one saturated colour
# everywhere, so a cue moves pooled features the same way in every scenario.
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("cooking", (0.195, 0.165, 0.14), (0.135, 0.115, 0.105), (0.225, 0.175, 0.135),
             (0.12, 0.12), (-0.16, 0.10), 0.10),
    Scenario("music", (0.145, 0.135, 0.17), (0.125, 0.115, 0.12), (0.185, 0.165, 0.19),
             (0.10, 0.16), (-0.14, 0.06), 0.14),
    Scenario("bouldering", (0.185, 0.175, 0.18), (0.135, 0.125, 0.125), (0.215, 0.205, 0.2),
             (0.14, 0.08), (-0.12, 0.14), 0.08),
    Scenario("basketball", (0.155, 0.16, 0.19), (0.165, 0.13, 0.105), (0.235, 0.175, 0.13),
             (0.08, 0.10), (-0.18, 0.12), 0.12),
    Scenario("dance", (0.175, 0.125, 0.16), (0.12, 0.105, 0.11), (0.185, 0.175, 0.18),
             (0.12, 0.14), (-0.15, 0.08), 0.16),
    Scenario("soccer", (0.145, 0.175, 0.13), (0.12, 0.135, 0.105), (0.165, 0.205, 0.15),
             (0.10, 0.10), (-0.16, 0.16), 0.10),
)  # fmt: skip
TARGET_COLOUR = (1.0, 0.85, 0.1)
BALL_COLOUR = (0.85, 0.15, 0.12)
HAND_COLOUR = (0.92, 0.72, 0.6)
SLEEVE_COLOUR = (0.15, 0.3, 0.75)

# Exo camera rigs: (position, look-at point, focal length as a fraction of the image size).
EXO_RIGS: tuple[tuple[tuple[float, float, float], tuple[float, float, float], float], ...] = (
    # Cameras just above the table top see it edge-on: the target disc is a thin sliver there.
    ((0.05, 1.05, 0.15), (0.0, -0.05, 0.1), 1.45),  # exo1: across the table, facing the performer
    ((-1.05, -0.05, 0.14), (0.0, -0.08, 0.12), 1.45),  # exo2: left side
    ((1.05, -0.1, 0.16), (0.0, -0.08, 0.12), 1.45),  # exo3: right side
    ((0.8, -0.8, 1.2), (0.0, 0.0, 0.05), 1.4),  # exo4: high, behind the right shoulder
)
EGO_FOCAL = 2.2


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of one synthetic dataset (all of it is a function of these)."""

    takes: int = 200
    """Number of takes."""
    seed: int = 0
    """Seed; the same seed and parameters give byte-identical files."""
    size: int = 64
    """Width and height of every video in pixels (even, >= 16)."""
    frames: int = 48
    """Frames per video."""
    fps: int = 15
    """Frame rate written into the videos; motion is defined in seconds."""
    exo_views: int = 4
    """Number of exo cameras (1-4): exo1 front, exo2 left, exo3 right, exo4 high back."""
    participants: int = 20
    """Number of participants (a multiple of 4, >= 12); each has one proficiency level."""
    codec: str = ""
    """Video codec; empty picks libx264 (preset ultrafast) when available, else mpeg4."""

    @property
    def views(self) -> tuple[str, ...]:
        return ("ego", *EXO_NAMES[: self.exo_views])


@dataclass(frozen=True)
class Participant:
    """One performer: a fixed level, split and personal style."""

    pid: str
    """Participant id, e.g. ``p03``."""
    level: int
    """Index into LABELS."""
    split: str
    """train, val or test; all takes of a participant share it."""
    speed: float
    """Personal speed factor (multiplies the level's speed)."""
    tremor: float
    """Personal tremor factor."""
    precision: float
    """Personal placement-error factor."""
    posture: float
    """Personal factor on how far the elbow is raised."""
    sleeve: tuple[float, float, float]
    """Colour of the arm."""


@dataclass(frozen=True)
class TakeSpec:
    """Everything a worker needs to render one take."""

    index: int
    """Position of the take in the manifest; seeds the take's own random stream."""
    take_id: str
    """Take id, e.g. ``t0001``."""
    participant: Participant
    """Who performs."""
    scenario: Scenario
    """Where."""
    config: SynthConfig = field(repr=False)
    """Dataset parameters."""


def synthesize(
    out_dir: Path,
    *,
    takes: int = 200,
    seed: int = 0,
    size: int = 64,
    frames: int = 48,
    fps: int = 15,
    exo_views: int = 4,
    participants: int = 20,
    workers: int | None = None,
) -> Path:
    """Write a synthetic dataset under `out_dir` and return the manifest path.

    Writes ``<take>/<view>.mp4`` for every take and view, ``manifest.jsonl`` (paths relative to
    `out_dir`) and ``synth_info.json``. `workers` processes render in parallel (default: one per
    CPU, 1 = in this process); the output does not depend on it.
    """
    config = SynthConfig(takes, seed, size, frames, fps, exo_views, participants, pick_codec())
    validate_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = plan_takes(config)
    takes = run_takes(specs, out_dir, workers)
    manifest = write_manifest(out_dir / MANIFEST_NAME, takes, root=out_dir, fmt="skill")
    write_info(out_dir / INFO_NAME, config, specs)
    return manifest


def validate_config(config: SynthConfig) -> None:
    """Raise ValueError naming the parameter a caller got wrong."""
    problems = []
    if config.size < 16 or config.size % 2:
        problems.append(f"size={config.size}: must be even and >= 16 (yuv420p)")
    if config.frames < 8:
        problems.append(f"frames={config.frames}: need at least 8")
    if config.fps < 1:
        problems.append(f"fps={config.fps}: must be positive")
    if not 1 <= config.exo_views <= len(EXO_NAMES):
        problems.append(f"exo_views={config.exo_views}: must be 1..{len(EXO_NAMES)}")
    if config.participants < 12 or config.participants % 4:
        problems.append(f"participants={config.participants}: need a multiple of 4, >= 12")
    if config.takes < 12:
        problems.append(f"takes={config.takes}: need >= 12 so every split has every level")
    if problems:
        raise ValueError("synthesize: " + "; ".join(problems))


def pick_codec() -> str:
    """libx264 when this PyAV build has it (H.264, what real datasets use), else mpeg4."""
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # PyAV raises its own error types for an unknown codec
        return "mpeg4"


# ---------------------------------------------------------------------------------------------
# Planning: participants, levels, splits, takes (in the parent process, from the seed only)


def plan_participants(config: SynthConfig, rng: np.random.Generator) -> list[Participant]:
    """Participants with one level each, splits stratified by level (about 60/20/20)."""
    n_used = min(config.participants, config.takes - config.takes % 4)
    per_level = n_used // 4
    n_held = max(1, round(0.2 * per_level))
    roles = []
    for level in range(len(LABELS)):
        train, val, test = SPLITS
        splits = [val] * n_held + [test] * n_held + [train] * (per_level - 2 * n_held)
        roles += [(level, str(split)) for split in rng.permutation(splits)]
    order = rng.permutation(len(roles))  # ids do not reveal the level
    return [random_participant(i, *roles[j], rng) for i, j in enumerate(order)]


def random_participant(
    number: int, level: int, split: str, rng: np.random.Generator
) -> Participant:
    """A participant with a random personal style around the level's cues."""
    return Participant(
        pid=f"p{number + 1:02d}",
        level=level,
        split=split,
        speed=float(np.exp(rng.normal(0.0, 0.04))),
        tremor=float(np.exp(rng.normal(0.0, 0.15))),
        precision=float(np.exp(rng.normal(0.0, 0.15))),
        posture=float(np.exp(rng.normal(0.0, 0.12))),
        sleeve=tuple(
            float(c) for c in np.clip(np.array(SLEEVE_COLOUR) * rng.uniform(0.9, 1.1, 3), 0, 1)
        ),
    )


def plan_takes(config: SynthConfig) -> list[TakeSpec]:
    """One TakeSpec per take: every participant gets takes in turn, scenarios at random."""
    rng = np.random.default_rng([config.seed, 0])
    people = plan_participants(config, rng)
    owners = rng.permutation(np.arange(config.takes) % len(people))
    scenarios = rng.integers(0, len(SCENARIOS), config.takes)
    width = max(4, len(str(config.takes)))
    return [
        TakeSpec(i, f"t{i + 1:0{width}d}", people[owners[i]], SCENARIOS[scenarios[i]], config)
        for i in range(config.takes)
    ]


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


# ---------------------------------------------------------------------------------------------
# Motion: one 3-D performance per take, shared by all cameras


@dataclass
class Scene:
    """One take's 3-D content; positions are (F, 3) arrays in metres, one row per frame."""

    hand: np.ndarray
    ball: np.ndarray
    shoulder: np.ndarray
    elbow: np.ndarray
    target_xy: np.ndarray
    head: np.ndarray
    look_at: np.ndarray
    colours: dict[str, np.ndarray]
    participant: Participant
    scenario: Scenario


def min_jerk(tau: np.ndarray) -> np.ndarray:
    """Smooth 0->1 profile of a skilled point-to-point movement; tau clipped to [0, 1]."""
    t = np.clip(tau, 0.0, 1.0)
    return t**3 * (10 - 15 * t + 6 * t * t)


def segment_path(
    t: np.ndarray, start: float, duration: float, a: np.ndarray, b: np.ndarray, lift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (F, 3) of a movement a->b with a vertical arc, and its active mask (F,)."""
    tau = (t - start) / duration
    s = min_jerk(tau)[:, None]
    pos = a + (b - a) * s
    pos[:, 2] += lift * 4 * s[:, 0] * (1 - s[:, 0])
    return pos, (tau > 0) & (tau < 1)


def take_timing(spec: TakeSpec, rng: np.random.Generator) -> dict[str, float]:
    """Start and duration (s) of reach, carry and withdraw; faster for higher levels."""
    speed = SPEED[spec.participant.level] * spec.participant.speed * np.exp(rng.normal(0, 0.06))
    onset = rng.uniform(0.1, 0.45)
    reach, carry, back = 0.95 / speed, 1.05 / speed, 0.7 / speed
    pause = 0.12 / speed
    return {
        "reach_at": onset,
        "reach": reach,
        "carry_at": onset + reach + pause,
        "carry": carry,
        "back_at": onset + reach + carry + 2 * pause,
        "back": back,
    }


def tremor_signal(times: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Tremor displacement (F,) in metres: a few 3.5-6.5 Hz sinusoids with random phases."""
    freqs = rng.uniform(3.5, 6.5, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    weights = rng.dirichlet(np.ones(3))
    waves = np.sin(2 * np.pi * freqs[:, None] * times[None] + phases[:, None])
    return amplitude * (weights[:, None] * waves).sum(0) / np.sqrt((weights**2).sum())


def take_layout(spec: TakeSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Rest, ball start, placed ball (3,) and target centre (2,) of one take."""
    jitter = rng.normal(0.0, 0.025, (3, 2))
    ball_xy = np.array(spec.scenario.ball_xy) + jitter[0]
    target_xy = np.array(spec.scenario.target_xy) + jitter[1]
    rest_xy = np.array([0.17, -0.22]) + jitter[2]
    level = spec.participant.level
    error = PLACEMENT_ERROR_M[level] * spec.participant.precision * rng.uniform(0.7, 1.3)
    # Left or right (within 35 degrees): the ego camera behind the ball sees a sideways error
    # best, and the sign is a coin flip, so the mean ball position does not give it away.
    angle = np.pi * rng.integers(0, 2) + rng.uniform(-0.6, 0.6)
    placed_xy = target_xy + error * np.array([np.cos(angle), np.sin(angle)])
    return {
        "rest": np.array([*rest_xy, HAND_RADIUS]),
        "ball": np.array([*ball_xy, BALL_RADIUS]),
        "placed": np.array([*placed_xy, BALL_RADIUS]),
        "target_xy": target_xy,
        "shoulder": np.array([0.19, -0.46, 0.33]),
    }


def take_scene(spec: TakeSpec, rng: np.random.Generator) -> Scene:
    """The 3-D performance: hand, ball, shoulder and head trajectories plus colours."""
    config = spec.config
    times = np.arange(config.frames) / config.fps
    lay = take_layout(spec, rng)
    timing = take_timing(spec, rng)
    grip = np.array([0.0, -0.035, 0.075])  # hand centre relative to the held ball
    hand, ball = base_trajectories(times, lay, timing, grip, spec.scenario.lift_m)
    head = head_trajectory(times, rng)
    # Gaze anticipates the goal: the ego camera centres on the target and follows the hand
    # only a little, so the placement stays in the close-up.
    look_at = 0.85 * np.array([*lay["target_xy"], 0.0]) + 0.15 * hand * [1, 1, 0]
    add_tremor(spec, times, timing, hand, ball, head, rng)
    shoulder = np.tile(lay["shoulder"], (config.frames, 1))
    elbow = elbow_trajectory(spec, shoulder, hand, head, rng)
    return Scene(
        hand, ball, shoulder, elbow, lay["target_xy"], head, look_at,
        take_colours(spec, rng), spec.participant, spec.scenario,
    )  # fmt: skip


def elbow_trajectory(
    spec: TakeSpec, shoulder: np.ndarray, hand: np.ndarray, head: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:  # fmt: skip
    """Elbow positions (F, 3): below the shoulder-hand midpoint, pulled up and back by the
    level's posture (novices hold the elbow high, a "chicken wing").

    The pull runs along the ego camera's line of sight through the elbow, so the forearm
    looks the same in the ego close-up; the exo cameras see the arm bend."""
    raise_m = ELBOW_RAISE_M[spec.participant.level] * spec.participant.posture
    raise_m *= rng.uniform(0.85, 1.15)
    rest = 0.5 * (shoulder + hand) + np.array([0.06, -0.03, -0.09])
    towards_eye = head - rest
    towards_eye /= np.linalg.norm(towards_eye, axis=1, keepdims=True)
    return rest + raise_m * towards_eye


def base_trajectories(
    times: np.ndarray, lay: dict, timing: dict, grip: np.ndarray, lift: float
) -> tuple[np.ndarray, np.ndarray]:
    """Hand and ball positions (F, 3) without tremor: reach, carry, withdraw."""
    grasp, release = lay["ball"] + grip, lay["placed"] + grip
    reach, _ = segment_path(times, timing["reach_at"], timing["reach"], lay["rest"], grasp, 0.05)
    carry, _ = segment_path(times, timing["carry_at"], timing["carry"], grasp, release, lift)
    back, _ = segment_path(times, timing["back_at"], timing["back"], release, lay["rest"], 0.06)
    phase = np.searchsorted([timing["carry_at"], timing["back_at"]], times, side="right")
    hand = np.where(phase[:, None] == 0, reach, np.where(phase[:, None] == 1, carry, back))
    ball = np.where(
        phase[:, None] == 0, lay["ball"], np.where(phase[:, None] == 1, carry - grip, lay["placed"])
    )
    return hand, ball


def add_tremor(
    spec: TakeSpec,
    times: np.ndarray,
    timing: dict,
    hand: np.ndarray,
    ball: np.ndarray,
    head: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Shake the hand (and the held ball) along the ego line of sight, in place."""
    amplitude = TREMOR_M[spec.participant.level] * spec.participant.tremor
    amplitude *= np.exp(rng.normal(0, 0.18))
    shake = tremor_signal(times, amplitude, rng)
    moving = (times > timing["reach_at"]) & (times < timing["back_at"] + timing["back"])
    shake *= np.where(moving, 1.0, 0.45)  # weaker while the hand rests on the table
    sight = hand - head
    sight /= np.linalg.norm(sight, axis=1, keepdims=True)
    held = (times >= timing["carry_at"]) & (times < timing["back_at"])
    hand += shake[:, None] * sight
    ball[held] += shake[held, None] * sight[held]


def head_trajectory(times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ego camera position (F, 3): the head sways slowly by a few centimetres."""
    freqs = rng.uniform(0.2, 0.6, 3)
    phases = rng.uniform(0, 2 * np.pi, 3)
    sway = 0.02 * np.sin(2 * np.pi * freqs * times[:, None] + phases)
    return HEAD_POS + rng.normal(0, 0.02, 3) + sway


def take_colours(spec: TakeSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Scenario and object colours with a little per-take variation (paint, lighting)."""
    sc = spec.scenario

    def vary(rgb: Sequence[float], spread: float) -> np.ndarray:
        return np.clip(np.array(rgb) * rng.uniform(1 - spread, 1 + spread, 3), 0, 1)

    return {
        "wall": vary(sc.wall, 0.08),
        "floor": vary(sc.floor, 0.08),
        "table": vary(sc.table, 0.06),
        "ball": vary(BALL_COLOUR, 0.04),
        "target": vary(TARGET_COLOUR, 0.03),
        "hand": vary(HAND_COLOUR, 0.04),
        "arm": vary(spec.participant.sleeve, 0.03),
        "torso": vary(spec.participant.sleeve, 0.05) * 0.8,
        "head": vary((0.75, 0.58, 0.48), 0.05),
    }


# ---------------------------------------------------------------------------------------------
# Cameras and rendering (vectorised over frames and pixels)


@dataclass
class Camera:
    """A pinhole camera per frame: `eye` (F, 3), `rot` (F, 3, 3) world->camera rows
    (right, down, forward), focal length `focal` in pixels, square `size`."""

    eye: np.ndarray
    rot: np.ndarray
    focal: float
    size: int

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixel coordinates u, v and depth, each (F,), of world points (F, 3)."""
        local = np.einsum("fij,fj->fi", self.rot, points - self.eye)
        depth = local[:, 2]
        safe = np.maximum(depth, 1e-3)
        half = self.size / 2
        return self.focal * local[:, 0] / safe + half, self.focal * local[:, 1] / safe + half, depth

    def ray_components(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World ray directions through pixel centres, one (F, H, W) array per axis.

        A ray is rot^T @ (gx, gy, 1) with gx varying along columns and gy along rows, so each
        component is a sum of a row term and a column term: no (F, H, W, 3) products."""
        grid = (np.arange(self.size, dtype=np.float32) + 0.5 - self.size / 2) / self.focal
        rot = self.rot.astype(np.float32)
        return tuple(
            rot[:, 0, k, None, None] * grid[None, None, :]
            + (rot[:, 1, k, None, None] * grid[None, :, None] + rot[:, 2, k, None, None])
            for k in range(3)
        )


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotations (F, 3, 3) whose rows are the camera's right, down and forward axes."""
    forward = target - eye
    forward /= np.linalg.norm(forward, axis=-1, keepdims=True)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=-2)


def view_camera(scene: Scene, view: str, config: SynthConfig, rng: np.random.Generator) -> Camera:
    """The ego camera follows the head; exo cameras are fixed, placed a little differently
    in every take."""
    n = config.frames
    if view == "ego":
        return Camera(
            scene.head, look_at(scene.head, scene.look_at), EGO_FOCAL * config.size, config.size
        )
    position, target, focal = EXO_RIGS[EXO_NAMES.index(view)]
    eye = np.array(position) + rng.normal(0, 0.04, 3)
    aim = np.array(target) + rng.normal(0, 0.02, 3)
    rot = look_at(eye[None], aim[None])
    return Camera(np.tile(eye, (n, 1)), np.repeat(rot, n, 0), focal * config.size, config.size)


def render_view(
    scene: Scene, view: str, config: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 of one view: background, bodies, lighting and sensor noise."""
    camera = view_camera(scene, view, config, rng)
    image = render_background(scene, camera, static=view != "ego")
    image = np.broadcast_to(image, (config.frames, *image.shape[1:])).copy()
    sprites = body_sprites(scene, camera, include_body=view != "ego")
    composite_sprites(image, sprites)
    return finish_image(image, rng)


def render_background(scene: Scene, camera: Camera, static: bool) -> np.ndarray:
    """Wall, floor, table with checker and target disc: (F or 1, H, W, 3) float32."""
    if static:
        camera = Camera(camera.eye[:1], camera.rot[:1], camera.focal, camera.size)
    ray_x, ray_y, ray_z = camera.ray_components()
    eye = camera.eye.astype(np.float32)[:, :, None, None]
    c = scene.colours
    down = ray_z < -1e-3
    # Where each downward ray meets the table plane z=0 (rays going up get a dummy hit).
    t = eye[:, 2] / -np.where(down, ray_z, -1.0)
    x = eye[:, 0] + t * ray_x
    y = eye[:, 1] + t * ray_y
    on_table = down & (np.abs(x) < 0.75) & (y > -0.38) & (y < 0.62)
    # A large checker on the table (integer parity is much cheaper than floor and mod).
    checker = ((x * 4 + 100).astype(np.int32) ^ (y * 4 + 100).astype(np.int32)) & 1
    table_light = checker.astype(np.float32) * np.float32(0.08) + np.float32(0.96)
    wall_light = np.clip(ray_z, -0.5, 0.5) * np.float32(0.3) + np.float32(0.85)
    target_x, target_y = (float(v) for v in scene.target_xy)  # Python floats keep float32
    dist = np.sqrt((x - target_x) ** 2 + (y - target_y) ** 2)
    disc = np.clip((TARGET_RADIUS - dist) / 0.006 + 0.5, 0, 1) * on_table
    # One channel at a time: numpy is slow when broadcasting over a last axis of 3.
    image = np.empty((*x.shape, 3), np.float32)
    for k in range(3):
        wall, floor, table, target = (
            float(c[name][k]) for name in ("wall", "floor", "table", "target")
        )
        channel = np.where(on_table, table * table_light, np.where(down, floor, wall * wall_light))
        channel += disc * (target - channel)
        image[..., k] = channel
    return image


@dataclass
class Sprite:
    """One body part drawn in a window that follows it, per frame.

    `top`/`left` (F,) place the window; painting is ``window * keep + add`` with `keep`
    (1 - coverage) and `add` (coverage times shaded colour), both (F, h, w, 3);
    `depth` (F,) gives the painter's order (far first)."""

    top: np.ndarray
    left: np.ndarray
    keep: np.ndarray
    add: np.ndarray
    depth: np.ndarray


def make_sprite(
    top: np.ndarray, left: np.ndarray, alpha: np.ndarray, shade: np.ndarray | float,
    colour: np.ndarray, depth: np.ndarray,
) -> Sprite:  # fmt: skip
    """A sprite from coverage and shading (F, h, w) and a colour (3,).

    Filled channel by channel: numpy is slow when broadcasting over a last axis of 3."""
    lit = (alpha * shade).astype(np.float32)
    add = np.empty((*alpha.shape, 3), np.float32)
    for k in range(3):
        np.multiply(lit, np.float32(colour[k]), out=add[..., k])
    keep = (1.0 - alpha).astype(np.float32)
    return Sprite(top, left, np.stack([keep, keep, keep], -1), add, depth)


def body_sprites(scene: Scene, camera: Camera, include_body: bool) -> list[Sprite]:
    """Hand, ball and forearm (plus upper arm, torso and head in exo views) as sprites."""
    c = scene.colours
    sprites = [
        sphere_sprite(camera, scene.hand, HAND_RADIUS, c["hand"]),
        sphere_sprite(camera, scene.ball, BALL_RADIUS, c["ball"]),
        limb_sprite(camera, scene.elbow, scene.hand, FOREARM_RADIUS, c["arm"], 0.01),
    ]
    if include_body:
        # The ego close-up on the target almost never reaches the upper arm, torso or head.
        sprites.append(
            limb_sprite(camera, scene.shoulder, scene.elbow, UPPER_ARM_RADIUS, c["arm"], 0.02)
        )
        n = len(scene.hand)
        torso = np.tile([0.03, -0.55, 0.18], (n, 1))
        sprites.append(sphere_sprite(camera, torso, 0.17, c["torso"]))
        sprites.append(sphere_sprite(camera, scene.head + [0, -0.05, 0.02], 0.1, c["head"]))
    return sprites


def window_axis(centre: np.ndarray, extent: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (F,) and pixel-centre coordinates (F, n) of a window of n >= `extent` pixels
    around each frame's centre along one image axis, kept inside the image.

    Shifting a window back inside the image still covers everything of the object that is
    in the image, as long as n <= size."""
    length = int(min(size, math.ceil(extent) + 2))
    start = np.clip(np.floor(centre - length / 2), 0, size - length).astype(np.intp)
    centres = start.astype(np.float32)[:, None] + (np.arange(length, dtype=np.float32) + 0.5)
    return start, centres


def blur_radius(u: np.ndarray, v: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, ...]:
    """Motion blur as an isotropic spread: a blob that moves fast looks bigger and fainter.

    Returns the blurred radius, the peak opacity and the image speed (px/frame), each (F,)."""
    speed = np.hypot(np.gradient(u), np.gradient(v))
    blurred = np.sqrt(radius**2 + (0.7 * speed) ** 2)
    return blurred, np.clip((radius / np.maximum(blurred, 1e-6)) ** 2, 0.3, 1.0), speed


def sphere_sprite(
    camera: Camera, centre: np.ndarray, radius_m: float, colour: np.ndarray
) -> Sprite:
    """A shaded, motion-blurred disc for a sphere of `radius_m` at `centre` (F, 3)."""
    u, v, depth = camera.project(centre)
    visible = depth > NEAR_M
    radius = np.minimum(camera.focal * radius_m / np.maximum(depth, NEAR_M), camera.size)
    blurred, peak, speed = blur_radius(u, v, radius)
    edge = (0.5 + 0.5 * speed).astype(np.float32)[:, None, None]
    extent = 2 * float((blurred + edge[:, 0, 0]).max())
    top, ys = window_axis(v, extent, camera.size)
    left, xs = window_axis(u, extent, camera.size)
    du = xs[:, None, :] - u.astype(np.float32)[:, None, None]
    dv = ys[:, :, None] - v.astype(np.float32)[:, None, None]
    dist = np.sqrt(du * du + dv * dv)
    r = blurred.astype(np.float32)[:, None, None]
    alpha = np.clip((r - dist) / edge + 0.5, 0, 1)
    alpha *= (peak * visible).astype(np.float32)[:, None, None]
    # Light from the upper left: a brighter rim on that side keeps spheres looking round.
    shade = 1.0 - 0.18 * (du + dv) / r
    return make_sprite(top, left, alpha, shade, colour, depth)


def limb_sprite(
    camera: Camera, start: np.ndarray, end: np.ndarray, radius_m: float, colour: np.ndarray,
    behind: float,
) -> Sprite:  # fmt: skip
    """A limb as a thick segment from `start` to `end` (F, 3), drawn `behind` metres behind
    its nearer end so that the hand stays on top where they overlap."""
    forward = camera.rot[:, 2]
    d_start = np.einsum("fi,fi->f", forward, start - camera.eye)
    d_end = np.einsum("fi,fi->f", forward, end - camera.eye)
    # Clip the start at the near plane (the ego camera sits above the shoulder).
    s = np.clip((NEAR_M + 0.05 - d_start) / np.maximum(d_end - d_start, 1e-6), 0, 1)[:, None]
    ua, va, da = camera.project(start + s * (end - start))
    ub, vb, db = camera.project(end)
    radius = np.minimum(camera.focal * radius_m / np.maximum(0.5 * (da + db), NEAR_M), 20)
    ua, va, ub, vb, radius = (a.astype(np.float32) for a in (ua, va, ub, vb, radius))
    top, ys = window_axis((va + vb) / 2, float((abs(va - vb) + 2 * radius).max()) + 2, camera.size)
    left, xs = window_axis((ua + ub) / 2, float((abs(ua - ub) + 2 * radius).max()) + 2, camera.size)
    eu, ev = (ub - ua)[:, None, None], (vb - va)[:, None, None]
    pu, pv = xs[:, None, :] - ua[:, None, None], ys[:, :, None] - va[:, None, None]
    t = np.clip((pu * eu + pv * ev) / np.maximum(eu * eu + ev * ev, 1e-6), 0, 1)
    dist = np.hypot(pu - t * eu, pv - t * ev)
    alpha = np.clip(radius[:, None, None] - dist + 0.5, 0, 1) * (db > NEAR_M)[:, None, None]
    return make_sprite(top, left, alpha, 0.9, colour, np.maximum(da, db) + behind)


def composite_sprites(image: np.ndarray, sprites: list[Sprite]) -> None:
    """Paint sprites far to near, per frame, into `image` (F, H, W, 3) in place.

    A Python loop over frames with plain slices: the windows are small, and slicing is far
    cheaper than fancy-index gathers of the same pixels."""
    order = np.argsort(-np.stack([s.depth for s in sprites]), axis=0, kind="stable")  # (L, F)
    for frame in range(image.shape[0]):
        for index in order[:, frame]:
            sprite = sprites[index]
            height, width = sprite.add.shape[1:3]
            top, left = sprite.top[frame], sprite.left[frame]
            region = image[frame, top : top + height, left : left + width]
            region *= sprite.keep[frame]
            region += sprite.add[frame]


NOISE_BANK_SIZE = 1 << 22
_noise_bank: list[np.ndarray] = []


def noise_bank() -> np.ndarray:
    """4M standard-normal float32 values from a fixed seed, made once per process.

    Slicing it at a random offset is much cheaper than drawing fresh noise per video and is
    just as deterministic."""
    if not _noise_bank:
        _noise_bank.append(
            np.random.default_rng(20240).standard_normal(NOISE_BANK_SIZE, np.float32)
        )
    return _noise_bank[0]


def sensor_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Standard-normal noise of `shape` (float32), from the bank when it is large enough."""
    count = math.prod(shape)
    if count > NOISE_BANK_SIZE // 2:
        return rng.standard_normal(shape, np.float32)
    start = int(rng.integers(0, NOISE_BANK_SIZE - count))
    return noise_bank()[start : start + count].reshape(shape)


def finish_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, a lighting gradient, flicker and sensor noise, in place on `image`
    (F, H, W, 3) float in [0, 1]; returns uint8 of the same shape."""
    n, size = image.shape[:2]
    ramp = np.arange(size, dtype=np.float32) / size - 0.5
    tilt = rng.uniform(-0.15, 0.15, 2).astype(np.float32)
    gradient = 1.0 + tilt[0] * ramp[None, :] + tilt[1] * ramp[:, None]
    gain = (rng.uniform(0.94, 1.06) * rng.uniform(0.97, 1.03, 3) * 255).astype(np.float32)
    flicker = 1.0 + 0.03 * np.sin(np.arange(n) * rng.uniform(0.2, 1.0))
    image *= gradient[..., None] * gain
    image *= flicker.astype(np.float32)[:, None, None, None]
    sigma = np.float32(255 * rng.uniform(0.008, 0.02))
    image += sensor_noise(image.shape, rng) * sigma
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Encoding and decoding


def encode_video(path: Path, frames: np.ndarray, fps: int, codec: str) -> None:
    """Write frames (F, H, W, 3) uint8 RGB as a yuv420p mp4; single-threaded, so the bytes
    depend only on the frames."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18", "tune": "zerolatency"}
        else:
            stream.bit_rate = 2_000_000
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def decode_video(path: Path) -> np.ndarray:
    """All frames of a video as (F, H, W, 3) uint8 RGB, decoded with PyAV."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def read_manifest(manifest: Path) -> list[dict]:
    """The records of a manifest.jsonl written by `synthesize`."""
    lines = Path(manifest).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ---------------------------------------------------------------------------------------------
# Proxy check: do the cues survive coarse per-frame statistics, and does fusing views help?


def decode_luma(path: Path) -> np.ndarray:
    """The Y (brightness) plane of every frame, (F, H, W) uint8; skips RGB conversion."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="yuv420p") for frame in container.decode(video=0)]
    height = frames[0].shape[0] * 2 // 3
    return np.stack([f[:height] for f in frames])


def thumbnail_features(luma: np.ndarray, grid: int = PROXY_GRID) -> np.ndarray:
    """Coarse statistics of one video's brightness (F, H, W) -> feature vector (2 g^2 + 6,).

    Per frame a g x g thumbnail (block means); over time its mean, the std of its temporal
    differences, and the motion energy (mean absolute difference) in six time bins."""
    n, h, w = luma.shape
    bh, bw = h // grid, w // grid
    blocks = luma[:, : bh * grid, : bw * grid].astype(np.float32) / 255.0
    thumbs = blocks.reshape(n, grid, bh, grid, bw).mean((2, 4)).reshape(n, -1)
    diffs = np.diff(thumbs, axis=0)
    energy = np.abs(diffs).mean(1)
    bins = [chunk.mean() for chunk in np.array_split(energy, 6)]
    return np.concatenate([thumbs.mean(0), diffs.std(0), bins])


def fit_softmax(
    x: np.ndarray, y: np.ndarray, classes: int, l2: float, steps: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent on standardised
    features x (N, D) and labels y (N,); returns weights (D, C) and bias (C,)."""
    weights = np.zeros((x.shape[1], classes))
    bias = np.zeros(classes)
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        logits = x @ weights + bias
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        grad = (prob - onehot) / len(x)
        weights -= 0.5 * (x.T @ grad + l2 * weights)
        bias -= 0.5 * grad.sum(0)
    return weights, bias


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, l2: float):
    """Standardise on train, fit softmax regression, predict test labels (N_test,)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    weights, bias = fit_softmax((train_x - mean) / std, train_y, len(LABELS), l2)
    return (((test_x - mean) / std) @ weights + bias).argmax(1)


def choose_l2(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 4) -> float:
    """L2 strength by cross-validation on train only, folds grouped by participant."""
    people = np.random.default_rng(0).permutation(np.unique(groups))
    fold_of = {p: i % folds for i, p in enumerate(people)}
    fold = np.array([fold_of[g] for g in groups])
    scores = []
    for l2 in PROXY_L2_GRID:
        hits = 0
        for k in range(folds):
            out = fold == k
            hits += (fit_predict(x[~out], y[~out], x[out], l2) == y[out]).sum()
        scores.append(hits)
    return PROXY_L2_GRID[int(np.argmax(scores))]


def proxy_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray, groups: np.ndarray) -> float:
    """Top-1 on the non-train rows of a softmax regression trained on the train rows."""
    l2 = choose_l2(x[train], y[train], groups[train])
    return float((fit_predict(x[train], y[train], x[~train], l2) == y[~train]).mean())


def proxy_view_features(out_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Thumbnail features per view (takes, D) and the take table (label index, split,
    participant), read from a dataset written by `synthesize`."""
    records = read_manifest(Path(out_dir) / MANIFEST_NAME)
    features = {
        view: np.stack(
            [thumbnail_features(decode_luma(Path(out_dir) / r["videos"][view])) for r in records]
        )
        for view in records[0]["videos"]
    }
    table = {
        "label": np.array([LABELS.index(r["label"]) for r in records]),
        "train": np.array([r["split"] == "train" for r in records]),
        "participant": np.array([r["participant"] for r in records]),
    }
    return features, table


def proxy_view_accuracy(out_dir: Path) -> dict[str, float]:
    """Top-1 on val+test of a linear model on coarse per-frame brightness statistics, per view
    and with all views concatenated ("all"); trained on the train split.

    A cheap stand-in for "do the cues survive a tiny backbone, and does fusion help"."""
    features, table = proxy_view_features(out_dir)
    label, train, people = table["label"], table["train"], table["participant"]
    result = {view: proxy_accuracy(x, label, train, people) for view, x in features.items()}
    joined = np.concatenate(list(features.values()), axis=1)
    result["all"] = proxy_accuracy(joined, label, train, people)
    return result


__all__ = [
    "INFO_NAME",
    "MANIFEST_NAME",
    "SCENARIOS",
    "SPLITS",
    "SynthConfig",
    "decode_luma",
    "decode_video",
    "proxy_view_accuracy",
    "read_manifest",
    "synthesize",
    "thumbnail_features",
]
