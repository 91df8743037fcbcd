"""The backbone as a sweep axis: several stores of the same takes (one per backbone or
adapter) swept into one table; stores whose takes, splits or labels differ are refused
before any fit, with the difference named."""

from __future__ import annotations

import copy
import csv
import io
import re
import shutil

import pytest
from rich.console import Console

import skill.cli
import skill.heads.sweep
from skill.errors import ConfigError, SkillError
from skill.heads.config import FitConfig, SweepConfig
from skill.heads.data import SelectionError
from skill.heads.sweep import (
    SweepError,
    backbone_label,
    backbone_labels,
    folder_name,
    sweep,
    table_columns,
)
from skill.tasks import get_task
from tests.extract_helpers import invoke_cli
from tests.token_store import (
    PROVENANCE,
    build_token_store,
    edit_take,
    rename_label,
    shared_token_store,
)

QUICK = dict(epochs=2, batch_size=16, hidden=16, patience=0, plots=False)
SMALL = dict(n_participants=20, takes_per_participant=2)  # 40 takes in train, val, test
SHA = "deadbeef" + "0" * 56
CLIP = copy.deepcopy(PROVENANCE)
CLIP["backbone"] = {"name": "clip-vit-b16", "adapter": {"path": "/lora", "sha256": SHA}}


def provenance(name: str, adapter_sha: str | None = None) -> dict:
    adapter = {"path": "/lora", "sha256": adapter_sha} if adapter_sha else None
    return {**PROVENANCE, "backbone": {"name": name, "adapter": adapter}}


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    """The same takes through two backbones (other tokens, same take table)."""
    folder = tmp_path_factory.mktemp("stores")
    a = shared_token_store(tmp_path_factory, "small", **SMALL).path
    b = build_token_store(folder / "b.zarr", **SMALL, seed=1, provenance=CLIP).path
    return a, b


@pytest.fixture(scope="module")
def swept(two_stores, tmp_path_factory):
    a, b = two_stores
    loads = []
    original = skill.heads.sweep.load_selection

    def counting_load(path, views, allow_unfinished=False):
        loads.append((str(path), views))
        return original(path, views, allow_unfinished)

    skill.heads.sweep.load_selection = counting_load
    try:
        base = FitConfig(store=str(a), out_dir=str(tmp_path_factory.mktemp("runs")), **QUICK)
        grid = dict(heads=["mean", "concat"], view_sets=["ego", "all"], seeds=[0, 1])
        result = sweep(SweepConfig(fit=base, **grid, stores=[str(b)]))
    finally:
        skill.heads.sweep.load_selection = original
    return result, loads


