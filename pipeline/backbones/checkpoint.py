"""Checkpoints: resolving a name (registry, local folder, hub id) and loading its weights.

A local folder's weights load only from safetensors (``use_safetensors=True``), and nothing
loads with ``trust_remote_code``. A hub checkpoint is read from the Hugging Face cache when it
is there (as cached, without asking the hub for a newer revision); the hub is asked only for
what the cache lacks, and only after one short reachability check, so that an offline node
(``HF_HUB_OFFLINE``, or a hub that does not answer) fails at once, naming the checkpoint and
how to fetch it, instead of retrying for half a minute.
"""

from __future__ import annotations

import contextlib
import functools
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
# How long the one reachability check waits for the hub before the node counts as offline.
HUB_PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ResolvedBackbone:
    """A backbone resolved once (:func:`resolve_backbone`): where its weights and preprocessing
    come from, and its family, which everything that loads or runs it is handed."""

    name: str
    """Registry name, or the folder/hub id as given."""
    family: Family
    """The registered family that loads and runs it."""
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
        return ResolvedBackbone(spec.name, FAMILIES[spec.family], spec.source, spec, False)
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        folder = folder.resolve()
        skillformer = skillformer_folder(folder)
        if skillformer is not None:
            raise BackboneError(skillformer_refusal("backbone", folder, skillformer))
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
    label = f"backbone {name_or_path} (not a registered name nor a folder: a hub id)"
    config_path = hub_file(name_or_path, "config.json", label)
    if config_path is None:
        raise BackboneError(f"{label}: the hub repository has no config.json")
    family = _family_of(read_json(config_path), f"{name_or_path}/config.json")
    return ResolvedBackbone(name_or_path, family, name_or_path, None, False)


def skillformer_folder(path: Path) -> Path | None:
    """The SkillFormer model folder ``path`` is, or whose ``vision_encoder/`` it is (its
    config.json says ``model_type: "video_classifier"``); None for anything else."""
    for folder in (path, path.parent):
        if folder is path.parent and path.name != "vision_encoder":
            continue
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        is_skillformer = isinstance(config, dict) and config.get("model_type") == "video_classifier"
        if is_skillformer and (folder / "vision_encoder").is_dir():
            return folder
    return None


def skillformer_refusal(role: str, path: Path, folder: Path) -> str:
    """The one way to use the SkillFormer model folder ``folder``, for a message about ``path``
    given as ``role`` (backbone, adapter)."""
    # Its raw vision_encoder/ alone would run with nearest time embeddings and no head: the
    # import records the linear ones SkillFormer trained with, and maps its head.
    what = "a SkillFormer model folder"
    if path != folder:
        what = f"the vision_encoder/ of the SkillFormer model folder {folder}"
    return (
        f"{role} {path}: {what}; run `skill import skillformer {folder} --out OUT`, which "
        "checks it, writes OUT/adapter and OUT/run and prints the `skill extract` command that "
        "reproduces SkillFormer's tokens"
    )


def _family_of(config: dict[str, Any], where: str) -> Family:
    if "auto_map" in config:
        # The checkpoint ships its own modelling code: loading it would need trust_remote_code.
        raise BackboneError(
            f"{where}: auto_map is set, so the checkpoint's code would need trust_remote_code, "
            "which is never used; only transformers' own classes load"
        )
    model_type = config.get("model_type")
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
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


