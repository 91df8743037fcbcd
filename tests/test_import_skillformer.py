"""`skill import skillformer`: a SkillFormer model folder -> adapter + cvf run that predict the
same class probabilities as SkillFormer's own forward (computed here, step by step)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from skill.interop.skillformer import (
    CLASSIFIER_TO_CVF,
    PROJECTOR_TO_CVF,
    SkillFormerImportError,
    import_skillformer,
    map_components,
)
from skill.pipeline.backbones.timesformer import (
    SKILLFORMER_LORA_TARGETS,
    TIMESFORMER_BASE_PREPROCESSING,
)
from tests.extract_helpers import extract_config, invoke_cli, make_dataset
from tests.test_sampling import skillformer_indices

DIM, HIDDEN, FRAMES, CKPT_FRAMES = 768, 24, 4, 8


def _base_checkpoint(folder: Path) -> Path:
    """A 768-wide, 1-layer TimeSformer of 8 frames at 32 px, saved like a real checkpoint."""
    from transformers import TimesformerConfig, TimesformerModel

    torch.manual_seed(0)
    config = TimesformerConfig(image_size=32, patch_size=16, num_frames=CKPT_FRAMES,
                               hidden_size=DIM, num_hidden_layers=1, num_attention_heads=4,
                               intermediate_size=64)  # fmt: skip
    model = TimesformerModel(config).eval()
    with torch.no_grad():  # distinct time embeddings, so that the interpolation shows
        model.embeddings.time_embeddings.normal_(0, 1.0)
    model.save_pretrained(str(folder), safe_serialization=True)
    prep = {**TIMESFORMER_BASE_PREPROCESSING, "size": {"shortest_edge": 32},
            "crop_size": {"height": 32, "width": 32}}  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(prep))
    return folder


def _components(views: int) -> dict:
    torch.manual_seed(1)

    def t(*shape, scale=0.05):
        return torch.randn(*shape) * scale

    projector = {
        "view_norm.weight": 1 + t(DIM), "view_norm.bias": t(DIM),
        "view_attn.in_proj_weight": t(3 * DIM, DIM), "view_attn.in_proj_bias": t(3 * DIM),
        "view_attn.out_proj.weight": t(DIM, DIM), "view_attn.out_proj.bias": t(DIM),
        "proj1.weight": t(HIDDEN, DIM), "proj1.bias": t(HIDDEN),
        "norm1.weight": 1 + t(HIDDEN), "norm1.bias": t(HIDDEN),
        "gate.0.weight": t(HIDDEN, HIDDEN, scale=0.3), "gate.0.bias": t(HIDDEN),
        "proj2.weight": t(DIM, HIDDEN, scale=0.3), "proj2.bias": t(DIM),
        "norm_final.weight": 1 + t(DIM), "norm_final.bias": t(DIM),
        "video_std": torch.tensor(0.9), "video_mean": torch.tensor(0.05),
    }  # fmt: skip
    classifier = {"weight": t(4, DIM, scale=0.1), "bias": t(4)}
    return {"projector": projector, "classifier": classifier}


def _skillformer_folder(folder: Path, base: Path, views: int = 4) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import TimesformerModel

    folder.mkdir(parents=True)
    model = TimesformerModel.from_pretrained(str(base))
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, bias="none",
                      target_modules=list(SKILLFORMER_LORA_TARGETS))  # fmt: skip
    peft_model = get_peft_model(model, lora)
    torch.manual_seed(2)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # non-zero: the adapter changes the features
    peft_model.save_pretrained(str(folder / "vision_encoder"), safe_serialization=True)
    torch.save(_components(views), folder / "components.pt")
    config = {"model_type": "video_classifier", "vision_encoder_id": str(base),
              "num_frames": FRAMES, "num_classes": 4, "num_views": views, "lora_r": 4,
              "lora_alpha": 8, "lora_dropout": 0.1, "projector_hidden_dim": HIDDEN,
              "projector_num_heads": 16}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("skillformer")
    base = _base_checkpoint(root / "base")
    return root, base, _skillformer_folder(root / "sf", base)


def _linear(old: torch.Tensor, frames: int) -> torch.Tensor:
    """SkillFormer's resize of the ``(1, count, D)`` time embeddings to ``frames``, written
    out: frame t reads position t * count / frames, linearly between its two neighbours."""
    count, new = old.shape[1], []
    for t in range(frames):
        s = min(t * count / frames, count - 1)
        f = math.floor(s)
        c = min(f + 1, count - 1)
        w = s - f
        new.append((1 - w) * old[0, f] + w * old[0, c])
    return torch.stack(new)[None]


def _skillformer_logits(sf: Path, base: Path, clips: torch.Tensor) -> torch.Tensor:
    """SkillFormer's forward: clips (B, V, T, H, W, 3) uint8 -> (B, 4) logits."""
    from peft import PeftModel
    from transformers import TimesformerModel

    model = TimesformerModel.from_pretrained(str(base))
    old = model.embeddings.time_embeddings.data
    model.embeddings.time_embeddings = torch.nn.Parameter(_linear(old, FRAMES))
    model.config.num_frames = FRAMES
    model = PeftModel.from_pretrained(model, str(sf / "vision_encoder")).eval()
    comp = torch.load(sf / "components.pt", weights_only=True)
    p, c = comp["projector"], comp["classifier"]
    batch, views = clips.shape[:2]
    pixels = clips.flatten(0, 1).permute(0, 1, 4, 2, 3).float() / 255
    pixels = (pixels - 0.45) / 0.225
    with torch.no_grad():
        hidden = model(pixel_values=pixels).last_hidden_state
        x = hidden.mean(dim=1).view(batch, views, DIM)  # 1. mean over all tokens, CLS included
        x = F.layer_norm(x, (DIM,), p["view_norm.weight"], p["view_norm.bias"])  # 2.
        x = x.transpose(0, 1)  # 3. attention across views, (V, B, D)
        x, _ = F.multi_head_attention_forward(
            x, x, x, DIM, 16, p["view_attn.in_proj_weight"], p["view_attn.in_proj_bias"],
            None, None, False, 0.0, p["view_attn.out_proj.weight"], p["view_attn.out_proj.bias"],
            training=False, need_weights=False,
        )  # fmt: skip
        x = x.mean(dim=0)  # 4. mean over views
        h = F.gelu(F.linear(x, p["proj1.weight"], p["proj1.bias"]))  # 5.
        h = F.layer_norm(h, (HIDDEN,), p["norm1.weight"], p["norm1.bias"])
        h = h * torch.sigmoid(F.linear(h, p["gate.0.weight"], p["gate.0.bias"]))  # 6.
        y = F.linear(h, p["proj2.weight"], p["proj2.bias"])  # 7.
        y = F.layer_norm(y, (DIM,), p["norm_final.weight"], p["norm_final.bias"])
        y = y - y.mean(dim=-1, keepdim=True)  # 8.
        y = y / (y.std(dim=-1, keepdim=True) + 1e-6) * p["video_std"] + p["video_mean"]
        return F.linear(y, c["weight"], c["bias"])  # 9.


