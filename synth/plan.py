"""Planning, in the parent process and from the seed only: participants (level, split, personal
style) and which participant performs each take in which scenario."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from skill.synth.config import SPLITS, SynthConfig
from skill.synth.moment_plan import moment_slots
from skill.synth.world import ORDER_LEVELS, SCENARIOS, SLEEVE_COLOUR, Scenario
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
    order: tuple[int, ...] = ()
    """Order kind: the step done in each slot of the take (canonical: 0, 1, ...); moments
    kind: the drawing of each slot (synth/moments.py); empty for the cues kind."""
    latent: float | None = None
    """The take's continuous skill in levels (``level <= latent < level + 1``: its level is
    the latent binned), which the cues follow; None for a classification dataset, whose cues
    are its level's."""


def dataset_levels(config: SynthConfig) -> tuple[int, ...]:
    """The levels (indices into LABELS) a dataset of this kind has takes of."""
    return ORDER_LEVELS if config.kind == "order" else tuple(range(len(LABELS)))


def plan_participants(config: SynthConfig, rng: np.random.Generator) -> list[Participant]:
    """Participants with one level each, splits stratified by level (about 60/20/20)."""
    levels = dataset_levels(config)
    n_used = min(config.participants, config.takes - config.takes % 4)
    per_level = n_used // len(levels)
    n_held = max(1, round(0.2 * per_level))
    roles = []
    for level in levels:
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
    specs = [
        TakeSpec(i, f"t{i + 1:0{width}d}", people[owners[i]], SCENARIOS[scenarios[i]], config)
        for i in range(config.takes)
    ]
    if config.kind == "order":  # a stream of its own: the cues kind's draws stay as they were
        order_rng = np.random.default_rng([config.seed, 2])
        places = balanced_scenarios(specs, order_rng)
        specs = [
            replace(
                s,
                scenario=SCENARIOS[place],
                order=step_order(s.participant.level, config, order_rng),
            )
            for s, place in zip(specs, places, strict=True)
        ]
    if config.kind == "moments":  # a stream of its own, as the order kind's
        moments_rng = np.random.default_rng([config.seed, 6])
        specs = [replace(s, order=moment_slots(config, moments_rng)) for s in specs]
    if config.latent:  # a stream of its own: the classification draws stay as they were
        latents = take_latents(specs, np.random.default_rng([config.seed, 3]))
        specs = [replace(s, latent=latent) for s, latent in zip(specs, latents, strict=True)]
    return specs


PERSON_MARGIN = 0.1
"""A participant's latent skill lies this far inside their level's bin at least."""
TAKE_SPREAD = 0.15
"""Standard deviation of a take's latent skill around its participant's, in levels."""
BIN_EDGE = 0.02
"""A take's latent skill stays this far inside its level's bin (its level is the bin)."""


def take_latents(specs: list[TakeSpec], rng: np.random.Generator) -> list[float]:
    """Each take's latent skill: its participant's (uniform inside the participant's level,
    drawn once per participant) plus a per-take variation, kept inside the level's bin."""
    people = sorted({s.participant.pid: s.participant for s in specs}.items())
    person = {pid: p.level + rng.uniform(PERSON_MARGIN, 1 - PERSON_MARGIN) for pid, p in people}
    out = []
    for spec in specs:
        level = spec.participant.level
        latent = person[spec.participant.pid] + rng.normal(0.0, TAKE_SPREAD)
        out.append(round(float(np.clip(latent, level + BIN_EDGE, level + 1 - BIN_EDGE)), 4))
    return out


def balanced_scenarios(specs: list[TakeSpec], rng: np.random.Generator) -> np.ndarray:
    """A scenario index per take, as evenly spread over the takes of each split and level as
    they divide, in a random order: every level of a split then has the same surroundings,
    so that the surroundings cannot stand in for the level by chance (the order kind's levels
    must differ in the order of the steps alone)."""
    places = np.zeros(len(specs), np.int64)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((spec.participant.split, spec.participant.level), []).append(i)
    for key in sorted(groups):
        members = groups[key]
        places[members] = rng.permutation(np.arange(len(members)) % len(SCENARIOS))
    return places


def step_order(level: int, config: SynthConfig, rng: np.random.Generator) -> tuple[int, ...]:
    """The step done in each slot: the canonical order for an expert; a Novice swaps
    ``config.swaps`` disjoint pairs of steps, so exactly 2 x swaps steps are out of place.

    The same draws are made at every level, so that everything else about a take is drawn
    alike whatever its level."""
    slots = rng.permutation(config.procedure_steps)[: 2 * config.swaps]
    order = list(range(config.procedure_steps))
    if level != max(ORDER_LEVELS):
        for a, b in slots.reshape(-1, 2):
            order[a], order[b] = order[b], order[a]
    return tuple(order)
