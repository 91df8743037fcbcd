"""`skill import skillformer DIR --out OUT`: a trained SkillFormer model (EdoWhite/SkillFormer's
``save_complete_model`` folder: ``config.json``, the PEFT adapter ``vision_encoder/`` and
``components.pt``, read with ``torch.load(weights_only=True)`` only) brought over exactly, as
``OUT/adapter/`` for ``skill extract --adapter`` and ``OUT/run/``, a ``cvf`` run folder whose
head holds SkillFormer's projector and classifier (:data:`PROJECTOR_TO_CVF`) and whose
provenance is that of the store extracted with the adapter and SkillFormer's own sampling.
Every check runs before anything is written; OUT is filled through a staging folder. The
folder's layout and the mapping are in docs/interop.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from skill.errors import SkillError
from skill.pipeline.extract_config import DEFAULT_STRIDE

SKILLFORMER_VIEWS: tuple[str, ...] = ("ego", "exo1", "exo2", "exo3", "exo4")
"""SkillFormer's views, in the order of its ``video_paths``."""
SKILLFORMER_HEADS = 16
"""Attention heads of its projector (the cvf head uses 16 at width 768)."""

PROJECTOR_TO_CVF: dict[str, str] = {
    "view_norm.weight": "view_norm.weight",
    "view_norm.bias": "view_norm.bias",
    "view_attn.in_proj_weight": "view_attention.in_proj_weight",
    "view_attn.in_proj_bias": "view_attention.in_proj_bias",
    "view_attn.out_proj.weight": "view_attention.out_proj.weight",
    "view_attn.out_proj.bias": "view_attention.out_proj.bias",
    "proj1.weight": "up.0.weight",  # Linear(D -> H)
    "proj1.bias": "up.0.bias",
    "norm1.weight": "up.2.weight",  # LayerNorm(H) after the GELU
    "norm1.bias": "up.2.bias",
    "gate.0.weight": "gate.weight",  # Linear(H -> H) before the sigmoid
    "gate.0.bias": "gate.bias",
    "proj2.weight": "down.0.weight",  # Linear(H -> D)
    "proj2.bias": "down.0.bias",
    "norm_final.weight": "down.1.weight",  # LayerNorm(D)
    "norm_final.bias": "down.1.bias",
    "video_std": "calibration_scale",  # the calibration multiplier
    "video_mean": "calibration_shift",  # the calibration shift
}
"""SkillFormer projector key -> cvf head parameter."""
CLASSIFIER_TO_CVF: dict[str, str] = {"weight": "classifier.weight", "bias": "classifier.bias"}
"""SkillFormer classifier key -> cvf head parameter."""


class SkillFormerImportError(SkillError, ValueError):
    """A SkillFormer folder that cannot be imported (the file and the mismatch named)."""


@dataclass
class ImportResult:
    adapter_dir: Path
    run_dir: Path
    extract_command: str


@dataclass
class SkillFormerFolder:
    """What is read from the folder, checked."""

    path: Path
    config: dict
    frames: int
    views: list[str]
    hidden: int
    adapter: Path
    state: dict  # cvf parameter name -> tensor


def map_components(components: dict, source: str) -> dict:
    """``{"projector": ..., "classifier": ...}`` -> the cvf head's state dict (every key of
    :data:`PROJECTOR_TO_CVF` and :data:`CLASSIFIER_TO_CVF` required, no other key allowed)."""
    import torch

    if not isinstance(components, dict):
        raise SkillFormerImportError(
            f"{source}: expected a dict, found {type(components).__name__}"
        )
    state = {}
    for part, mapping in (("projector", PROJECTOR_TO_CVF), ("classifier", CLASSIFIER_TO_CVF)):
        saved = components.get(part)
        if not isinstance(saved, dict):
            raise SkillFormerImportError(f"{source}: no {part!r} state dict")
        missing = sorted(set(mapping) - set(saved))
        unknown = sorted(set(saved) - set(mapping))
        if missing or unknown:
            raise SkillFormerImportError(
                f"{source}: {part} keys differ from SkillFormer's: missing {missing}, "
                f"unknown {unknown}"
            )
        for key, name in mapping.items():
            value = saved[key]
            if not isinstance(value, torch.Tensor):
                raise SkillFormerImportError(f"{source}: {part}.{key} is not a tensor")
            value = value.detach().float()
            if key.startswith("video_") and value.numel() == 1:
                value = value.reshape(())  # a scalar, saved as () or (1,)
            state[name] = value
    return state


