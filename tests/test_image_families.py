"""The per-frame image families DINOv2 (with and without registers) and SigLIP.

Reference tokens are computed here independently of pipeline.backbones: raw frames larger
than the crop are resized (PIL, the checkpoint's resample), centre-cropped and normalised with
numpy from the saved preprocessor_config.json, run through transformers' own
``from_pretrained`` of the folder, and the tokens picked by explicit index. The pipeline side
takes the same raw frames through the decode workers' resize/crop and ``Backbone.encode``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image

from skill.cache.store import STATUS_COMPLETE, TokenStore
from skill.pipeline.backbones import (
    BACKBONES,
    FAMILIES,
    TOKEN_MODES,
    BackboneError,
    describe_backbones,
    load_backbone,
    parse_preprocessor_config,
    save_tiny_checkpoint,
)
from skill.pipeline.decode.frames import to_clip_frame
from skill.pipeline.extract import run_extract
from tests.extract_helpers import extract_config, invoke_cli, make_dataset

PRESETS = {
    "dinov2": "tiny-dinov2",
    "dinov2_with_registers": "tiny-dinov2-reg",
    "siglip": "tiny-siglip",
}
FRAMES = 3
TOL = {"atol": 1e-5, "rtol": 1e-5}

# The hub checkpoints' preprocessor_config.json (facebook/dinov2-base, google/siglip-base-patch16-224).
HUB_DINOV2 = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_processor_type": "BitImageProcessor",
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 256},
}
HUB_SIGLIP = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_processor_type": "SiglipImageProcessor",
    "image_std": [0.5, 0.5, 0.5],
    "processor_class": "SiglipProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 224, "width": 224},
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Each tiny preset saved as a checkpoint folder (the hub's layout)."""
    root = tmp_path_factory.mktemp("image_families")
    return {family: save_tiny_checkpoint(name, root / name) for family, name in PRESETS.items()}


def raw_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(n, T, height, width, 3) uint8: decoded frames before any resize."""
    generator = np.random.default_rng(seed)
    return generator.integers(0, 256, (n, FRAMES, height, width, 3), dtype=np.uint8)


# ---- the independent reference ----------------------------------------------------------------
def reference_pixels(raw: np.ndarray, folder: Path) -> torch.Tensor:
    """Raw frames -> (n, T, 3, h, w) float32 model input, from preprocessor_config.json alone:
    resize (short side to shortest_edge, or to the fixed size), centre crop, rescale, normalise."""
    config = json.loads((folder / "preprocessor_config.json").read_text())
    size = config["size"]
    crop = config.get("crop_size") or size
    resample = Image.Resampling(config["resample"])
    out = []
    for frame in raw.reshape(-1, *raw.shape[2:]):
        height, width = frame.shape[:2]
        if "shortest_edge" in size:
            short = size["shortest_edge"]
            if width <= height:
                target = (short, int(short * height / width))
            else:
                target = (int(short * width / height), short)
        else:
            target = (size["width"], size["height"])
        image = np.asarray(Image.fromarray(frame).resize(target, resample=resample))
        top = (image.shape[0] - crop["height"]) // 2
        left = (image.shape[1] - crop["width"]) // 2
        out.append(image[top : top + crop["height"], left : left + crop["width"]])
    x = np.stack(out).astype(np.float32) * np.float32(config["rescale_factor"])
    x = (x - np.asarray(config["image_mean"], np.float32)) / np.asarray(
        config["image_std"], np.float32
    )
    x = x.reshape(raw.shape[0], raw.shape[1], *x.shape[1:]).transpose(0, 1, 4, 2, 3)
    return torch.from_numpy(np.ascontiguousarray(x))


def reference_tokens(family: str, folder: Path, raw: np.ndarray) -> dict[str, torch.Tensor]:
    """Every token mode by explicit index from a direct transformers forward."""
    model = FAMILIES[family].transformers_class().from_pretrained(folder).eval()
    pixels = reference_pixels(raw, folder)
    n = pixels.shape[0]
    with torch.no_grad():
        output = model(pixel_values=pixels.flatten(0, 1))
    hidden = output.last_hidden_state.reshape(n, FRAMES, *output.last_hidden_state.shape[1:])
    if family == "siglip":
        # No CLS: frame = the attention-pooling head's output; patch = the P patch tokens.
        frame = output.pooler_output.reshape(n, FRAMES, -1)
        patch = torch.cat([hidden[:, t] for t in range(FRAMES)], dim=1)
    else:
        registers = getattr(model.config, "num_register_tokens", 0) if "registers" in family else 0
        frame = hidden[:, :, 0]
        torch.testing.assert_close(frame, output.pooler_output.reshape(n, FRAMES, -1))
        per_frame = [
            torch.cat([hidden[:, t, :1], hidden[:, t, 1 + registers :]], dim=1)
            for t in range(FRAMES)
        ]
        patch = torch.cat(per_frame, dim=1)
    return {"frame": frame, "cls": frame.mean(dim=1, keepdim=True), "patch": patch}


def pipeline_clips(backbone, raw: np.ndarray) -> torch.Tensor:
    """Raw frames through the decode workers' resize + centre crop -> uint8 clips."""
    geometry = backbone.geometry
    size = geometry.resized_size(raw.shape[3], raw.shape[2])
    clips = [[to_clip_frame(frame, 0, size, geometry) for frame in clip] for clip in raw]
    return torch.from_numpy(np.asarray(clips))


