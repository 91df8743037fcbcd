"""The frame geometry: how every decoded frame is resized and centre-cropped to a backbone's
input. Plain data that imports nothing heavy, so that a backbone can say what it needs without
loading a decoder (docs/decoding.md, "Geometry")."""

from __future__ import annotations

from dataclasses import dataclass

RESAMPLE_FILTERS: tuple[str, ...] = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


@dataclass(frozen=True)
class FrameGeometry:
    """Resize-then-centre-crop applied to every frame."""

    shortest_edge: int
    """Short side of the display frame after resizing, in pixels."""
    crop_height: int
    """Height of the centre crop, in pixels."""
    crop_width: int
    """Width of the centre crop, in pixels."""
    resample: str = "bilinear"
    """PIL filter: nearest, bilinear, bicubic, lanczos, box or hamming."""

    def __post_init__(self) -> None:
        for name in ("shortest_edge", "crop_height", "crop_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"frame geometry {name} must be an integer >= 1, got {value!r}")
        if self.resample not in RESAMPLE_FILTERS:
            raise ValueError(f"resample {self.resample!r} is not one of {RESAMPLE_FILTERS}")

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after resizing a ``width x height`` display frame."""
        short, long = min(width, height), max(width, height)
        new_long = max(1, int(self.shortest_edge * long / short))
        if width <= height:
            return self.shortest_edge, new_long
        return new_long, self.shortest_edge