def test_mapping_covers_every_cvf_parameter():
    from skill.heads.registry import build_head

    head = build_head("cvf", dim=DIM, num_views=4, outputs=4, tokens=1, hidden=HIDDEN)
    mapped = set(PROJECTOR_TO_CVF.values()) | set(CLASSIFIER_TO_CVF.values())
    assert mapped == set(head.state_dict())
    state = map_components(_components(4), "components.pt")
    head.load_state_dict(state, strict=True)
    assert float(head.calibration_scale.detach()) == pytest.approx(0.9)
    assert float(head.calibration_shift.detach()) == pytest.approx(0.05)
    assert torch.equal(head.up[0].weight, _components(4)["projector"]["proj1.weight"])


def test_linear_time_embedding_and_mean_all(setup):
    from skill.pipeline.backbones import load_backbone

    _, base, _ = setup
    from transformers import TimesformerModel

    raw = TimesformerModel.from_pretrained(str(base)).eval()
    old = raw.embeddings.time_embeddings.data
    linear = load_backbone(str(base), num_frames=FRAMES, token_mode="mean_all",
                           time_embedding="linear")  # fmt: skip
    got = linear.model.embeddings.time_embeddings
    assert got.shape == (1, FRAMES, DIM)
    torch.testing.assert_close(got.data, _linear(old, FRAMES))
    assert linear.provenance()["time_embedding"] == "linear"
    assert linear.tokens_per_clip() == 1
    nearest = load_backbone(str(base), num_frames=FRAMES, token_mode="frame")
    assert "time_embedding" not in nearest.provenance()  # earlier stores keep theirs
    assert nearest.model.embeddings.time_embeddings.shape[1] == CKPT_FRAMES
    clips = torch.randint(0, 255, (2, FRAMES, 32, 32, 3), dtype=torch.uint8)
    raw.embeddings.time_embeddings = torch.nn.Parameter(_linear(old, FRAMES))
    raw.config.num_frames = FRAMES
    with torch.no_grad():
        want = raw(pixel_values=linear.pixels(clips)).last_hidden_state.mean(1)
    torch.testing.assert_close(linear.encode(clips)[:, 0], want, rtol=1e-4, atol=1e-4)


