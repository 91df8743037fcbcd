"""Motion: one 3-D performance per take (reach, carry, withdraw), shared by all cameras, with
the level's cues (posture, tremor, placement error, speed) and per-take colours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skill.synth.plan import Participant, TakeSpec
from skill.synth.world import (
    BALL_COLOUR,
    BALL_RADIUS,
    ELBOW_RAISE_M,
    HAND_COLOUR,
    HAND_RADIUS,
    HEAD_POS,
    PLACEMENT_ERROR_M,
    SPEED,
    TARGET_COLOUR,
    TREMOR_M,
    Scenario,
)


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


def cue(table: tuple[float, ...], spec: TakeSpec) -> float:
    """The take's value of a per-level cue: its level's, or, with a latent skill, the table
    interpolated between the levels' centres (a level's value at ``level + 0.5``)."""
    if spec.latent is None:
        return table[spec.participant.level]
    return float(np.interp(spec.latent - 0.5, np.arange(len(table)), table))


def take_timing(spec: TakeSpec, rng: np.random.Generator) -> dict[str, float]:
    """Start and duration (s) of reach, carry and withdraw; faster for higher levels."""
    speed = cue(SPEED, spec) * spec.participant.speed * np.exp(rng.normal(0, 0.06))
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
    error = cue(PLACEMENT_ERROR_M, spec) * spec.participant.precision * rng.uniform(0.7, 1.3)
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
    raise_m = cue(ELBOW_RAISE_M, spec) * spec.participant.posture
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
    amplitude = cue(TREMOR_M, spec) * spec.participant.tremor
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
