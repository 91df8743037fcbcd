"""Safe loading: no code path of the project unpickles a file, but for the restricted
unpickler of dataset annotation pickles (`pipeline/manifest/safe_pickle.py`, which admits plain
data only and is tested with booby-trapped pickles in test_safe_pickle.py).

A scan of the source (by syntax tree, so comments and docstrings do not count) refuses pickle
modules, `torch.load` without `weights_only=True`, `np.load(allow_pickle=True)`, torch's
pickling collectives and `from_pretrained(use_safetensors=False)`. Then the real loaders are
handed booby-trapped pickles (unpickling one creates a marker file): backbone checkpoints,
LoRA adapters and trained heads load from safetensors, and never run the trap.
"""

from __future__ import annotations

import ast
import pickle
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    REPO / "cli.py",
    REPO / "adapt",
    REPO / "pipeline",
    REPO / "synth",
    REPO / "cache",
    REPO / "heads",
    REPO / "bench",
]
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}
# torch.distributed collectives that pickle their payload (and unpickle what others send).
PICKLING_COLLECTIVES = {
    "broadcast_object_list",
    "all_gather_object",
    "gather_object",
    "scatter_object_list",
    "send_object_list",
    "recv_object_list",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def _import_problems(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        names = [node.module or ""]
        if node.module == "torch" and any(a.name == "load" for a in node.names):
            return ["from torch import load"]
    else:
        return []
    return [f"import {n}" for n in names if n.split(".")[0] in PICKLE_MODULES]


def _call_problems(call: ast.Call) -> list[str]:
    name = _dotted(call.func)
    last = name.rsplit(".", 1)[-1]
    if name in ("torch.load", "th.load") and _keyword(call, "weights_only") is not True:
        return [f"{name} without weights_only=True"]
    if last == "load" and name.split(".")[0] in ("np", "numpy") and _keyword(call, "allow_pickle"):
        return [f"{name}(allow_pickle=True)"]
    if last in PICKLING_COLLECTIVES or last == "read_pickle" or name == "torch.jit.load":
        return [f"{name} (pickle)"]
    if last == "from_pretrained" and _keyword(call, "use_safetensors") is False:
        return [f"{name}(use_safetensors=False)"]
    return []


def unsafe_loading(source: str, filename: str = "<source>") -> list[str]:
    """'file:line: problem' for every unsafe loading construct in `source`."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        found = _import_problems(node)
        if isinstance(node, ast.Call):
            found += _call_problems(node)
        problems += [f"{filename}:{node.lineno}: {p}" for p in found]
    return problems


def _python_files() -> list[Path]:
    files = []
    for source in SOURCES:
        files += [source] if source.is_file() else sorted(source.rglob("*.py"))
    return files


def test_the_scan_catches_each_unsafe_construct():
    bad = """
import pickle
import joblib as jl
from dill import loads
from torch import load
torch.load(path)
torch.load(path, weights_only=False)
np.load(path, allow_pickle=True)
dist.broadcast_object_list(box, src=0)
pd.read_pickle(path)
Model.from_pretrained(path, use_safetensors=False)
"""
    assert len(unsafe_loading(bad)) == 10
    good = """
'''docstrings may say pickle and torch.load freely'''
torch.load(path, weights_only=True)
np.load(path)
safetensors.torch.load_file(path)
Model.from_pretrained(path, use_safetensors=True)
dist.broadcast(tensor, src=0)
"""
    assert unsafe_loading(good) == []


RESTRICTED_UNPICKLER = "pipeline/manifest/safe_pickle.py"
"""The one module that may import pickle: its unpickler admits plain data and numpy arrays."""


def test_the_project_never_unpickles():
    files = _python_files()
    assert len(files) > 10
    problems = [p for f in files for p in unsafe_loading(f.read_text(), str(f.relative_to(REPO)))]
    allowed = [p for p in problems if p.startswith(f"{RESTRICTED_UNPICKLER}:")]
    assert [p.rsplit(": ", 1)[1] for p in allowed] == ["import pickle"]
    assert [p for p in problems if p not in allowed] == []


# ---- booby-trapped files -------------------------------------------------------------------
class _Trap:
    """Unpickling this creates `marker` (any code could run in its place)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def trap(tmp_path) -> tuple[bytes, Path]:
    """(a pickle that creates `marker` when loaded, marker); the trap is checked to work."""
    marker = tmp_path / "TRAP-SPRUNG"
    payload = pickle.dumps({"weight": _Trap(marker)})
    pickle.loads(payload).clear()  # the trap is live: loading it does create the marker
    assert marker.exists()
    marker.unlink()
    return payload, marker


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from skill.pipeline.backbones import save_tiny_checkpoint

    return save_tiny_checkpoint("tiny-timesformer", tmp_path_factory.mktemp("ckpt") / "tiny")


def _lora_adapter(checkpoint: Path, folder: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import TimesformerModel

    model = get_peft_model(
        TimesformerModel.from_pretrained(checkpoint),
        LoraConfig(r=2, lora_alpha=4, target_modules=["qkv"]),
    )
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.01)
    model.save_pretrained(folder)
    return folder


def test_backbone_and_adapter_load_safetensors_and_ignore_pickles_beside_them(
    checkpoint, tmp_path, trap
):
    from skill.pipeline.backbones import load_backbone

    payload, marker = trap
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    (folder / "pytorch_model.bin").write_bytes(payload)
    adapter = _lora_adapter(checkpoint, tmp_path / "adapter")
    (adapter / "adapter_model.bin").write_bytes(payload)
    backbone = load_backbone(str(folder), adapter=str(adapter), num_frames=4)
    assert backbone.provenance()["adapter"]["sha256"]
    assert not marker.exists()


def test_pickled_only_checkpoints_and_adapters_are_refused_unread(checkpoint, tmp_path, trap):
    from skill.pipeline.backbones import BackboneError, load_backbone

    payload, marker = trap
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(payload)
    with pytest.raises(Exception, match="safetensors"):
        load_backbone(str(folder), num_frames=4)
    adapter = _lora_adapter(checkpoint, tmp_path / "adapter")
    (adapter / "adapter_model.safetensors").unlink()
    (adapter / "adapter_model.bin").write_bytes(payload)
    with pytest.raises(BackboneError, match="is a pickle and is never loaded"):
        load_backbone(str(checkpoint), adapter=str(adapter), num_frames=4)
    assert not marker.exists()


def test_head_weights_load_from_safetensors_only(tmp_path, trap):
    import torch
    from safetensors.torch import save_model

    from skill.heads import build_head
    from skill.heads.predict import load_run_model

    payload, marker = trap
    options = {"dim": 8, "num_views": 2, "outputs": 4, "tokens": 3}
    head = build_head("mean", **options)
    save_model(head, str(tmp_path / "model.safetensors"))
    config = {"model": {"kind": "mean", "head": "mean", "options": options}}
    config["model"]["file"] = "model.safetensors"
    loaded = load_run_model(tmp_path, config)
    for (name, want), got in zip(
        head.state_dict().items(), loaded.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, msg=name)

    (tmp_path / "model.pt").write_bytes(payload)
    (tmp_path / "model.safetensors").write_bytes(payload)
    for name in ("model.pt", "model.safetensors"):
        config["model"]["file"] = name
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do, as long as it refuses
            load_run_model(tmp_path, config)
    assert not marker.exists()


def test_a_pickled_skillformer_components_file_is_refused_unread(tmp_path, trap):
    # A SkillFormer folder complete up to its components.pt, which holds the trap: framed
    # (pickle's default protocol) and as torch.save writes it (protocol 2, whose GLOBAL torch's
    # reader names).
    import json

    from skill.interop.skillformer import SkillFormerImportError, read_folder

    payload, marker = trap
    folder = tmp_path / "sf"
    (folder / "vision_encoder").mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / "vision_encoder" / name).write_text("{}")
    config = {"model_type": "video_classifier", "num_frames": 4, "num_views": 2,
              "projector_hidden_dim": 8}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    protocol_2 = pickle.dumps({"weight": _Trap(marker)}, protocol=2)
    for content, what in ((payload, "not a file of plain tensors"),
                          (protocol_2, "it holds a pickled reference to io.open")):  # fmt: skip
        (folder / "components.pt").write_bytes(content)
        with pytest.raises(SkillFormerImportError) as refused:
            read_folder(folder)
        message = str(refused.value)
        assert message.startswith(f"{folder / 'components.pt'}: refused: {what}"), message
        assert "weights_only" not in message, message
        assert not marker.exists()