def test_time_embedding_is_refused_for_families_without_one():
    from skill.pipeline.backbones import BackboneError, load_backbone

    with pytest.raises(BackboneError, match="time-embedding"):
        load_backbone("tiny-clip", num_frames=2, time_embedding="linear")
    with pytest.raises(BackboneError, match="mean_all"):
        load_backbone("tiny-clip", num_frames=2, token_mode="mean_all")


def test_import_extract_predict_gives_skillformers_probabilities(setup):
    from skill.cache.store import TokenStore
    from skill.heads.config import PredictConfig
    from skill.heads.predict import predict
    from skill.pipeline.decode.geometry import FrameGeometry
    from skill.pipeline.decode.view import decode_view
    from skill.pipeline.extract import run_extract
    from skill.pipeline.manifest import read_takes

    root, base, sf = setup
    manifest = make_dataset(root / "data", takes=3)
    out = root / "imported"
    code, output = invoke_cli("import", "skillformer", str(sf), "--out", str(out),
                              "--backbone", str(base))  # fmt: skip
    assert code == 0, output
    assert "--tokens mean_all --time-embedding linear --frames 4" in output
    assert "--sampling skillformer-windows --stride 4" in " ".join(output.split())
    run_sampling = json.loads((out / "run" / "config.json").read_text())["store"]["provenance"]
    assert run_sampling["sampling"]["strategy"] == "skillformer-windows"
    store = root / "tokens.zarr"
    cfg = extract_config(manifest, store, backbone=str(base), adapter=out / "adapter",
                         tokens="mean_all", time_embedding="linear",
                         strategy="skillformer-windows", stride=4)  # fmt: skip
    run_extract(cfg)
    got = predict(PredictConfig(store=store, run=out / "run", out_csv=root / "predictions.csv"))
    assert got.view_names == ["ego", "exo1", "exo2", "exo3"]

    opened = TokenStore.open(store)
    takes = {t.take_id: t for t in read_takes(manifest).takes}
    geometry = FrameGeometry(shortest_edge=32, crop_height=32, crop_width=32, resample="bilinear")
    index = opened.frame_index()
    clips = []
    for row, take_id in enumerate(got.take_ids):
        take, views = takes[take_id], []
        for v, view in enumerate(got.view_names):
            decoded = decode_view(take.videos[view], cfg.sampling, f"{take_id}/{view}", geometry)
            assert np.array_equal(decoded.indices[0], index[row, v, 0])
            frames, positions = decoded.info.num_frames, decoded.indices[0]
            end = positions[0] + FRAMES * 4 if frames > FRAMES * 4 else frames - 1
            assert np.array_equal(positions, skillformer_indices(FRAMES, 4, frames, end))
            views.append(torch.from_numpy(decoded.frames[0]))
        clips.append(torch.stack(views))
    want = torch.softmax(_skillformer_logits(sf, base, torch.stack(clips)), dim=-1).numpy()
    assert not np.allclose(want, want[:1])  # the takes differ
    np.testing.assert_allclose(got.scores, want, atol=2e-3)