# ---- parity --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", list(PRESETS))
def test_tokens_match_a_direct_transformers_forward_in_every_mode(family, folders):
    folder = folders[family]
    # Non-square frames for DINOv2 (resize the short side then crop); square ones for SigLIP,
    # whose processor squashes to a fixed size (the pipeline crops; equal for square frames).
    raw = raw_frames(3, 40, 48 if family != "siglip" else 40, seed=1)
    expected = reference_tokens(family, folder, raw)
    for mode in TOKEN_MODES:
        backbone = load_backbone(str(folder), num_frames=FRAMES, token_mode=mode, batch_size=2)
        assert backbone.family == family
        tokens = backbone.encode(pipeline_clips(backbone, raw))
        assert tokens.shape == (3, backbone.tokens_per_clip(), backbone.dim)
        torch.testing.assert_close(tokens, expected[mode], **TOL, msg=f"{family} {mode}")


def test_token_counts_per_frame():
    rows = {row["name"]: row for row in describe_backbones()}
    for name in ("dinov2-base", "dinov2-small", "dinov2-reg-base"):
        row = rows[name]
        assert (row["crop"], row["frames"]) == (224, None)
        assert (row["tokens_frame"], row["tokens_cls"], row["tokens_patch"]) == (1, 1, 257)
    assert (rows["dinov2-base"]["dim"], rows["dinov2-small"]["dim"]) == (768, 384)
    assert BACKBONES["dinov2-base"].source == "facebook/dinov2-base"
    assert BACKBONES["dinov2-small"].source == "facebook/dinov2-small"
    siglip = rows["siglip-base-p16-224"]
    assert siglip["source"] == "google/siglip-base-patch16-224"
    assert (siglip["dim"], siglip["crop"], siglip["tokens_patch"], siglip["tokens_frame"]) == (
        768,
        224,
        196,
        1,
    )
    backbone = load_backbone("tiny-siglip", num_frames=FRAMES, token_mode="patch")
    assert backbone.tokens_per_clip() == FRAMES * 64  # no CLS in front of a frame's patches
    backbone = load_backbone("tiny-dinov2-reg", num_frames=FRAMES, token_mode="patch")
    assert backbone.tokens_per_clip() == FRAMES * 65  # registers dropped


def test_per_frame_families_encode_every_frame_of_a_batch_of_clips_in_one_forward():
    # batch_size counts clips: each forward takes batch_size x T images (the last chunk fewer),
    # the clips gathered by the extract loop across views and takes.
    for name in PRESETS.values():
        backbone = load_backbone(name, num_frames=FRAMES, token_mode="patch", batch_size=2)
        seen: list[int] = []
        handle = backbone.model.register_forward_pre_hook(
            lambda module, args, kwargs, seen=seen: seen.append(kwargs["pixel_values"].shape[0]),
            with_kwargs=True,
        )
        clips = torch.from_numpy(raw_frames(5, 32, 32, seed=2))
        try:
            tokens = backbone.encode(clips)
        finally:
            handle.remove()
        assert seen == [2 * FRAMES, 2 * FRAMES, FRAMES], name
        one_pass = load_backbone(name, num_frames=FRAMES, token_mode="patch", batch_size=5)
        torch.testing.assert_close(one_pass.encode(clips), tokens, **TOL)
        # A clip's tokens do not depend on the clips beside it.
        torch.testing.assert_close(one_pass.encode(clips[3:4]), tokens[3:4], **TOL)


