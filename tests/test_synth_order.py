"""The order kind of the synthetic dataset: every step looks the same at every level and in
every slot, only the order of the steps tells a Novice from a Late Expert."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from skill.pipeline.manifest import read_takes
from skill.synth import INFO_NAME, MANIFEST_NAME, SynthConfig, decode_video, synthesize
from skill.synth.plan import plan_takes
from skill.synth.procedure import draw_procedure_view, procedure_scene
from skill.synth.world import STEPS

STEPS_N, STEP_FRAMES = 8, 16
ORDER = {"kind": "order", "takes": 12, "size": 32, "exo_views": 1}
LEVELS = ("Novice", "Late Expert")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 order takes (8 steps of 16 frames) at 32 px, ego and exo1, rendered in this process."""
    out = tmp_path_factory.mktemp("order")
    synthesize(SynthConfig(seed=0, **ORDER), out, workers=1)
    return out


@pytest.fixture(scope="module")
def info(dataset: Path) -> dict:
    return json.loads((dataset / INFO_NAME).read_text())


def all_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def colour_histograms(rgb: np.ndarray) -> np.ndarray:
    """Per frame (F, H, W, 3) uint8: the share of pixels of each of 12 hues (30-degree bins,
    saturated and bright pixels) and of bright white ones, (F, 13); the background is dark
    and unsaturated, so it counts in no bin."""
    x = rgb.astype(np.float32) / 255
    high, low = x.max(-1), x.min(-1)
    spread = np.maximum(high - low, 1e-6)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hue = 60 * np.where(
        high == r,
        (g - b) / spread % 6,
        np.where(high == g, (b - r) / spread + 2, (r - g) / spread + 4),
    )
    saturation = (high - low) / np.maximum(high, 1e-6)
    coloured = (saturation > 0.5) & (high > 0.35)
    white = (saturation < 0.25) & (high > 0.7)
    bins = ((hue + 15) % 360 // 30).astype(np.int64)
    shares = [((bins == k) & coloured).mean((1, 2)) for k in range(12)]
    return np.stack([*shares, white.mean((1, 2))], -1)


def step_bins() -> list[int]:
    """The histogram bin of each step's colour (white: the last bin)."""
    pixel = (np.array([s.colour for s in STEPS]) * 255).astype(np.uint8)[:, None, None]
    return [int(b) for b in colour_histograms(pixel).argmax(1)]


def test_the_manifest_parses_with_two_levels_and_the_info_records_each_order(dataset, info):
    takes = read_takes(dataset / MANIFEST_NAME).takes
    assert len(takes) == 12 and {t.label for t in takes} == set(LEVELS)
    for split in ("train", "val", "test"):  # the surroundings cannot stand in for the level
        places = {
            lv: sorted(t.scenario for t in takes if (t.split, t.label) == (split, lv))
            for lv in LEVELS
        }
        assert places["Novice"] == places["Late Expert"] != [], split
    assert info["config"]["kind"] == "order" and info["config"]["frames"] == STEPS_N * STEP_FRAMES
    assert info["step_frames"] == STEP_FRAMES and len(info["steps"]) == STEPS_N
    for take in takes:
        order = info["orders"][take.take_id]
        assert sorted(order) == list(range(STEPS_N)), take.take_id
        misplaced = sum(slot != step for slot, step in enumerate(order))
        assert misplaced == (0 if take.label == "Late Expert" else 4), (take.label, order)


def test_every_slot_shows_its_recorded_step_and_every_take_shows_each_step_alike(dataset, info):
    bins = step_bins()
    assert len(set(bins)) == STEPS_N, "two steps share a colour"
    for take in read_takes(dataset / MANIFEST_NAME).takes:
        for view in ("ego", "exo1"):
            shown = colour_histograms(decode_video(take.videos[view])).argmax(1)
            # The multiset of drawings is the same in every take: each step for one slot.
            assert np.bincount(shown, minlength=13)[bins].tolist() == [STEP_FRAMES] * STEPS_N
            slots = shown.reshape(STEPS_N, STEP_FRAMES)
            expected = [bins[step] for step in info["orders"][take.take_id]]
            assert (slots == np.array(expected)[:, None]).all(), (take.take_id, view)


def test_a_step_looks_the_same_at_both_levels_and_unlike_any_other_step(dataset, info):
    takes = read_takes(dataset / MANIFEST_NAME).takes
    for view in ("ego", "exo1"):
        per_level = {level: [[] for _ in range(STEPS_N)] for level in LEVELS}
        for take in takes:
            frames = colour_histograms(decode_video(take.videos[view]))
            slots = frames.reshape(STEPS_N, STEP_FRAMES, -1).mean(1)
            for slot, step in enumerate(info["orders"][take.take_id]):
                per_level[take.label][step].append(slots[slot])
        novice, expert = (np.array([np.mean(h, 0) for h in per_level[lv]]) for lv in LEVELS)
        same = np.abs(novice - expert).sum(1)  # L1 between levels, per step
        other = np.abs(expert[:, None] - expert[None]).sum(-1)[~np.eye(STEPS_N, dtype=bool)]
        assert same.max() < 0.25 * other.min(), (view, same, other.min())
        if view == "ego":  # the close-up: how much of the frame each step covers
            cover_n, cover_e = novice.sum(1), expert.sum(1)
            assert (np.abs(cover_n - cover_e) < 0.08 * cover_e).all(), (cover_n, cover_e)


def test_a_fixed_camera_draws_a_step_identically_in_whichever_slot_it_falls():
    cfg = SynthConfig(seed=3, **ORDER)
    spec = plan_takes(cfg)[0]
    swapped = (5, 1, 2, 7, 4, 0, 6, 3)

    def drawn(order: tuple[int, ...]) -> np.ndarray:
        take = replace(spec, order=order)
        rng = np.random.default_rng([cfg.seed, 1, take.index])
        return draw_procedure_view(procedure_scene(take, rng), "exo1", cfg, rng)

    canonical, other = drawn(tuple(range(STEPS_N))), drawn(swapped)
    assert not np.array_equal(canonical, other)
    for slot, step in enumerate(swapped):
        mine = other[slot * STEP_FRAMES : (slot + 1) * STEP_FRAMES]
        assert np.array_equal(mine, canonical[step * STEP_FRAMES : (step + 1) * STEP_FRAMES])


def test_same_seed_gives_identical_bytes_and_another_seed_other_orders(dataset, info, tmp_path):
    synthesize(SynthConfig(seed=0, **ORDER), tmp_path / "again", workers=2)
    assert all_bytes(tmp_path / "again") == all_bytes(dataset)
    synthesize(SynthConfig(seed=1, **ORDER), tmp_path / "other", workers=1)
    other = json.loads((tmp_path / "other" / INFO_NAME).read_text())
    assert other["orders"] != info["orders"]


def test_cues_info_has_no_order_settings_and_bad_order_settings_are_refused(tmp_path):
    synthesize(SynthConfig(takes=12, size=16, frames=8, exo_views=1), tmp_path, workers=1)
    info = json.loads((tmp_path / INFO_NAME).read_text())
    assert info["config"]["frames"] == 8 and "kind" not in info["config"]
    assert "cues_per_level" in info and "orders" not in info
    assert SynthConfig(takes=12).frames == 48
    assert SynthConfig(takes=12, kind="order", procedure_steps=4).frames == 64
    with pytest.raises(ValueError, match="--kind must be one of cues, order, moments, not 'rank'"):
        SynthConfig(takes=12, kind="rank")
    with pytest.raises(ValueError, match="--procedure-steps must be 2 to 8, not 9"):
        SynthConfig(takes=12, kind="order", procedure_steps=9)
    with pytest.raises(
        ValueError, match="--frames must be a multiple of --procedure-steps .* not 60"
    ):
        SynthConfig(takes=12, kind="order", frames=60)
    with pytest.raises(ValueError, match="--swaps must be 1 to 2 for 4 steps, not 3"):
        SynthConfig(takes=12, kind="order", procedure_steps=4, swaps=3)