def hub_file(repo_id: str, filename: str, label: str) -> Path | None:
    """Local path of a hub file: the cache's copy, else downloaded when the hub answers; None
    when the repository has no such file. ``label`` names the backbone in messages."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return Path(cached)
    if cached is _CACHED_NO_EXIST:  # the hub said so when the snapshot was downloaded
        return None
    snapshot_cached = isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    if filename != "config.json" and snapshot_cached and _hub_unreachable() is not None:
        return None  # the cached snapshot lacks this (optional) file, and the hub cannot say
    require_hub(repo_id, label)
    from transformers.utils import cached_file

    try:
        path = cached_file(repo_id, filename, _raise_exceptions_for_missing_entries=False)
    except OSError as error:
        raise BackboneError(
            f"{label}: {filename} of {repo_id} could not be fetched from the hub: "
            f"{_first_line(error)}"
        ) from None
    return Path(path) if path is not None else None


def require_hub(repo_id: str, label: str) -> None:
    """Refuse at once, saying how to get the checkpoint, when the hub cannot be asked for what
    the cache lacks (offline mode, or the hub did not answer the reachability check)."""
    from huggingface_hub import constants

    why = _hub_unreachable()
    if why is None:
        return
    cache, folder = constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--")
    raise BackboneError(
        f"{label}: checkpoint {repo_id} is not in the Hugging Face cache ({cache}) and cannot "
        f"be downloaded ({why}); on a machine with network run `hf download {repo_id}` (or "
        f"`huggingface-cli download {repo_id}`) and copy its cache folder {folder} into "
        f"{cache}, or point HF_HOME at a cache that holds it, or pass a local checkpoint "
        "folder to --backbone"
    )


def _hub_unreachable() -> str | None:
    """Why the hub cannot be asked (offline mode, no answer), None when it answers."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    return _probe_hub(constants.ENDPOINT)


@functools.cache
def _probe_hub(endpoint: str) -> str | None:
    """One HEAD request to the hub with a short timeout and no retries, once per process."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as error:  # any failure to get an answer (the client's errors vary)
        return f"{endpoint} did not answer: {_first_line(error) or type(error).__name__}"
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def checkpoint_folder(resolved: ResolvedBackbone) -> Path:
    """The folder holding config/weights: the given folder, or the hub snapshot in the cache."""
    if resolved.is_folder:
        return Path(str(resolved.source))
    path = hub_file(str(resolved.source), "config.json", _label(resolved))
    if path is None:
        raise BackboneError(f"{_label(resolved)}: the hub repository has no config.json")
    return path.parent


def _label(resolved: ResolvedBackbone) -> str:
    """The backbone as messages name it: the registered name, or the hub id / folder."""
    return f"backbone {resolved.name}"


def load_preprocessing(resolved: ResolvedBackbone) -> Preprocessing:
    """Preprocessing of a preset (its own dict) or checkpoint (its preprocessor_config.json)."""
    if resolved.is_tiny:
        where = f"tiny preset {resolved.name}"
        raw = dict(resolved.spec.tiny_preprocessing or {})  # type: ignore[union-attr]
        return parse_preprocessor_config(raw, family=resolved.family, where=where)
    names = resolved.family.preprocessor_files
    path = _preprocessor_file(resolved, names)
    if path is None or not path.is_file():
        where = f"{resolved.source}/{names[0]}"  # the folder's file, or the hub repository's
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
    for name in names:
        path = hub_file(str(resolved.source), name, _label(resolved))
        if path is not None:
            return path
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


def load_pretrained(resolved: ResolvedBackbone):
    """from_pretrained of the family's model; refuses a checkpoint with missing weights."""
    model, info = _from_pretrained(resolved)
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise BackboneError(
            f"{resolved.source}: the checkpoint does not fill the {type(model).__name__}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, mismatched {mismatched[:5]}"
        )
    return model.eval()


def _from_pretrained(resolved: ResolvedBackbone):
    """(model, loading info): a folder's safetensors; a hub checkpoint from its snapshot folder
    in the cache, else downloaded once the hub has answered."""
    load = functools.partial(
        resolved.family.transformers_class().from_pretrained, output_loading_info=True
    )
    with quiet_transformers():
        if resolved.is_folder:
            return load(resolved.source, use_safetensors=True)
        try:
            # A folder, not the hub id: from_pretrained then asks the hub nothing at all.
            return load(str(checkpoint_folder(resolved)))
        except OSError:  # the cache has the config but not (all) the weights
            require_hub(str(resolved.source), _label(resolved))
            return load(resolved.source)


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
