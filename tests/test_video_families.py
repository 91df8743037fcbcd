"""The tubelet video families, VideoMAE and V-JEPA 2: parity with transformers, clip lengths,
end-to-end extraction, LoRA adapters, and refused checkpoints.

References are computed here without pipeline.backbones: raw frames are resized (short side,
PIL bilinear) and centre-cropped with numpy, normalised with the mean/std read from the saved
processor config, and run through the transformers class directly; pooling uses explicit
token indices (tubelet ``k``, patch ``p`` at ``k*P + p``).
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
from transformers import VideoMAEModel, VJEPA2Model

import skill.pipeline.backbones.encoder as encoder_module
from skill.cache.info import store_summary
from skill.cache.store import TokenStore
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
from skill.pipeline.extract import run_extract
from tests.extract_helpers import extract_config, invoke_cli, make_dataset

# family -> (tiny preset, transformers class, processor config file, forward keyword)
FAMILY = {
    "videomae": ("tiny-videomae", VideoMAEModel, "preprocessor_config.json", "pixel_values"),
    "vjepa2": ("tiny-vjepa2", VJEPA2Model, "video_preprocessor_config.json", "pixel_values_videos"),
}
CROP, PATCH, TUBELET = 32, 8, 2
P = (CROP // PATCH) ** 2  # patches per frame of both tiny presets


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video-families")
    return {
        family: save_tiny_checkpoint(preset, root / family)
        for family, (preset, *_) in FAMILY.items()
    }


def processor_config(family: str, folder: Path) -> dict:
    return json.loads((folder / FAMILY[family][2]).read_text())


def short_side(family: str, config: dict) -> int:
    """The processor's resize target, by its own rule (VJEPA2VideoProcessor: from the crop)."""
    if family == "vjepa2":
        return int(config["crop_size"]["height"] * 256 / 224)
    return int(config["size"]["shortest_edge"])


