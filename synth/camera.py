"""Cameras: pinhole cameras per frame, the ego camera on the head, exo cameras on their rigs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skill.synth.config import EXO_NAMES, SynthConfig
from skill.synth.motion import Scene
from skill.synth.world import EGO_FOCAL, EXO_RIGS


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
