"""Backbones: a registry of frozen video/image encoders and the one "clips in, tokens out" step.

The extract stage decodes, samples and crops frames in worker processes (uint8, geometry from
``Backbone.geometry``), then hands batches of clips to ``Backbone.encode``, which rescales,
normalises and runs the model. Everything a token depends on is in ``Backbone.provenance()``.

Families and token layouts (``D`` = hidden size, ``P`` = patches per frame, ``T`` = frames):

* ``timesformer`` (transformers ``TimesformerModel``, divided space-time attention).
  ``last_hidden_state`` is ``(N, 1 + P*T, D)``: the clip's CLS first, then patch-major,
  frame-minor, i.e. the token of patch ``p`` in frame ``t`` is at ``1 + p*T + t`` (checked
  against ``TimesformerEmbeddings``/``TimesformerLayer`` of transformers 5.23 and by a test).

  - ``frame``: ``(N, T, D)``, token ``t`` = mean over the ``P`` patch tokens of frame ``t``.
  - ``cls``: ``(N, 1, D)``, the CLS token.
  - ``patch``: ``(N, 1 + P*T, D)``, ``last_hidden_state`` unchanged.

  ``config.num_frames`` is set to the requested ``T`` after loading: the layers reshape with
  it, and a wrong value does not fail, it silently mixes patches and frames. The time
  embeddings stay those of the checkpoint and transformers interpolates them ("nearest") when
  ``T`` differs from the checkpoint's frame count.

* ``clip`` (transformers ``CLIPVisionModel``; a full ``CLIPModel`` checkpoint loads its vision
  tower). Each frame is encoded on its own. All tokens are taken after CLIP's final
  ``post_layernorm`` (the representation CLIP's image projection reads), so the frame token is
  ``pooler_output`` (= post_layernorm of the frame's CLS), not the raw
  ``last_hidden_state[:, 0]``.

  - ``frame``: ``(N, T, D)``, each frame's ``pooler_output``.
  - ``cls``: ``(N, 1, D)``, the mean over frames of ``pooler_output``.
  - ``patch``: ``(N, T*(1 + P), D)``, frame-major: frame ``t``'s CLS at ``t*(1 + P)``, its
    patch ``p`` at ``t*(1 + P) + 1 + p``; every token passed through ``post_layernorm``, so
    ``patch[:, t*(1 + P)] == frame[:, t]``.

Importing this module is cheap (plain data); torch, transformers and peft load on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skill.devices import resolve_device

if TYPE_CHECKING:
    import torch

FAMILIES: tuple[str, ...] = ("timesformer", "clip")
TOKEN_MODES: tuple[str, ...] = ("frame", "cls", "patch")

# LoRA targets of SkillFormer (module-name suffixes in transformers' TimesformerModel). Together
# they wrap every nn.Linear of every layer; "output.dense" also matches the two attention
# output projections, which the explicit entries name again (harmless: a module is wrapped once).
SKILLFORMER_LORA_TARGETS: tuple[str, ...] = (
    "attention.attention.qkv",
    "attention.output.dense",
    "temporal_attention.attention.qkv",
    "temporal_attention.output.dense",
    "intermediate.dense",
    "output.dense",
    "temporal_dense",
)

# Seed of the random initialisation of the tiny presets: the same weights in every process.
TINY_SEED = 1_904_466

# PIL resampling codes, as image processors store them in preprocessor_config.json.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# The processor classes' own defaults when a config omits "resample"
# (VideoMAEImageProcessor for TimeSformer, CLIPImageProcessor for CLIP).
_DEFAULT_RESAMPLE = {"timesformer": "bilinear", "clip": "bicubic"}
_ADAPTER_CONFIG = "adapter_config.json"
_ADAPTER_WEIGHTS = "adapter_model.safetensors"


class BackboneError(ValueError):
    """A backbone, checkpoint, preprocessing config or adapter that cannot be used as given."""


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class BackboneSpec:
    """A named backbone: a hub checkpoint, or a tiny randomly initialised preset for tests."""

    name: str
    """Registry key, e.g. ``timesformer-base-k600``."""
    family: str
    """``timesformer`` or ``clip``: decides the model class and the token layout."""
    source: str | None
    """Hub id (``facebook/timesformer-base-finetuned-k600``); None for a tiny preset."""
    tiny_config: dict[str, Any] | None = None
    """Tiny presets only: keyword arguments of the family's transformers config class."""
    tiny_preprocessing: dict[str, Any] | None = None
    """Tiny presets only: the preset's preprocessor_config.json content (mean, std, size...)."""
    description: str = ""
    """One line for listings."""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise BackboneError(f"backbone {self.name!r}: family {self.family!r} not in {FAMILIES}")
        is_tiny = self.source is None
        if is_tiny and (self.tiny_config is None or self.tiny_preprocessing is None):
            raise BackboneError(
                f"backbone {self.name!r}: a preset without source needs tiny_config and "
                "tiny_preprocessing"
            )
        if not is_tiny and (self.tiny_config is not None or self.tiny_preprocessing is not None):
            raise BackboneError(f"backbone {self.name!r}: a hub backbone takes no tiny_* fields")

    @property
    def is_tiny(self) -> bool:
        """True for a randomly initialised preset (no checkpoint)."""
        return self.source is None


