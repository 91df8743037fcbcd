"""Rendering one view: the background (wall, floor, table, target disc), the bodies, then
exposure, lighting and sensor noise (vectorised over frames and pixels)."""

from __future__ import annotations

import math

import numpy as np

from skill.synth.camera import Camera, view_camera
from skill.synth.config import SynthConfig
from skill.synth.motion import Scene
from skill.synth.sprites import body_sprites, composite_sprites
from skill.synth.world import TARGET_RADIUS


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


def finish_image(
    image: np.ndarray, rng: np.random.Generator, flicker_phase: float = 0.0
) -> np.ndarray:
    """Exposure, a lighting gradient, flicker (starting at `flicker_phase` radians) and sensor
    noise, in place on `image` (F, H, W, 3) float in [0, 1]; returns uint8 of the same shape."""
    n, size = image.shape[:2]
    ramp = np.arange(size, dtype=np.float32) / size - 0.5
    tilt = rng.uniform(-0.15, 0.15, 2).astype(np.float32)
    gradient = 1.0 + tilt[0] * ramp[None, :] + tilt[1] * ramp[:, None]
    gain = (rng.uniform(0.94, 1.06) * rng.uniform(0.97, 1.03, 3) * 255).astype(np.float32)
    flicker = 1.0 + 0.03 * np.sin(np.arange(n) * rng.uniform(0.2, 1.0) + flicker_phase)
    image *= gradient[..., None] * gain
    image *= flicker.astype(np.float32)[:, None, None, None]
    sigma = np.float32(255 * rng.uniform(0.008, 0.02))
    image += sensor_noise(image.shape, rng) * sigma
    return np.clip(image, 0, 255, out=image).astype(np.uint8)
