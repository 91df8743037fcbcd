"""Checkpoints: resolving a name (registry, local folder, hub id) and loading its weights.

A local folder's weights load only from safetensors (``use_safetensors=True``), and nothing
loads with ``trust_remote_code``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skill.pipeline.backbones.preprocessing import Preprocessing, parse_preprocessor_config
from skill.pipeline.backbones.registry import (
    BACKBONES,
    FAMILIES,
    BackboneError,
    BackboneSpec,
    Family,
    backbone_names,
)

# The shape of a hub repository id, "org/name" (huggingface_hub's characters); anything else
# that is neither registered nor a folder is refused before the hub is asked (offline, the
# hub client retries for ~26 s before failing).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class ResolvedBackbone:
    """Where a backbone's weights and preprocessing come from."""

    name: str
    """Registry name, or the folder/hub id as given."""
    family: str
    """A registered family's name."""
    source: str | None
    """Hub id or absolute folder; None for a tiny preset."""
    spec: BackboneSpec | None
    """The registry entry, if any."""
    is_folder: bool
    """True when ``source`` is a local checkpoint folder."""

    @property
    def is_tiny(self) -> bool:
        """True for a registered tiny preset (built, not loaded)."""
        return self.spec is not None and self.spec.is_tiny


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
        family = _family_of(read_json(config_path), str(config_path))
        return ResolvedBackbone(name_or_path, family, str(folder), None, True)
    if name_or_path.startswith((".", "/", "~")) or folder.exists():
        raise BackboneError(f"{name_or_path}: no such checkpoint folder")
    if not _HUB_ID.fullmatch(name_or_path):
        raise BackboneError(
            f"backbone {name_or_path!r}: not a registered name ({', '.join(backbone_names())}), "
            "not a folder, and not a hub id (org/name)"
        )
    config_path = hub_file(name_or_path, "config.json")
    family = _family_of(read_json(config_path), f"{name_or_path}/config.json")
    return ResolvedBackbone(name_or_path, family, name_or_path, None, False)


def _family_of(config: dict[str, Any], where: str) -> str:
    if "auto_map" in config:
        # The checkpoint ships its own modelling code: loading it would need trust_remote_code.
        raise BackboneError(
            f"{where}: auto_map is set, so the checkpoint's code would need trust_remote_code, "
            "which is never used; only transformers' own classes load"
        )
    model_type = config.get("model_type")
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family.name
    accepted = [t for family in FAMILIES.values() for t in family.model_types]
    listed = ", ".join(accepted[:-1]) + " or " + accepted[-1] if len(accepted) > 1 else accepted[0]
    raise BackboneError(f"{where}: model_type {model_type!r} is not supported ({listed})")


def read_json(path: Path | str) -> dict[str, Any]:
    """A JSON object from a file; BackboneError (with the line) when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise BackboneError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    if not isinstance(data, dict):
        raise BackboneError(f"{path}: expected a JSON object")
    return data


def hub_file(repo_id: str, filename: str) -> Path:
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


def checkpoint_folder(resolved: ResolvedBackbone) -> Path:
    """The folder holding config/weights: the given folder, or the hub snapshot in the cache."""
    if resolved.is_folder:
        return Path(str(resolved.source))
    return hub_file(str(resolved.source), "config.json").parent


def load_preprocessing(resolved: ResolvedBackbone) -> Preprocessing:
    """Preprocessing of a preset (its own dict) or checkpoint (its preprocessor_config.json)."""
    if resolved.is_tiny:
        where = f"tiny preset {resolved.name}"
        raw = dict(resolved.spec.tiny_preprocessing or {})  # type: ignore[union-attr]
        return parse_preprocessor_config(raw, family=resolved.family, where=where)
    names = FAMILIES[resolved.family].preprocessor_files
    path = _preprocessor_file(resolved, names)
    if path is None or not path.is_file():
        where = Path(str(resolved.source)) / names[0] if resolved.is_folder else names[0]
        also = f" (nor {', '.join(names[1:])})" if len(names) > 1 else ""
        raise BackboneError(
            f"{where}: missing{also}; mean/std/size are read from it, never guessed"
        )
    return parse_preprocessor_config(read_json(path), family=resolved.family, where=str(path))


def _preprocessor_file(resolved: ResolvedBackbone, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` the folder or hub repository has (the folder's first if none)."""
    if resolved.is_folder:
        folder = Path(str(resolved.source))
        return next((folder / n for n in names if (folder / n).is_file()), folder / names[0])
    for index, name in enumerate(names):
        try:
            return hub_file(str(resolved.source), name)
        except BackboneError:
            if index == len(names) - 1:
                raise
    return None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for a block."""
    # from_pretrained prints a load report listing the unused classifier / text-tower weights
    # and progress bars; missing weights are checked explicitly instead (see load_pretrained).
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


def load_pretrained(resolved: ResolvedBackbone, family: Family):
    """from_pretrained of the family's model; refuses a checkpoint with missing weights."""
    kwargs = {"use_safetensors": True} if resolved.is_folder else {}
    with quiet_transformers():
        model, info = family.transformers_class().from_pretrained(
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


def check_model_input(model, prep: Preprocessing, family: Family, where: str) -> None:
    """The crop must be the model's image_size (TimeSformer's layers reshape with it; a family
    with ``any_crop`` takes any multiple of the patch), and the config must hold the values
    the family's token layout assumes."""
    size, patch = getattr(model.config, family.image_size_key), model.config.patch_size
    if family.any_crop:
        if prep.crop_height % patch or prep.crop_width % patch:
            raise BackboneError(
                f"{where}: preprocessing crops {prep.crop_height}x{prep.crop_width}, not a "
                f"multiple of the model's patch size {patch}"
            )
    elif (prep.crop_height, prep.crop_width) != (size, size):
        raise BackboneError(
            f"{where}: preprocessing crops {prep.crop_height}x{prep.crop_width} but the model "
            f"expects {size}x{size} (config {family.image_size_key})"
        )
    for key, required, why in family.required_config:
        value = getattr(model.config, key)
        if value != required:
            raise BackboneError(
                f"{where}: {key} {value!r} is not supported ({required} only; {why})"
            )