def test_two_stores_give_one_table_with_a_backbone_column(swept, two_stores):
    result, loads = swept
    a, b = map(str, two_stores)
    assert loads == [(a, "ego"), (a, "all"), (b, "ego"), (b, "all")]  # each loaded once
    assert len(result.fits) == 2 * 2 * 2 * 2
    assert [(r["backbone"], r["head"], r["views"]) for r in result.rows] == [
        (backbone, head, views)
        for backbone in ("synthetic", "clip-vit-b16+deadbeef")
        for views in ("ego", "all")
        for head in ("mean", "concat")
    ]
    assert all(row["seeds"] == 2 for row in result.rows)
    with open(result.sweep_dir / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert (
        list(rows[0]) == table_columns(get_task("classification"), backbone=True) and len(rows) == 8
    )
    assert {row["backbone"] for row in rows} == {"synthetic", "clip-vit-b16+deadbeef"}
    markdown = (result.sweep_dir / "sweep.md").read_text().split("\n\n")[0].splitlines()
    assert markdown[0].startswith("| backbone | head | views | seeds |") and len(markdown) == 10
    assert markdown[-1].startswith("| clip-vit-b16+deadbeef | concat | all | 2 |")


def test_each_store_has_its_own_run_folders(swept, two_stores):
    result, _ = swept
    for label, store in zip(("synthetic", "clip-vit-b16+deadbeef"), two_stores, strict=True):
        runs = sorted(p.name for p in (result.sweep_dir / label).iterdir())
        assert runs == sorted(f"{h}-{v}-s{s}" for h in ("mean", "concat") for v in ("ego", "all")
                              for s in (0, 1))  # fmt: skip
        assert all(
            f.config.store == str(store) for f in result.fits if f.run_dir.parent.name == label
        )


def test_the_console_table_has_a_backbone_column_only_for_several_backbones(swept, monkeypatch):
    result, _ = swept

    def printed(rows) -> str:
        monkeypatch.setattr(skill.cli, "out", Console(file=io.StringIO(), width=200))
        skill.cli.print_sweep_table(rows)
        return skill.cli.out.file.getvalue()

    several = printed(result.rows)
    assert "backbone" in several and "clip-vit-b16+deadbeef" in several and "synthetic" in several
    single = printed([r for r in result.rows if r["backbone"] == "synthetic"])
    assert "backbone" not in single and "synthetic" not in single and "concat" in single


def test_the_store_argument_is_put_first_unless_listed(two_stores, tmp_path):
    a, b = map(str, two_stores)
    base = FitConfig(store=a)
    assert SweepConfig(fit=base).store_paths() == [a]
    assert SweepConfig(fit=base, stores=[b]).store_paths() == [a, b]
    assert SweepConfig(fit=base, stores=[b, a]).store_paths() == [b, a]
    with pytest.raises(ConfigError, match="--stores: .*b.zarr is listed twice"):
        SweepConfig(fit=base, stores=[b, str(tmp_path / ".." / tmp_path.name / ".." / b)])


def test_the_sweep_command_takes_stores(two_stores, tmp_path):
    a, b = map(str, two_stores)
    grid = ["--heads", "mean", "--view-sets", "ego", "--epochs", "1", "--no-plots"]
    code, output = invoke_cli("sweep", a, "--stores", b, *grid, "--out", str(tmp_path))
    assert code == 0, output
    code, output = invoke_cli("sweep", a, "--stores", f"{b},{a}", *grid, "--out", str(tmp_path))
    assert code == 0, output
    backbones = []
    for name in ("sweep", "sweep-2"):
        with open(tmp_path / name / "sweep.csv", newline="") as f:
            backbones.append([row["backbone"] for row in csv.DictReader(f)])
    # STORE added first when not listed; the listed order otherwise
    assert backbones == [
        ["synthetic", "clip-vit-b16+deadbeef"],
        ["clip-vit-b16+deadbeef", "synthetic"],
    ]


def test_a_sweep_of_one_store_keeps_the_single_store_table(two_stores, tmp_path):
    a, _ = two_stores
    code, output = invoke_cli(
        "sweep", str(a), "--heads", "mean", "--view-sets", "ego;all", "--epochs", "1",
        "--no-plots", "--out", str(tmp_path),
    )  # fmt: skip
    assert code == 0, output
    assert "backbone" not in output
    with open(tmp_path / "sweep" / "sweep.csv", newline="") as f:
        assert list(csv.DictReader(f))[0].keys() == set(table_columns(get_task("classification")))
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == [
        "mean-all-s0", "mean-ego-s0"
    ]  # fmt: skip


# ---- refusals --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Read by every refusal, never written: the store of `two_stores`' first backbone."""
    return shared_token_store(tmp_path_factory, "small", **SMALL).path


@pytest.fixture(scope="module")
def clip_store(tmp_path_factory):
    """The reference's takes through another backbone, built once; tests edit copies."""
    return build_token_store(tmp_path_factory.mktemp("clip") / "b.zarr", **SMALL,
                             provenance=CLIP).path  # fmt: skip


@pytest.fixture
def other(clip_store, tmp_path):
    """A copy of `clip_store` for one test to edit."""
    path = tmp_path / "b.zarr"
    shutil.copytree(clip_store, path)
    return path


def refused(a, b, tmp_path, error=SweepError) -> str:
    out = tmp_path / "runs"
    with pytest.raises(error) as caught:
        base = FitConfig(store=str(a), out_dir=str(out), **QUICK)
        sweep(SweepConfig(fit=base, heads=["mean"], stores=[str(b)]))
    assert not out.exists() or not any(out.iterdir())  # refused before any fit
    assert isinstance(caught.value, SkillError)  # the CLI prints it as one line
    return str(caught.value)


def test_a_store_with_an_extra_take_is_refused(reference, tmp_path):
    more = build_token_store(tmp_path / "b.zarr", n_participants=21, takes_per_participant=2).path
    message = refused(reference, more, tmp_path)
    # of the two extra takes, row 41 is one the builder records as failed
    assert f"{more}: 1 completed takes that {reference} lacks (first: p20_take0)" in (message)
    message = refused(more, reference, tmp_path)  # the other way round names the same store
    assert f"{more}: 1 completed takes that {reference} lacks" in message


def test_a_take_in_another_split_is_refused(reference, other, tmp_path):
    edit_take(other, "p00_take0", split="val")
    message = refused(reference, other, tmp_path)
    assert f"{reference} and {other} put take p00_take0 in different splits (train vs val)" in (
        message
    )


def test_split_spellings_that_mean_the_same_split_are_not_a_difference(reference, other, tmp_path):
    edit_take(other, "p00_take0", split="Train")
    edit_take(other, "p12_take0", split="validation")  # participants 12..15 are val
    out = tmp_path / "runs"
    base = FitConfig(store=str(reference), out_dir=str(out), **QUICK)
    result = sweep(SweepConfig(fit=base, heads=["mean"], view_sets=["ego"], stores=[str(other)]))
    assert len(result.rows) == 2


def test_a_take_with_another_label_is_refused(reference, other, tmp_path):
    edit_take(other, "p02_take0", label="Novice")
    message = refused(reference, other, tmp_path)
    assert (
        f"{reference} and {other} give take p02_take0 different targets (Intermediate Expert vs "
        "Novice)" in message
    )


def test_a_take_of_another_participant_is_refused(reference, other, tmp_path):
    edit_take(other, "p02_take0", participant="p99")
    message = refused(reference, other, tmp_path)
    assert "give take p02_take0 different participants (p02 vs p99)" in message


def test_another_label_set_is_refused(reference, other, tmp_path):
    rename_label(other, "Novice", "Beginner")
    message = refused(reference, other, tmp_path)
    assert f"{reference} has task" in message and "'Novice'" in message


def test_a_missing_store_or_a_missing_view_is_refused_naming_the_store(reference, tmp_path):
    message = refused(reference, tmp_path / "nope.zarr", tmp_path, error=SkillError)
    assert message == f"{tmp_path / 'nope.zarr'}: no such store"
    fewer = build_token_store(tmp_path / "b.zarr", **SMALL, views=["ego", "exo1"]).path
    out = tmp_path / "runs"
    with pytest.raises(
        SelectionError, match=re.escape(f"{fewer}: view set 'ego,exo2': unknown view 'exo2'")
    ):
        sweep(SweepConfig(fit=FitConfig(store=str(reference), out_dir=str(out)), heads=["mean"],
                          view_sets=["all", "ego,exo2"], stores=[str(fewer)]))  # fmt: skip
    assert not out.exists()


def test_the_cli_prints_a_refusal_as_one_line(reference, other, tmp_path):
    edit_take(other, "p00_take0", split="val")
    code, output = invoke_cli("sweep", str(reference), "--stores", str(other), "--out",
                              str(tmp_path / "runs"))  # fmt: skip
    assert code == 2 and output.startswith("error: ") and "in different splits" in output
    assert not (tmp_path / "runs").exists()


# ---- labels ------------------------------------------------------------------------------------
def test_backbone_labels():
    assert backbone_label(PROVENANCE) == "synthetic"
    assert (
        backbone_label(provenance("timesformer-base-k600", SHA)) == "timesformer-base-k600+deadbeef"
    )
    assert backbone_label(provenance("facebook/videomae-base")) == "videomae-base"
    assert backbone_label({}) == ""
    same = [provenance("clip-vit-b16"), provenance("clip-vit-b16"), provenance("other")]
    assert backbone_labels(["x/a.zarr", "y/b.zarr", "z/c.zarr"], same) == {
        "x/a.zarr": "a", "y/b.zarr": "b", "z/c.zarr": "other"
    }  # fmt: skip
    assert backbone_labels(["x/a.zarr", "y/a.zarr"], same[:2]) == {
        "x/a.zarr": "x/a.zarr", "y/a.zarr": "y/a.zarr"
    }  # fmt: skip
    assert backbone_labels(["s.zarr"], [{}]) == {"s.zarr": "s"}
    assert folder_name("x/a.zarr") == "x_a.zarr"
