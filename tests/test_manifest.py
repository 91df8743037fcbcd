"""Manifest readers (skill JSONL, EgoExo4D JSON, SkillFormer JSONL), their errors, and the writer.

Videos are empty dummy files: the readers only check that each path is an existing file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from skill.pipeline.manifest import EGOEXO_VIEWS, read_takes, write_manifest
from skill.pipeline.takes import ManifestError, Take
from skill.tasks.classification import EGOEXO4D_LEVELS as LABELS


def touch(root: Path, *relative: str) -> None:
    """Create dummy video files (contents irrelevant: existence checks only)."""
    for rel in relative:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00")


def jsonl(*records: dict | str) -> str:
    """JSON Lines text; a str record is written as is (for broken lines)."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def egoexo_doc(*records: dict) -> str:
    """An official-style document with record i on line i + 2."""
    body = ",\n".join(json.dumps(record) for record in records)
    return '{"annotations": [\n' + body + "\n]}\n"


def take_videos(take: str, cameras: list[str], downscaled: bool = False) -> list[str]:
    folder = f"takes/{take}/frame_aligned_videos" + ("/downscaled/448" if downscaled else "")
    return [f"{folder}/{camera}.mp4" for camera in cameras]


def egoexo_record(take: str, cameras: list[str], label: str | None = "Novice", **more) -> dict:
    """A record whose video_paths maps ego, exo1.. to the given cameras in order."""
    paths = take_videos(take, cameras)
    record = {
        "take_uid": f"uid-{take}",
        "take_name": take,
        "scenario_name": "Dance",
        "proficiency_score": label,
        "university_id": "uniandes",
        "origin_participant_id": 424,
        "video_paths": dict(zip(EGOEXO_VIEWS, paths, strict=False)),
    }
    record.update(more)
    return record


# ---------------------------------------------------------------------------------------------
# skill format


def test_skill_format_reads_paths_nulls_defaults_and_blank_lines(tmp_path: Path) -> None:
    touch(tmp_path, "t001/ego.mp4", "t001/exo1.mp4", "t002/ego.mp4")
    outside = tmp_path / "elsewhere" / "exo1.mp4"
    touch(tmp_path, "elsewhere/exo1.mp4")
    manifest = tmp_path / "takes.jsonl"
    manifest.write_text(
        jsonl(
            {
                "take": "t001",
                "videos": {"ego": "t001/ego.mp4", "exo1": "t001/exo1.mp4"},
                "label": "Novice",
                "scenario": "Dance",
                "participant": "p1",
                "split": "train",
                "extra": {"note": 7, "source": "cam rig 2"},
            },
            "   ",
            {
                "take": "t002",
                "videos": {"exo1": str(outside), "ego": "t002/ego.mp4"},
                "label": None,
            },
        )
    )
    data = read_takes(manifest)
    assert (data.format, data.views, data.source) == ("skill", ["ego", "exo1"], str(manifest))
    first, second = data.takes
    assert first == Take(
        "t001",
        {"ego": str(tmp_path / "t001/ego.mp4"), "exo1": str(tmp_path / "t001/exo1.mp4")},
        "Novice",
        "Dance",
        "p1",
        "train",
    )
    assert first.extra == {"note": "7", "source": "cam rig 2"}
    assert (second.label, second.scenario, second.participant, second.split) == (None, "", "", "")
    assert second.videos == {"ego": str(tmp_path / "t002/ego.mp4"), "exo1": str(outside)}
    assert list(second.videos) == ["ego", "exo1"]  # reordered to the dataset's view order


def test_skill_format_missing_view_is_none_and_root_overrides_manifest_folder(
    tmp_path: Path,
) -> None:
    data_root = tmp_path / "data"
    touch(data_root, "t001/ego.mp4")
    manifest = tmp_path / "manifests" / "m.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(
        jsonl({"take": "t001", "videos": {"ego": "t001/ego.mp4", "exo1": None}, "label": None})
    )
    data = read_takes(manifest, root=data_root)
    assert data.takes[0].videos == {"ego": str(data_root / "t001/ego.mp4"), "exo1": None}
    with pytest.raises(ManifestError, match="not found"):
        read_takes(manifest)  # relative to the manifest's folder, where the video is not