BACKBONES: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add a backbone to the registry; a name can be registered once."""
    if spec.name in BACKBONES:
        raise BackboneError(f"backbone {spec.name!r} is registered twice")
    BACKBONES[spec.name] = spec
    return spec


def backbone_names() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(BACKBONES)


def describe_backbones() -> list[dict[str, str]]:
    """One row per registered backbone for `skill backbones` (no model is loaded)."""
    return [
        {
            "name": spec.name,
            "family": spec.family,
            "kind": "tiny (random, for tests)" if spec.is_tiny else "checkpoint",
            "source": spec.source or "-",
            "description": spec.description,
        }
        for spec in (BACKBONES[name] for name in backbone_names())
    ]


# The preprocessor_config.json of the hub's TimeSformer-base k400/k600 checkpoints; the tiny
# preset keeps it but for the size, and the benchmarks write it beside random-weight models.
TIMESFORMER_BASE_PREPROCESSING: dict[str, Any] = {
    "image_processor_type": "VideoMAEImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.45, 0.45, 0.45],
    "image_std": [0.225, 0.225, 0.225],
}
_TINY_TIMESFORMER_PREPROCESSING: dict[str, Any] = {
    **TIMESFORMER_BASE_PREPROCESSING,
    "size": {"shortest_edge": 32},
    "crop_size": {"height": 32, "width": 32},
}
_TINY_CLIP_PREPROCESSING: dict[str, Any] = {
    "image_processor_type": "CLIPImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 32},
    "do_center_crop": True,
    "crop_size": {"height": 32, "width": 32},
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}

register(
    BackboneSpec(
        "timesformer-base-k600",
        "timesformer",
        "facebook/timesformer-base-finetuned-k600",
        description="TimeSformer-base, Kinetics-600, 8x224, D=768 (SkillFormer's backbone)",
    )
)
register(
    BackboneSpec(
        "timesformer-base-k400",
        "timesformer",
        "facebook/timesformer-base-finetuned-k400",
        description="TimeSformer-base, Kinetics-400, 8x224, D=768",
    )
)
register(
    BackboneSpec(
        "clip-vit-b16",
        "clip",
        "openai/clip-vit-base-patch16",
        description="CLIP ViT-B/16 vision tower, 224 px, 197 tokens per frame, D=768",
    )
)
register(
    BackboneSpec(
        "clip-vit-b32",
        "clip",
        "openai/clip-vit-base-patch32",
        description="CLIP ViT-B/32 vision tower, 224 px, 50 tokens per frame, D=768",
    )
)
register(
    BackboneSpec(
        "tiny-timesformer",
        "timesformer",
        None,
        tiny_config={
            "image_size": 32,
            "patch_size": 8,
            "num_channels": 3,
            "num_frames": 4,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
        },
        tiny_preprocessing=_TINY_TIMESFORMER_PREPROCESSING,
        description="random tiny TimeSformer for tests: 4 frames, 32 px, patch 8, D=32",
    )
)
register(
    BackboneSpec(
        "tiny-clip",
        "clip",
        None,
        tiny_config={
            "image_size": 32,
            "patch_size": 4,
            "num_channels": 3,
            "hidden_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 96,
            "projection_dim": 16,
        },
        tiny_preprocessing=_TINY_CLIP_PREPROCESSING,
        description="random tiny CLIP vision tower for tests: 32 px, patch 4, D=48",
    )
)


# --------------------------------------------------------------------------- preprocessing


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


def parse_preprocessor_config(raw: dict[str, Any], *, family: str, where: str) -> Preprocessing:
    """Read an image processor's config (VideoMAE/CLIP style, old or new) into Preprocessing.

    ``size`` may be an int or ``{"shortest_edge": s}`` (aspect-preserving resize) or
    ``{"height": h, "width": w}``; the last is approximated by resizing the short side to
    ``min(h, w)`` and centre-cropping, which keeps the aspect ratio where the processor would
    squash (identical for square sizes, the case of every supported checkpoint).
    ``where`` names the file in error messages.
    """
    do_normalize = raw.get("do_normalize", True)
    mean = _channel_triplet(raw, "image_mean", where) if do_normalize else (0.0, 0.0, 0.0)
    std = _channel_triplet(raw, "image_std", where) if do_normalize else (1.0, 1.0, 1.0)
    if any(s <= 0 for s in std):
        raise BackboneError(f"{where}: image_std must be positive, got {list(std)}")
    rescale = float(raw.get("rescale_factor", 1 / 255)) if raw.get("do_rescale", True) else 1.0
    shortest_edge, exact_size = _resize_target(raw, where)
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
    size = raw.get("size")
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


def _resample_name(value: Any, family: str, where: str) -> str:
    if value is None:
        return _DEFAULT_RESAMPLE[family]
    if isinstance(value, int) and value in _PIL_RESAMPLE:
        return _PIL_RESAMPLE[value]
    if isinstance(value, str) and value.lower() in _PIL_RESAMPLE.values():
        return value.lower()
    raise BackboneError(f"{where}: unknown resample {value!r}")


# --------------------------------------------------------------------------- resolving names


@dataclass(frozen=True)
class ResolvedBackbone:
    """Where a backbone's weights and preprocessing come from."""

    name: str
    """Registry name, or the folder/hub id as given."""
    family: str
    """``timesformer`` or ``clip``."""
    source: str | None
    """Hub id or absolute folder; None for a tiny preset."""
    spec: BackboneSpec | None
    """The registry entry, if any."""
    is_folder: bool
    """True when ``source`` is a local checkpoint folder."""


