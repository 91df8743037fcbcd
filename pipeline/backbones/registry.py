"""The registry: families (how a kind of model is run) and backbones (named checkpoints/presets).

A ``Family`` is data plus a few small functions, declared in its own file (``timesformer.py``,
``clip.py``); a ``BackboneSpec`` names one checkpoint or tiny preset of a family and declares
its geometry, so that ``describe_backbones`` lists token counts without loading anything.
Plain data only: importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skill.errors import SkillError

TOKEN_MODES: tuple[str, ...] = ("frame", "cls", "patch")
"""The token modes every family has; a family may add its own (timesformer: ``mean_all``);
:func:`token_mode_names` lists them all."""
TIME_EMBEDDINGS: tuple[str, ...] = ("nearest", "linear")
"""How time embeddings reach a frame count other than the checkpoint's: transformers'
on-the-fly ``nearest`` (the default), or ``linear`` once at load (SkillFormer's; families
with ``linear_time_embedding``)."""


class BackboneError(SkillError, ValueError):
    """A backbone, checkpoint, preprocessing config or adapter that cannot be used as given."""


@dataclass(frozen=True)
class TokenMode:
    """One ``--tokens`` mode of a family: how many tokens a clip gives and how they are made."""

    count: Callable[[int, int], int]
    """(frames T, patches per frame P) -> tokens per clip."""
    tokens: Callable[[Any, Any], Any]
    """(model, normalised pixels ``(B, T, 3, H, W)``) -> float32 tokens ``(B, N, D)``."""


@dataclass(frozen=True)
class Family:
    """How one kind of transformers model is loaded, checked and turned into tokens."""

    name: str
    """Registry key, e.g. ``timesformer``; specs and provenance name their family by it."""
    model_class: str
    """transformers class that encodes (``TimesformerModel``), imported on first use."""
    config_class: str
    """transformers config class of ``model_class`` (builds the tiny presets)."""
    model_types: tuple[str, ...]
    """``model_type`` values of a checkpoint's config.json that this family loads."""
    default_resample: str
    """Resize interpolation when preprocessor_config.json omits ``resample`` (the processor's)."""
    token_modes: Mapping[str, TokenMode]
    """One entry per mode of ``TOKEN_MODES``, plus any modes of this family only."""
    lora_targets: tuple[str, ...]
    """PEFT LoRA ``target_modules`` (module-name suffixes) covering the encoder's Linears."""
    frames_key: str | None = None
    """Config attribute holding the clip length, set to the requested T after loading (the
    layers reshape with it); None for image models, which encode each frame on its own."""
    required_config: tuple[tuple[str, Any, str], ...] = ()
    """(config attribute, the only supported value, why) checked after loading."""
    save_as: Callable[[Any], Any] | None = None
    """Tiny encoder -> the model ``save_tiny_checkpoint`` writes, laid out like the hub's
    checkpoints (None: the encoder itself)."""
    image_size_key: str = "image_size"
    """Config attribute holding the input height = width (V-JEPA 2: ``crop_size``)."""
    frames_multiple: int = 1
    """The requested T must be a multiple of this (2 for tubelets of 2 frames); refused before
    any weight is loaded or video decoded."""
    set_frames: Callable[[Any, int], None] | None = None
    """(model, T) run after ``frames_key`` is set to T: rebuilds what the model computed from
    the frame count at construction (VideoMAE's fixed position table). None: nothing."""
    linear_time_embedding: Callable[[Any, int], None] | None = None
    """(model, T): replace the checkpoint's time embeddings by their linear interpolation to T
    frames (``--time-embedding linear``); None: the family has no such option."""
    preprocessor_files: tuple[str, ...] = ("preprocessor_config.json",)
    """Files the preprocessing is read from, first found wins (as the family's processor
    looks them up); tiny checkpoints are saved under the first."""
    default_crop_size: int | None = None
    """Centre crop when the config asks for one without ``crop_size`` (the processor's class
    default); None: such a config is refused."""
    resize_from_crop: float | None = None
    """When set, the short side is resized to ``int(crop * resize_from_crop)`` and the config's
    ``size`` is ignored, as the processor does (VJEPA2VideoProcessor: 256/224)."""
    any_crop: bool = False
    """True when the model interpolates its position embeddings to the input (DINOv2, whose
    checkpoints say image_size 518 and are run at 224): the crop must then be a multiple of
    the patch size instead of the config's image_size."""

    def __post_init__(self) -> None:
        if not set(TOKEN_MODES) <= set(self.token_modes):
            raise BackboneError(
                f"family {self.name!r}: token_modes must include {TOKEN_MODES}, "
                f"got {tuple(self.token_modes)}"
            )

    def transformers_class(self, which: str = "model") -> type:
        """The transformers model (``which="model"``) or config class, imported now."""
        name = self.model_class if which == "model" else self.config_class
        return getattr(importlib.import_module("transformers"), name)