# ---- checkpoints and preprocessing ---------------------------------------------------------
def test_dinov2_runs_at_a_crop_other_than_its_config_image_size(tmp_path):
    # The hub's DINOv2 configs say image_size 518 and are run at 224: the position embeddings
    # are interpolated. Here a model built at 40 px runs at the preset's 32 px crop.
    from transformers import Dinov2Config, Dinov2Model

    config = dict(BACKBONES["tiny-dinov2"].tiny_config or {}, image_size=40)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Dinov2Model(Dinov2Config(**config))
    model.save_pretrained(tmp_path / "ckpt")
    preprocessing = dict(BACKBONES["tiny-dinov2"].tiny_preprocessing or {})
    (tmp_path / "ckpt" / "preprocessor_config.json").write_text(json.dumps(preprocessing))
    raw = raw_frames(2, 36, 44, seed=3)
    expected = reference_tokens("dinov2", tmp_path / "ckpt", raw)
    for mode in TOKEN_MODES:
        backbone = load_backbone(str(tmp_path / "ckpt"), num_frames=FRAMES, token_mode=mode)
        assert backbone.patches_per_frame == 64
        torch.testing.assert_close(
            backbone.encode(pipeline_clips(backbone, raw)), expected[mode], **TOL
        )
    preprocessing["crop_size"] = {"height": 30, "width": 30}
    (tmp_path / "ckpt" / "preprocessor_config.json").write_text(json.dumps(preprocessing))
    with pytest.raises(
        BackboneError, match="crops 30x30, not a multiple of the model's patch size 4"
    ):
        load_backbone(str(tmp_path / "ckpt"), num_frames=FRAMES)


@pytest.mark.parametrize("family", ["dinov2", "dinov2_with_registers"])
def test_dinov2_checkpoints_with_the_hubs_pre_5_weight_names_load(family, folders, tmp_path):
    # facebook/dinov2-* store attention.attention.query/key/value and attention.output.dense;
    # transformers 5 renames them on load, so such a folder encodes like the preset.
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "legacy"
    shutil.copytree(folders[family], folder)
    renames = {
        "attention.q_proj": "attention.attention.query",
        "attention.k_proj": "attention.attention.key",
        "attention.v_proj": "attention.attention.value",
        "attention.o_proj": "attention.output.dense",
    }
    weights = load_file(folder / "model.safetensors")
    legacy = {}
    for key, value in weights.items():
        for new_name, old_name in renames.items():
            key = key.replace(new_name, old_name)
        legacy[key] = value
    assert any("attention.attention.query" in key for key in legacy)
    save_file(legacy, folder / "model.safetensors", metadata={"format": "pt"})
    clips = torch.from_numpy(raw_frames(2, 32, 32, seed=5))
    for mode in TOKEN_MODES:
        loaded = load_backbone(str(folder), num_frames=FRAMES, token_mode=mode)
        preset = load_backbone(PRESETS[family], num_frames=FRAMES, token_mode=mode)
        torch.testing.assert_close(loaded.encode(clips), preset.encode(clips), atol=1e-6, rtol=0)


