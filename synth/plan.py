"""Planning, in the parent process and from the seed only: participants (level, split, personal
style) and which participant performs each take in which scenario."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from skill.synth.config import SPLITS, SynthConfig
from skill.synth.world import SCENARIOS, SLEEVE_COLOUR, Scenario
from skill.tasks.classification import EGOEXO4D_LEVELS as LABELS


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
