"""One registration idiom: a head, a manifest format or a backbone family added in one file
(and one line of its package's list) reaches every list and check that names such things,
unedited: the sweep's and the demo's default heads, --tokens, the registries' lists."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from torch import nn

from skill.heads.registry import HEADS, heads_in_order, register_head

REPO = Path(__file__).resolve().parents[1]


class ProbeHead(nn.Module):
    """A head registered at run time, as a new head file would be: ``(B, V, N, D) -> (B, O)``."""

    def __init__(self, dim: int, outputs: int):
        super().__init__()
        self.linear = nn.Linear(dim, outputs)

    def forward(self, x, mask):
        return self.linear(x.mean(dim=(1, 2)))


@pytest.fixture
def probe_head(monkeypatch):
    monkeypatch.delitem(HEADS, "probe", raising=False)
    register_head("probe")(ProbeHead)
    yield "probe"
    HEADS.pop("probe", None)


def test_the_default_heads_of_the_sweep_and_the_demo_are_every_registered_head(probe_head):
    from skill.demo import LEFT_OUT_HEADS, DemoConfig
    from skill.heads import HEAD_FILES
    from skill.heads.config import FitConfig, SweepConfig

    every = heads_in_order()  # the declared heads, then those registered at run time
    assert every[: len(HEAD_FILES)] == list(HEAD_FILES) and every[-1] == probe_head
    sweep = SweepConfig(fit=FitConfig(store="store.zarr", device="cpu"))
    assert sweep.heads == every
    assert DemoConfig().heads == [h for h in every if h not in LEFT_OUT_HEADS]
    # The demo's lists stay what they were before the heads came from the registry.
    assert DemoConfig().heads[:5] == ["mean", "concat", "late", "cvf", "lightgbm"]


def test_a_head_registered_in_one_place_builds_with_only_the_sizes_it_declares(probe_head):
    from skill.heads.registry import resolve_head

    spec = resolve_head(probe_head)
    offered = {"dim": 8, "num_views": 3, "outputs": 4, "tokens": 2, "hidden": 16, "dropout": 0.1}
    assert spec.arguments(offered) == {"dim": 8, "outputs": 4}
    assert spec.option_problem({"dim": 8, "outputs": 4, "tokens": 2}) is None  # older runs
    assert "unknown option hidden" in spec.option_problem({"dim": 8, "outputs": 4, "hidden": 3})
    assert isinstance(spec.build(dim=8, num_views=3, outputs=4, tokens=2), ProbeHead)
    with pytest.raises(TypeError):
        spec.build(dim=8, outputs=4, hidden=16)  # an option it does not take is an error


def test_every_manifest_format_file_registers_itself_and_is_listed():
    from skill.pipeline.manifest import format_names, get_format

    registering = {
        path.stem
        for path in (REPO / "pipeline" / "manifest").glob("*.py")
        if "\nregister_format(" in path.read_text()
    }
    files = {get_format(name).read.__module__.rsplit(".", 1)[1] for name in format_names()}
    assert files == registering and len(format_names()) == len(registering)


def test_token_modes_are_declared_once_by_the_families(monkeypatch, tmp_path):
    # --tokens accepts every mode of every registered family, and nothing else: a family's
    # own mode needs no second list.
    from skill.errors import ConfigError
    from skill.pipeline.backbones import FAMILIES, token_mode_names
    from skill.pipeline.extract_config import ExtractConfig

    assert token_mode_names() == ("frame", "cls", "patch", "mean_all")
    base = FAMILIES["clip"]
    probe = dataclasses.replace(
        base, name="probe", token_modes={**base.token_modes, "probe_mode": base.token_modes["cls"]}
    )
    monkeypatch.setitem(FAMILIES, "probe", probe)
    paths = {"manifest": tmp_path / "m.jsonl", "store": tmp_path / "s.zarr"}
    assert ExtractConfig(**paths, tokens="probe_mode").tokens == "probe_mode"
    with pytest.raises(ConfigError, match="--tokens must be one of frame, cls, patch, mean_all"):
        ExtractConfig(**paths, tokens="nosuch")


def test_a_backbone_is_resolved_once_with_its_family():
    from skill.pipeline.backbones import BACKBONES, FAMILIES, load_backbone, resolve_backbone

    resolved = resolve_backbone("tiny-clip")
    assert resolved.family is FAMILIES[BACKBONES["tiny-clip"].family]
    loaded = load_backbone("tiny-clip", num_frames=2, token_mode="cls")
    assert loaded.family == resolved.family.name == "clip"