def _one_take_manifest(folder: Path) -> Path:
    """A manifest of one take whose (dummy) video exists: extract checks the files before
    loading the backbone and decodes them only after."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ego.mp4").write_bytes(b"\x00")
    manifest = folder / "manifest.jsonl"
    manifest.write_text(json.dumps({"take": "t1", "videos": {"ego": "ego.mp4"}, "label": None}))
    return manifest


@pytest.mark.parametrize(
    "flags",
    [
        lambda sf, base: ["--backbone", str(sf)],
        lambda sf, base: ["--backbone", str(sf / "vision_encoder")],
        lambda sf, base: ["--backbone", str(base), "--adapter", str(sf)],
        # The raw adapter alone would extract with nearest time embeddings, without a word.
        lambda sf, base: ["--backbone", str(base), "--adapter", str(sf / "vision_encoder")],
    ],
    ids=["backbone", "backbone-vision-encoder", "adapter", "adapter-vision-encoder"],
)
def test_pointing_extract_at_the_skillformer_folder_suggests_only_the_import(
    setup, tmp_path, flags
):
    _, base, sf = setup
    manifest, store = _one_take_manifest(tmp_path), tmp_path / "tokens.zarr"
    args = ["extract", str(manifest), "--store", str(store), "--frames", str(FRAMES)]
    code, output = invoke_cli(*args, *flags(sf, base), "--device", "cpu")
    assert code == 2, output
    assert f"SkillFormer model folder {sf}" in output or f"{sf}: a SkillFormer" in output, output
    assert f"run `skill import skillformer {sf} --out OUT`" in output, output
    assert "or pass" not in output and not store.exists(), output


def test_the_import_still_loads_the_raw_adapter_with_linear_time_embeddings(setup):
    from skill.pipeline.backbones import load_backbone

    _, base, sf = setup
    loaded = load_backbone(str(base), adapter=sf / "vision_encoder", num_frames=FRAMES,
                           token_mode="mean_all", time_embedding="linear")  # fmt: skip
    assert loaded.adapter is not None


def _copy(sf: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(sf, dest)
    return dest


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: (d / "config.json").unlink(), "config.json: missing"),
        (lambda d: __import__("shutil").rmtree(d / "vision_encoder"), "vision_encoder: missing"),
        (lambda d: (d / "components.pt").unlink(), "components.pt: missing"),
        (lambda d: (d / "components.pt").write_bytes(b"not a pickle"),
         r"components.pt: refused: not a file of plain tensors \(Unsupported operand"),
        (lambda d: _edit(d, num_views=6), "config.json: num_views 6"),
        (lambda d: _edit(d, num_views=0), "config.json: num_views must be a positive int"),
        (lambda d: (d / "vision_encoder" / "adapter_model.safetensors").unlink(),
         "vision_encoder: adapter_model.safetensors is missing"),
        (lambda d: (d / "vision_encoder" / "adapter_config.json").unlink(),
         "vision_encoder: adapter_config.json is missing"),
        (lambda d: _narrow_lora(d / "vision_encoder"),
         r"vision_encoder/adapter_model.safetensors: .*lora_A.* has shape \[4, 48\]"),
        (lambda d: torch.save({"projector": _NotATensor(), "classifier": {}}, d / "components.pt"),
         r"components.pt: refused: it holds a pickled reference to "
         r"tests.test_import_skillformer._NotATensor \(a Python object, not a tensor\)"),
        (lambda d: _edit(d, model_type="other"), "config.json: model_type is 'other'"),
        (lambda d: _edit(d, projector_hidden_dim=7),
         "components.pt: projector.proj1.weight has shape"),
    ],
)  # fmt: skip
def test_bad_folders_are_refused_and_nothing_is_written(setup, tmp_path, break_it, message):
    _, base, sf = setup
    folder = _copy(sf, tmp_path / "sf")
    break_it(folder)
    out = tmp_path / "out"
    with pytest.raises(SkillFormerImportError, match=message):
        import_skillformer(folder, out, backbone=str(base))
    assert not out.exists()


def test_another_width_is_refused(setup, tmp_path):
    _, _, sf = setup
    with pytest.raises(SkillFormerImportError, match="width"):
        import_skillformer(sf, tmp_path / "out", backbone="tiny-timesformer")
    assert not (tmp_path / "out").exists()


def test_another_backbone_is_refused(setup, tmp_path):
    _, _, sf = setup
    folder = _copy(sf, tmp_path / "sf")
    _edit(folder, vision_encoder_id="tiny-clip")
    with pytest.raises(SkillFormerImportError, match="config.json: backbone tiny-clip is a clip"):
        import_skillformer(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


class _NotATensor:
    """A pickled class: torch.load(weights_only=True) must refuse it, never run it."""


@pytest.mark.parametrize(
    "content",
    [
        lambda: b"not a pickle",
        lambda: pickle.dumps({"projector": _NotATensor()}),
        lambda: pickle.dumps({"projector": print}),
    ],
    ids=["garbage", "class", "function"],
)
def test_the_refusal_of_components_never_advises_unsafe_loading(setup, tmp_path, content):
    # torch's own message advises weights_only=False (with ANSI codes in one case).
    _, base, sf = setup
    folder = _copy(sf, tmp_path / "sf")
    (folder / "components.pt").write_bytes(content())
    code, output = invoke_cli("import", "skillformer", str(folder), "--out", str(tmp_path / "o"),
                              "--backbone", str(base))  # fmt: skip
    assert code == 2 and f"{folder / 'components.pt'}: refused: " in output, output
    assert "weights_only" not in output and "\x1b" not in output, output
    assert not (tmp_path / "o").exists()


def _narrow_lora(adapter: Path) -> None:
    """A LoRA trained on a 48-wide backbone: its A matrices take 48 features, not 768."""
    from safetensors.torch import load_file, save_file

    file = adapter / "adapter_model.safetensors"
    weights = load_file(str(file))
    save_file({k: torch.zeros(v.shape[0], 48) if "lora_A" in k and v.shape[1] == DIM else v
               for k, v in weights.items()}, str(file))  # fmt: skip


def test_the_imported_adapter_requires_linear_time_embeddings(setup, tmp_path):
    from skill.pipeline.backbones import BackboneError, load_backbone

    _, base, sf = setup
    out = tmp_path / "imported"
    import_skillformer(sf, out, backbone=str(base))
    record = json.loads((out / "adapter" / "skill_adapter.json").read_text())
    assert record["time_embedding"] == "linear" and record["made_by"] == "skill import skillformer"
    with pytest.raises(BackboneError, match="skill_adapter.json: .*--time-embedding linear"):
        load_backbone(
            str(base), adapter=out / "adapter", num_frames=FRAMES, token_mode="mean_all"
        )  # fmt: skip (nearest: the default)
    load_backbone(str(base), adapter=out / "adapter", num_frames=FRAMES, token_mode="mean_all",
                  time_embedding="linear")  # fmt: skip


def _edit(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_cli_refuses_an_incomplete_folder_in_one_line(setup, tmp_path):
    _, base, sf = setup
    folder = _copy(sf, tmp_path / "sf")
    (folder / "components.pt").unlink()
    code, output = invoke_cli("import", "skillformer", str(folder), "--out", str(tmp_path / "o"),
                              "--backbone", str(base))  # fmt: skip
    assert code == 2 and "components.pt: missing" in output, output
    assert not (tmp_path / "o").exists()
