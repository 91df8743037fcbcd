"""Preprocessing: what turns a decoded uint8 RGB frame into model input.

Read from a checkpoint's preprocessor_config.json (VideoMAE/CLIP image processor style, old
or new), never guessed: mean, std, rescale factor, resize, centre crop and resample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skill.pipeline.backbones.registry import BackboneError, Family

# PIL resampling codes, as image processors store them in preprocessor_config.json.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass(frozen=True)
class Preprocessing:
    """What turns a decoded uint8 RGB frame into model input, read from preprocessor_config.json."""

    image_mean: tuple[float, float, float]
    """Per-channel mean subtracted after rescaling (RGB)."""
    image_std: tuple[float, float, float]
    """Per-channel std divided by after subtracting the mean (RGB)."""
    rescale_factor: float
    """uint8 values are multiplied by this first (1/255 for every known checkpoint)."""
    shortest_edge: int
    """Short side after the aspect-preserving resize (done by decode workers)."""
    crop_height: int
    """Centre-crop height = model input height."""
    crop_width: int
    """Centre-crop width = model input width."""
    resample: str
    """Interpolation of the resize (PIL name)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for provenance."""
        return {
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "rescale_factor": self.rescale_factor,
            "shortest_edge": self.shortest_edge,
            "crop_height": self.crop_height,
            "crop_width": self.crop_width,
            "resample": self.resample,
        }


def parse_preprocessor_config(raw: dict[str, Any], *, family: Family, where: str) -> Preprocessing:
    """Read an image processor's config (VideoMAE/CLIP style, old or new) into Preprocessing.

    ``size`` may be an int or ``{"shortest_edge": s}`` (aspect-preserving resize) or
    ``{"height": h, "width": w}``; the last (SigLIP's fixed-size resize, with no crop) is
    approximated by resizing the short side to ``min(h, w)`` and centre-cropping ``h x w``,
    which keeps the aspect ratio where the processor would squash (identical for square
    frames; a non-square frame loses its edges instead of being squashed). DINOv2's
    ``{"shortest_edge": 256}`` then ``crop_size`` 224 is read as it is.
    ``family`` (the checkpoint's registered family) gives the resample used when ``resample`` is
    absent, that family's processor default, and two more of its processor's rules: a default
    crop when ``crop_size`` is absent (``Family.default_crop_size``; VideoMAE's 224 for the
    old feature-extractor configs that name only ``size``), and a resize derived from the crop
    (``Family.resize_from_crop``; VJEPA2VideoProcessor's ``int(crop * 256 / 224)``, which
    ignores ``size``). ``where`` names the file in error messages.
    """
    do_normalize = raw.get("do_normalize", True)
    mean = _channel_triplet(raw, "image_mean", where) if do_normalize else (0.0, 0.0, 0.0)
    std = _channel_triplet(raw, "image_std", where) if do_normalize else (1.0, 1.0, 1.0)
    if any(s <= 0 for s in std):
        raise BackboneError(f"{where}: image_std must be positive, got {list(std)}")
    rescale = float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else 1.0
    if family.resize_from_crop is not None:
        # The processor derives the resize from the crop and ignores ``size`` (VJEPA2's).
        if raw.get("crop_size") is None:
            raise BackboneError(
                f"{where}: crop_size is missing ({family.name}'s processor resizes from it)"
            )
        crop_height, crop_width = _crop_size(raw, None, where)
        shortest_edge = int(crop_height * family.resize_from_crop)
    else:
        shortest_edge, exact_size = _resize_target(raw, where)
        if raw.get("crop_size") is None and family.default_crop_size is not None:
            raw = {**raw, "crop_size": family.default_crop_size}  # the processor's class default
        crop_height, crop_width = _crop_size(raw, exact_size, where)
    if max(crop_height, crop_width) > shortest_edge:
        raise BackboneError(
            f"{where}: crop {crop_height}x{crop_width} is larger than the resized short side "
            f"{shortest_edge}"
        )
    return Preprocessing(
        image_mean=mean,
        image_std=std,
        rescale_factor=rescale,
        shortest_edge=shortest_edge,
        crop_height=crop_height,
        crop_width=crop_width,
        resample=_resample_name(raw.get("resample"), family, where),
    )


def _channel_triplet(raw: dict[str, Any], key: str, where: str) -> tuple[float, float, float]:
    if key not in raw:
        raise BackboneError(f"{where}: {key} is missing (it is never guessed)")
    value = raw[key]
    values = [value] * 3 if isinstance(value, (int, float)) else list(value)
    if len(values) != 3:
        raise BackboneError(f"{where}: {key} must have 3 values (RGB), got {value!r}")
    return (float(values[0]), float(values[1]), float(values[2]))


def _resize_target(raw: dict[str, Any], where: str) -> tuple[int, tuple[int, int] | None]:
    """(short side after resize, (h, w) when the config gives an exact size)."""
    if "size" not in raw:
        raise BackboneError(f"{where}: size is missing (the resize is never guessed)")
    size = raw["size"]
    if isinstance(size, int):
        return size, None
    if isinstance(size, dict) and "shortest_edge" in size:
        return int(size["shortest_edge"]), None
    if isinstance(size, dict) and "height" in size and "width" in size:
        height, width = int(size["height"]), int(size["width"])
        return min(height, width), (height, width)
    raise BackboneError(f"{where}: size must be an int, {{shortest_edge}} or {{height, width}}")


def _crop_size(
    raw: dict[str, Any], exact_size: tuple[int, int] | None, where: str
) -> tuple[int, int]:
    crop = raw.get("crop_size")
    if not raw.get("do_center_crop", True) or crop is None:
        if exact_size is not None:
            return exact_size
        raise BackboneError(f"{where}: no crop_size; frames of varying shape cannot be batched")
    if isinstance(crop, int):
        return crop, crop
    if isinstance(crop, dict) and "height" in crop and "width" in crop:
        return int(crop["height"]), int(crop["width"])
    raise BackboneError(f"{where}: crop_size must be an int or {{height, width}}, got {crop!r}")


def _resample_name(value: Any, family: Family, where: str) -> str:
    if value is None:
        return family.default_resample
    if isinstance(value, int) and value in _PIL_RESAMPLE:
        return _PIL_RESAMPLE[value]
    if isinstance(value, str) and value.lower() in _PIL_RESAMPLE.values():
        return value.lower()
    raise BackboneError(f"{where}: unknown resample {value!r}")
