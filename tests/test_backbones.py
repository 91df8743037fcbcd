"""Backbones: registry, real from_pretrained loading of tiny checkpoints, token layouts, adapters.

Reference outputs are computed here independently of pipeline.backbones: preprocessing with
numpy from the saved preprocessor_config.json, the forward with transformers/PEFT directly,
and pooling with explicit token indices.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionModel, TimesformerModel

import skill.pipeline.backbones.checkpoint as checkpoint_module
from skill.errors import SkillError
from skill.pipeline.backbones import (
    BACKBONES,
    FAMILIES,
    SKILLFORMER_LORA_TARGETS,
    TOKEN_MODES,
    BackboneError,
    BackboneSpec,
    Family,
    TokenMode,
    adapter_sha256,
    backbone_names,
    build_tiny_model,
    describe_backbones,
    load_backbone,
    parse_preprocessor_config,
    register,
    save_tiny_checkpoint,
    tiny_names,
)

REPO = Path(__file__).resolve().parents[1]
# From the registry (as timm's tests use list_models()): a new family's preset is tested here
# without editing a test.
TINY = tiny_names()
FAMILY_NAMES = list(FAMILIES)
FRAMES = 4  # the tiny TimeSformer checkpoint's num_frames
CROP = 32


def random_clips(n: int, frames: int = FRAMES, seed: int = 0, crop: int = CROP) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, frames, crop, crop, 3), dtype=torch.uint8, generator=generator)


def preset_clips(name: str, n: int, seed: int = 0) -> tuple[torch.Tensor, int]:
    """Clips fitting a tiny preset: (clips, T) at its checkpoint's frames (FRAMES for images)."""
    geometry = BACKBONES[name].static_geometry()
    frames = geometry.frames or FRAMES
    return random_clips(n, frames=frames, seed=seed, crop=geometry.crop), frames


def family_preset(family: str) -> str:
    """The first tiny preset of a family."""
    return next(name for name in TINY if BACKBONES[name].family == family)


def reference_pixels(clips: torch.Tensor, folder: Path) -> torch.Tensor:
    """(N, T, H, W, 3) uint8 -> (N, T, 3, H, W) float32, straight from the folder's config."""
    config = json.loads((folder / "preprocessor_config.json").read_text())
    mean = np.asarray(config["image_mean"], dtype=np.float32)
    std = np.asarray(config["image_std"], dtype=np.float32)
    x = clips.numpy().astype(np.float32) * np.float32(config["rescale_factor"])
    x = (x - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)))


def timesformer_reference(folder: Path, clips: torch.Tensor, frames: int) -> torch.Tensor:
    """last_hidden_state (N, 1 + P*T, D) of TimesformerModel.from_pretrained(folder)."""
    model = TimesformerModel.from_pretrained(folder).eval()
    model.config.num_frames = frames
    with torch.no_grad():
        return model(pixel_values=reference_pixels(clips, folder)).last_hidden_state


def pool_frames(hidden: torch.Tensor, frames: int) -> torch.Tensor:
    """Frame tokens by explicit index 1 + p*T + t: (N, T, D)."""
    patches = (hidden.shape[1] - 1) // frames
    per_frame = [
        torch.stack([hidden[:, 1 + p * frames + t] for p in range(patches)]).mean(0)
        for t in range(frames)
    ]
    return torch.stack(per_frame, dim=1)


@pytest.fixture(scope="module")
def timesformer_dir(tmp_path_factory) -> Path:
    return save_tiny_checkpoint("tiny-timesformer", tmp_path_factory.mktemp("tsf"))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return save_tiny_checkpoint("tiny-clip", tmp_path_factory.mktemp("clip"))


