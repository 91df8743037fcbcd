"""`skill adapt`: the frame store, LoRA + head trained end to end, outputs that extract and
predict accept, resume after a stop, and adapters extract refuses."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from skill.cache.files import NEW, OLD, staging_name
from skill.cache.store import STATUS_COMPLETE, STATUS_FAILED, TokenStore
from tests.extract_helpers import TINY, extract_config, invoke_cli, make_dataset

EPOCHS = 2


def adapt_config(manifest: Path, out: Path, **overrides):
    from skill.adapt.config import AdaptConfig

    settings = {"backbone": TINY, "frames": 4, "clips": 2, "epochs": EPOCHS, "batch_size": 2,
                "lr": 1e-2, "device": "cpu", "workers": 0, "plots": False, "threads": 1}  # fmt: skip
    settings.update(overrides)
    return AdaptConfig.from_settings(manifest, out, **settings)


def frame_build(manifest: Path, path: Path, takes, views, codec: str = "zstd", **decoding):
    """`build_frame_store` of ``takes`` into ``path`` with extract's settings ``decoding``
    (inline decoding, the tiny backbone's 32 px crop)."""
    from skill.adapt.frames import build_frame_store
    from skill.pipeline.decode.geometry import FrameGeometry
    from skill.pipeline.extract_config import ExtractConfig
    from skill.pipeline.manifest import read_takes
    from skill.tasks import task_record

    data = read_takes(manifest)
    settings = {"strategy": "windows", "frames": 4, "workers": 0, **decoding}
    cfg = ExtractConfig(manifest=manifest, store=path, **settings)
    geometry = FrameGeometry(shortest_edge=32, crop_height=32, crop_width=32)
    return build_frame_store(path, cfg, views, takes, backbone=TINY, geometry=geometry,
                             task=task_record(data.task, data.schema), codec=codec)  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("adapt-data"), takes=8)


@pytest.fixture(scope="module")
def adapted(dataset, tmp_path_factory):
    from skill.adapt.train import run_adapt

    cfg = adapt_config(dataset, tmp_path_factory.mktemp("adapt") / "out")
    return cfg, run_adapt(cfg)


def adapted_store(cfg, path: Path, adapter: Path | None) -> Path:
    """`skill extract` with the settings adapt names (with or without its adapter)."""
    from skill.pipeline.extract import run_extract

    extract = cfg.extract_config(store=path, adapter=adapter)
    settings = {"tokens": extract.tokens, "clips": extract.clips, "strategy": extract.strategy,
                "adapter": adapter, "batch_size": 8}  # fmt: skip
    run_extract(extract_config(cfg.manifest, path, **settings))
    return path


def test_adapt_writes_adapter_run_folder_and_frame_store(adapted):
    cfg, result = adapted
    assert result.finished and result.epochs_done == EPOCHS
    assert (cfg.adapter_dir / "adapter_config.json").is_file()
    assert (cfg.adapter_dir / "adapter_model.safetensors").is_file()
    assert result.run_dir == cfg.run_dir
    for name in ("config.json", "model.safetensors", "metrics.json", "predictions.csv"):
        assert (cfg.run_dir / name).is_file(), name
    assert not (cfg.out / ".checkpoint").exists()  # removed once the outputs are written
    record = json.loads((cfg.run_dir / "config.json").read_text())
    assert record["adapt"]["adapter"]["sha256"]
    assert record["store"]["provenance"]["backbone"]["adapter"]["sha256"]
    assert len(result.metrics["history"]) == EPOCHS


def test_frame_store_holds_every_view_at_the_crop_size(adapted):
    from skill.adapt.frames import FrameStore

    cfg, _ = adapted
    store = FrameStore.open(cfg.frame_store)
    assert (store.status() == STATUS_COMPLETE).all() and store.valid().all()
    frames = store.read_take(0)
    assert frames.shape == (4, 2, 4, 32, 32, 3) and frames.dtype == np.uint8  # (V, K, T, H, W, 3)
    assert frames.any()
    assert store.provenance["sampling"]["clips"] == 2
    assert store.provenance["geometry"]["crop_height"] == 32