def resolve_backbone(name_or_path: str) -> ResolvedBackbone:
    """Registry name first, then an existing folder, then a hub id (reads its config.json)."""
    name_or_path = str(name_or_path)
    spec = BACKBONES.get(name_or_path)
    if spec is not None:
        return ResolvedBackbone(spec.name, spec.family, spec.source, spec, False)
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise BackboneError(f"{folder}: not a checkpoint folder (no config.json)")
        family = _family_of(_read_json(config_path), str(config_path))
        return ResolvedBackbone(name_or_path, family, str(folder), None, True)
    if name_or_path.startswith((".", "/", "~")) or folder.exists():
        raise BackboneError(f"{name_or_path}: no such checkpoint folder")
    config_path = _hub_file(name_or_path, "config.json")
    family = _family_of(_read_json(config_path), f"{name_or_path}/config.json")
    return ResolvedBackbone(name_or_path, family, name_or_path, None, False)


def _family_of(config: dict[str, Any], where: str) -> str:
    model_type = config.get("model_type")
    if model_type == "timesformer":
        return "timesformer"
    if model_type in ("clip", "clip_vision_model"):
        return "clip"
    raise BackboneError(
        f"{where}: model_type {model_type!r} is not supported "
        "(timesformer, clip or clip_vision_model)"
    )