def raw_frames(n: int, frames: int, height: int, width: int, seed: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    return generator.integers(0, 256, (n, frames, height, width, 3), dtype=np.uint8)


def resize_and_crop(raw: np.ndarray, short: int, crop: int) -> np.ndarray:
    """(N, T, H, W, 3) uint8 -> short side resized to ``short`` (PIL bilinear), centre crop."""
    out = []
    for frame in raw.reshape(-1, *raw.shape[2:]):
        height, width = frame.shape[:2]
        scale = short / min(height, width)
        size = (short, int(height * scale)) if width <= height else (int(width * scale), short)
        image = np.asarray(Image.fromarray(frame).resize(size, resample=Image.Resampling.BILINEAR))
        top, left = (image.shape[0] - crop) // 2, (image.shape[1] - crop) // 2
        out.append(image[top : top + crop, left : left + crop])
    return np.stack(out).reshape(*raw.shape[:2], crop, crop, 3)


def normalise(cropped: np.ndarray, config: dict) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) -> float32 (N, T, 3, H, W), the layout both models take."""
    mean = np.asarray(config["image_mean"], dtype=np.float32)
    std = np.asarray(config["image_std"], dtype=np.float32)
    x = (cropped.astype(np.float32) * np.float32(config["rescale_factor"]) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)))


def direct_hidden(family: str, folder: Path, pixels: torch.Tensor) -> torch.Tensor:
    """last_hidden_state of the encoder, straight from transformers."""
    _, model_class, _, keyword = FAMILY[family]
    frames = pixels.shape[1]
    if family == "videomae":
        # The sinusoid table is built at construction from num_frames: build it for T.
        model = model_class.from_pretrained(folder, num_frames=frames).eval()
        with torch.no_grad():
            return model(**{keyword: pixels}).last_hidden_state
    model = model_class.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(**{keyword: pixels}, skip_predictor=True).last_hidden_state


def expected_tokens(hidden: torch.Tensor, frames: int) -> dict[str, torch.Tensor]:
    tubelets = frames // TUBELET
    assert hidden.shape[1] == tubelets * P
    frame = torch.stack(
        [torch.stack([hidden[:, k * P + p] for p in range(P)]).mean(0) for k in range(tubelets)],
        dim=1,
    )
    return {"patch": hidden, "frame": frame, "cls": hidden.mean(dim=1, keepdim=True)}


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("family", list(FAMILY))
def test_tokens_match_a_direct_transformers_forward(family, folders):
    folder = folders[family]
    config = processor_config(family, folder)
    checkpoint_frames = BACKBONES[FAMILY[family][0]].static_geometry().frames
    short, crop = short_side(family, config), config["crop_size"]["height"]
    for frames in (checkpoint_frames, checkpoint_frames + 2, 2):
        raw = raw_frames(2, frames, short + 7, short + 20, seed=frames)
        cropped = resize_and_crop(raw, short, crop)
        expected = expected_tokens(
            direct_hidden(family, folder, normalise(cropped, config)), frames
        )
        for mode in TOKEN_MODES:
            backbone = load_backbone(str(folder), num_frames=frames, token_mode=mode)
            assert backbone.family == family
            assert (backbone.geometry.shortest_edge, backbone.geometry.crop_height) == (short, crop)
            tokens = backbone.encode(torch.from_numpy(cropped))
            assert tokens.shape == (2, backbone.tokens_per_clip(), backbone.dim)
            torch.testing.assert_close(tokens, expected[mode], atol=1e-5, rtol=1e-5)
            assert backbone.provenance()["checkpoint_num_frames"] == checkpoint_frames


def test_videomae_position_table_follows_the_clip_length(folders):
    # What from_pretrained(num_frames=T) would build: the table is rebuilt, not interpolated.
    backbone = load_backbone(str(folders["videomae"]), num_frames=8)
    direct = VideoMAEModel.from_pretrained(folders["videomae"], num_frames=8)
    table = backbone.model.embeddings.position_embeddings
    assert table.shape == (1, (8 // TUBELET) * P, backbone.dim)
    torch.testing.assert_close(table, direct.embeddings.position_embeddings, atol=0, rtol=0)


@pytest.mark.parametrize("family", list(FAMILY))
def test_token_layout_is_tubelet_major(family):
    # Swapping the two tubelets of a 4-frame clip swaps the two blocks of P tokens out of the
    # patch embedding (where the order is decided, before positions are added): token k*P + p
    # is patch p of tubelet k.
    backbone = load_backbone(FAMILY[family][0], num_frames=4, token_mode="patch")
    embed = backbone.model.get_input_embeddings()

    def embedded(clips):
        pixels = backbone._pixels(clips)  # (B, T, 3, H, W)
        if family == "vjepa2":  # its Conv3d module takes (B, 3, T, H, W)
            pixels = pixels.permute(0, 2, 1, 3, 4)
        with torch.no_grad():
            return embed(pixels)

    clips = torch.from_numpy(raw_frames(1, 4, CROP, CROP, seed=3))
    plain, moved = embedded(clips), embedded(clips[:, [2, 3, 0, 1]])
    assert plain.shape == (1, 2 * P, backbone.dim)
    torch.testing.assert_close(moved[:, :P], plain[:, P:], atol=1e-6, rtol=0)
    torch.testing.assert_close(moved[:, P:], plain[:, :P], atol=1e-6, rtol=0)
    assert not torch.allclose(plain[:, :P], plain[:, P:], atol=1e-3)


# --------------------------------------------------------------------------- clip lengths


@pytest.mark.parametrize("family", list(FAMILY))
def test_odd_clip_lengths_are_refused_before_loading(family, folders, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(encoder_module, "load_pretrained", no_load)
    monkeypatch.setattr(encoder_module, "build_tiny_model", no_load)
    for name in (FAMILY[family][0], str(folders[family])):
        for frames in (1, 5):
            with pytest.raises(BackboneError, match=rf"num_frames {frames} .*tubelet_size") as err:
                load_backbone(name, num_frames=frames)
            assert name in str(err.value) or str(folders[family]) in str(err.value)


def test_odd_frames_stop_extract_before_any_video_is_decoded(dataset, tmp_path, monkeypatch):
    import skill.pipeline.decode.view as decode

    def no_decode(*args, **kwargs):
        raise AssertionError("a video was decoded")

    monkeypatch.setattr(decode, "decode_view", no_decode)
    for preset in ("tiny-videomae", "tiny-vjepa2"):
        cfg = extract_config(dataset, tmp_path / f"{preset}.zarr", backbone=preset, frames=7)
        with pytest.raises(BackboneError, match=f"{preset}: num_frames 7 .*tubelet_size"):
            run_extract(cfg)
        assert not (tmp_path / f"{preset}.zarr").exists()


def test_real_checkpoints_describe_their_geometry():
    rows = {row["name"]: row for row in describe_backbones()}
    columns = ("family", "source", "dim", "frames", "crop")
    columns += ("tokens_frame", "tokens_cls", "tokens_patch")
    expected = {  # (frames/2) tubelets of (crop/16)^2 patches
        "videomae-base-k400": (
            "videomae",
            "MCG-NJU/videomae-base-finetuned-kinetics",
            768,
            16,
            224,
            8,
            1,
            8 * 196,
        ),  # fmt: skip
        "vjepa2-vitl-256": (
            "vjepa2",
            "facebook/vjepa2-vitl-fpc64-256",
            1024,
            64,
            256,
            32,
            1,
            32 * 256,
        ),  # fmt: skip
    }
    for name, values in expected.items():
        assert tuple(rows[name][c] for c in columns) == values, name


# --------------------------------------------------------------------------- preprocessing


def test_preprocessing_rules_of_the_two_processors(folders, tmp_path):
    # VideoMAE's hub configs come from the old feature extractor: "size": 224, no crop_size;
    # VideoMAEImageProcessor then crops to its default 224.
    old = {"size": 224, "resample": 2, "image_mean": [0.485, 0.456, 0.406]}
    old["image_std"] = [0.229, 0.224, 0.225]
    prep = parse_preprocessor_config(old, family=FAMILIES["videomae"], where="x.json")
    assert (prep.shortest_edge, prep.crop_height, prep.crop_width) == (224, 224, 224)
    with pytest.raises(BackboneError, match="x.json: no crop_size"):  # other families: refused
        parse_preprocessor_config(old, family=FAMILIES["timesformer"], where="x.json")
    # VJEPA2VideoProcessor resizes to int(crop * 256 / 224) whatever size says.
    vjepa = {**old, "size": {"shortest_edge": 300}, "crop_size": {"height": 256, "width": 256}}
    prep = parse_preprocessor_config(vjepa, family=FAMILIES["vjepa2"], where="x.json")
    assert (prep.shortest_edge, prep.crop_height) == (292, 256)
    with pytest.raises(BackboneError, match=r"x\.json: crop_size is missing"):
        parse_preprocessor_config(old, family=FAMILIES["vjepa2"], where="x.json")
    # The V-JEPA 2 folder reads video_preprocessor_config.json, else preprocessor_config.json.
    folder = tmp_path / "vjepa2"
    shutil.copytree(folders["vjepa2"], folder)
    assert not (folder / "preprocessor_config.json").exists()
    config = json.loads((folder / "video_preprocessor_config.json").read_text())
    (folder / "video_preprocessor_config.json").rename(folder / "preprocessor_config.json")
    assert load_backbone(str(folder), num_frames=2).geometry.shortest_edge == short_side(
        "vjepa2", config
    )
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(BackboneError, match="video_preprocessor_config.json: missing"):
        load_backbone(str(folder), num_frames=2)
    del config["crop_size"]
    (folder / "video_preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(BackboneError, match=r"video_preprocessor_config\.json: crop_size"):
        load_backbone(str(folder), num_frames=2)


# --------------------------------------------------------------------------- refused checkpoints


@pytest.mark.parametrize("family", list(FAMILY))
def test_unsupported_or_remote_code_checkpoints_are_refused(family, folders, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(folders[family], folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "model_type": "videomae_v3"}))
    with pytest.raises(BackboneError, match="model_type 'videomae_v3' is not supported") as err:
        load_backbone(str(folder), num_frames=2)
    assert str(config_path) in str(err.value)
    auto_map = {"AutoModel": "modeling_custom.CustomModel"}
    config_path.write_text(json.dumps({**config, "auto_map": auto_map}))
    with pytest.raises(BackboneError, match="auto_map.*trust_remote_code") as err:
        load_backbone(str(folder), num_frames=2)
    assert str(config_path) in str(err.value)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two synthetic takes (ego + exo1..3)."""
    return make_dataset(tmp_path_factory.mktemp("data"), takes=2)