def test_lora_weights_change(adapted):
    from safetensors.numpy import load_file

    cfg, _ = adapted
    weights = load_file(str(cfg.adapter_dir / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(np.abs(v).max() > 0 for v in lora_b)  # PEFT starts B at zero
    config = json.loads((cfg.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 64 and config["lora_alpha"] == 128 and config["lora_dropout"] == 0.1


def test_extract_with_the_adapter_changes_tokens_and_predict_reproduces_val(adapted, tmp_path):
    from skill.heads.config import PredictConfig
    from skill.heads.predict import predict

    cfg, result = adapted
    frozen = adapted_store(cfg, tmp_path / "frozen.zarr", None)
    tuned = adapted_store(cfg, tmp_path / "tuned.zarr", cfg.adapter_dir)
    a, b = TokenStore.open(frozen), TokenStore.open(tuned)
    views = list(range(len(a.views)))
    tokens_frozen = a.read_tokens(np.arange(a.n_takes), views).astype(np.float32)
    tokens_tuned = b.read_tokens(np.arange(b.n_takes), views).astype(np.float32)
    assert np.abs(tokens_frozen - tokens_tuned).max() > 1e-2
    out = predict(
        PredictConfig(store=str(tuned), run=str(cfg.run_dir), out_csv=str(tmp_path / "p.csv"))
    )
    by_id = dict(zip(out.take_ids, out.scores, strict=True))
    val_ids, val_probs = result.predictions["val"]
    got = np.stack([by_id[str(t)] for t in val_ids])
    np.testing.assert_allclose(got, val_probs, atol=2e-3)


def test_predict_refuses_the_frozen_store(adapted, tmp_path):
    cfg, _ = adapted
    frozen = adapted_store(cfg, tmp_path / "frozen.zarr", None)
    code, output = invoke_cli("predict", str(frozen), "--run", str(cfg.run_dir), "--out",
                              str(tmp_path / "p.csv"))  # fmt: skip
    assert code == 2 and "adapter" in output


def test_stopped_adapt_resumes_to_the_same_adapter(adapted, dataset, tmp_path):
    from safetensors.numpy import load_file

    from skill.adapt.train import run_adapt

    cfg, _ = adapted
    first = run_adapt(adapt_config(dataset, tmp_path / "out", stop_after_epochs=1))
    assert not first.finished and first.epochs_done == 1
    assert (tmp_path / "out" / ".checkpoint" / "state.json").is_file()
    assert not (tmp_path / "out" / "adapter").exists()
    second = run_adapt(adapt_config(dataset, tmp_path / "out"))
    assert second.finished and second.epochs_done == EPOCHS
    for name in ("adapter/adapter_model.safetensors", "run/model.safetensors"):
        want, got = load_file(str(cfg.out / name)), load_file(str(tmp_path / "out" / name))
        assert sorted(want) == sorted(got)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"{name}: {key}")


def test_resume_with_other_settings_is_refused(dataset, tmp_path):
    from skill.adapt.train import run_adapt
    from skill.errors import ConfigError

    run_adapt(adapt_config(dataset, tmp_path / "out", stop_after_epochs=1, limit=6))
    with pytest.raises(ConfigError, match="other settings"):
        run_adapt(adapt_config(dataset, tmp_path / "out", lr=1e-3, limit=6))


def test_a_bad_view_is_masked_and_a_take_below_min_views_fails(dataset, tmp_path):
    from skill.adapt.frames import FrameStore
    from skill.pipeline.manifest import read_takes

    data = read_takes(dataset)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    takes = [data.takes[0].__class__(**{**data.takes[0].__dict__,
             "videos": {**data.takes[0].videos, "exo1": str(broken)}}), *data.takes[1:3]]  # fmt: skip
    path = tmp_path / "frames.zarr"
    store, summary = frame_build(dataset, path, takes, data.views, clips=2, min_views=4)
    assert summary.failed == 1 and summary.failed_views == 1
    assert store.status()[0] == STATUS_FAILED and not store.valid()[0, 1]
    assert "broken.mp4" in store.view_errors()[0, 1]
    assert not store.read_take(0)[1].any()  # the failed view stores no frames
    _, again = frame_build(dataset, path, takes, data.views, clips=2, min_views=4)
    assert again.skipped == 3 and again.completed == 0  # resumed: nothing decoded twice
    assert FrameStore.open(path).status().tolist() == [STATUS_FAILED, 1, 1]


def test_extract_refuses_an_incomplete_adapter_naming_the_file(adapted, tmp_path):
    cfg, _ = adapted
    folder = tmp_path / "adapter"
    shutil.copytree(cfg.adapter_dir, folder)
    (folder / "adapter_model.safetensors").unlink()
    code, output = invoke_cli("extract", str(cfg.manifest), "--store", str(tmp_path / "s.zarr"),
                              "--backbone", TINY, "--frames", "4", "--adapter", str(folder))  # fmt: skip
    assert code == 2 and "adapter_model.safetensors is missing" in output


def test_extract_refuses_an_adapter_of_another_width_naming_file_and_shapes(adapted, tmp_path):
    from safetensors.numpy import load_file, save_file

    cfg, _ = adapted
    folder = tmp_path / "adapter"
    shutil.copytree(cfg.adapter_dir, folder)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    wider = {k: np.zeros((v.shape[0], 48), v.dtype) if "lora_A" in k else v
             for k, v in weights.items()}  # fmt: skip
    save_file(wider, str(folder / "adapter_model.safetensors"))
    code, output = invoke_cli("extract", str(cfg.manifest), "--store", str(tmp_path / "s.zarr"),
                              "--backbone", TINY, "--frames", "4", "--adapter", str(folder))  # fmt: skip
    assert code == 2
    assert "adapter_model.safetensors" in output and "48" in output and "32" in output


def test_extract_refuses_an_adapter_of_another_backbone(adapted, tmp_path):
    cfg, _ = adapted
    store = tmp_path / "s.zarr"
    args = ("extract", str(cfg.manifest), "--store", str(store), "--backbone", "tiny-clip",
            "--frames", "4")  # fmt: skip
    code, output = invoke_cli(*args, "--adapter", str(cfg.adapter_dir))
    # adapt's training record names the base it was trained on
    assert code == 2 and "skill_adapter.json" in output and "another backbone" in output
    assert "trained on tiny-timesformer" in output and "not on tiny-clip" in output
    # an adapter from elsewhere (no record): its target modules match no module of CLIP
    foreign = tmp_path / "foreign"
    shutil.copytree(cfg.adapter_dir, foreign)
    (foreign / "skill_adapter.json").unlink()
    code, output = invoke_cli(*args, "--adapter", str(foreign))
    assert code == 2 and "adapter_config.json" in output and "another backbone" in output
    assert "CLIPVisionModel" in output
    assert not store.exists()  # nothing written


def test_extract_refuses_an_adapter_trained_on_other_weights_of_the_same_shape(adapted, tmp_path):
    """Same architecture and width, other weights (k400 vs k600, say): only the training
    record can tell, and it does."""
    cfg, _ = adapted
    folder = tmp_path / "adapter"
    shutil.copytree(cfg.adapter_dir, folder)
    record = json.loads((folder / "skill_adapter.json").read_text())
    record["backbone"]["weights_sha256"] = "0" * 64
    (folder / "skill_adapter.json").write_text(json.dumps(record))
    store = tmp_path / "s.zarr"
    code, output = invoke_cli("extract", str(cfg.manifest), "--store", str(store), "--backbone",
                              TINY, "--frames", "4", "--adapter", str(folder))  # fmt: skip
    assert code == 2 and "skill_adapter.json" in output and "000000000000" in output
    assert not store.exists()


def test_the_adapter_records_its_base_and_time_embedding(adapted):
    cfg, _ = adapted
    record = json.loads((cfg.adapter_dir / "skill_adapter.json").read_text())
    assert record["made_by"] == "skill adapt" and record["time_embedding"] == "nearest"
    assert (
        record["backbone"]["name"] == "tiny-timesformer" and record["backbone"]["num_frames"] == 4
    )
    run = json.loads((cfg.run_dir / "config.json").read_text())
    want = run["store"]["provenance"]["backbone"]["weights_sha256"]
    assert record["backbone"]["weights_sha256"] == want


@pytest.fixture(scope="module")
def adapted_linear(dataset, tmp_path_factory):
    """An adapt with SkillFormer's linear time embeddings and mean_all tokens (T=4 is not the
    tiny checkpoint's 8, so the interpolation matters)."""
    from skill.adapt.train import run_adapt

    cfg = adapt_config(dataset, tmp_path_factory.mktemp("adapt-linear") / "out", epochs=1,
                       clips=1, time_embedding="linear", tokens="mean_all", limit=6)  # fmt: skip
    return cfg, run_adapt(cfg)


def test_adapt_with_linear_time_embedding_extracts_and_predicts_with_it(adapted_linear, tmp_path):
    from skill.heads.config import PredictConfig
    from skill.heads.predict import predict
    from skill.pipeline.extract import run_extract

    cfg, result = adapted_linear
    record = json.loads((cfg.adapter_dir / "skill_adapter.json").read_text())
    assert record["time_embedding"] == "linear" and record["backbone"]["token_mode"] == "mean_all"
    run = json.loads((cfg.run_dir / "config.json").read_text())
    assert run["store"]["provenance"]["backbone"]["time_embedding"] == "linear"
    assert "--tokens mean_all --time-embedding linear" in cfg.extract_command()
    store = tmp_path / "tuned.zarr"
    run_extract(cfg.extract_config(store=store, adapter=cfg.adapter_dir))
    out = predict(PredictConfig(store=str(store), run=str(cfg.run_dir),
                                out_csv=str(tmp_path / "p.csv")))  # fmt: skip
    by_id = dict(zip(out.take_ids, out.scores, strict=True))
    val_ids, val_probs = result.predictions["val"]
    np.testing.assert_allclose(np.stack([by_id[str(t)] for t in val_ids]), val_probs, atol=2e-3)


def test_extract_with_another_time_embedding_than_adapt_is_refused(adapted_linear, tmp_path):
    cfg, _ = adapted_linear
    store = tmp_path / "s.zarr"
    code, output = invoke_cli(
        "extract",
        str(cfg.manifest),
        "--store",
        str(store),
        "--backbone",
        TINY,
        "--frames",
        "4",
        "--tokens",
        "mean_all",
        "--adapter",
        str(cfg.adapter_dir),
    )  # fmt: skip (the default: nearest)
    assert code == 2 and "skill_adapter.json" in output
    assert "trained with --time-embedding linear" in output and "uses nearest" in output
    assert not store.exists()


def test_presets_set_skillformer_settings_and_options_win():
    from skill.adapt.config import AdaptConfig

    ego = AdaptConfig.from_settings("m.jsonl", "o", preset="skillformer-ego")
    got = (ego.extract.frames, ego.lora_r, ego.lora_alpha, ego.fit.hidden, ego.fit.lr,
           ego.fit.views)  # fmt: skip
    assert got == (32, 32, 64, 1536, 5e-5, "ego")
    both = AdaptConfig.from_settings("m.jsonl", "o", preset="skillformer-egoexo", lr=1e-4,
                                     frames=8)  # fmt: skip
    assert (both.extract.frames, both.lora_r, both.fit.hidden, both.fit.lr) == (8, 64, 2560, 1e-4)


def test_adapt_settings_are_the_stages_settings_with_skillformers_defaults(tmp_path):
    """adapt's config nests skill extract's and skill fit's: their checks and what they
    derive apply, SkillFormer's recipe where its defaults differ, one value per setting."""
    from skill.adapt.config import SETTINGS, AdaptConfig
    from skill.errors import ConfigError
    from skill.heads.config import FitConfig
    from skill.pipeline.extract_config import ExtractConfig

    cfg = AdaptConfig.from_settings(tmp_path / "m.jsonl", tmp_path / "o", seed=3, jitter=True,
                                    device="cpu")  # fmt: skip
    assert isinstance(cfg.extract, ExtractConfig) and isinstance(cfg.fit, FitConfig)
    assert cfg.extract.sampling.strategy == "windows" and cfg.extract.sampling.clips == 4
    assert (cfg.extract.seed, cfg.fit.seed) == (3, 3)  # the sampling seed follows --seed
    assert (cfg.fit.batch_size, cfg.fit.weight_decay, cfg.fit.patience) == (2, 0.01, 0)
    assert (cfg.fit.epochs, cfg.fit.view_dropout, cfg.fit.device) == (4, 0.0, "cpu")
    assert cfg.run_dir == tmp_path / "o" / cfg.fit.name and cfg.extract.store == cfg.frame_store
    assert list(cfg.settings()) == list(SETTINGS)
    given = {k: v for k, v in cfg.settings().items() if k not in ("manifest", "out")}
    again = AdaptConfig.from_settings(cfg.manifest, cfg.out, **given)
    assert again.settings() == cfg.settings()
    with pytest.raises(ConfigError, match="--frames must be at least 1"):
        AdaptConfig.from_settings(tmp_path / "m.jsonl", tmp_path / "o", frames=0)
    with pytest.raises(TypeError, match="snap"):
        AdaptConfig.from_settings(tmp_path / "m.jsonl", tmp_path / "o", snap="keyframe")


def test_cli_adapt_options_come_from_the_config():
    from skill.cli import adapt

    flags = {option.flag for option in adapt.config_options}
    for flag in ("--preset", "--lora-r", "--grad-accum", "--stop-after-epochs", "--codec"):
        assert flag in flags


def test_cli_adapt_stops_and_says_how_to_resume(dataset, tmp_path):
    code, output = invoke_cli(
        "adapt", str(dataset), "--out", str(tmp_path / "out"), "--backbone", TINY, "--frames",
        "4", "--clips", "1", "--epochs", "2", "--stop-after-epochs", "1", "--device", "cpu",
        "--workers", "0", "--limit", "6", "--threads", "1",
    )  # fmt: skip
    assert code == 0, output
    assert "stopped after epoch 1 of 2" in output and "resume" in output
    code, output = invoke_cli("adapt", str(dataset), "--out", str(tmp_path / "o2"), "--preset",
                              "nope")  # fmt: skip
    assert code == 2 and "--preset must be one of" in output


def test_only_the_chosen_views_are_decoded_and_trained(dataset, tmp_path):
    from skill.adapt.frames import FrameStore
    from skill.adapt.train import run_adapt
    from skill.heads.run_folder import read_run_record

    cfg = adapt_config(dataset, tmp_path / "out", views="ego", epochs=1, clips=1, limit=6)
    result = run_adapt(cfg)
    assert result.finished
    assert FrameStore.open(cfg.frame_store).views == ["ego"]
    assert read_run_record(cfg.run_dir).view_names == ["ego"]


def test_a_killed_frame_store_build_resumes_with_the_pending_takes(dataset, tmp_path, monkeypatch):
    from skill.adapt.frames import FrameStore
    from skill.pipeline.manifest import read_takes

    takes = read_takes(dataset).takes[:4]
    views = ["ego", "exo1"]
    write, written = FrameStore.write_take, []

    def dies_on_the_third(self, row, take):
        if len(written) == 2:
            raise KeyboardInterrupt("killed")
        write(self, row, take)
        written.append(row)

    monkeypatch.setattr(FrameStore, "write_take", dies_on_the_third)
    path = tmp_path / "frames.zarr"
    with pytest.raises(KeyboardInterrupt):
        frame_build(dataset, path, takes, views, codec="raw", clips=1)
    monkeypatch.setattr(FrameStore, "write_take", write)
    store, summary = frame_build(dataset, path, takes, views, codec="raw", clips=1)
    assert (summary.skipped, summary.completed) == (2, 2)
    assert (store.status() == STATUS_COMPLETE).all()
    with pytest.raises(Exception, match="cannot resume"):
        frame_build(dataset, path, takes, views, clips=2)


def test_a_frame_store_of_another_task_or_an_older_format_is_refused(dataset, tmp_path):
    import zarr

    from skill.adapt.frames import FrameStore, FrameStoreSpec
    from skill.errors import SkillError
    from skill.pipeline.manifest import read_takes
    from skill.tasks import task_record

    takes, views = read_takes(dataset).takes[:2], ["ego"]
    path = tmp_path / "frames.zarr"
    store, _ = frame_build(dataset, path, takes, views, clips=1)
    assert store.task == task_record("classification", read_takes(dataset).schema)
    spec = FrameStoreSpec(**store.provenance)
    other = task_record("classification", {"labels": ["Novice", "Expert"]})
    with pytest.raises(SkillError, match="cannot resume this frame store: task classification"):
        FrameStore.open_or_create(path, spec, views, takes, other)
    zarr.open_group(str(path), mode="r+").attrs["skill_frames"] = {"format_version": 1}
    with pytest.raises(SkillError, match="frame store format 1 was written by an older skill"):
        FrameStore.open(path)


def neural_heads() -> list[str]:
    from skill.heads.registry import HEAD_READS, head_class, head_names, is_trainable

    # adapt feeds one clip at a time: heads that read clip sequences are not for it
    return [n for n in head_names() if not is_trainable(head_class(n)) and HEAD_READS[n] == "clip"]


@pytest.mark.parametrize("head", neural_heads())
def test_every_neural_head_adapts_end_to_end(dataset, tmp_path, head):
    from skill.adapt.train import run_adapt

    cfg = adapt_config(dataset, tmp_path / "out", head=head, epochs=1, clips=1, limit=6,
                       gradient_checkpointing=False)  # fmt: skip
    result = run_adapt(cfg)
    assert result.finished and np.isfinite(result.metrics["history"][0]["train_loss"])
    assert (cfg.run_dir / "model.safetensors").is_file()


def test_lightgbm_is_refused_as_an_adapt_head(dataset, tmp_path):
    from skill.errors import ConfigError

    with pytest.raises(ConfigError, match="not a neural head"):
        adapt_config(dataset, tmp_path / "out", head="lightgbm")


@pytest.mark.gpu
def test_adapt_on_cuda_with_bf16_autocast_then_extract_and_predict_agree(dataset, tmp_path):
    from skill.adapt.train import run_adapt
    from skill.heads.config import PredictConfig
    from skill.heads.predict import predict

    cfg = adapt_config(dataset, tmp_path / "out", device="cuda", clips=1)
    result = run_adapt(cfg)
    assert result.finished
    tuned = adapted_store(cfg, tmp_path / "tuned.zarr", cfg.adapter_dir)
    out = predict(
        PredictConfig(store=str(tuned), run=str(cfg.run_dir), out_csv=str(tmp_path / "p.csv"))
    )
    by_id = dict(zip(out.take_ids, out.scores, strict=True))
    val_ids, val_probs = result.predictions["val"]
    got = np.stack([by_id[str(t)] for t in val_ids])
    np.testing.assert_allclose(got, val_probs, atol=2e-2)  # bf16 in adapt, extract's autocast


def test_gradient_accumulation_takes_one_optimiser_step_per_group(dataset, tmp_path):
    import math

    from skill.adapt.train import run_adapt

    steps = {}
    for accum in (1, 2):
        out = tmp_path / f"accum{accum}"
        run_adapt(adapt_config(dataset, out, batch_size=1, grad_accum=accum, clips=1,
                               stop_after_epochs=1))  # fmt: skip
        state = json.loads((out / ".checkpoint" / "state.json").read_text())
        steps[accum] = state["scheduler"]["last_epoch"]  # scheduler steps = optimiser steps
    assert steps[1] >= 2 and steps[2] == math.ceil(steps[1] / 2)  # one step per train take


def test_a_checkpoint_save_killed_between_its_renames_is_recovered(adapted, dataset, tmp_path):
    from safetensors.numpy import load_file

    from skill.adapt.train import run_adapt

    cfg, _ = adapted
    out = tmp_path / "out"
    run_adapt(adapt_config(dataset, out, stop_after_epochs=1))
    # killed after the first rename of a replace, with the new checkpoint beside the old one
    (out / ".checkpoint").rename(out / staging_name(".checkpoint", OLD, pid=123))
    (out / staging_name(".checkpoint", NEW, pid=456)).mkdir()
    assert run_adapt(adapt_config(dataset, out)).finished
    assert not list(out.glob("*.checkpoint*"))
    want = load_file(str(cfg.adapter_dir / "adapter_model.safetensors"))
    got = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_a_second_adapt_on_the_same_folder_is_refused(dataset, tmp_path):
    import fcntl

    from skill.adapt.train import run_adapt
    from skill.errors import ConfigError

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".adapt.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="another skill adapt"):
            run_adapt(adapt_config(dataset, out))


def test_skillformer_ego_preset_trains_its_reported_14m_parameters():
    # SkillFormer (arXiv 2505.08665): with r=32 the LoRA weights are about 7.1M and the fusion
    # module about 7.1M, its reported 14M trainable parameters.
    import torch
    from peft import get_peft_model
    from transformers import TimesformerConfig, TimesformerModel

    from skill.adapt.config import AdaptConfig
    from skill.adapt.train import lora_config
    from skill.heads.registry import build_head

    cfg = AdaptConfig.from_settings("m.jsonl", "o", preset="skillformer-ego")
    with torch.device("meta"):  # TimeSformer-base's shapes, no memory
        lora = get_peft_model(
            TimesformerModel(TimesformerConfig()), lora_config(cfg, "timesformer")
        )
        head = build_head("cvf", dim=768, num_views=1, outputs=4, tokens=32,
                          hidden=cfg.fit.hidden)  # fmt: skip
    lora_params = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    head_params = sum(p.numel() for p in head.parameters())
    assert lora_params == 7_077_888  # 12 layers x 32 x (in + out) of the seven Linears
    assert 6.9e6 < head_params < 7.3e6 and 13.9e6 < lora_params + head_params < 14.4e6


def test_the_printed_extract_command_gives_a_store_the_run_predicts(adapted, tmp_path):
    cfg, _ = adapted
    store = tmp_path / "tokens.zarr"
    args = cfg.extract_command().replace("TOKENS.zarr", str(store)).split()[1:]
    code, output = invoke_cli(*args, "--device", "cpu", "--workers", "0")
    assert code == 0, output
    code, output = invoke_cli("predict", str(store), "--run", str(cfg.run_dir), "--out",
                              str(tmp_path / "p.csv"))  # fmt: skip
    assert code == 0, output


def test_the_adapted_run_refuses_a_store_of_fewer_views(adapted, tmp_path):
    """The run was trained on 4 views; tokens of the ego view alone are refused, naming the
    views it lacks, and no prediction file is written."""
    import dataclasses

    from skill.pipeline.extract import run_extract
    from skill.pipeline.manifest import read_takes, write_manifest

    cfg, _ = adapted
    takes = [dataclasses.replace(t, videos={"ego": t.videos["ego"]})
             for t in read_takes(cfg.manifest).takes]  # fmt: skip
    manifest = write_manifest(tmp_path / "ego.jsonl", takes)
    store = tmp_path / "ego.zarr"
    extract = cfg.extract_config(store=store, adapter=cfg.adapter_dir)
    run_extract(dataclasses.replace(extract, manifest=manifest, workers=0, device="cpu"))
    csv = tmp_path / "p.csv"
    code, output = invoke_cli("predict", str(store), "--run", str(cfg.run_dir), "--out", str(csv))
    assert code == 2 and "has no view exo1, exo2, exo3" in output
    assert not csv.exists()


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetched_batches_come_in_order_and_errors_reach_the_loop(depth):
    import threading

    from skill.adapt.frames import prefetched

    threads = set()

    def load(i):
        threads.add(threading.current_thread().name)
        if i == 5:
            raise OSError("chunk 5 unreadable")
        return i * i

    got = []
    with pytest.raises(OSError, match="chunk 5"):
        for value in prefetched(range(8), load, depth=depth):
            got.append(value)
    assert got == [0, 1, 4, 9, 16]  # in order, up to the failing item
    assert list(prefetched(range(4), lambda i: -i, depth=depth)) == [0, -1, -2, -3]
    assert (threads == {threading.current_thread().name}) == (depth == 0)  # a thread reads ahead


# ---- reproducible, shareable outputs ---------------------------------------------------------
def adapt_cli(dataset: Path, out: Path, **env: str):
    from tests.extract_helpers import run_cli

    done = run_cli(
        "adapt", str(dataset), "--out", str(out), "--backbone", TINY, "--frames", "4",
        "--clips", "1", "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--workers",
        "0", "--no-plots", "--threads", "1", **env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# Two adapt processes; the default run compares adapters in test_stopped_adapt_resumes_...
@pytest.mark.slow
def test_two_identical_adapt_runs_write_identical_files(dataset, tmp_path):
    # Two processes with other string hashes: a set written in set order comes out differently.
    one = adapt_cli(dataset, tmp_path / "one", PYTHONHASHSEED="1")
    two = adapt_cli(dataset, tmp_path / "two", PYTHONHASHSEED="2")
    adapter = file_bytes(one / "adapter")
    assert sorted(adapter) == sorted(file_bytes(two / "adapter"))
    assert "adapter_config.json" in adapter and "adapter_model.safetensors" in adapter
    for name, content in file_bytes(two / "adapter").items():
        assert content == adapter[name], f"adapter/{name} differs between two identical runs"
    assert file_bytes(one / "frames.zarr") == file_bytes(two / "frames.zarr")
    for name in ("model.safetensors", "metrics.json", "predictions.csv"):
        assert (one / "run" / name).read_bytes() == (two / "run" / name).read_bytes(), name
    records = [json.loads((out / "run" / "config.json").read_text()) for out in (one, two)]
    for record, out in zip(records, (one, two), strict=True):
        record.pop("created")  # when the run was made; every other field is the same
        record["adapt"]["adapter"].pop("path")
        text = json.dumps(record).replace(str(out), "OUT")
        record.clear()
        record.update(json.loads(text))
    assert records[0] == records[1]
    targets = json.loads((one / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert targets == sorted(targets)


def test_adapt_outputs_and_checkpoints_follow_the_umask(dataset, tmp_path):
    from skill.adapt.train import run_adapt

    out = tmp_path / "out"
    previous = os.umask(0o027)
    try:
        run_adapt(adapt_config(dataset, out, epochs=2, clips=1, stop_after_epochs=1))
        checkpoint = {p.name: p.stat().st_mode & 0o777 for p in (out / ".checkpoint").iterdir()}
        assert "trainable.safetensors" in checkpoint and "state.json" in checkpoint
        assert set(checkpoint.values()) == {0o640}, checkpoint
        run_adapt(adapt_config(dataset, out, epochs=2, clips=1))
    finally:
        os.umask(previous)
    modes = {
        str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()
    }
    assert "adapter/adapter_model.safetensors" in modes and "run/model.safetensors" in modes
    assert {name for name, mode in modes.items() if mode != 0o640} == set()


def test_an_adapt_that_stopped_early_and_failed_to_publish_publishes_the_same_on_resume(
    dataset, tmp_path, monkeypatch
):
    import errno

    import skill.adapt.train as adapt_train
    from skill.cache.recovery import WriteError

    settings = {"epochs": 8, "patience": 1, "clips": 1}
    reference = adapt_train.run_adapt(adapt_config(dataset, tmp_path / "ref", **settings))
    assert reference.epochs_done < 8  # it stopped early: the case under test

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("skill.pipeline.backbones.adapter.save_adapter", full_disk)
    out = tmp_path / "out"
    with pytest.raises(WriteError, match=r"adapter: could not write the adapter: the disk is full"):
        adapt_train.run_adapt(adapt_config(dataset, out, **settings))
    monkeypatch.undo()
    assert (out / ".checkpoint" / "state.json").is_file() and not (out / "adapter").exists()
    resumed = adapt_train.run_adapt(adapt_config(dataset, out, **settings))
    assert resumed.epochs_done == reference.epochs_done
    assert resumed.metrics["history"] == reference.metrics["history"]
    want = (tmp_path / "ref" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == want


@pytest.mark.parametrize("strategy", ["sequence", "stride"])
def test_adapt_refuses_an_ordered_clip_sequence(strategy):
    from skill.adapt.config import FrameDecoding
    from skill.errors import ConfigError

    with pytest.raises(ConfigError, match=f"--sampling {strategy} makes an ordered clip sequence"):
        FrameDecoding(manifest="m.jsonl", strategy=strategy, frames=8)


def test_adapt_refuses_a_sequence_head_with_advice_for_adapt():
    from skill.adapt.config import AdaptConfig
    from skill.errors import ConfigError

    with pytest.raises(ConfigError, match="--head seqformer reads an ordered clip sequence"):
        AdaptConfig.from_settings(Path("m.jsonl"), Path("o"), head="seqformer")