def test_siglip_vision_only_checkpoint_loads_and_one_without_its_head_is_refused(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    preset = load_backbone("tiny-siglip", num_frames=FRAMES)
    preset.model.save_pretrained(tmp_path / "vision")
    preprocessing = json.dumps(BACKBONES["tiny-siglip"].tiny_preprocessing)
    (tmp_path / "vision" / "preprocessor_config.json").write_text(preprocessing)
    assert json.loads((tmp_path / "vision" / "config.json").read_text())["model_type"] == (
        "siglip_vision_model"
    )
    clips = torch.from_numpy(raw_frames(2, 32, 32, seed=4))
    loaded = load_backbone(str(tmp_path / "vision"), num_frames=FRAMES)
    torch.testing.assert_close(loaded.encode(clips), preset.encode(clips), atol=1e-6, rtol=0)

    config = dict(BACKBONES["tiny-siglip"].tiny_config or {}, vision_use_head=False)
    SiglipVisionModel(SiglipVisionConfig(**config)).save_pretrained(tmp_path / "headless")
    (tmp_path / "headless" / "preprocessor_config.json").write_text(preprocessing)
    with pytest.raises(BackboneError, match="vision_use_head False is not supported"):
        load_backbone(str(tmp_path / "headless"), num_frames=FRAMES, token_mode="patch")


def test_the_hub_processor_configs_parse():
    dinov2 = parse_preprocessor_config(HUB_DINOV2, family=FAMILIES["dinov2"], where="dinov2.json")
    assert (dinov2.shortest_edge, dinov2.crop_height, dinov2.crop_width) == (256, 224, 224)
    assert (dinov2.image_mean, dinov2.image_std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert dinov2.resample == "bicubic"
    siglip = parse_preprocessor_config(HUB_SIGLIP, family=FAMILIES["siglip"], where="siglip.json")
    assert (siglip.shortest_edge, siglip.crop_height, siglip.crop_width) == (224, 224, 224)
    assert (siglip.image_mean, siglip.image_std) == ((0.5,) * 3, (0.5,) * 3)
    assert siglip.resample == "bicubic"


@pytest.mark.parametrize(
    ("family", "field", "message"),
    [
        ("dinov2", "crop_size", "no crop_size"),
        ("dinov2", "size", "size is missing"),
        ("dinov2", "image_std", "image_std is missing"),
        ("siglip", "size", "size is missing"),
        ("siglip", "image_mean", "image_mean is missing"),
    ],
)
def test_a_processor_config_missing_a_field_is_refused_by_file_and_field(
    family, field, message, folders, tmp_path
):
    folder = tmp_path / "ckpt"
    shutil.copytree(folders[family], folder)
    path = folder / "preprocessor_config.json"
    config = json.loads(path.read_text())
    del config[field]
    path.write_text(json.dumps(config))
    with pytest.raises(BackboneError, match=f"{path}: {message}"):
        load_backbone(str(folder), num_frames=FRAMES)


# ---- end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two synthetic takes (ego + exo1..3)."""
    return make_dataset(tmp_path_factory.mktemp("data"), takes=2)


@pytest.fixture(scope="module")
def stores(dataset, tmp_path_factory) -> dict[str, Path]:
    """One finished `skill extract` (patch tokens) per tiny preset."""
    root = tmp_path_factory.mktemp("stores")
    out = {}
    for family, name in PRESETS.items():
        out[family] = root / f"{name}.zarr"
        summary = run_extract(extract_config(dataset, out[family], backbone=name, tokens="patch"))
        assert (summary.completed, summary.failed) == (2, 0)
    return out


@pytest.mark.parametrize("family", list(PRESETS))
def test_extract_with_each_preset_finishes_a_store_with_its_geometry(family, stores):
    store = TokenStore.open(stores[family])
    patches = 64  # (32 / 4)^2
    per_frame = patches if family == "siglip" else 1 + patches
    assert (store.frames, store.clips, store.dim, store.tokens) == (4, 1, 48, 4 * per_frame)
    assert (store.status() == STATUS_COMPLETE).all()
    assert store.valid().all()
    assert store.provenance["backbone"]["family"] == family
    assert store.provenance["backbone"]["tokens_per_clip"] == 4 * per_frame
    tokens = store.read_tokens(np.arange(store.n_takes), np.arange(len(store.views)))
    assert np.isfinite(tokens).all() and np.abs(tokens).max() > 0


@pytest.mark.parametrize("family", list(PRESETS))
def test_a_lora_adapter_on_the_documented_targets_loads_with_adapter(
    family, folders, dataset, stores, tmp_path
):
    folder = folders[family]
    model = FAMILIES[family].transformers_class().from_pretrained(folder)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=list(FAMILIES[family].lora_targets))
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for parameter_name, parameter in peft_model.named_parameters():
            if "lora_B" in parameter_name:
                parameter.fill_(0.05)
    peft_model.save_pretrained(tmp_path / "adapter")
    store = tmp_path / "adapted.zarr"
    args = ["extract", str(dataset), "--store", str(store), "--backbone", str(folder)]
    args += ["--adapter", str(tmp_path / "adapter"), "--tokens", "patch", "--frames", "4"]
    args += ["--device", "cpu", "--workers", "0", "--batch-size", "8"]
    code, output = invoke_cli(*args)
    assert code == 0, output
    adapted, plain = TokenStore.open(store), TokenStore.open(stores[family])
    assert adapted.provenance["backbone"]["adapter"]["sha256"]
    assert (adapted.status() == STATUS_COMPLETE).all()
    views = np.arange(len(plain.views))
    a = adapted.read_tokens(np.arange(2), views).astype(np.float32)
    b = plain.read_tokens(np.arange(2), views).astype(np.float32)
    assert a.shape == b.shape
    assert np.abs(a - b).max() > 1e-2