def copy_checkpoint(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(folder, target)
    return target


# --------------------------------------------------------------------------- registry


def test_import_is_cheap_and_lists_names():
    code = (
        "import sys, skill.pipeline.backbones as b; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules), "
        "b.backbone_names())"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[] ["), result.stdout


def test_real_backbones_registered_without_loading():
    expected = {
        "timesformer-base-k600": ("timesformer", "facebook/timesformer-base-finetuned-k600"),
        "timesformer-base-k400": ("timesformer", "facebook/timesformer-base-finetuned-k400"),
        "clip-vit-b16": ("clip", "openai/clip-vit-base-patch16"),
        "clip-vit-b32": ("clip", "openai/clip-vit-base-patch32"),
    }
    for name, (family, source) in expected.items():
        spec = BACKBONES[name]
        assert (spec.family, spec.source, spec.is_tiny) == (family, source, False)
    assert set(TINY) >= {"tiny-timesformer", "tiny-clip"}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_has_a_tiny_preset_and_every_token_mode(family):
    assert any(BACKBONES[name].family == family for name in TINY)
    assert set(TOKEN_MODES) <= set(FAMILIES[family].token_modes)


def test_register_refuses_duplicates_and_bad_specs():
    with pytest.raises(BackboneError, match="registered twice"):
        register(BACKBONES["tiny-clip"])
    with pytest.raises(BackboneError, match="family"):
        BackboneSpec("x", "resnet", "org/x")
    with pytest.raises(BackboneError, match="tiny_config"):
        BackboneSpec("x", "clip", None)
    with pytest.raises(BackboneError, match="declares its geometry"):
        BackboneSpec("x", "clip", "org/x")
    with pytest.raises(BackboneError, match=r"tiny_config lacks \['num_frames'\]"):
        BackboneSpec(
            "x", "timesformer", None, {"hidden_size": 8, "image_size": 8, "patch_size": 4}, {}
        )
    mode = TokenMode(count=lambda frames, patches: 1, tokens=lambda model, pixels: pixels)
    with pytest.raises(BackboneError, match="token_modes must include"):
        Family("x", "M", "C", ("x",), "bicubic", {"cls": mode}, ())


def test_backbone_errors_are_skill_errors_and_value_errors():
    assert issubclass(BackboneError, SkillError) and issubclass(BackboneError, ValueError)


def test_real_backbones_describe_their_geometry_statically():
    rows = {row["name"]: row for row in describe_backbones()}
    assert sorted(rows) == backbone_names()
    columns = ("family", "kind", "dim", "frames", "crop", "tokens_frame", "tokens_cls")
    expected = {  # TimeSformer: 1 + 14*14*8 patch tokens; CLIP: per frame, 1 + (224/patch)^2
        "timesformer-base-k600": ("timesformer", "checkpoint", 768, 8, 224, 8, 1, 1569),
        "timesformer-base-k400": ("timesformer", "checkpoint", 768, 8, 224, 8, 1, 1569),
        "clip-vit-b16": ("clip", "checkpoint", 768, None, 224, 1, 1, 197),
        "clip-vit-b32": ("clip", "checkpoint", 768, None, 224, 1, 1, 50),
    }
    for name, values in expected.items():
        row = rows[name]
        assert tuple(row[c] for c in columns) + (row["tokens_patch"],) == values, name


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_description_matches_the_loaded_model(name):
    row = next(row for row in describe_backbones() if row["name"] == name)
    assert row["kind"] == "tiny" and row["family"] == BACKBONES[name].family
    for mode in TOKEN_MODES:
        backbone = load_backbone(name, num_frames=row["frames"] or 1, token_mode=mode)
        assert backbone.checkpoint_num_frames == row["frames"]
        assert backbone.dim == row["dim"]
        assert (backbone.preprocessing.crop_height, backbone.preprocessing.crop_width) == (
            row["crop"],
            row["crop"],
        )
        assert backbone.tokens_per_clip() == row[f"tokens_{mode}"], mode


def test_unknown_names_fail_at_once_offline_and_list_the_registry(monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    import transformers.utils

    monkeypatch.setattr(transformers.utils, "cached_file", no_hub)
    monkeypatch.setattr(checkpoint_module, "hub_file", no_hub)
    for name in ("tiny-timesformr", "timesformer_base", "a/b/c", "org/", "clip vit"):
        with pytest.raises(BackboneError, match="not a registered name") as raised:
            load_backbone(name, num_frames=2)
        assert all(registered in str(raised.value) for registered in backbone_names())


def test_hub_ids_still_ask_the_hub(monkeypatch):
    asked = []

    def fake_hub(repo_id, filename, label):
        asked.append((repo_id, filename))
        raise BackboneError(f"backbone {repo_id!r}: offline")

    monkeypatch.setattr(checkpoint_module, "hub_file", fake_hub)
    with pytest.raises(BackboneError, match="offline"):
        load_backbone("some-org/some.model_v2", num_frames=2)
    assert asked == [("some-org/some.model_v2", "config.json")]


# --------------------------------------------------------------------------- tiny presets


@pytest.mark.parametrize("name", TINY)
def test_tiny_preset_is_small_and_encodes_every_mode(name):
    # Small enough that tests build them freely (how fast that is belongs in a benchmark).
    clips, frames = preset_clips(name, 5)
    model = load_backbone(name, num_frames=frames).model
    assert sum(p.numel() for p in model.parameters()) < 200_000
    for mode in TOKEN_MODES:
        backbone = load_backbone(name, num_frames=frames, token_mode=mode, batch_size=2)
        tokens = backbone.encode(clips)
        assert tokens.dtype == torch.float32
        assert tokens.shape == (5, backbone.tokens_per_clip(), backbone.dim)
        assert torch.isfinite(tokens).all()
        assert backbone.encode(clips[:0]).shape == (0, backbone.tokens_per_clip(), backbone.dim)
        # Batching must not change results: chunks of 2 vs one pass.
        whole = load_backbone(name, num_frames=frames, token_mode=mode, batch_size=8)
        torch.testing.assert_close(whole.encode(clips), tokens, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", TINY)
def test_tiny_checkpoint_loads_like_a_direct_from_pretrained(name, tmp_path):
    # The saved folder (hub layout) holds the preset's encoder: transformers' own
    # from_pretrained of the family's class gets the same weights, and the folder encodes
    # exactly like the preset in every mode.
    folder = save_tiny_checkpoint(name, tmp_path / "ckpt")
    assert (folder / "model.safetensors").is_file()
    family = FAMILIES[BACKBONES[name].family]
    direct = family.transformers_class().from_pretrained(folder).eval()
    preset_weights = build_tiny_model(BACKBONES[name]).state_dict()
    assert set(direct.state_dict()) == set(preset_weights)
    for key, value in direct.state_dict().items():
        torch.testing.assert_close(value, preset_weights[key], atol=0, rtol=0, msg=key)
    clips, frames = preset_clips(name, 2, seed=6)
    for mode in TOKEN_MODES:
        loaded = load_backbone(str(folder), num_frames=frames, token_mode=mode)
        assert loaded.family == family.name
        preset = load_backbone(name, num_frames=frames, token_mode=mode)
        torch.testing.assert_close(loaded.encode(clips), preset.encode(clips), atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lora_targets_wrap_every_linear_and_load_as_an_adapter(family, tmp_path):
    name = family_preset(family)
    folder = save_tiny_checkpoint(name, tmp_path / "ckpt")
    targets = list(FAMILIES[family].lora_targets)
    model = FAMILIES[family].transformers_class().from_pretrained(folder)
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    assert set(peft_model.base_model.targeted_module_names) == linears
    with torch.no_grad():
        for parameter_name, parameter in peft_model.named_parameters():
            if "lora_B" in parameter_name:
                parameter.fill_(0.05)
    peft_model.save_pretrained(tmp_path / "adapter")
    clips, frames = preset_clips(name, 2, seed=8)
    adapted = load_backbone(str(folder), adapter=str(tmp_path / "adapter"), num_frames=frames)
    frozen = load_backbone(str(folder), num_frames=frames)
    assert not torch.allclose(adapted.encode(clips), frozen.encode(clips), atol=1e-3)


def test_tiny_presets_do_not_depend_on_or_disturb_the_global_seed():
    # What makes presets identical across processes: only TINY_SEED decides their weights.
    for name in TINY:
        torch.manual_seed(1)
        first = load_backbone(name, num_frames=2).provenance()["weights_sha256"]
        torch.manual_seed(2)
        torch.rand(100)
        assert load_backbone(name, num_frames=2).provenance()["weights_sha256"] == first
    torch.manual_seed(5)
    build_tiny_model(BACKBONES["tiny-timesformer"])
    after_build = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), after_build)


@pytest.mark.slow
def test_tiny_presets_are_deterministic_across_processes():
    # Slow only because the child process imports transformers again (5-20 s).
    here = {n: load_backbone(n, num_frames=2).provenance()["weights_sha256"] for n in TINY}
    code = (
        "from skill.pipeline.backbones import load_backbone; "
        f"print({{n: load_backbone(n, num_frames=2).provenance()['weights_sha256'] for n in {TINY}}})"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(here)


def test_timesformer_token_order_is_patch_major_frame_minor():
    # With zero time embeddings, TimeSformer is equivariant to permuting frames; the output
    # permutes along t only if the token of (patch p, frame t) sits at 1 + p*T + t.
    backbone = load_backbone("tiny-timesformer", num_frames=FRAMES, token_mode="patch")
    with torch.no_grad():
        backbone.model.embeddings.time_embeddings.zero_()
    clips = random_clips(2)
    order = [2, 0, 3, 1]
    plain, permuted = backbone.encode(clips), backbone.encode(clips[:, order])
    n, _, dim = plain.shape
    as_patch_frame = plain[:, 1:].reshape(n, -1, FRAMES, dim)
    permuted_patch_frame = permuted[:, 1:].reshape(n, -1, FRAMES, dim)
    torch.testing.assert_close(permuted_patch_frame, as_patch_frame[:, :, order], atol=1e-5, rtol=0)
    torch.testing.assert_close(permuted[:, 0], plain[:, 0], atol=1e-5, rtol=0)
    # The other reading (frame-major) does not satisfy the relation: the test discriminates.
    as_frame_patch = plain[:, 1:].reshape(n, FRAMES, -1, dim)
    wrong = permuted[:, 1:].reshape(n, FRAMES, -1, dim)
    assert not torch.allclose(wrong, as_frame_patch[:, order], atol=1e-3)


# --------------------------------------------------------------------------- parity


def test_timesformer_folder_matches_direct_from_pretrained(timesformer_dir):
    clips = random_clips(3, seed=1)
    hidden = timesformer_reference(timesformer_dir, clips, FRAMES)
    expected = {"patch": hidden, "cls": hidden[:, :1], "frame": pool_frames(hidden, FRAMES)}
    for mode, reference in expected.items():
        backbone = load_backbone(str(timesformer_dir), num_frames=FRAMES, token_mode=mode)
        assert backbone.family == "timesformer"
        tokens = backbone.encode(clips)
        torch.testing.assert_close(tokens, reference, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tokens.half(), reference.half(), atol=1e-3, rtol=1e-3)
    preset = load_backbone("tiny-timesformer", num_frames=FRAMES, token_mode="patch")
    torch.testing.assert_close(preset.encode(clips), hidden, atol=1e-5, rtol=1e-5)


def test_clip_full_checkpoint_matches_direct_vision_model(clip_dir):
    assert json.loads((clip_dir / "config.json").read_text())["model_type"] == "clip"
    clips = random_clips(2, seed=2)
    model = CLIPVisionModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        out = model(pixel_values=reference_pixels(clips, clip_dir).flatten(0, 1))
        normed = model.post_layernorm(out.last_hidden_state)  # (N*T, 1+P, D)
    frame = out.pooler_output.reshape(2, FRAMES, -1)
    expected = {
        "frame": frame,
        "cls": frame.mean(dim=1, keepdim=True),
        "patch": normed.reshape(2, -1, normed.shape[-1]),
    }
    for mode, reference in expected.items():
        tokens = load_backbone(str(clip_dir), num_frames=FRAMES, token_mode=mode).encode(clips)
        torch.testing.assert_close(tokens, reference, atol=1e-5, rtol=1e-5)
    # Layout: frame t's CLS sits at t*(1+P) of the patch tokens and equals the frame token.
    per_frame = 1 + (CROP // 4) ** 2
    patch = expected["patch"]
    torch.testing.assert_close(patch[:, ::per_frame], frame, atol=1e-6, rtol=0)
    preset = load_backbone("tiny-clip", num_frames=FRAMES, token_mode="patch")
    torch.testing.assert_close(preset.encode(clips), patch, atol=1e-5, rtol=1e-5)


def test_clip_vision_only_checkpoint_loads(tmp_path):
    folder = tmp_path / "vision"
    build_tiny_model(BACKBONES["tiny-clip"]).save_pretrained(folder)
    config = BACKBONES["tiny-clip"].tiny_preprocessing
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    assert json.loads((folder / "config.json").read_text())["model_type"] == "clip_vision_model"
    clips = random_clips(1)
    tokens = load_backbone(str(folder), num_frames=FRAMES).encode(clips)
    preset = load_backbone("tiny-clip", num_frames=FRAMES).encode(clips)
    torch.testing.assert_close(tokens, preset, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- preprocessing


def test_preprocessing_comes_from_the_checkpoint_config(timesformer_dir, tmp_path):
    folder = copy_checkpoint(timesformer_dir, tmp_path)
    clips = random_clips(2, seed=3)
    before = load_backbone(str(folder), num_frames=FRAMES, token_mode="patch").encode(clips)
    config_path = folder / "preprocessor_config.json"
    config = json.loads(config_path.read_text())
    config.update(image_mean=[0.5, 0.4, 0.3], image_std=[0.5, 0.25, 0.2], resample=3)
    config_path.write_text(json.dumps(config))
    backbone = load_backbone(str(folder), num_frames=FRAMES, token_mode="patch")
    after = backbone.encode(clips)
    assert not torch.allclose(before, after, atol=1e-3)
    reference = timesformer_reference(folder, clips, FRAMES)
    torch.testing.assert_close(after, reference, atol=1e-5, rtol=1e-5)
    prov = backbone.provenance()["preprocessing"]
    assert (prov["image_mean"], prov["image_std"], prov["resample"]) == (
        [0.5, 0.4, 0.3],
        [0.5, 0.25, 0.2],
        "bicubic",
    )
    geometry = backbone.geometry
    assert (geometry.shortest_edge, geometry.crop_height, geometry.crop_width) == (32, 32, 32)
    assert geometry.resample == "bicubic"


def test_parse_old_and_new_style_preprocessor_configs():
    old_clip = {  # openai/clip-vit-base-patch16 style: ints, no rescale_factor
        "crop_size": 224,
        "size": 224,
        "resample": 3,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
    }
    prep = parse_preprocessor_config(old_clip, family=FAMILIES["clip"], where="x.json")
    assert (prep.shortest_edge, prep.crop_height, prep.crop_width) == (224, 224, 224)
    assert (prep.resample, prep.rescale_factor) == ("bicubic", 1 / 255)
    exact = {"size": {"height": 224, "width": 224}, "image_mean": 0.5, "image_std": 0.5}
    exact["do_center_crop"] = False
    prep = parse_preprocessor_config(exact, family=FAMILIES["timesformer"], where="x.json")
    assert (prep.shortest_edge, prep.crop_height, prep.image_mean) == (224, 224, (0.5,) * 3)
    assert prep.resample == "bilinear"  # VideoMAEImageProcessor's default
    with pytest.raises(BackboneError, match=r"x\.json: image_mean is missing"):
        parse_preprocessor_config(
            {"size": 224, "crop_size": 224}, family=FAMILIES["clip"], where="x.json"
        )
    with pytest.raises(BackboneError, match="larger than"):
        bad = {**old_clip, "size": 200}
        parse_preprocessor_config(bad, family=FAMILIES["clip"], where="x.json")


def test_checkpoint_folder_errors(timesformer_dir, tmp_path):
    folder = copy_checkpoint(timesformer_dir, tmp_path)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(BackboneError, match="preprocessor_config.json: missing"):
        load_backbone(str(folder), num_frames=FRAMES)
    shutil.copy(timesformer_dir / "preprocessor_config.json", folder)
    config = json.loads((folder / "preprocessor_config.json").read_text())
    config.update(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
    (folder / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(BackboneError, match="expects 32x32"):
        load_backbone(str(folder), num_frames=FRAMES)
    weights = load_file(folder / "model.safetensors")
    weights.pop("timesformer.embeddings.time_embeddings")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(timesformer_dir / "preprocessor_config.json", folder)
    with pytest.raises(BackboneError, match="missing.*time_embeddings"):
        load_backbone(str(folder), num_frames=FRAMES)
    with pytest.raises(BackboneError, match="no such checkpoint folder"):
        load_backbone(str(tmp_path / "absent"), num_frames=FRAMES)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(BackboneError, match="model_type 'bert'"):
        load_backbone(str(tmp_path / "bert"), num_frames=FRAMES)


def test_bad_options_and_inputs():
    with pytest.raises(BackboneError, match="token_mode"):
        load_backbone("tiny-clip", num_frames=2, token_mode="pooled")
    with pytest.raises(BackboneError, match="num_frames"):
        load_backbone("tiny-clip", num_frames=0)
    backbone = load_backbone("tiny-clip", num_frames=2)
    with pytest.raises(BackboneError, match="uint8"):
        backbone.encode(random_clips(1, frames=2).float())
    with pytest.raises(BackboneError, match=r"\(N, 2, 32, 32, 3\)"):
        backbone.encode(random_clips(1, frames=3))


# --------------------------------------------------------------------------- frames


@pytest.mark.parametrize("frames", [2, 6])
def test_timesformer_other_frame_counts(timesformer_dir, frames):
    clips = random_clips(2, frames=frames, seed=4)
    backbone = load_backbone(str(timesformer_dir), num_frames=frames, token_mode="patch")
    tokens = backbone.encode(clips)
    assert tokens.shape == (2, 1 + 16 * frames, 32) == (2, backbone.tokens_per_clip(), 32)
    assert backbone.provenance()["checkpoint_num_frames"] == FRAMES
    torch.testing.assert_close(
        tokens, timesformer_reference(timesformer_dir, clips, frames), atol=1e-5, rtol=1e-5
    )
    framed = load_backbone(str(timesformer_dir), num_frames=frames, token_mode="frame")
    assert framed.encode(clips).shape == (2, frames, 32)
    # Why config.num_frames is set: left at the checkpoint's value the forward still runs
    # (for T=2 and 6 the reshapes happen to fit) but mixes patches and frames.
    stale = TimesformerModel.from_pretrained(timesformer_dir).eval()
    with torch.no_grad():
        wrong = stale(pixel_values=reference_pixels(clips, timesformer_dir)).last_hidden_state
    assert not torch.allclose(wrong, tokens, atol=1e-3)
    with pytest.raises(BackboneError, match="clips must be"):
        backbone.encode(random_clips(1, frames=FRAMES))


# --------------------------------------------------------------------------- adapters


def make_adapter(checkpoint: Path, folder: Path, seed: int):
    """A LoRA adapter with SkillFormer's targets and non-zero random A and B."""
    base = TimesformerModel.from_pretrained(checkpoint)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=list(SKILLFORMER_LORA_TARGETS), lora_dropout=0.1
    )
    model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    model.save_pretrained(folder)
    return model.eval()


def test_skillformer_targets_match_installed_timesformer(timesformer_dir):
    model = TimesformerModel.from_pretrained(timesformer_dir)
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for suffix in SKILLFORMER_LORA_TARGETS:
        assert any(n.endswith("." + suffix) for n in linears), suffix
    config = LoraConfig(r=4, target_modules=list(SKILLFORMER_LORA_TARGETS))
    peft_model = get_peft_model(model, config)
    # Every Linear of every layer, each wrapped once (output.dense overlaps, without error).
    assert set(peft_model.base_model.targeted_module_names) == linears
    assert len(linears) == 7 * model.config.num_hidden_layers


def test_adapter_matches_direct_peft_forward(timesformer_dir, tmp_path):
    adapter_dir = tmp_path / "adapter"
    peft_model = make_adapter(timesformer_dir, adapter_dir, seed=7)
    assert {p.name for p in adapter_dir.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    clips = random_clips(2, seed=5)
    with torch.no_grad():
        pixels = reference_pixels(clips, timesformer_dir)
        reference = peft_model(pixel_values=pixels).last_hidden_state
    adapted = load_backbone(
        str(timesformer_dir), adapter=str(adapter_dir), num_frames=FRAMES, token_mode="patch"
    )
    tokens = adapted.encode(clips)
    torch.testing.assert_close(tokens, reference, atol=1e-5, rtol=1e-5)
    frozen = load_backbone(str(timesformer_dir), num_frames=FRAMES, token_mode="patch")
    assert not torch.allclose(frozen.encode(clips), tokens, atol=1e-2)
    listing = "".join(
        f"{hashlib.sha256((adapter_dir / f).read_bytes()).hexdigest()}  {f}\n"
        for f in ("adapter_config.json", "adapter_model.safetensors")
    )
    provenance = adapted.provenance()
    assert provenance["adapter"] == {
        "path": str(adapter_dir.resolve()),
        "sha256": hashlib.sha256(listing.encode()).hexdigest(),
    }
    assert frozen.provenance()["adapter"] is None
    json.dumps(provenance)


def test_adapter_hash_follows_weights_and_unsafe_folders_are_refused(timesformer_dir, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    make_adapter(timesformer_dir, first, seed=1)
    make_adapter(timesformer_dir, second, seed=2)
    assert adapter_sha256(first) != adapter_sha256(second)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(first / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(BackboneError, match="adapter_model.safetensors is missing.*pickle"):
        load_backbone(str(timesformer_dir), adapter=str(pickled), num_frames=FRAMES)
    (first / "adapter_config.json").unlink()
    with pytest.raises(BackboneError, match="adapter_config.json is missing"):
        load_backbone(str(timesformer_dir), adapter=str(first), num_frames=FRAMES)


def test_adapter_with_foreign_keys_is_refused(timesformer_dir, tmp_path):
    # An adapter saved on TimesformerForVideoClassification carries a "timesformer." prefix;
    # PEFT would only warn and leave the backbone unadapted.
    folder = tmp_path / "adapter"
    make_adapter(timesformer_dir, folder, seed=3)
    weights = load_file(folder / "adapter_model.safetensors")
    renamed = {
        k.replace("base_model.model.", "base_model.model.timesformer."): v
        for k, v in weights.items()
    }
    save_file(renamed, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BackboneError, match="do not match"):
        load_backbone(str(timesformer_dir), adapter=str(folder), num_frames=FRAMES)


# --------------------------------------------------------------------------- provenance


def test_provenance_fields(timesformer_dir, clip_dir):
    backbone = load_backbone(str(clip_dir), num_frames=3, token_mode="cls")
    provenance = json.loads(json.dumps(backbone.provenance()))
    weights_file = clip_dir / "model.safetensors"
    assert provenance == {
        "name": str(clip_dir),
        "family": "clip",
        "source": str(clip_dir.resolve()),
        "revision": None,
        "weights_sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest(),
        "adapter": None,
        "preprocessing": {
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "rescale_factor": 1 / 255,
            "shortest_edge": 32,
            "crop_height": 32,
            "crop_width": 32,
            "resample": "bicubic",
        },
        "token_mode": "cls",
        "num_frames": 3,
        "checkpoint_num_frames": None,
        "dim": 48,
        "tokens_per_clip": 1,
    }
    preset = load_backbone("tiny-timesformer", num_frames=FRAMES).provenance()
    assert preset["source"] is None and len(preset["weights_sha256"]) == 64


@pytest.mark.gpu
def test_cuda_autocast_close_to_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    clips = random_clips(4)
    for name in TINY:
        cpu = load_backbone(name, num_frames=FRAMES, device="cpu").encode(clips)
        gpu = load_backbone(name, num_frames=FRAMES, device="auto").encode(clips)
        assert gpu.dtype == torch.float32 and gpu.device.type == "cpu"
        torch.testing.assert_close(gpu, cpu, atol=5e-2, rtol=5e-2)


@pytest.mark.slow
def test_hub_ids_resolve_through_the_cache(tmp_path):
    # A hub cache laid out like huggingface_hub's, used offline in a child process (the hub
    # environment variables are read at import): registered names and bare hub ids load from
    # it, and the snapshot commit becomes the revision.
    commit = "0123456789abcdef0123456789abcdef01234567"
    for repo in ("facebook/timesformer-base-finetuned-k600", "someone/tiny-clip"):
        name = "tiny-timesformer" if "timesformer" in repo else "tiny-clip"
        root = tmp_path / ("models--" + repo.replace("/", "--"))
        save_tiny_checkpoint(name, root / "snapshots" / commit)
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text(commit)
    code = (
        "import json; from skill.pipeline.backbones import load_backbone; "
        "print(json.dumps([load_backbone(n, num_frames=2).provenance() "
        "for n in ('timesformer-base-k600', 'someone/tiny-clip')]))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_CACHE": str(tmp_path)}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    registered, bare = json.loads(result.stdout.strip().splitlines()[-1])
    assert registered["source"] == "facebook/timesformer-base-finetuned-k600"
    assert (registered["family"], registered["revision"]) == ("timesformer", commit)
    assert (bare["family"], bare["revision"], bare["name"]) == ("clip", commit, "someone/tiny-clip")
    weights = tmp_path / "models--someone--tiny-clip" / "snapshots" / commit / "model.safetensors"
    assert bare["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def _vit_frames(model, pixels):
    batch, frames = pixels.shape[:2]
    hidden = model(pixel_values=pixels.flatten(0, 1)).last_hidden_state.float()  # (B*T, 1+P, D)
    return hidden.reshape(batch, frames, *hidden.shape[1:])  # (B, T, 1+P, D)


def test_a_new_family_is_one_declaration_and_no_shared_code(monkeypatch, tmp_path):
    # What a family file does (here a plain ViT), registered for this test only: loading,
    # saving, resolving a folder by model_type and describing need no other change.
    modes = {
        "frame": TokenMode(lambda t, p: t, lambda m, x: _vit_frames(m, x)[:, :, 0]),
        "cls": TokenMode(lambda t, p: 1, lambda m, x: _vit_frames(m, x)[:, :, 0].mean(1, True)),
        "patch": TokenMode(lambda t, p: t * (1 + p), lambda m, x: _vit_frames(m, x).flatten(1, 2)),
    }
    family = Family("vit", "ViTModel", "ViTConfig", ("vit",), "bilinear", modes, ("query",))
    monkeypatch.setitem(FAMILIES, "vit", family)
    config = {"image_size": 16, "patch_size": 4, "hidden_size": 16, "num_hidden_layers": 1}
    config.update(num_attention_heads=2, intermediate_size=32)
    preprocessing = {"size": 16, "crop_size": 16, "image_mean": 0.5, "image_std": 0.5}
    spec = BackboneSpec("tiny-vit-test", "vit", None, config, preprocessing)
    monkeypatch.setitem(BACKBONES, spec.name, spec)
    row = next(row for row in describe_backbones() if row["name"] == spec.name)
    assert (row["dim"], row["frames"], row["tokens_patch"]) == (16, None, 17)
    clips = random_clips(2, frames=3, crop=16)
    folder = save_tiny_checkpoint(spec.name, tmp_path / "vit")
    for mode in TOKEN_MODES:
        preset = load_backbone(spec.name, num_frames=3, token_mode=mode)
        tokens = preset.encode(clips)
        assert tokens.shape == (2, preset.tokens_per_clip(), 16)
        loaded = load_backbone(str(folder), num_frames=3, token_mode=mode)
        assert loaded.family == "vit"
        torch.testing.assert_close(loaded.encode(clips), tokens, atol=1e-6, rtol=0)
