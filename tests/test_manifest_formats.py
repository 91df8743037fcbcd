"""Every registered manifest format that writes: it writes what it reads, recognises its own
files and refuses a broken one naming the file and the line. Parametrised over the registry, so
a new format is tested without editing this file (read-only formats: test_manifest_tasks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skill.errors import SkillError
from skill.pipeline.manifest import (
    EGOEXO_VIEWS,
    detect_format,
    get_format,
    read_takes,
    register_format,
    write_manifest,
)
from skill.pipeline.manifest.registry import registered_formats
from skill.pipeline.takes import ManifestError, Take

FORMATS = tuple(f.name for f in registered_formats() if f.write is not None)
CAMERAS = dict(zip(EGOEXO_VIEWS, ["aria01_214-1", "cam01", "cam02", "cam03", "cam04"], strict=True))


def example_takes(root: Path) -> list[Take]:
    """Four takes in the EgoExo4D layout (every format can hold it), with missing views, an
    unlabelled take, scenarios, participants and every split; the last one is a Late Expert."""
    plan = [
        ("uniandes_dance_001_1", "Novice", "Dance", "uniandes:12", "train", ()),
        ("upenn_0707_Guitar_2_5", None, "Music", "p07", "test", ("exo3", "exo4")),
        ("sfu_cooking_03_2", "Intermediate Expert", "", "", "", ("ego",)),
        ("iiith_soccer_020_6", "Late Expert", "Soccer", "p 9", "val", ("exo1",)),
    ]
    takes = []
    for take_id, label, scenario, participant, split, missing in plan:
        videos: dict[str, str | None] = {}
        for view, camera in CAMERAS.items():
            path = root / "takes" / take_id / "frame_aligned_videos" / f"{camera}.mp4"
            if view not in missing:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\x00")
            videos[view] = None if view in missing else str(path)
        takes.append(Take(take_id, videos, label, scenario, participant, split))
    return takes


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("place", ["in the root, root given", "in root/annotations, no root"])
def test_format_reads_back_the_takes_it_writes(tmp_path: Path, fmt: str, place: str) -> None:
    takes = example_takes(tmp_path)
    if place.endswith("no root"):
        manifest = write_manifest(tmp_path / "annotations" / f"manifest.{fmt}", takes, fmt=fmt)
        data = read_takes(manifest)
    else:
        manifest = write_manifest(tmp_path / f"manifest.{fmt}", takes, tmp_path, fmt=fmt)
        data = read_takes(manifest, root=tmp_path)
    assert data.format == fmt
    assert data.takes == takes
    assert data.views == list(EGOEXO_VIEWS)
    assert not list(manifest.parent.glob(".*tmp"))  # no partial file left behind


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_is_detected_from_its_own_files(tmp_path: Path, fmt: str) -> None:
    manifest = write_manifest(tmp_path / "m.txt", example_takes(tmp_path), tmp_path, fmt=fmt)
    assert detect_format(str(manifest), manifest.read_text(encoding="utf-8")) == fmt
    assert read_takes(manifest, root=tmp_path).format == fmt


def written(tmp_path: Path, fmt: str) -> tuple[Path, str]:
    manifest = write_manifest(tmp_path / "m.txt", example_takes(tmp_path), tmp_path, fmt=fmt)
    return manifest, manifest.read_text(encoding="utf-8")


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_label_error_names_file_and_the_takes_line(tmp_path: Path, fmt: str) -> None:
    manifest, text = written(tmp_path, fmt)
    assert text.count('"Late Expert"') == 1
    manifest.write_text(text.replace('"Late Expert"', '"Late Expurt"'), encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, root=tmp_path)
    error = caught.value
    previous_take = line_of(text, text.rindex("sfu_cooking_03_2"))
    assert error.line is not None
    assert previous_take < error.line <= line_of(text, text.index('"Late Expert"'))
    assert str(error).startswith(f"{manifest}:{error.line}: ")
    assert "unknown label 'Late Expurt'" in error.problem
    assert isinstance(error, SkillError) and isinstance(error, ValueError)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_file_error_names_file_and_line(tmp_path: Path, fmt: str) -> None:
    manifest, text = written(tmp_path, fmt)
    cut = text.rindex("takes/iiith_soccer_020_6/") + 5  # inside the last take's video path
    manifest.write_text(text[:cut], encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, root=tmp_path)
    error = caught.value
    assert (error.path, error.line) == (str(manifest), line_of(text, cut))
    assert str(error).startswith(f"{manifest}:{error.line}: invalid ")  # JSON, CSV
    assert "truncated" in error.problem


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "bad, problem",
    [
        ([], "no takes"),
        ([Take("a", {"ego": "/x.mp4"}), Take("a", {"ego": "/x.mp4"})], "given twice"),
        ([Take("a", {"ego": "/x.mp4"}, "Expert")], "unknown label"),
        ([Take("a", {"ego": None})], "no video"),
    ],
)
def test_every_format_refuses_takes_that_cannot_be_read_back(
    tmp_path: Path, fmt: str, bad: list[Take], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        write_manifest(tmp_path / "m.txt", bad, fmt=fmt)
    assert not (tmp_path / "m.txt").exists()


@pytest.mark.parametrize("fmt", ["egoexo4d", "skillformer"])
def test_egoexo_style_formats_refuse_other_views_and_take_folders(tmp_path: Path, fmt: str):
    take = example_takes(tmp_path)[0]
    side = Take("t", {"ego": take.videos["ego"], "side": None})
    with pytest.raises(ValueError, match="names the views ego, exo1"):
        write_manifest(tmp_path / "m.txt", [side], tmp_path, fmt=fmt)
    renamed = Take("another_name", take.videos, take.label)
    with pytest.raises(ValueError, match="names a take by its folder"):
        write_manifest(tmp_path / "m.txt", [renamed], tmp_path, fmt=fmt)


def test_registry_lists_the_formats_and_refuses_a_second_of_a_name() -> None:
    assert {"skill", "egoexo4d", "skillformer"} <= set(FORMATS)
    with pytest.raises(ValueError, match="'skill' exists"):
        register_format(get_format("skill"))
    with pytest.raises(KeyError, match="registered: skill"):
        get_format("xlsx")
