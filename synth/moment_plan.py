"""The moments kind's plan of a take (synth/moments.py): which drawing each slot shows,
from the seed only. Apart from moments.py, which draws the take, so that plan.py can use it."""

from __future__ import annotations

import numpy as np

from skill.synth.config import MOMENT_SLOT_FRAMES, SynthConfig
from skill.synth.world import STEPS

MOMENT_FRAMES = MOMENT_SLOT_FRAMES
"""Frames of every slot."""
GOOD_STEP, FAULT_STEP = 0, 1
"""The drawings of a good and of a faulty execution; the others are fillers."""
MOST_MOMENTS = 3
MOMENT_GAP_SLOTS = 3
"""Marked moments lie at least this many slots apart (farther than the decoding's radius)."""


def moment_slots(config: SynthConfig, rng: np.random.Generator) -> tuple[int, ...]:
    """The drawing of each slot of one take: fillers, and 1 to `MOST_MOMENTS` marked moments
    (good or faulty, at random) at slots `MOMENT_GAP_SLOTS` apart or more."""
    slots = config.frames // MOMENT_FRAMES
    order = [int(step) for step in rng.integers(2, len(STEPS), slots)]
    wanted = int(rng.integers(1, MOST_MOMENTS + 1))
    chosen: list[int] = []
    for slot in rng.permutation(slots):
        if len(chosen) < wanted and all(abs(slot - c) >= MOMENT_GAP_SLOTS for c in chosen):
            chosen.append(int(slot))
    for slot in chosen:
        order[slot] = int(rng.choice([GOOD_STEP, FAULT_STEP]))
    return tuple(order)
