"""PEFT LoRA adapters: checked (safetensors only, every saved weight used), hashed, merged.

An adapter made by skill (`skill adapt`, `skill import skillformer`) carries a training record,
``skill_adapter.json``: the base weights it was trained on and the time-embedding
interpolation it was trained with. A LoRA update is only meaningful on those weights and
that interpolation, so a load with other ones is refused naming the file (not silently
switched: the extract settings stay the ones the command line says). Adapters from elsewhere
have no record and are checked by their shapes and keys only.

An adapter skill writes (:func:`save_adapter`) is the same bytes for the same training: PEFT
keeps ``target_modules`` as a set and writes it in the set's order, which changes from one
process to the next, so the config is rewritten with sorted keys and sorted targets (the
adapter's hash covers it). Its weights get the mode the umask gives, like every other output.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from skill.cache.files import follow_umask, write_text_atomically
from skill.pipeline.backbones.checkpoint import skillformer_folder, skillformer_refusal
from skill.pipeline.backbones.hashing import files_sha256
from skill.pipeline.backbones.registry import BackboneError

_ADAPTER_CONFIG = "adapter_config.json"
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
TRAINING_RECORD = "skill_adapter.json"
"""What skill records beside an adapter it made (not hashed: the adapter's hash is its weights)."""
TRAINING_RECORD_FORMAT = 1


def check_adapter_folder(folder: str | Path) -> Path:
    """An adapter folder must hold adapter_config.json and adapter_model.safetensors."""
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise BackboneError(f"adapter {path}: no such folder")
    if not (path / _ADAPTER_CONFIG).is_file() and (path / "vision_encoder").is_dir():
        raise BackboneError(skillformer_refusal("adapter", path, path))
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
    _check_adapter_targets(model, path)
    _check_adapter_shapes(model, path)
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


def _check_adapter_targets(model, path: Path) -> None:
    """An adapter whose target modules name no module of this backbone was trained on another
    one: refused naming adapter_config.json, its targets and the base model it names."""
    file = path / _ADAPTER_CONFIG
    try:
        config = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BackboneError(f"{file}: not a readable adapter config ({error})") from None
    targets = config.get("target_modules") if isinstance(config, dict) else None
    if not isinstance(targets, list) or not targets:
        return  # a regex or "all-linear": PEFT resolves it
    names = [name for name, _ in model.named_modules()]
    if not any(n == t or n.endswith("." + t) for t in targets for n in names):
        base = config.get("base_model_name_or_path")
        raise BackboneError(
            f"{file}: target_modules {sorted(targets)} match no module of this backbone "
            f"({type(model).__name__}); the adapter was trained on another backbone"
            + (f" ({base})" if base else "")
        )


def _check_adapter_shapes(model, path: Path) -> None:
    """Every saved LoRA matrix must fit the Linear it adapts: an adapter trained on another
    backbone width is refused naming the file, the weight and both shapes (PEFT's own error is
    a state-dict dump). Weights whose module does not exist are left to _check_adapter_keys."""
    from safetensors import safe_open

    modules = dict(model.named_modules())
    file = path / _ADAPTER_WEIGHTS
    with safe_open(str(file), framework="pt") as handle:
        for key in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
            name, found, rest = key.partition(".lora_")
            module = modules.get(name.removeprefix("base_model.model."))
            if not found or not hasattr(module, "in_features"):
                continue
            shape = tuple(handle.get_slice(key).get_shape())
            expected = module.in_features if rest.startswith("A") else module.out_features
            got = shape[1] if rest.startswith("A") else shape[0]
            if len(shape) == 2 and got != expected:
                raise BackboneError(
                    f"{file}: {key} has shape {list(shape)}, but this backbone's {name} maps "
                    f"{module.in_features} -> {module.out_features} features (an adapter "
                    "trained on another backbone or width)"
                )


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


def save_adapter(peft_model, folder: str | Path, backbone: dict, made_by: str) -> None:
    """Write ``peft_model``'s adapter to ``folder`` (PEFT's files, the config in a fixed order,
    the weights readable as the umask allows) and its training record (see the module
    docstring; ``backbone`` as for :func:`write_training_record`)."""
    folder = Path(folder)
    peft_model.save_pretrained(str(folder), safe_serialization=True)
    follow_umask(folder / _ADAPTER_WEIGHTS)  # safetensors writes it 0600
    sets = {
        name
        for settings in peft_model.peft_config.values()
        for name, value in vars(settings).items()
        if isinstance(value, (set, frozenset))
    }
    sort_adapter_config(folder / _ADAPTER_CONFIG, {"target_modules", *sets})
    write_training_record(folder, backbone, made_by)


def sort_adapter_config(path: Path, sets: set[str]) -> None:
    """Rewrite an adapter_config.json with its keys sorted and the lists of ``sets`` (fields
    PEFT keeps as sets, written in set order) sorted."""
    config = json.loads(path.read_text())
    for name in sets:
        if isinstance(config.get(name), list):
            config[name] = sorted(config[name], key=str)
    write_text_atomically(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_training_record(folder: str | Path, backbone: dict, made_by: str) -> None:
    """``skill_adapter.json`` in ``folder``: ``backbone`` is the base's provenance
    (``Backbone.provenance()`` of the model the adapter was trained on, before the adapter)."""
    keys = ("name", "source", "weights_sha256", "dim", "num_frames", "checkpoint_num_frames",
            "token_mode")  # fmt: skip
    record = {
        "skill_adapter": TRAINING_RECORD_FORMAT,
        "made_by": made_by,
        "backbone": {k: backbone.get(k) for k in keys},
        "time_embedding": backbone.get("time_embedding", "nearest"),
    }
    (Path(folder) / TRAINING_RECORD).write_text(json.dumps(record, indent=1) + "\n")


def read_training_record(folder: str | Path) -> dict | None:
    """The adapter's ``skill_adapter.json`` (None when it has none: made elsewhere)."""
    file = Path(folder) / TRAINING_RECORD
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BackboneError(f"{file}: not a readable training record ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("backbone"), dict):
        raise BackboneError(f"{file}: not a skill adapter training record")
    if record.get("skill_adapter", 0) > TRAINING_RECORD_FORMAT:
        raise BackboneError(f"{file}: format {record.get('skill_adapter')} is newer than skill")
    return record


def check_training_record(folder: str | Path, *, backbone: str, weights_sha256: str | None,
                          time_embedding: str) -> None:  # fmt: skip
    """Refuse to load the adapter on other base weights or with another time-embedding
    interpolation than it was trained with (both named, with what to do)."""
    path = check_adapter_folder(folder)
    record = read_training_record(path)
    skillformer = skillformer_folder(path) if record is None else None
    if skillformer is not None and time_embedding != "linear":
        # SkillFormer's raw vision_encoder/: with nearest time embeddings its tokens are wrong.
        raise BackboneError(skillformer_refusal("adapter", path, skillformer))
    if record is None:
        return
    file = path / TRAINING_RECORD
    base = record["backbone"]
    trained = base.get("weights_sha256")
    if trained and weights_sha256 and trained != weights_sha256:
        raise BackboneError(
            f"{file}: the adapter was trained on {base.get('name')} (weights sha256 "
            f"{trained[:12]}), not on {backbone} (weights sha256 {weights_sha256[:12]}), "
            "another backbone; extract with the one it was trained on"
        )
    recorded = record.get("time_embedding", "nearest")
    if recorded != time_embedding:
        raise BackboneError(
            f"{file}: the adapter was trained with --time-embedding {recorded}, this extract "
            f"uses {time_embedding}; pass --time-embedding {recorded} (its tokens are only "
            "meaningful with the interpolation it was trained with)"
        )