@dataclass(frozen=True)
class Geometry:
    """What a checkpoint's tokens look like, declared so listings need no model."""

    dim: int
    """Token width D (hidden size)."""
    frames: int | None
    """The checkpoint's frame count; None for image models (tokens per clip are per frame)."""
    crop: int
    """Input height = width (config image_size)."""
    patch: int
    """Patch side in pixels: (crop // patch)^2 patches per frame."""

    @property
    def patches_per_frame(self) -> int:
        """P at the crop size."""
        return (self.crop // self.patch) ** 2


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone: a hub checkpoint, or a tiny randomly initialised preset for tests."""

    name: str
    """Registry key, e.g. ``timesformer-base-k600``."""
    family: str
    """A registered family's name: decides the model class and the token layout."""
    source: str | None
    """Hub id (``facebook/timesformer-base-finetuned-k600``); None for a tiny preset."""
    tiny_config: dict[str, Any] | None = None
    """Tiny presets only: keyword arguments of the family's transformers config class."""
    tiny_preprocessing: dict[str, Any] | None = None
    """Tiny presets only: the preset's preprocessor_config.json content (mean, std, size...)."""
    description: str = ""
    """One line for listings."""
    geometry: Geometry | None = None
    """Hub backbones only: the checkpoint's geometry (a tiny preset's comes from tiny_config)."""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise BackboneError(
                f"backbone {self.name!r}: family {self.family!r} not in {tuple(FAMILIES)}"
            )
        is_tiny = self.source is None
        if is_tiny and (self.tiny_config is None or self.tiny_preprocessing is None):
            raise BackboneError(
                f"backbone {self.name!r}: a preset without source needs tiny_config and "
                "tiny_preprocessing"
            )
        if not is_tiny and (self.tiny_config is not None or self.tiny_preprocessing is not None):
            raise BackboneError(f"backbone {self.name!r}: a hub backbone takes no tiny_* fields")
        if not is_tiny and self.geometry is None:
            raise BackboneError(f"backbone {self.name!r}: a hub backbone declares its geometry")
        if is_tiny:
            self.tiny_geometry()  # the keys it needs are there

    @property
    def is_tiny(self) -> bool:
        """True for a randomly initialised preset (no checkpoint)."""
        return self.source is None

    def tiny_geometry(self) -> Geometry:
        """A tiny preset's geometry, read from its tiny_config."""
        family, config = FAMILIES[self.family], self.tiny_config or {}
        frames_key, size_key = family.frames_key, family.image_size_key
        needed = ["hidden_size", size_key, "patch_size"] + ([frames_key] if frames_key else [])
        missing = [key for key in needed if key not in config]
        if missing:
            raise BackboneError(f"backbone {self.name!r}: tiny_config lacks {missing}")
        return Geometry(
            dim=int(config["hidden_size"]),
            frames=int(config[frames_key]) if frames_key else None,
            crop=int(config[size_key]),
            patch=int(config["patch_size"]),
        )

    def static_geometry(self) -> Geometry:
        """The declared geometry (hub backbones) or the tiny config's (presets)."""
        return self.tiny_geometry() if self.is_tiny else self.geometry  # type: ignore[return-value]


FAMILIES: dict[str, Family] = {}
"""Registered families, in registration order (the order error messages list them in)."""
BACKBONES: dict[str, BackboneSpec] = {}


def register_family(family: Family) -> Family:
    """Add a family; a name can be registered once."""
    if family.name in FAMILIES:
        raise BackboneError(f"family {family.name!r} is registered twice")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The registered family called ``name``."""
    family = FAMILIES.get(name)
    if family is None:
        raise BackboneError(f"family {name!r} not in {tuple(FAMILIES)}")
    return family


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry; a name can be registered once."""
    if spec.name in BACKBONES:
        raise BackboneError(f"backbone {spec.name!r} is registered twice")
    BACKBONES[spec.name] = spec
    return spec


def backbone_names() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(BACKBONES)


def tiny_names() -> list[str]:
    """Registered tiny presets, sorted (what tests iterate over)."""
    return [name for name in backbone_names() if BACKBONES[name].is_tiny]


def token_mode_names() -> tuple[str, ...]:
    """Every ``--tokens`` value: the modes every family has, then those of some families only
    (timesformer's ``mean_all``), in registration order; a family refuses a mode it lacks
    when it is loaded."""
    own = (mode for family in FAMILIES.values() for mode in family.token_modes)
    return tuple(dict.fromkeys((*TOKEN_MODES, *own)))


def describe_backbone(spec: BackboneSpec) -> dict[str, Any]:
    """One listing row: geometry and tokens per clip of each mode at the checkpoint's frames."""
    geometry, family = spec.static_geometry(), FAMILIES[spec.family]
    frames = geometry.frames or 1  # image models: tokens per frame
    row: dict[str, Any] = {
        "name": spec.name,
        "family": spec.family,
        "kind": "tiny" if spec.is_tiny else "checkpoint",
        "dim": geometry.dim,
        "frames": geometry.frames,
        "crop": geometry.crop,
    }
    for mode in TOKEN_MODES:
        row[f"tokens_{mode}"] = family.token_modes[mode].count(frames, geometry.patches_per_frame)
    row["source"] = spec.source
    row["description"] = spec.description
    return row


def describe_backbones() -> list[dict[str, Any]]:
    """One row per registered backbone for `skill backbones` (no model is loaded).

    ``frames`` is None for image families; their ``tokens_*`` are then per frame.
    """
    return [describe_backbone(BACKBONES[name]) for name in backbone_names()]
