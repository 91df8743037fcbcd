"""Tiny presets: randomly initialised models (the same weights in every process) for tests.

``save_tiny_checkpoint`` writes one as a real checkpoint folder, so that tests exercise the
real ``from_pretrained`` path offline.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from skill.pipeline.backbones.checkpoint import quiet_transformers
from skill.pipeline.backbones.registry import (
    BACKBONES,
    BackboneError,
    BackboneSpec,
    get_family,
    tiny_names,
)

# Seed of the random initialisation of the tiny presets: the same weights in every process.
TINY_SEED = 1_904_466


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with a fixed torch seed without touching the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_tiny_model(spec: BackboneSpec):
    """The tiny preset's model, randomly initialised with TINY_SEED (same weights everywhere)."""
    if not spec.is_tiny:
        raise BackboneError(f"backbone {spec.name!r} is not a tiny preset")
    family = get_family(spec.family)
    config = family.transformers_class("config")(**(spec.tiny_config or {}))
    with seeded(TINY_SEED):
        model = family.transformers_class()(config)
    return model.eval()


def save_tiny_checkpoint(name: str, folder: str | Path) -> Path:
    """Save a tiny preset as a real checkpoint folder (safetensors + config + preprocessor).

    The layout copies the hub's (the family's ``save_as``: TimeSformer as
    ``TimesformerForVideoClassification``, CLIP as a full ``CLIPModel``; loading keeps the
    encoder only). The encoder weights equal the preset's, so the folder encodes exactly like
    the preset.
    """
    spec = BACKBONES.get(name)
    if spec is None or not spec.is_tiny:
        raise BackboneError(f"{name!r} is not a tiny preset; choose from {tiny_names()}")
    encoder = build_tiny_model(spec)
    family = get_family(spec.family)
    save_as = family.save_as
    with seeded(TINY_SEED + 1):
        wrapper = save_as(encoder) if save_as is not None else encoder
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        wrapper.save_pretrained(str(path))
    preprocessor = json.dumps(spec.tiny_preprocessing, indent=2)
    (path / family.preprocessor_files[0]).write_text(preprocessor + "\n")
    return path
