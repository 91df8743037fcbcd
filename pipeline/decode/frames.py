"""From a decoded RGB frame to a clip frame: the quarter-turns that make it upright, the
resize to the display aspect and the centre crop of ``FrameGeometry``, done on each frame as
soon as it is decoded so that memory holds the output clips only. Every decoder ends here, so
their frames differ only by what the decoders themselves produce (docs/decoding.md,
"Orientation" to "Geometry")."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from skill.pipeline.decode.geometry import FrameGeometry

# Side of the grey thumbnail of frame 0 used to check a decoder's 180-degree rotation.
THUMB_SIDE = 32


def to_clip_frame(
    rgb: np.ndarray, quarter_turns: int, size: tuple[int, int], geometry: FrameGeometry
) -> np.ndarray:
    """Rotate counter-clockwise by ``quarter_turns``, resize to ``size`` (w, h), centre crop.

    ``rgb``: (H, W, 3) uint8 coded frame. Returns (crop_height, crop_width, 3) uint8.
    """
    from PIL import Image

    if quarter_turns % 4:
        rgb = np.rot90(rgb, quarter_turns)
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if image.size != size:
        image = image.resize(size, resample=_pil_filter(geometry.resample))
    return centre_crop(np.asarray(image), geometry.crop_height, geometry.crop_width)


def _pil_filter(name: str) -> Any:
    from PIL import Image

    return getattr(Image.Resampling, name.upper())


def centre_crop(image: np.ndarray, crop_height: int, crop_width: int) -> np.ndarray:
    """Centre crop as transformers' ``center_crop``: zero padding when the image is smaller.

    ``image``: (H, W, 3). Returns (crop_height, crop_width, 3).
    """
    height, width = image.shape[:2]
    if height < crop_height or width < crop_width:
        padded = np.zeros((max(height, crop_height), max(width, crop_width), 3), image.dtype)
        top_pad = math.ceil((padded.shape[0] - height) / 2)
        left_pad = math.ceil((padded.shape[1] - width) / 2)
        padded[top_pad : top_pad + height, left_pad : left_pad + width] = image
        image, height, width = padded, padded.shape[0], padded.shape[1]
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    return np.ascontiguousarray(image[top : top + crop_height, left : left + crop_width])


def grey_thumbnail(rgb: np.ndarray) -> np.ndarray:
    """(THUMB_SIDE, THUMB_SIDE) float32 grey version of an (H, W, 3) frame."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb)).convert("L")
    return np.asarray(image.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR), np.float32)
