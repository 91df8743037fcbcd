"""Backbones: a registry of frozen video/image encoders and the one "clips in, tokens out" step.

One file per family declares it (a ``Family``: transformers classes, accepted ``model_type``
values, default resample, token layouts per ``--tokens`` mode, LoRA targets) and registers it
with its named backbones, real checkpoints and tiny random presets beside them. The shared
machinery has one file per job:

- ``registry.py``: ``Family``, ``BackboneSpec``, the registries, ``describe_backbones``
- ``preprocessing.py``: preprocessor_config.json -> ``Preprocessing``
- ``checkpoint.py``: name -> registry entry, local folder or hub id; ``from_pretrained``
- ``tiny.py``: tiny presets built with a fixed seed; ``save_tiny_checkpoint``
- ``hashing.py``: ``weights_sha256`` of what was loaded
- ``adapter.py``: PEFT LoRA adapters, checked and merged
- ``encoder.py``: ``Backbone.encode`` and ``load_backbone``

To add a family: write ``<family>.py`` like ``clip.py`` (``register_family(Family(...))`` and
``register(BackboneSpec(...))`` for its checkpoints and one tiny preset), then import it
below. The tests iterate over the registry, so its tiny preset is tested without editing one.
A backbone is resolved once (``resolve_backbone``: its source and its ``Family``) and that
``ResolvedBackbone`` is what loading passes along.

Importing this package is cheap (plain data); torch, transformers and peft load on first use.
"""

from __future__ import annotations

# One line per family: importing its file registers it and its backbones (in this order,
# which is the order error messages list them in).
# isort: off
from skill.pipeline.backbones import timesformer  # noqa: F401
from skill.pipeline.backbones import clip  # noqa: F401
from skill.pipeline.backbones import videomae  # noqa: F401
from skill.pipeline.backbones import vjepa2  # noqa: F401
from skill.pipeline.backbones import dinov2  # noqa: F401
from skill.pipeline.backbones import siglip  # noqa: F401
# isort: on

from skill.pipeline.backbones.adapter import (
    adapter_sha256,
    apply_adapter,
    check_adapter_folder,
    write_training_record,
)
from skill.pipeline.backbones.checkpoint import ResolvedBackbone, resolve_backbone
from skill.pipeline.backbones.encoder import Backbone, load_backbone
from skill.pipeline.backbones.hashing import files_sha256, state_dict_sha256
from skill.pipeline.backbones.preprocessing import Preprocessing, parse_preprocessor_config
from skill.pipeline.backbones.registry import (
    BACKBONES,
    FAMILIES,
    TOKEN_MODES,
    BackboneError,
    BackboneSpec,
    Family,
    Geometry,
    TokenMode,
    backbone_names,
    describe_backbone,
    describe_backbones,
    get_family,
    register,
    register_family,
    tiny_names,
    token_mode_names,
)
from skill.pipeline.backbones.timesformer import (
    SKILLFORMER_LORA_TARGETS,
    TIMESFORMER_BASE_PREPROCESSING,
)
from skill.pipeline.backbones.tiny import TINY_SEED, build_tiny_model, save_tiny_checkpoint

__all__ = [
    "BACKBONES",
    "FAMILIES",
    "SKILLFORMER_LORA_TARGETS",
    "TIMESFORMER_BASE_PREPROCESSING",
    "TINY_SEED",
    "TOKEN_MODES",
    "Backbone",
    "BackboneError",
    "BackboneSpec",
    "Family",
    "Geometry",
    "Preprocessing",
    "ResolvedBackbone",
    "TokenMode",
    "adapter_sha256",
    "apply_adapter",
    "backbone_names",
    "build_tiny_model",
    "check_adapter_folder",
    "describe_backbone",
    "describe_backbones",
    "files_sha256",
    "get_family",
    "load_backbone",
    "parse_preprocessor_config",
    "register",
    "register_family",
    "resolve_backbone",
    "save_tiny_checkpoint",
    "state_dict_sha256",
    "tiny_names",
    "token_mode_names",
    "write_training_record",
]