def extract_cli(manifest: Path, store: Path, backbone: str, *extra: str) -> None:
    args = ["extract", str(manifest), "--store", str(store), "--backbone", backbone]
    args += ["--frames", "4", "--device", "cpu", "--workers", "0", "--batch-size", "8"]
    code, output = invoke_cli(*args, *extra)
    assert code == 0, output


@pytest.mark.parametrize("family", list(FAMILY))
def test_extract_end_to_end_with_each_tiny_preset(family, dataset, tmp_path):
    preset = FAMILY[family][0]
    store = tmp_path / "tokens.zarr"
    summary = run_extract(extract_config(dataset, store, backbone=preset, tokens="patch"))
    assert (summary.completed, summary.failed) == (2, 0)
    assert store_summary(store)["state"] == "finished"
    opened = TokenStore.open(store)
    provenance = opened.provenance["backbone"]
    assert (provenance["family"], provenance["num_frames"]) == (family, 4)
    assert (opened.tokens, opened.dim) == ((4 // TUBELET) * P, 32)
    tokens = opened.read_tokens(np.arange(2), np.arange(len(opened.views)))
    assert tokens.shape == (2, len(opened.views), 1, (4 // TUBELET) * P, 32)
    assert np.isfinite(tokens).all() and np.abs(tokens).sum() > 0


def lora_adapter(family: str, folder: Path, target: Path) -> Path:
    """A LoRA adapter on the family's targets with non-zero B (so that it changes tokens)."""
    model = FAMILY[family][1].from_pretrained(folder)
    targets = list(FAMILIES[family].lora_targets)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=targets))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.05)
    peft_model.save_pretrained(target)
    return target


@pytest.mark.parametrize("family", list(FAMILY))
def test_a_lora_adapter_loads_through_the_cli_and_changes_tokens(
    family, folders, dataset, tmp_path
):
    folder = folders[family]
    adapter = lora_adapter(family, folder, tmp_path / "adapter")
    frozen, adapted = tmp_path / "frozen.zarr", tmp_path / "adapted.zarr"
    extract_cli(dataset, frozen, str(folder), "--limit", "1")
    extract_cli(dataset, adapted, str(folder), "--limit", "1", "--adapter", str(adapter))
    a, b = TokenStore.open(frozen), TokenStore.open(adapted)
    assert b.provenance["backbone"]["adapter"]["path"] == str(adapter.resolve())
    views = np.arange(len(a.views))
    before, after = a.read_tokens([0], views), b.read_tokens([0], views)
    assert before.shape == after.shape == (1, len(views), 1, 4 // TUBELET, 32)
    assert not np.allclose(before, after, atol=1e-3)
