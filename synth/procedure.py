"""The order kind: a procedure of distinct steps, filmed by the cameras of the cues kind.

Each step is one drawing (``world.STEPS``: a coloured ball, rod or pair of balls moving its
own way over a mat on the table) whose look is drawn per take and per step, never per slot or
per level: a step looks the same wherever it falls in the take. Only the order of the steps
(``TakeSpec.order``) depends on the level. Every slot lasts the same number of frames, and a
step's path and motion blur are computed over its own frames only, so nothing in a slot tells
where in the take it lies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skill.synth.camera import Camera, view_camera
from skill.synth.config import SynthConfig
from skill.synth.motion import head_trajectory
from skill.synth.plan import TakeSpec
from skill.synth.render import finish_image, render_background
from skill.synth.sprites import Sprite, composite_sprites, limb_sprite, sphere_sprite
from skill.synth.world import MAT_COLOUR, STEPS, WORK_XY, StepDrawing

ROD_HALF_M = 0.16  # half the length of a rod
PAIR_GAP_M = 0.12  # distance of each ball of a pair from their centre


@dataclass
class Procedure:
    """One take of the order kind. ``head``, ``look_at``, ``colours`` and ``target_xy`` have
    the names and meaning of `motion.Scene`'s, which the cameras and the background read."""

    order: tuple[int, ...]
    """The step done in each slot."""
    step_frames: int
    """Frames of every slot."""
    paths: list[list[np.ndarray]]
    """Per step (canonical index): its spheres' centres, or its rod's two ends, each (L, 3)
    over the step's L frames."""
    step_colours: list[np.ndarray]
    """Per step: the colour of its object (3,)."""
    head: np.ndarray
    look_at: np.ndarray
    colours: dict[str, np.ndarray]
    target_xy: np.ndarray


def procedure_scene(spec: TakeSpec, rng: np.random.Generator) -> Procedure:
    """One take's procedure: where the work happens, every step's path and colour (drawn in
    the canonical step order, whatever the take's order), the head and the surroundings."""
    config = spec.config
    step_frames = config.frames // config.procedure_steps
    centre = np.array(WORK_XY) + rng.normal(0.0, 0.02, 2)
    local = np.arange(step_frames) / step_frames  # fraction of the step, per frame
    drawings = STEPS[: config.procedure_steps]
    paths = [step_path(drawing, centre, local, rng) for drawing in drawings]
    step_colours = [vary(drawing.colour, 0.04, rng) for drawing in drawings]
    head = head_trajectory(np.arange(config.frames) / config.fps, rng)
    look_at = np.tile([*centre, 0.05], (config.frames, 1))
    sc = spec.scenario
    colours = {
        "wall": vary(sc.wall, 0.08, rng),
        "floor": vary(sc.floor, 0.08, rng),
        "table": vary(sc.table, 0.06, rng),
        "target": vary(MAT_COLOUR, 0.05, rng),
    }
    return Procedure(spec.order, step_frames, paths, step_colours, head, look_at, colours, centre)


def vary(rgb: Sequence[float], spread: float, rng: np.random.Generator) -> np.ndarray:
    """A colour with a little per-take variation (paint, lighting)."""
    return np.clip(np.array(rgb) * rng.uniform(1 - spread, 1 + spread, 3), 0, 1)


def step_path(
    drawing: StepDrawing, centre: np.ndarray, local: np.ndarray, rng: np.random.Generator
) -> list[np.ndarray]:
    """The positions (L, 3) of one step's spheres (ball, pair) or rod ends (bar) over its
    frames; `local` (L,) is each frame's fraction of the step. One cycle of the motion per
    step, from a random phase, direction and orientation."""
    phase, angle = rng.uniform(0.0, 1.0), rng.uniform(-np.pi, np.pi)
    turn = 2 * np.pi * (rng.choice([-1.0, 1.0]) * local + phase)
    base = np.array([*centre, drawing.size_m])
    offset = np.zeros((len(local), 3))
    if drawing.motion == "circle":
        offset[:, 0], offset[:, 1] = 0.09 * np.cos(turn), 0.09 * np.sin(turn)
    elif drawing.motion == "sweep":
        offset[:, 0], offset[:, 1] = (
            0.12 * np.sin(turn) * np.cos(angle),
            0.12 * np.sin(turn) * np.sin(angle),
        )
    elif drawing.motion == "hop":
        offset[:, 2] = 0.12 * np.abs(np.sin(turn))
    heading = angle + (turn if drawing.motion == "spin" else 0.0)
    tilt = 0.7 * np.sin(turn) if drawing.motion == "nod" else np.zeros(len(local))
    axis = np.stack(
        [np.cos(heading) * np.cos(tilt), np.sin(heading) * np.cos(tilt), np.sin(tilt)], -1
    )
    middle = base + offset
    if drawing.shape == "ball":
        return [middle]
    if drawing.shape == "pair":
        return [middle - PAIR_GAP_M * axis, middle + PAIR_GAP_M * axis]
    middle[:, 2] += ROD_HALF_M * np.abs(np.sin(tilt))  # a tilted rod stays above the table
    return [middle - ROD_HALF_M * axis, middle + ROD_HALF_M * axis]


def render_procedure_view(
    proc: Procedure, view: str, config: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 of one view: the drawn procedure, then lighting and sensor
    noise (the flicker from a random phase, so that it does not mark the take's start)."""
    image = draw_procedure_view(proc, view, config, rng)
    return finish_image(image, rng, flicker_phase=rng.uniform(0.0, 2 * np.pi))


def draw_procedure_view(
    proc: Procedure, view: str, config: SynthConfig, rng: np.random.Generator
) -> np.ndarray:
    """Frames (F, H, W, 3) float32 in [0, 1] of one view before lighting and noise: the
    background, then in each slot its step, drawn over that slot's frames alone."""
    camera = view_camera(proc, view, config, rng)  # type: ignore[arg-type]
    image = render_background(proc, camera, static=view != "ego")  # type: ignore[arg-type]
    image = np.broadcast_to(image, (config.frames, *image.shape[1:])).copy()
    length = proc.step_frames
    for slot, step in enumerate(proc.order):
        frames = slice(slot * length, (slot + 1) * length)
        local = Camera(camera.eye[frames], camera.rot[frames], camera.focal, camera.size)
        composite_sprites(image[frames], step_sprites(proc, step, local))
    return image


def step_sprites(proc: Procedure, step: int, camera: Camera) -> list[Sprite]:
    """The sprites of one step over its slot's frames, seen by `camera` (those frames)."""
    drawing, colour, path = STEPS[step], proc.step_colours[step], proc.paths[step]
    if drawing.shape == "bar":
        return [limb_sprite(camera, path[0], path[1], drawing.size_m, colour, 0.0)]
    return [sphere_sprite(camera, centre, drawing.size_m, colour) for centre in path]