def read_folder(folder: str | Path) -> SkillFormerFolder:
    """Read and check a SkillFormer output folder (nothing is written)."""
    import torch

    from skill.pipeline.backbones import check_adapter_folder
    from skill.pipeline.backbones.registry import BackboneError

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise SkillFormerImportError(f"{path}: no such folder")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise SkillFormerImportError(f"{config_file}: missing (not a SkillFormer model folder)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SkillFormerImportError(f"{config_file}: not readable JSON ({err})") from None
    if not isinstance(config, dict) or config.get("model_type") != "video_classifier":
        found = config.get("model_type") if isinstance(config, dict) else None
        raise SkillFormerImportError(
            f"{config_file}: model_type is {found!r}, not SkillFormer's 'video_classifier'"
        )
    numbers = {}
    for key in ("num_frames", "num_views", "projector_hidden_dim"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SkillFormerImportError(
                f"{config_file}: {key} must be a positive int, got {value!r}"
            )
        numbers[key] = value
    if numbers["num_views"] > len(SKILLFORMER_VIEWS):
        raise SkillFormerImportError(
            f"{config_file}: num_views {numbers['num_views']}, but SkillFormer has at most "
            f"{len(SKILLFORMER_VIEWS)} ({', '.join(SKILLFORMER_VIEWS)})"
        )
    if config.get("num_classes", 4) != 4:
        raise SkillFormerImportError(
            f"{config_file}: num_classes {config.get('num_classes')}, skill predicts 4 levels"
        )
    heads = config.get("projector_num_heads", SKILLFORMER_HEADS)
    if heads != SKILLFORMER_HEADS:
        raise SkillFormerImportError(
            f"{config_file}: projector_num_heads {heads}; the cvf head has {SKILLFORMER_HEADS}"
        )
    adapter = path / "vision_encoder"
    if not adapter.is_dir():
        raise SkillFormerImportError(f"{adapter}: missing (SkillFormer's PEFT adapter folder)")
    try:
        check_adapter_folder(adapter)
    except BackboneError as err:
        raise SkillFormerImportError(str(err)) from None
    components_file = path / "components.pt"
    if not components_file.is_file():
        raise SkillFormerImportError(f"{components_file}: missing (projector and classifier)")
    try:
        with warnings.catch_warnings():  # torch's note on the pickle protocol of a refused file
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            components = torch.load(components_file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unpickling failure: refused, named)
        raise SkillFormerImportError(
            f"{components_file}: refused: {what_torch_refused(err)}; only plain tensors (the "
            "projector's and classifier's state dicts) are read from it, and nothing in it was "
            "run or built"
        ) from None
    state = map_components(components, str(components_file))
    return SkillFormerFolder(
        path=path,
        config=config,
        frames=numbers["num_frames"],
        views=list(SKILLFORMER_VIEWS[: numbers["num_views"]]),
        hidden=numbers["projector_hidden_dim"],
        adapter=adapter,
        state=state,
    )


def what_torch_refused(error: Exception) -> str:
    """What torch's weights-only loader found instead of plain tensors, as a phrase. Its own
    message is not repeated: it advises loading the file unsafely (and carries ANSI codes)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
    if found:
        return f"it holds a pickled reference to {found.group(1)} (a Python object, not a tensor)"
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.DOTALL)
    if detail:
        return f"not a file of plain tensors ({' '.join(detail.group(1).split())})"
    first = text.strip().splitlines()[0] if text.strip() else ""
    if not first or "weights_only" in first:
        return f"not a file of plain tensors ({type(error).__name__})"
    return f"not a file of plain tensors ({first})"


def default_backbone(config: dict) -> str:
    """SkillFormer's ``vision_encoder_id`` as a registered name when one has that source."""
    from skill.pipeline.backbones.registry import BACKBONES

    source = config.get("vision_encoder_id") or "facebook/timesformer-base-finetuned-k600"
    for name, spec in sorted(BACKBONES.items()):
        if spec.source == source:
            return name
    return str(source)


def build_head(found: SkillFormerFolder, dim: int):
    """The cvf head with SkillFormer's weights (shapes checked against the folder)."""
    from skill.heads.registry import build_head as build

    options = {"dim": dim, "num_views": len(found.views), "outputs": 4, "tokens": 1,
               "hidden": found.hidden, "dropout": 0.1}  # fmt: skip
    head = build("cvf", **options)
    own = head.state_dict()
    source = found.path / "components.pt"
    for name, value in found.state.items():
        if tuple(own[name].shape) != tuple(value.shape):
            key = _skillformer_key(name)
            raise SkillFormerImportError(
                f"{source}: {key} has shape {list(value.shape)}, expected "
                f"{list(own[name].shape)} (width {dim}, projector_hidden_dim {found.hidden})"
            )
    head.load_state_dict(found.state, strict=True)
    return head.eval(), options


def _skillformer_key(name: str) -> str:
    for mapping, part in ((PROJECTOR_TO_CVF, "projector"), (CLASSIFIER_TO_CVF, "classifier")):
        for key, value in mapping.items():
            if value == name:
                return f"{part}.{key}"
    return name


def import_skillformer(
    folder: str | Path,
    out: str | Path,
    *,
    backbone: str | None = None,
    strategy: str = "skillformer-windows",
    stride: int | None = DEFAULT_STRIDE,
    clips: int = 1,
    device: str = "cpu",
) -> ImportResult:
    """Check everything, then write ``OUT/adapter/`` and ``OUT/run/``.

    ``backbone``: the base TimeSformer (default: SkillFormer's ``vision_encoder_id``, as a
    registered name when there is one); ``strategy``, ``stride``, ``clips``: the sampling the
    store for the run will be extracted with (recorded in the run's provenance; SkillFormer's
    is one ``skillformer-windows`` window of T frames at rate 4)."""
    from skill.pipeline.backbones import load_backbone, resolve_backbone
    from skill.pipeline.backbones.registry import BackboneError
    from skill.pipeline.extract import build_provenance
    from skill.pipeline.extract_config import ExtractConfig

    found = read_folder(folder)
    out = Path(out).expanduser()
    adapter_dir, run_dir = out / "adapter", out / "run"
    for target in (adapter_dir, run_dir):
        if target.exists():
            raise SkillFormerImportError(f"{target}: exists; choose another --out")
    name = backbone or default_backbone(found.config)
    where = found.path / "config.json" if backbone is None else f"--backbone {backbone}"
    try:
        family = resolve_backbone(name).family.name
    except BackboneError as err:
        raise SkillFormerImportError(f"{where}: {err}") from None
    if family != "timesformer":
        raise SkillFormerImportError(
            f"{where}: backbone {name} is a {family}; SkillFormer's is a TimeSformer"
        )
    try:
        loaded = load_backbone(name, adapter=found.adapter, device=device, token_mode="mean_all",
                               num_frames=found.frames, time_embedding="linear")  # fmt: skip
    except BackboneError as err:
        raise SkillFormerImportError(f"{found.adapter}: {err}") from None
    dim = int(found.state["view_norm.weight"].shape[0])
    if dim != loaded.dim:
        raise SkillFormerImportError(
            f"{found.path / 'components.pt'}: projector width {dim}, but backbone {name} has "
            f"width {loaded.dim}"
        )
    head, options = build_head(found, dim)
    cfg = ExtractConfig(
        manifest=Path("MANIFEST"), store=Path("TOKENS.zarr"), backbone=name,
        adapter=adapter_dir, tokens="mean_all", time_embedding="linear", frames=found.frames,
        clips=clips, strategy=strategy, stride=stride if strategy != "uniform" else None,
    )  # fmt: skip
    provenance = build_provenance(cfg, loaded)
    provenance["backbone"]["adapter"] = {
        "path": str(adapter_dir.resolve()),
        "sha256": loaded.adapter["sha256"],
    }
    command = extract_command(cfg)
    _write(out, found, head, options, provenance, clips, command)
    return ImportResult(adapter_dir, run_dir, command)


def extract_command(cfg) -> str:
    """The `skill extract` command whose store the imported run reads."""
    parts = [
        f"skill extract MANIFEST --store TOKENS.zarr --backbone {cfg.backbone}",
        f"--adapter {cfg.adapter} --tokens mean_all --time-embedding linear",
        f"--frames {cfg.frames} --clips {cfg.clips} --sampling {cfg.strategy}",
    ]
    if cfg.strategy != "uniform":
        parts.append(f"--stride {cfg.stride if cfg.stride is not None else DEFAULT_STRIDE}")
    return " ".join(parts)


def _write(out: Path, found, head, options, provenance, clips, command) -> None:
    base_provenance = {**provenance["backbone"], "adapter": None}
    from skill.cache.files import staging_path
    from skill.cache.store import package_version
    from skill.heads.run_folder import RUN_FORMAT_VERSION, write_json
    from skill.heads.trainer import save_tensors
    from skill.tasks.classification import EGOEXO4D_LEVELS

    out.mkdir(parents=True, exist_ok=True)
    staging = staging_path(out / "import")
    staging.mkdir()
    try:
        from skill.pipeline.backbones import write_training_record

        shutil.copytree(found.adapter, staging / "adapter")
        # SkillFormer trained its LoRA with linear time embeddings on this base.
        write_training_record(
            staging / "adapter", base_provenance, made_by="skill import skillformer"
        )
        run = staging / "run"
        run.mkdir()
        save_tensors(run / "model.safetensors", head.state_dict())  # mode from the umask
        write_json(run / "metrics.json", {"imported": {"skillformer": str(found.path.resolve())}})
        write_json(run / "config.json", {
            "skill_run_format": RUN_FORMAT_VERSION,
            "package_version": package_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "fit": {"head": "cvf", "hidden": found.hidden, "dropout": 0.1},
            "model": {"kind": "torch", "head": "cvf", "options": options,
                      "file": "model.safetensors"},
            "store": {"path": "", "provenance": provenance, "views": list(found.views),
                      "geometry": {"clips": clips, "tokens": 1, "dim": options["dim"]}},
            "view_names": list(found.views),
            "task": {"name": "classification", "schema": {"labels": list(EGOEXO4D_LEVELS)}},
            "takes": {"train_summary": {"class_counts": [0] * len(EGOEXO4D_LEVELS)}},
            "imported": {"skillformer": str(found.path.resolve()), "config": found.config,
                         "extract_command": command},
        })  # fmt: skip
        os.rename(staging / "adapter", out / "adapter")
        os.rename(run, out / "run")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
