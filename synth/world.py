"""The world every take is filmed in: the per-level cues, the scene's sizes, the scenarios and
their colours, and where the cameras stand. Fixed data, no randomness."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


# ---- the order kind (docs/synth.md): a procedure of distinct steps, levels differ in order
ORDER_LEVELS: tuple[int, ...] = (0, 3)
"""Levels of an order dataset (indices into the labels): Novice and Late Expert."""


@dataclass(frozen=True)
class StepDrawing:
    """How one step of the procedure looks: the same at every level and in every slot."""

    colour: tuple[float, float, float]
    """RGB colour of the step's object (saturated: a tiny backbone's pooled token sees it)."""
    shape: str
    """ball (one sphere), bar (a thick rod) or pair (two spheres)."""
    size_m: float
    """Radius of a sphere or of the rod, in metres."""
    motion: str
    """How the object moves during the step (`synth.procedure.step_path`)."""


# The canonical order. Each step differs from every other in colour, and most in shape and
# motion too, so that any frame tells which step it shows.
STEPS: tuple[StepDrawing, ...] = (
    StepDrawing((0.9, 0.12, 0.1), "ball", 0.12, "circle"),
    StepDrawing((1.0, 0.55, 0.05), "bar", 0.05, "spin"),
    StepDrawing((0.95, 0.9, 0.1), "pair", 0.09, "sweep"),
    StepDrawing((0.15, 0.8, 0.2), "ball", 0.12, "hop"),
    StepDrawing((0.1, 0.85, 0.9), "bar", 0.05, "nod"),
    StepDrawing((0.15, 0.25, 0.95), "ball", 0.12, "sweep"),
    StepDrawing((0.9, 0.2, 0.85), "pair", 0.09, "circle"),
    StepDrawing((0.95, 0.95, 0.95), "bar", 0.05, "spin"),
)
WORK_XY = (0.0, 0.05)
"""Centre of the work area on the table, where every step happens."""
MAT_COLOUR = (0.32, 0.32, 0.34)
"""The grey mat (the target disc of the cues kind) under the work area."""