def test_write_manifest_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "root"
    touch(root, "a/ego.mp4", "a/exo1.mp4", "b/ego.mp4")
    touch(tmp_path, "outside/exo1.mp4")
    takes = [
        Take(
            "a",
            {"ego": str(root / "a/ego.mp4"), "exo1": str(root / "a/exo1.mp4")},
            "Late Expert",
            "Music",
            "p2",
            "val",
            extra={"seed": "3"},
        ),
        Take(
            "b",
            {"ego": str(root / "b/ego.mp4"), "exo1": str(tmp_path / "outside/exo1.mp4")},
            None,
            split="test",
        ),
        Take("c", {"ego": str(root / "a/ego.mp4"), "exo1": None}, "Novice"),
    ]
    manifest = write_manifest(tmp_path / "out" / "m.jsonl", takes, root)
    first_line = json.loads(manifest.read_text().splitlines()[0])
    assert first_line["videos"] == {"ego": "a/ego.mp4", "exo1": "a/exo1.mp4"}  # relative
    data = read_takes(manifest, root=root)
    assert data.takes == takes
    assert [take.extra for take in data.takes] == [take.extra for take in takes]
    assert data.views == ["ego", "exo1"]
    assert not list(manifest.parent.glob(".*tmp"))  # no partial file left behind


