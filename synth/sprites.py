"""Bodies as sprites: shaded, motion-blurred discs and limbs in small windows that follow
them, painted far to near (vectorised over frames and pixels)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from skill.synth.camera import Camera
from skill.synth.motion import Scene
from skill.synth.world import BALL_RADIUS, FOREARM_RADIUS, HAND_RADIUS, NEAR_M, UPPER_ARM_RADIUS


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