def _read_json(path: Path | str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise BackboneError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise BackboneError(f"{path}: expected a JSON object")
    return data


def _hub_file(repo_id: str, filename: str) -> Path:
    """Local path of a hub file (downloaded into the cache when the network allows)."""
    from transformers.utils import cached_file

    try:
        path = cached_file(repo_id, filename)
    except OSError as error:
        known = ", ".join(backbone_names())
        raise BackboneError(
            f"backbone {repo_id!r}: not a registered name ({known}), not a folder, and "
            f"{filename} could not be fetched from the hub: {error}"
        ) from None
    if path is None:
        raise BackboneError(f"{repo_id}: the hub repository has no {filename}")
    return Path(path)


def _checkpoint_folder(resolved: ResolvedBackbone) -> Path:
    """The folder holding config/weights: the given folder, or the hub snapshot in the cache."""
    if resolved.is_folder:
        return Path(str(resolved.source))
    return _hub_file(str(resolved.source), "config.json").parent


def load_preprocessing(resolved: ResolvedBackbone) -> Preprocessing:
    """Preprocessing of a preset (its own dict) or checkpoint (its preprocessor_config.json)."""
    if resolved.spec is not None and resolved.spec.is_tiny:
        where = f"tiny preset {resolved.name}"
        raw = dict(resolved.spec.tiny_preprocessing or {})
        return parse_preprocessor_config(raw, family=resolved.family, where=where)
    if resolved.is_folder:
        path = Path(str(resolved.source)) / "preprocessor_config.json"
    else:
        path = _hub_file(str(resolved.source), "preprocessor_config.json")
    if not path.is_file():
        raise BackboneError(f"{path}: missing; mean/std/size are read from it, never guessed")
    return parse_preprocessor_config(_read_json(path), family=resolved.family, where=str(path))


# --------------------------------------------------------------------------- models


def _model_class(family: str) -> type:
    if family == "timesformer":
        from transformers import TimesformerModel

        return TimesformerModel
    from transformers import CLIPVisionModel

    return CLIPVisionModel


def _config_class(family: str) -> type:
    if family == "timesformer":
        from transformers import TimesformerConfig

        return TimesformerConfig
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block with a fixed torch seed without touching the caller's random state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_tiny_model(spec: BackboneSpec):
    """The tiny preset's model, randomly initialised with TINY_SEED (same weights everywhere)."""
    if not spec.is_tiny:
        raise BackboneError(f"backbone {spec.name!r} is not a tiny preset")
    config = _config_class(spec.family)(**(spec.tiny_config or {}))
    with _seeded(TINY_SEED):
        model = _model_class(spec.family)(config)
    return model.eval()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    # from_pretrained prints a load report listing the unused classifier / text-tower weights
    # and progress bars; missing weights are checked explicitly instead (see _load_pretrained).
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load_pretrained(resolved: ResolvedBackbone):
    """from_pretrained of the family's model; refuses a checkpoint with missing weights."""
    kwargs = {"use_safetensors": True} if resolved.is_folder else {}
    with _quiet_transformers():
        model, info = _model_class(resolved.family).from_pretrained(
            resolved.source, output_loading_info=True, **kwargs
        )
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise BackboneError(
            f"{resolved.source}: the checkpoint does not fill the {type(model).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, mismatched {mismatched[:5]}"
        )
    return model.eval()


def _check_model_input(model, prep: Preprocessing, family: str, where: str) -> None:
    """The crop must be the model's image_size (TimeSformer's layers reshape with it)."""
    size = model.config.image_size
    if (prep.crop_height, prep.crop_width) != (size, size):
        raise BackboneError(
            f"{where}: preprocessing crops {prep.crop_height}x{prep.crop_width} but the model "
            f"expects {size}x{size} (config image_size)"
        )
    if family == "timesformer" and model.config.attention_type != "divided_space_time":
        raise BackboneError(
            f"{where}: attention_type {model.config.attention_type!r} is not supported "
            "(divided_space_time only; other types have another token layout)"
        )


# --------------------------------------------------------------------------- hashing


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(paths: list[Path]) -> str:
    """sha256 of one file; of several, sha256 of their ``sha256sum``-style listing (by name)."""
    if len(paths) == 1:
        return _file_sha256(paths[0])
    listing = "".join(f"{_file_sha256(p)}  {p.name}\n" for p in sorted(paths, key=lambda p: p.name))
    return hashlib.sha256(listing.encode()).hexdigest()


def state_dict_sha256(model) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, in name order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _weights_identity(resolved: ResolvedBackbone, model) -> dict[str, Any]:
    """revision (hub snapshot commit) and weights_sha256 of what was loaded."""
    if resolved.spec is not None and resolved.spec.is_tiny:
        return {"revision": None, "weights_sha256": state_dict_sha256(model)}
    folder = _checkpoint_folder(resolved)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    # Hub files live in .../snapshots/<commit>/; a plain folder has no revision.
    revision = folder.name if folder.parent.name == "snapshots" else None
    return {
        "revision": revision,
        "weights_sha256": files_sha256(files) if files else None,
    }


# --------------------------------------------------------------------------- adapters


def check_adapter_folder(folder: str | Path) -> Path:
    """An adapter folder must hold adapter_config.json and adapter_model.safetensors."""
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise BackboneError(f"adapter {path}: no such folder")
    if not (path / _ADAPTER_CONFIG).is_file():
        raise BackboneError(f"adapter {path}: {_ADAPTER_CONFIG} is missing")
    if not (path / _ADAPTER_WEIGHTS).is_file():
        pickled = [p.name for p in path.glob("*.bin")]
        hint = (
            f" ({', '.join(pickled)} is a pickle and is never loaded; convert it to "
            "safetensors where it was trained)"
            if pickled
            else ""
        )
        raise BackboneError(f"adapter {path}: {_ADAPTER_WEIGHTS} is missing{hint}")
    return path


def adapter_sha256(folder: str | Path) -> str:
    """Content hash of an adapter: sha256 of the sha256sum-style listing of its two files."""
    path = check_adapter_folder(folder)
    return files_sha256([path / _ADAPTER_CONFIG, path / _ADAPTER_WEIGHTS])


def apply_adapter(model, folder: str | Path):
    """Load a PEFT adapter onto ``model``, check every saved weight found its place, merge it.

    Returns ``(merged model in eval mode, {"path", "sha256"})``. Merging folds the low-rank
    update into the base weights: the same function without per-layer extra matmuls.
    """
    from peft import PeftModel

    path = check_adapter_folder(folder)
    sha = adapter_sha256(path)  # hash before loading: what is hashed is what gets loaded
    try:
        with warnings.catch_warnings():
            # Missing/unused keys are reported by _check_adapter_keys as an error instead.
            warnings.filterwarnings("ignore", message="Found missing adapter keys")
            warnings.filterwarnings("ignore", category=FutureWarning)
            peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except (ValueError, KeyError, RuntimeError) as error:
        raise BackboneError(
            f"adapter {path}: cannot be applied to this backbone: {error}"
        ) from None
    _check_adapter_keys(peft_model, path)
    try:
        merged = peft_model.merge_and_unload()
    except (AttributeError, NotImplementedError, ValueError) as error:
        raise BackboneError(f"adapter {path}: cannot be merged: {error}") from None
    return merged.eval(), {"path": str(path), "sha256": sha}


def _check_adapter_keys(peft_model, path: Path) -> None:
    # PEFT only warns when saved weights match no module (e.g. an adapter trained on
    # TimesformerForVideoClassification has a "timesformer." prefix); that would leave the
    # adapter silently half-applied, so it is an error here.
    from peft import get_peft_model_state_dict
    from safetensors import safe_open

    with safe_open(str(path / _ADAPTER_WEIGHTS), framework="pt") as handle:
        saved = set(handle.keys())
    expected = set(get_peft_model_state_dict(peft_model).keys())
    unused, unfilled = sorted(saved - expected), sorted(expected - saved)
    if unused or unfilled:
        raise BackboneError(
            f"adapter {path}: weights do not match the backbone's modules: "
            f"{len(unused)} saved but unused (e.g. {unused[:2]}), "
            f"{len(unfilled)} expected but absent (e.g. {unfilled[:2]})"
        )


# --------------------------------------------------------------------------- the backbone


class Backbone:
    """A loaded, frozen encoder: ``encode(uint8 clips) -> float32 tokens``."""

    def __init__(
        self,
        *,
        resolved: ResolvedBackbone,
        model,
        preprocessing: Preprocessing,
        token_mode: str,
        num_frames: int,
        device: str,
        batch_size: int,
        weights: dict[str, Any],
        adapter: dict[str, Any] | None,
        checkpoint_num_frames: int | None,
    ):
        import torch

        self.name, self.family, self.source = resolved.name, resolved.family, resolved.source
        self.model = model
        self.preprocessing = preprocessing
        self.token_mode = token_mode
        self.num_frames = num_frames
        self.device = device
        self.batch_size = batch_size
        self.weights = weights
        self.adapter = adapter
        self.checkpoint_num_frames = checkpoint_num_frames
        self._mean = torch.tensor(preprocessing.image_mean, device=device).view(3, 1, 1)
        self._std = torch.tensor(preprocessing.image_std, device=device).view(3, 1, 1)

    @property
    def dim(self) -> int:
        """Token width D (the model's hidden size)."""
        return int(self.model.config.hidden_size)

    @property
    def patches_per_frame(self) -> int:
        """P: patch tokens per frame at the crop size."""
        patch = int(self.model.config.patch_size)
        return (self.preprocessing.crop_height // patch) * (self.preprocessing.crop_width // patch)

    @property
    def geometry(self):
        """``pipeline.decode.FrameGeometry``: resize + centre crop done by decode workers."""
        # Imported here: decode's decoders have no business in a process that only lists names.
        from skill.pipeline.decode import FrameGeometry

        prep = self.preprocessing
        return FrameGeometry(
            shortest_edge=prep.shortest_edge,
            crop_height=prep.crop_height,
            crop_width=prep.crop_width,
            resample=prep.resample,
        )

    def tokens_per_clip(self, num_frames: int | None = None) -> int:
        """Tokens per clip of ``num_frames`` frames (default: the loaded T) in this token mode."""
        frames = self.num_frames if num_frames is None else num_frames
        if self.token_mode == "frame":
            return frames
        if self.token_mode == "cls":
            return 1
        if self.family == "timesformer":
            return 1 + self.patches_per_frame * frames
        return frames * (1 + self.patches_per_frame)

    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips ``(N, T, H, W, 3)`` uint8 RGB, already cropped -> tokens ``(N, n_tokens, D)``.

        ``T`` must be the loaded ``num_frames`` and ``H, W`` the crop. Runs in chunks of
        ``batch_size`` clips, under bf16 autocast on CUDA (fp16 where bf16 is unsupported) and
        in float32 on CPU. Returns float32 on the CPU.
        """
        import torch

        self._check_clips(clips)
        if clips.shape[0] == 0:
            return torch.zeros((0, self.tokens_per_clip(), self.dim), dtype=torch.float32)
        chunks = [
            self._encode_batch(clips[start : start + self.batch_size])
            for start in range(0, clips.shape[0], self.batch_size)
        ]
        return torch.cat(chunks)

    def _check_clips(self, clips) -> None:
        import torch

        if not isinstance(clips, torch.Tensor) or clips.dtype != torch.uint8:
            raise BackboneError(f"{self.name}: encode takes a uint8 torch.Tensor")
        expected = (self.num_frames, self.preprocessing.crop_height, self.preprocessing.crop_width)
        if clips.ndim != 5 or clips.shape[4] != 3 or tuple(clips.shape[1:4]) != expected:
            raise BackboneError(
                f"{self.name}: clips must be (N, {expected[0]}, {expected[1]}, {expected[2]}, 3) "
                f"uint8, got {tuple(clips.shape)}"
            )

    def _pixels(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, T, H, W, 3)`` -> normalised float32 ``(B, T, 3, H, W)`` on the device."""
        frames = clips.to(self.device, non_blocking=True).permute(0, 1, 4, 2, 3).float()
        return (frames * self.preprocessing.rescale_factor - self._mean) / self._std

    def _autocast(self):
        import torch

        if not str(self.device).startswith("cuda"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _encode_batch(self, clips: torch.Tensor) -> torch.Tensor:
        import torch

        pixels = self._pixels(clips)
        with torch.inference_mode(), self._autocast():
            if self.family == "timesformer":
                tokens = self._timesformer_tokens(pixels)
            else:
                tokens = self._clip_tokens(pixels)
        return tokens.float().cpu()

    def _timesformer_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.model(pixel_values=pixels).last_hidden_state.float()  # (B, 1+P*T, D)
        if self.token_mode == "patch":
            return hidden
        if self.token_mode == "cls":
            return hidden[:, :1]
        batch, frames = pixels.shape[:2]
        # Patch-major, frame-minor: (B, P*T, D) -> (B, P, T, D), averaged over patches.
        return hidden[:, 1:].reshape(batch, -1, frames, hidden.shape[-1]).mean(dim=1)

    def _clip_tokens(self, pixels: torch.Tensor) -> torch.Tensor:
        batch, frames = pixels.shape[:2]
        output = self.model(pixel_values=pixels.flatten(0, 1))
        if self.token_mode == "patch":
            tokens = _clip_post_layernorm(self.model)(output.last_hidden_state).float()
            return tokens.reshape(batch, -1, tokens.shape[-1])  # (B, T*(1+P), D)
        per_frame = output.pooler_output.float().reshape(batch, frames, -1)
        return per_frame if self.token_mode == "frame" else per_frame.mean(dim=1, keepdim=True)

    def provenance(self) -> dict[str, Any]:
        """Everything the tokens depend on, JSON-serialisable (stored with the tokens)."""
        return {
            "name": self.name,
            "family": self.family,
            "source": self.source,
            "revision": self.weights.get("revision"),
            "weights_sha256": self.weights.get("weights_sha256"),
            "adapter": dict(self.adapter) if self.adapter else None,
            "preprocessing": self.preprocessing.to_dict(),
            "token_mode": self.token_mode,
            "num_frames": self.num_frames,
            "checkpoint_num_frames": self.checkpoint_num_frames,
            "dim": self.dim,
            "tokens_per_clip": self.tokens_per_clip(),
        }


def _clip_post_layernorm(model):
    # transformers 5 flattened CLIPVisionModel; 4.x keeps the layers under .vision_model.
    inner = getattr(model, "vision_model", model)
    return inner.post_layernorm


def _check_load_options(token_mode: str, num_frames: int, batch_size: int) -> None:
    if token_mode not in TOKEN_MODES:
        raise BackboneError(f"token_mode {token_mode!r} not in {TOKEN_MODES}")
    if not isinstance(num_frames, int) or num_frames < 1:
        raise BackboneError(f"num_frames must be a positive int, got {num_frames!r}")
    if batch_size < 1:
        raise BackboneError(f"batch_size must be >= 1, got {batch_size}")


def load_backbone(
    name_or_path: str,
    *,
    adapter: str | Path | None = None,
    device: str = "cpu",
    token_mode: str = "frame",
    num_frames: int,
    batch_size: int = 16,
) -> Backbone:
    """Load a registered backbone, a local checkpoint folder or a hub id, frozen and in eval mode.

    ``num_frames`` is the T of every clip passed to ``encode``; ``batch_size`` the clips per
    forward pass; ``device`` ``cpu``, ``cuda[:i]`` or ``auto``.
    """
    _check_load_options(token_mode, num_frames, batch_size)
    resolved = resolve_backbone(name_or_path)
    preprocessing = load_preprocessing(resolved)
    if resolved.spec is not None and resolved.spec.is_tiny:
        model = build_tiny_model(resolved.spec)
    else:
        model = _load_pretrained(resolved)
    where = resolved.source or resolved.name
    _check_model_input(model, preprocessing, resolved.family, where)
    weights = _weights_identity(resolved, model)
    checkpoint_frames = None
    if resolved.family == "timesformer":
        checkpoint_frames = int(model.config.num_frames)
        # The layers reshape with config.num_frames; the embeddings interpolate time.
        model.config.num_frames = num_frames
    adapter_info = None
    if adapter is not None:
        model, adapter_info = apply_adapter(model, adapter)
    device = resolve_device(device)
    model = model.eval().requires_grad_(False).to(device)
    return Backbone(
        resolved=resolved,
        model=model,
        preprocessing=preprocessing,
        token_mode=token_mode,
        num_frames=num_frames,
        device=device,
        batch_size=batch_size,
        weights=weights,
        adapter=adapter_info,
        checkpoint_num_frames=checkpoint_frames,
    )


# --------------------------------------------------------------------------- tiny checkpoints


def save_tiny_checkpoint(name: str, folder: str | Path) -> Path:
    """Save a tiny preset as a real checkpoint folder (safetensors + config + preprocessor).

    The layout copies the hub's: TimeSformer as ``TimesformerForVideoClassification`` (the
    k400/k600 checkpoints are classifiers; loading strips the ``timesformer.`` prefix), CLIP as
    a full ``CLIPModel`` with a tiny text tower (only the vision tower is loaded back). The
    encoder weights equal the preset's, so the folder encodes exactly like the preset.
    """
    spec = BACKBONES.get(name)
    if spec is None or not spec.is_tiny:
        tiny = [n for n in backbone_names() if BACKBONES[n].is_tiny]
        raise BackboneError(f"{name!r} is not a tiny preset; choose from {tiny}")
    encoder = build_tiny_model(spec)
    with _seeded(TINY_SEED + 1):
        wrapper = (
            _timesformer_classifier(encoder)
            if spec.family == "timesformer"
            else _full_clip(encoder)
        )
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        wrapper.save_pretrained(str(path))
    preprocessor = json.dumps(spec.tiny_preprocessing, indent=2)
    (path / "preprocessor_config.json").write_text(preprocessor + "\n")
    return path


def _timesformer_classifier(encoder):
    from transformers import TimesformerForVideoClassification

    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.num_labels = 4
    classifier = TimesformerForVideoClassification(config)
    classifier.timesformer.load_state_dict(encoder.state_dict())
    return classifier


def _full_clip(vision):
    from transformers import CLIPConfig, CLIPModel

    text = {
        "vocab_size": 99,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 16,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }
    vision_config = vision.config.to_dict()
    config = CLIPConfig(
        text_config=text, vision_config=vision_config, projection_dim=vision.config.projection_dim
    )
    full = CLIPModel(config)
    # transformers 5: both sides are CLIPVisionModel; 4.x: both are CLIPVisionTransformer.
    full.vision_model.load_state_dict(getattr(vision, "vision_model", vision).state_dict())
    return full