@pytest.mark.parametrize(
    "takes, problem",
    [
        ([], "no takes"),
        ([Take("a", {"ego": "/x.mp4"}), Take("b", {"exo1": "/x.mp4"})], "same views"),
        ([Take("a", {"ego": "/x.mp4"}), Take("a", {"ego": "/x.mp4"})], "given twice"),
        ([Take("a", {"ego": "/x.mp4"}, "Expert")], "unknown label"),
        ([Take("a", {"ego": None})], "no video"),
    ],
)
def test_write_manifest_refuses_what_cannot_be_read_back(
    tmp_path: Path, takes: list[Take], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        write_manifest(tmp_path / "m.jsonl", takes)
    assert not (tmp_path / "m.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# EgoExo4D official format

CAMERA_VARIANTS = {
    "aria01 + cam01..04": ["aria01_214-1", "cam01", "cam02", "cam03", "cam04"],
    "aria02 + GoPro": ["aria02_214-1", "gp01", "gp02", "gp03", "gp04"],
    "aria_214-1": ["aria_214-1", "cam01", "cam02", "cam03", "cam04"],
    "aria1_214-1 + cam02..05": ["aria1_214-1", "cam02", "cam03", "cam04", "cam05"],
}


@pytest.mark.parametrize("cameras", CAMERA_VARIANTS.values(), ids=CAMERA_VARIANTS.keys())
def test_egoexo4d_view_keyed_paths_for_every_camera_variant(
    tmp_path: Path, cameras: list[str]
) -> None:
    touch(tmp_path, *take_videos("upenn_0707_Guitar_2_5", cameras))
    manifest = tmp_path / "proficiency_demonstrator_train.json"
    manifest.write_text(egoexo_doc(egoexo_record("upenn_0707_Guitar_2_5", cameras, "Late Expert")))
    data = read_takes(manifest)
    assert (data.format, data.views) == ("egoexo4d", list(EGOEXO_VIEWS))
    (take,) = data.takes
    assert take.take_id == "upenn_0707_Guitar_2_5"
    assert take.videos == {
        view: str(tmp_path / path)
        for view, path in zip(EGOEXO_VIEWS, take_videos(take.take_id, cameras), strict=True)
    }
    assert (take.label, take.scenario, take.split) == ("Late Expert", "Dance", "train")
    assert take.participant == "uniandes:424"
    assert take.uid == "uid-upenn_0707_Guitar_2_5"
    assert "take_uid" not in take.extra  # a field of the take, not an extra


def test_egoexo4d_missing_exo_views_are_none(tmp_path: Path) -> None:
    cameras = ["aria01_214-1", "cam01", "cam02", "cam03"]
    touch(tmp_path, *take_videos("t", cameras))
    record = egoexo_record("t", cameras)
    record["video_paths"]["exo3"] = None  # null and absent (exo4) both mean missing
    manifest = tmp_path / "proficiency_demonstrator_val.json"
    manifest.write_text(egoexo_doc(record))
    (take,) = read_takes(manifest).takes
    assert take.videos["exo3"] is None and take.videos["exo4"] is None
    assert take.videos["exo2"] == str(tmp_path / "takes/t/frame_aligned_videos/cam02.mp4")
    assert take.split == "val"


def test_egoexo4d_prefers_downscaled_448_copy(tmp_path: Path) -> None:
    cameras = ["aria01_214-1", "cam01", "cam02", "cam03", "cam04"]
    touch(tmp_path, *take_videos("t", cameras[:3]))  # originals of ego, exo1, exo2 only
    touch(tmp_path, *take_videos("t", cameras[1:], downscaled=True))  # small copies of exos
    manifest = tmp_path / "proficiency_demonstrator_train.json"
    manifest.write_text(egoexo_doc(egoexo_record("t", cameras)))
    videos = read_takes(manifest).takes[0].videos
    base = tmp_path / "takes/t/frame_aligned_videos"
    assert videos["ego"] == str(base / "aria01_214-1.mp4")
    assert videos["exo1"] == str(base / "downscaled/448/cam01.mp4")
    assert videos["exo4"] == str(base / "downscaled/448/cam04.mp4")


def test_egoexo4d_camera_keyed_paths_follow_the_mapping_rule(tmp_path: Path) -> None:
    cameras = ["gp03", "cam05", "aria01_1201-1", "cam02", "aria01_214-1", "cam01", "cam04"]
    touch(tmp_path, *take_videos("t", cameras))
    record = egoexo_record("t", [])
    record["video_paths"] = dict(zip(cameras, take_videos("t", cameras), strict=True))
    manifest = tmp_path / "proficiency_demonstrator_train.json"
    manifest.write_text(egoexo_doc(record))
    (take,) = read_takes(manifest).takes
    chosen = {view: Path(path).stem for view, path in take.videos.items()}
    # aria RGB -> ego; cams by number first, then GoPros; the fifth exo is left out
    assert chosen == {"ego": "aria01_214-1", "exo1": "cam01", "exo2": "cam02", "exo3": "cam04"} | {
        "exo4": "cam05"
    }
    assert take.extra["unused_cameras"] == "gp03,aria01_1201-1"


def test_egoexo4d_without_video_paths_lists_the_take_folder(tmp_path: Path) -> None:
    # Only downscaled copies were downloaded; the manifest sits in <root>/annotations/.
    touch(tmp_path, *take_videos("t", ["aria_214-1", "gp02", "gp01", "collage"], downscaled=True))
    manifest = tmp_path / "annotations" / "proficiency_demonstrator_test.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"annotations": [{"take_uid": "u1", "take_name": "t"}]}))
    (take,) = read_takes(manifest).takes  # root=None: the parent holds takes/
    small = tmp_path / "takes/t/frame_aligned_videos/downscaled/448"
    assert take.videos == {
        "ego": str(small / "aria_214-1.mp4"),
        "exo1": str(small / "gp01.mp4"),
        "exo2": str(small / "gp02.mp4"),
        "exo3": None,
        "exo4": None,
    }
    assert (take.label, take.split, take.participant) == (None, "test", "")


def test_egoexo4d_take_name_from_path_uid_keyed_annotations_and_split_field(
    tmp_path: Path,
) -> None:
    cameras = ["aria01_214-1", "cam01"]
    touch(tmp_path, *take_videos("sfu_basketball_07_40", cameras))
    record = egoexo_record("sfu_basketball_07_40", cameras, None, split="test")
    del record["take_name"], record["take_uid"]
    manifest = tmp_path / "challenge.json"
    manifest.write_text(json.dumps({"annotations": {"uid-9": record}}, indent=2))
    (take,) = read_takes(manifest, root=tmp_path).takes
    assert (take.take_id, take.label, take.split) == ("sfu_basketball_07_40", None, "test")
    assert take.uid == "uid-9"


def test_egoexo4d_error_names_record_and_its_line_in_pretty_printed_file(tmp_path: Path) -> None:
    cameras = ["aria01_214-1", "cam01"]
    touch(tmp_path, *take_videos("a", cameras), *take_videos("b", cameras))
    doc = {"annotations": [egoexo_record("a", cameras), egoexo_record("b", cameras, "Expert")]}
    text = json.dumps(doc, indent=2)
    manifest = tmp_path / "proficiency_demonstrator_train.json"
    manifest.write_text(text)
    record_line = text.splitlines().index('      "take_uid": "uid-b",')  # 0-based "{" line
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest)
    assert caught.value.line == record_line
    assert f"{manifest}:{record_line}: annotations[1]: take b: unknown label 'Expert'" in str(
        caught.value
    )


# ---------------------------------------------------------------------------------------------
# SkillFormer format


def test_skillformer_merges_repeated_take_and_names_takes_by_folder(tmp_path: Path) -> None:
    cameras_a = ["aria01_214-1", "cam01", "cam02", "cam03", "cam04"]
    cameras_b = ["aria01_214-1", "gp01", "gp02", "gp03", "gp04"]
    touch(tmp_path, *take_videos("uniandes_dance_017_2", cameras_a))
    touch(tmp_path, *take_videos("upenn_0707_Guitar_2_5", cameras_b))
    touch(tmp_path, "clips/t009/frame_aligned_videos/ego.mp4")
    paths_a = take_videos("uniandes_dance_017_2", cameras_a)
    paths_b = take_videos("upenn_0707_Guitar_2_5", cameras_b)
    manifest = tmp_path / "annotation_val.jsonl"
    manifest.write_text(
        jsonl(
            {"video_paths": paths_a, "analysis": "weak base", "proficiency_level": "Novice"},
            {"video_paths": paths_b, "analysis": "clean", "proficiency_level": "Late Expert"},
            {"video_paths": paths_a, "analysis": "low energy", "proficiency_level": "Novice"},
            {"video_paths": ["clips/t009/frame_aligned_videos/ego.mp4"], "proficiency_level": None},
        )
    )
    data = read_takes(manifest)
    assert (data.format, data.views) == ("skillformer", list(EGOEXO_VIEWS))
    assert [t.take_id for t in data.takes] == [
        "uniandes_dance_017_2",
        "upenn_0707_Guitar_2_5",
        "t009",
    ]
    dance, guitar, bare = data.takes
    assert (dance.label, dance.split, dance.extra["lines"]) == ("Novice", "val", "1,3")
    assert guitar.videos["exo4"] == str(tmp_path / paths_b[4])
    assert bare.label is None and bare.videos["exo1"] is None


# ---------------------------------------------------------------------------------------------
# Malformed manifests: every error names the file, the line (None when there is none) and the
# problem.

SKILL_OK = {"take": "t001", "videos": {"ego": "t001/ego.mp4"}, "label": "Novice"}
SF_PATHS = take_videos("tk", ["aria01_214-1", "cam01", "cam02", "cam03", "cam04"])


def skill(**changes) -> dict:
    return {**SKILL_OK, **changes}


@dataclass
class Bad:
    """One malformed manifest and the error it must raise."""

    name: str
    """File name of the manifest (its extension does not matter to detection)."""
    content: str | bytes | None
    """The manifest's text or bytes; None: no file; "<dir>": a directory in its place."""
    line: int | None
    """Expected error line."""
    expect: tuple[str, ...]
    """Substrings the message must contain."""
    setup: Callable[[Path], None] = field(default=lambda root: None)
    """Creates videos and such under the root."""
    fmt: str = "auto"


def videos_ok(root: Path) -> None:
    touch(root, "t001/ego.mp4", "t002/ego.mp4", "t002/exo1.mp4", *SF_PATHS)
    touch(root, *take_videos("a", ["aria01_214-1", "cam01"]))
    (root / "t003" / "ego.mp4").mkdir(parents=True)


BAD_MANIFESTS = [
    Bad("missing.jsonl", None, None, ("manifest not found",)),
    Bad("folder.jsonl", "<dir>", None, ("is a directory, not a manifest file",)),
    Bad("empty.jsonl", "", None, ("empty file",)),
    Bad("blank.jsonl", "\n  \n\n", None, ("empty file",)),
    Bad(
        "latin1.jsonl",
        jsonl(SKILL_OK).encode() + '{"take": "café"}\n'.encode("latin-1"),
        2,
        ("not UTF-8", "0xe9", "column 14"),
    ),
    Bad(
        "truncated.jsonl",
        jsonl(SKILL_OK, '{"take": "t002", "videos": {"ego": "t002/ego.mp4"'),
        2,
        ("invalid JSON", "truncated"),
    ),
    Bad("notjson.jsonl", jsonl(SKILL_OK, "take=t002"), 2, ("invalid JSON at column 1",)),
    Bad("list.jsonl", jsonl(SKILL_OK, "[1, 2]"), 2, ("expected a JSON object, got a list",)),
    Bad("notake.jsonl", jsonl(SKILL_OK, {"videos": {"ego": "x"}}), 2, ("missing", "'take'")),
    Bad("novideos.jsonl", jsonl({"take": "t001", "label": None}), 1, ("missing", "'videos'")),
    Bad("nolabel.jsonl", jsonl({"take": "t001", "videos": {"ego": "x"}}), 1, ("'label'",)),
    Bad(
        "videos_list.jsonl",
        jsonl(skill(videos=["t001/ego.mp4"])),
        1,
        ("take t001", "'videos' must be an object", "got a list"),
    ),
    Bad(
        "path_int.jsonl",
        jsonl(skill(videos={"ego": 12})),
        1,
        ("take t001 view 'ego'", "must be a string or null", "a number (12)"),
    ),
    Bad("path_empty.jsonl", jsonl(skill(videos={"ego": ""})), 1, ("empty path",)),
    Bad("all_null.jsonl", jsonl(skill(videos={"ego": None})), 1, ("every view is missing",)),
    Bad(
        "unknown_label.jsonl",
        jsonl(SKILL_OK, skill(take="t002", videos={"ego": "t002/ego.mp4"}, label="Expert")),
        2,
        ("unknown label 'Expert'", "Novice, Early Expert, Intermediate Expert, Late Expert"),
    ),
    Bad(
        "label_type.jsonl",
        jsonl(skill(label=2)),
        1,
        ("'label' must be a label string or null", "a number (2)"),
    ),
    Bad("split.jsonl", jsonl(skill(split="training")), 1, ("'split'", "'training'")),
    Bad(
        "typo.jsonl",
        jsonl(SKILL_OK, skill(take="t002", videos={"ego": "t002/ego.mp4"}, scenaro="Dance")),
        2,
        ("unknown field(s) 'scenaro'", "put custom fields under 'extra'"),
    ),
    Bad("extra.jsonl", jsonl(skill(extra=[1])), 1, ("'extra' must be an object", "a list")),
    Bad("scenario.jsonl", jsonl(skill(scenario=["Dance"])), 1, ("'scenario' must be a string",)),
    Bad(
        "conflict.jsonl",
        jsonl(
            SKILL_OK, skill(take="t002", videos={"ego": "t002/ego.mp4"}), skill(label="Late Expert")
        ),
        3,
        ("take t001 listed twice with conflicting labels", "line 1 says 'Novice'", "line 3 says"),
    ),
    Bad(
        "twice.jsonl",
        jsonl(SKILL_OK, skill(take="t002", videos={"ego": "t002/ego.mp4"}), SKILL_OK),
        3,
        ("take t001 listed twice, lines 1 and 3",),
    ),
    Bad(
        "views.jsonl",
        jsonl(SKILL_OK, skill(take="t002", videos={"exo1": "t002/exo1.mp4"})),
        2,
        ("take t002", "view names differ from line 1", "missing ego", "extra exo1"),
    ),
    Bad(
        "novideo.jsonl",
        jsonl(SKILL_OK, skill(take="t002", videos={"ego": "t002/gone.mp4"})),
        2,
        ("take t002 view ego", "video not found", "t002/gone.mp4"),
    ),
    Bad(
        "dirvideo.jsonl",
        jsonl(SKILL_OK, skill(take="t003", videos={"ego": "t003/ego.mp4"})),
        2,
        ("take t003 view ego", "is a directory, not a video file"),
    ),
    Bad(
        "format.jsonl",
        jsonl({"clip": "x"}),
        1,
        ("cannot tell the manifest format",),
    ),
    Bad("fmt.jsonl", jsonl(SKILL_OK), None, ("unknown manifest format 'xlsx'",), fmt="xlsx"),
    # EgoExo4D official format
    Bad(
        "proficiency_demonstrator_train.json",
        egoexo_doc(egoexo_record("a", ["aria01_214-1", "cam01"]))[:60],
        2,
        ("invalid JSON", "truncated"),
    ),
    Bad(
        "nokey.json",
        '{\n  "takes": []\n}\n',
        None,
        ("missing required field 'annotations'",),
        fmt="egoexo4d",
    ),
    Bad("emptyann.json", '{"annotations": []}', None, ("'annotations' is empty",)),
    Bad("annlist.json", '{"annotations": "x"}', None, ("must be a list", "the string 'x'")),
    Bad(
        "label.json",
        egoexo_doc(egoexo_record("a", ["aria01_214-1", "cam01"], "expert")),
        2,
        ("annotations[0]: take a: unknown label 'expert'", "Late Expert"),
    ),
    Bad(
        "pathsint.json",
        egoexo_doc(egoexo_record("a", ["aria01_214-1"]), {"take_name": "a", "video_paths": 5}),
        3,
        ("annotations[1]", "'video_paths' must be an object", "a number (5)"),
    ),
    Bad(
        "dup.json",
        egoexo_doc(
            egoexo_record("a", ["aria01_214-1", "cam01"]),
            egoexo_record("a", ["aria01_214-1", "cam01"], "Early Expert"),
        ),
        3,
        ("take a listed twice with conflicting labels", "annotations[0] (line 2) says 'Novice'"),
    ),
    Bad(
        "nofile.json",
        egoexo_doc(egoexo_record("a", ["aria01_214-1", "cam01", "cam02"])),
        2,
        ("annotations[0]: take a view exo2", "not found", "cam02.mp4", "downscaled/448"),
    ),
    Bad(
        "camera.json",
        egoexo_doc({"take_name": "a", "video_paths": {"aria01_214-1": "x.mp4", "drone": "y.mp4"}}),
        2,
        ("annotations[0]", "unknown camera name(s)", "drone"),
    ),
    Bad(
        "mixed.json",
        egoexo_doc({"take_name": "a", "video_paths": {"ego": "x.mp4", "cam01": "y.mp4"}}),
        2,
        ("mixes view names (ego) with other keys (cam01)",),
    ),
    Bad(
        "noname.json",
        egoexo_doc({"video_paths": {"ego": "videos/x.mp4"}}),
        2,
        ("no 'take_name' field", "cannot name the take"),
    ),
    Bad(
        "participant.json",
        egoexo_doc(egoexo_record("a", ["aria01_214-1"], origin_participant_id=[1])),
        2,
        ("'origin_participant_id' must be a string or an integer",),
    ),
    # SkillFormer format
    Bad(
        "sf_label.jsonl",
        jsonl({"video_paths": SF_PATHS, "analysis": "", "proficiency_level": "Expert"}),
        1,
        ("unknown label 'Expert'", "Novice, Early Expert"),
    ),
    Bad(
        "sf_conflict.jsonl",
        jsonl(
            {"video_paths": SF_PATHS, "proficiency_level": "Novice"},
            {"video_paths": SF_PATHS, "proficiency_level": "Late Expert"},
        ),
        2,
        ("take tk listed twice with conflicting labels", "line 1 says 'Novice'"),
    ),
    Bad(
        "sf_other_videos.jsonl",
        jsonl(
            {"video_paths": SF_PATHS, "proficiency_level": "Novice"},
            {"video_paths": SF_PATHS[:4], "proficiency_level": "Novice"},
        ),
        2,
        ("take tk repeated with other videos", "view exo4", "line 1"),
    ),
    Bad(
        "sf_six.jsonl",
        jsonl({"video_paths": [*SF_PATHS, "x.mp4"], "proficiency_level": "Novice"}),
        1,
        ("'video_paths' has 6 entries",),
    ),
    Bad(
        "sf_mixed_takes.jsonl",
        jsonl({"video_paths": [SF_PATHS[0], "takes/other/c.mp4"], "proficiency_level": "Novice"}),
        1,
        ("video paths point into different takes: other, tk",),
    ),
    Bad(
        "sf_pathtype.jsonl",
        jsonl({"video_paths": [SF_PATHS[0], {"p": 1}], "proficiency_level": "Novice"}),
        1,
        ("video_paths[1] (exo1): path must be a string or null", "an object"),
    ),
    Bad(
        "sf_missing.jsonl",
        jsonl({"video_paths": SF_PATHS}),
        1,
        ("missing required field 'proficiency_level'",),
        fmt="skillformer",
    ),
]


@pytest.mark.parametrize("bad", BAD_MANIFESTS, ids=[bad.name for bad in BAD_MANIFESTS])
def test_malformed_manifest_error_names_file_line_and_problem(tmp_path: Path, bad: Bad) -> None:
    videos_ok(tmp_path)
    manifest = tmp_path / bad.name
    if bad.content == "<dir>":
        manifest.mkdir()
    elif isinstance(bad.content, bytes):
        manifest.write_bytes(bad.content)
    elif bad.content is not None:
        manifest.write_text(bad.content, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, fmt=bad.fmt)
    error = caught.value
    assert (error.path, error.line) == (str(manifest), bad.line)
    where = f"{manifest}:{bad.line}: " if bad.line is not None else f"{manifest}: "
    assert str(error).startswith(where)
    for part in bad.expect:
        assert part in error.problem, f"{part!r} not in {error.problem!r}"


def test_labels_are_never_mapped_to_a_default(tmp_path: Path) -> None:
    """SkillFormer's own loader maps unknown labels to Novice; every near miss must fail here."""
    touch(tmp_path, "t001/ego.mp4")
    for near_miss in ("novice", "Novice ", "Expert", "late expert", "0"):
        manifest = tmp_path / "m.jsonl"
        manifest.write_text(jsonl(skill(label=near_miss)))
        with pytest.raises(ManifestError, match="unknown label"):
            read_takes(manifest)
    assert len(LABELS) == 4


def test_root_must_be_a_directory(tmp_path: Path) -> None:
    touch(tmp_path, "t001/ego.mp4")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(jsonl(SKILL_OK))
    with pytest.raises(ManifestError, match=r"root .*nowhere is not a directory"):
        read_takes(manifest, root=tmp_path / "nowhere")
