"""Manifests of scores: the skill JSONL's `score`/`scores`/`group` and its schema line, the
csv format, JIGSAWS' meta files and the annotation pickles of MTL-AQA and FineDiving, each on
small files written in its layout; every bad score is one line naming the file, the line and
the take; `skill extract --manifest-format NAME --task regression` takes every format."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from skill.pipeline.manifest import read_takes, write_manifest
from skill.pipeline.takes import ManifestError, Take
from tests.extract_helpers import extract_args, invoke_cli, make_dataset


def touch(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")
    return str(path)


def jsonl(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


RANGED = {"schema": {"scores": [{"name": "score", "low": 0, "high": 10}], "group": "apparatus"}}


# ---- skill JSONL ---------------------------------------------------------------------------


def test_skill_jsonl_scores_with_a_declared_range_and_groups(tmp_path: Path) -> None:
    touch(tmp_path / "a.mp4")
    manifest = jsonl(
        tmp_path / "m.jsonl",
        RANGED,
        {"take": "t1", "videos": {"v": "a.mp4"}, "score": 7.5, "group": "ball", "split": "train"},
        {"take": "t2", "videos": {"v": "a.mp4"}, "score": None, "group": "hoop"},
        {"take": "t3", "videos": {"v": "a.mp4"}, "score": 0, "label": "Novice"},
    )
    data = read_takes(manifest, task="regression")
    assert data.schema == {
        "scores": [{"name": "score", "low": 0, "high": 10}],
        "group": "apparatus",
    }
    assert [t.target for t in data.takes] == [7.5, None, 0]
    assert [t.scenario for t in data.takes] == ["ball", "hoop", ""]
    assert data.takes[2].label == "Novice"  # both targets kept; the task picks one
    levels = read_takes(manifest, task="classification")
    assert [t.target for t in levels.takes] == [None, None, "Novice"]


def test_skill_jsonl_named_scores_take_their_names_from_the_lines(tmp_path: Path) -> None:
    touch(tmp_path / "a.mp4")
    manifest = jsonl(
        tmp_path / "m.jsonl",
        {"take": "t1", "videos": {"v": "a.mp4"}, "scores": {"tes": 40.5, "pcs": 38}},
        {"take": "t2", "videos": {"v": "a.mp4"}, "scores": {"pcs": 30, "goe": None}},
    )
    data = read_takes(manifest, task="regression")
    assert [s["name"] for s in data.schema["scores"]] == ["tes", "pcs", "goe"]
    assert all(s["low"] is None for s in data.schema["scores"])  # the training range
    assert data.takes[1].target == {"pcs": 30, "goe": None}


def test_a_task_whose_target_the_manifest_does_not_state_is_refused(tmp_path: Path) -> None:
    touch(tmp_path / "a.mp4")
    scores = jsonl(tmp_path / "s.jsonl", {"take": "t", "videos": {"v": "a.mp4"}, "score": 1})
    with pytest.raises(ManifestError, match="--task classification learns levels .* the takes "
                                            "state scores"):  # fmt: skip
        read_takes(scores)
    levels = jsonl(tmp_path / "l.jsonl", {"take": "t", "videos": {"v": "a.mp4"}, "label": "Novice"})
    with pytest.raises(ManifestError, match="--task regression learns scores"):
        read_takes(levels, task="regression")


SKILL_BAD = [
    ({"score": "7.5"}, None, "field 'score' must be a number or null, got the string '7.5'"),
    ({"score": True}, None, "field 'score' must be a number or null, got a boolean"),
    ({"score": 10.5}, RANGED, "score 10.5 is outside its declared range 0..10"),
    ({"scores": {"score": -1}}, RANGED, "score -1 is outside its declared range 0..10"),
    ({"scores": {"tes": 1}}, RANGED, "unknown score name(s) 'tes'"),
    ({"scores": {"tes": "x"}}, None, "score 'tes' must be a number or null"),
    ({"score": 1, "scores": {"a": 1}}, None, "give 'score' (one number) or 'scores', not both"),
    ({"score": 1, "group": "g", "scenario": "s"}, None, "give 'scenario' or 'group', not both"),
]


@pytest.mark.parametrize("fields, header, problem", SKILL_BAD)
def test_a_bad_score_is_one_line_naming_file_line_and_take(
    tmp_path: Path, fields: dict, header: dict | None, problem: str
) -> None:
    touch(tmp_path / "a.mp4")
    good = {"take": "t1", "videos": {"v": "a.mp4"}, "score": 5}
    lines = ([header] if header else []) + [
        good,
        {"take": "t2", "videos": {"v": "a.mp4"}, **fields},
    ]
    manifest = jsonl(tmp_path / "m.jsonl", *lines)
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, task="regression")
    error = caught.value
    assert (error.path, error.line) == (str(manifest), len(lines))
    assert str(error).startswith(f"{manifest}:{len(lines)}: take t2: ")
    assert problem in str(error) and "\n" not in str(error)


def test_one_number_in_a_manifest_of_named_scores_is_refused(tmp_path: Path) -> None:
    touch(tmp_path / "a.mp4")
    manifest = jsonl(
        tmp_path / "m.jsonl",
        {"take": "t1", "videos": {"v": "a.mp4"}, "scores": {"tes": 1, "pcs": 2}},
        {"take": "t2", "videos": {"v": "a.mp4"}, "score": 3},
    )
    with pytest.raises(ManifestError, match=r"m.jsonl:2: take t2: 'score' gives one number"):
        read_takes(manifest, task="regression")


TAKE = {"take": "t", "videos": {"v": "a.mp4"}, "score": 1}


@pytest.mark.parametrize(
    "lines, line, problem",
    [
        ([TAKE, RANGED], 2, "must be the manifest's first line"),
        ([{"schema": {"scores": ["s"], "colour": 1}}, TAKE], 1, "unknown key(s) 'colour'"),
        ([{"schema": {"scores": [{"name": "s", "low": "0"}]}}, TAKE], 1, "'low' must be a number"),
        ([{"schema": {"scores": [{"name": "s", "low": 0}]}}, TAKE], 1, "give both low and high"),
        ([{"schema": {"scores": [{"name": "s", "low": 5, "high": 1}]}}, TAKE], 1, "low < high"),
    ],
)
def test_a_bad_schema_line_names_its_line(
    tmp_path: Path, lines: list, line: int, problem: str
) -> None:
    touch(tmp_path / "a.mp4")
    manifest = jsonl(tmp_path / "m.jsonl", *lines)
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, task="regression")
    assert (caught.value.path, caught.value.line) == (str(manifest), line)
    assert problem in caught.value.problem


@pytest.mark.parametrize("fmt", ["skill", "csv"])
def test_scores_and_their_schema_read_back_as_written(tmp_path: Path, fmt: str) -> None:
    video = touch(tmp_path / "v" / "a.mp4")
    takes = [
        Take("t1", {"front": video, "side": None}, None, "ball", "g1", "train", scores={"tes": 41.25, "pcs": 30.0}),
        Take("t2", {"front": video, "side": video}, "Novice", "hoop", "", "test", scores={"tes": None, "pcs": 12.5}),
        Take("t3", {"front": None, "side": video}, None, "", "g2", "", scores=None),
    ]  # fmt: skip
    schema = {"scores": [{"name": "tes", "low": 0, "high": 100}, "pcs"], "group": "apparatus"}
    manifest = write_manifest(tmp_path / "m.txt", takes, tmp_path, fmt, "regression", schema)
    data = read_takes(manifest, root=tmp_path, task="regression")
    assert data.format == fmt
    assert data.takes == takes
    assert data.schema == {
        "scores": [
            {"name": "tes", "low": 0, "high": 100},
            {"name": "pcs", "low": None, "high": None},
        ],
        "group": "apparatus",
    }
    with pytest.raises(ValueError, match="take t1: tes 141.25 is outside"):
        bad = [Take("t1", {"front": video, "side": None}, scores={"tes": 141.25, "pcs": 1.0})]
        write_manifest(tmp_path / "bad.txt", bad, tmp_path, fmt, "regression", schema)
    assert not (tmp_path / "bad.txt").exists()


def test_formats_of_levels_refuse_takes_with_scores(tmp_path: Path) -> None:
    video = touch(tmp_path / "takes" / "t" / "frame_aligned_videos" / "cam01.mp4")
    take = Take("t", {"ego": None, "exo1": video, "exo2": None, "exo3": None, "exo4": None},
                scores=3.0)  # fmt: skip
    with pytest.raises(ValueError, match="holds levels only"):
        write_manifest(tmp_path / "m.json", [take], tmp_path, "egoexo4d")


# ---- csv -----------------------------------------------------------------------------------


def test_csv_reads_views_targets_and_columns(tmp_path: Path) -> None:
    touch(tmp_path / "t1" / "l.mp4")
    touch(tmp_path / "t2" / "r.mp4")
    manifest = tmp_path / "takes.csv"
    manifest.write_text(
        "# a comment\n"
        '# {"schema": {"scores": [{"name": "tes", "low": 0, "high": 100}, "pcs"]}}\n'
        "take,video_left,video_right,split,participant,group,score_tes,score_pcs,extra_note\n"
        't1,t1/l.mp4,,train,p1,ball,40.5,,"one, with a comma"\n'
        "\n"
        "t2,,t2/r.mp4,test,p2,hoop,,12,\n",
        encoding="utf-8",
    )
    data = read_takes(manifest, task="regression")
    assert data.format == "csv" and data.views == ["left", "right"]
    first, second = data.takes
    assert first.videos == {"left": str(tmp_path / "t1" / "l.mp4"), "right": None}
    assert first.target == {"tes": 40.5, "pcs": None}
    assert second.target == {"tes": None, "pcs": 12.0}
    assert (first.split, first.participant, first.scenario) == ("train", "p1", "ball")
    assert first.extra == {"note": "one, with a comma"}
    assert data.schema["scores"][0] == {"name": "tes", "low": 0, "high": 100}


CSV_HEADER = "take,video_v,label,score\n"
CSV_BAD = [
    ("t1,a.mp4,,5\nt2,a.mp4,,x7\n", 3, "take t2: column 'score': 'x7' is not a number"),
    ("t1,a.mp4,,5\nt2,a.mp4,,11\n", 3, "take t2: score 11.0 is outside its declared range"),
    ("t1,a.mp4,,5\nt2,a.mp4,5\n", 3, "the row has 3 cells and the header 4"),
    ('t1,"a.mp4\n",,5\nt2,a.mp4,,nan\n', 4, "take t2: column 'score': 'nan' is not a finite"),
    ("t1,a.mp4,,5\nt1,a.mp4,,5\n", 3, "take t1 listed twice, lines 3 and 4"),
]


@pytest.mark.parametrize("rows, line, problem", CSV_BAD)
def test_csv_errors_name_file_and_line(tmp_path: Path, rows: str, line: int, problem: str) -> None:
    touch(tmp_path / "a.mp4")
    manifest = tmp_path / "m.csv"
    declared = '# {"schema": {"scores": [{"name": "score", "low": 0, "high": 10}]}}\n'
    manifest.write_text(declared + CSV_HEADER + rows, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, task="regression")
    assert (caught.value.path, caught.value.line) == (str(manifest), line + 1)
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    "header, problem",
    [
        ("take,video_v,scroe\n", "unknown column 'scroe'"),
        ("video_v,score\n", "no 'take' column"),
        ("take,score\n", "no video_<view> column"),
        ("take,video_v,score,score_a\n", "a 'score' column or score_<name> columns, not both"),
    ],
)
def test_csv_header_errors(tmp_path: Path, header: str, problem: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(header + "t,a.mp4,1,2\n", encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, fmt="csv", task="regression")
    assert (caught.value.line, problem in caught.value.problem) == (1, True)


# ---- JIGSAWS -------------------------------------------------------------------------------

META = (
    "Suturing_B001\t\tN\t13\t\t2\t2\t2\t2\t3\t2\n"
    "Suturing_E003\t\tE\t24\t\t4\t4\t4\t4\t4\t4\n"
    "\n"
    "Suturing_C002\t\tI\t19.5\t\t3\t3\t4\t3\t3\t3.5\n"
)


def jigsaws_task(root: Path, meta: str = META) -> Path:
    """A task folder of JIGSAWS: its meta file and the two cameras' videos of each trial."""
    folder = root / "Suturing"
    for line in meta.splitlines():
        if line.strip():
            for camera in ("capture1", "capture2"):
                touch(folder / "video" / f"{line.split()[0]}_{camera}.avi")
    (folder / "meta_file_Suturing.txt").write_text(meta, encoding="utf-8")
    return folder / "meta_file_Suturing.txt"


def test_jigsaws_meta_file_levels_in_order_and_the_grs(tmp_path: Path) -> None:
    manifest = jigsaws_task(tmp_path)
    data = read_takes(manifest)  # detected
    assert data.format == "jigsaws" and data.views == ["left", "right"]
    assert [t.take_id for t in data.takes] == ["Suturing_B001", "Suturing_E003", "Suturing_C002"]
    assert [t.target for t in data.takes] == ["Novice", "Expert", "Intermediate"]
    first = data.takes[0]
    assert first.videos == {
        "left": str(manifest.parent / "video" / "Suturing_B001_capture1.avi"),
        "right": str(manifest.parent / "video" / "Suturing_B001_capture2.avi"),
    }
    assert (first.participant, first.scenario, first.split) == ("B", "Suturing", "")
    assert first.extra["quality_of_final_product"] == "2"
    ordinal = read_takes(manifest, task="ordinal")
    assert ordinal.schema["labels"] == ["Novice", "Intermediate", "Expert"]
    scores = read_takes(manifest, task="regression")
    assert scores.schema["scores"] == [{"name": "grs", "low": 6, "high": 30}]
    assert scores.schema["group"] == "task"
    assert [t.target for t in scores.takes] == [{"grs": 13.0}, {"grs": 24.0}, {"grs": 19.5}]


def test_jigsaws_criteria_are_seven_scores(tmp_path: Path) -> None:
    data = read_takes(jigsaws_task(tmp_path), fmt="jigsaws-criteria", task="regression")
    names = [s["name"] for s in data.schema["scores"]]
    assert names[0] == "grs" and len(names) == 7 and names[-1] == "quality_of_final_product"
    assert data.takes[2].target["quality_of_final_product"] == 3.5
    assert data.schema["scores"][1] == {"name": "respect_for_tissue", "low": 1, "high": 5}


@pytest.mark.parametrize(
    "line, problem",
    [
        ("Suturing_D001\t\tX\t13\t\t2\t2\t2\t2\t3\t2", "take Suturing_D001: skill level 'X' is not N, I or E"),
        ("Suturing_D001\t\tN\t13\t\t2\t2\t2\t2\t3", "expected 9 fields"),
        ("Suturing_D001\t\tN\tthirteen\t\t2\t2\t2\t2\t3\t2", "take Suturing_D001: grs: 'thirteen' is not a number"),
        ("Suturing_D001\t\tN\t31\t\t2\t2\t2\t2\t3\t2", "take Suturing_D001: grs 31.0 is outside its declared range 6..30"),
    ],
)  # fmt: skip
def test_jigsaws_errors_name_file_line_and_take(tmp_path: Path, line: str, problem: str) -> None:
    manifest = jigsaws_task(tmp_path)
    manifest.write_text(META + line + "\n", encoding="utf-8")
    touch(manifest.parent / "video" / "Suturing_D001_capture1.avi")
    touch(manifest.parent / "video" / "Suturing_D001_capture2.avi")
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, fmt="jigsaws", task="regression")
    assert (caught.value.path, caught.value.line) == (str(manifest), 5)
    assert problem in caught.value.problem


def test_read_only_formats_are_not_written(tmp_path: Path) -> None:
    takes = read_takes(jigsaws_task(tmp_path)).takes
    for fmt in ("jigsaws", "mtl-aqa", "finediving"):
        with pytest.raises(ValueError, match=f"the {fmt} format is read, never written"):
            write_manifest(tmp_path / "m.txt", takes, fmt=fmt)


# ---- MTL-AQA and FineDiving pickles ----------------------------------------------------------


def mtl_aqa(folder: Path, videos: Path) -> Path:
    """final_annotations_dict.pkl and its split files, as MTL-AQA's Ready_2_Use folder has
    them (protocol 3, plain dicts keyed by (event, clip) ints)."""
    folder.mkdir(parents=True, exist_ok=True)
    annotations = {
        (1, 1): {"primary_view": 0, "start_frame": 7377, "end_frame": 7462, "position": 2,
                 "difficulty": 3.2, "armstand": 0, "rotation_type": 2, "ss_no": 7, "tw_no": 0,
                 "final_score": 88.0},
        (1, 2): {"primary_view": 0, "start_frame": 8649, "end_frame": 8738, "position": 2,
                 "difficulty": 3.2, "armstand": 0, "rotation_type": 2, "ss_no": 7, "tw_no": 0,
                 "final_score": 86.4},
        (26, 4): {"primary_view": 1, "start_frame": 10, "end_frame": 90, "position": 1,
                  "difficulty": 2.0, "armstand": 1, "rotation_type": 0, "ss_no": 2, "tw_no": 0,
                  "final_score": 41.25},
    }  # fmt: skip
    for event, clip in annotations:
        touch(videos / f"{event:02d}_{clip:02d}.mp4")
    path = folder / "final_annotations_dict.pkl"
    path.write_bytes(pickle.dumps(annotations, protocol=3))
    (folder / "train_split_0.pkl").write_bytes(pickle.dumps([(1, 1), (1, 2)], protocol=3))
    (folder / "test_split_0.pkl").write_bytes(pickle.dumps([(26, 4)], protocol=3))
    return path


def test_mtl_aqa_annotations_are_takes_with_scores(tmp_path: Path) -> None:
    manifest = mtl_aqa(tmp_path / "ann", tmp_path / "videos")
    data = read_takes(manifest, root=tmp_path / "videos", fmt="mtl-aqa", task="regression")
    assert [t.take_id for t in data.takes] == ["01_01", "01_02", "26_04"]
    assert [t.target for t in data.takes] == [88.0, 86.4, 41.25]
    assert [t.split for t in data.takes] == ["train", "train", "test"]
    assert data.views == ["video"]
    assert data.takes[2].videos == {"video": str(tmp_path / "videos" / "26_04.mp4")}
    assert data.takes[0].extra["start_frame"] == "7377"
    assert data.schema == {"scores": [{"name": "score", "low": None, "high": None}],
                           "group": "scenario"}  # fmt: skip
    with pytest.raises(ManifestError, match="--task classification learns levels .* the mtl-aqa "
                                            "format states scores"):  # fmt: skip
        read_takes(manifest, root=tmp_path / "videos", fmt="mtl-aqa")


def test_a_pickle_is_read_only_when_its_format_is_named(tmp_path: Path) -> None:
    manifest = mtl_aqa(tmp_path, tmp_path)
    with pytest.raises(ManifestError, match="a pickle, not a text manifest: name its format with "
                                            "--manifest-format \\(mtl-aqa, finediving\\)"):  # fmt: skip
        read_takes(manifest, task="regression")


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda a: a[(1, 2)].update(final_score="88"), "key (1, 2): final_score '88' is not a number"),
        (lambda a: a[(1, 2)].pop("final_score"), "key (1, 2): no 'final_score'"),
        (lambda a: a.update({(1, 2, 3): {}}), "key (1, 2, 3) is not an (event, clip) pair"),
    ],
)  # fmt: skip
def test_mtl_aqa_errors_name_the_file_and_the_key(tmp_path: Path, change, problem: str) -> None:
    manifest = mtl_aqa(tmp_path, tmp_path)
    annotations = pickle.loads(manifest.read_bytes())
    change(annotations)
    manifest.write_bytes(pickle.dumps(annotations, protocol=2))
    with pytest.raises(ManifestError) as caught:
        read_takes(manifest, fmt="mtl-aqa", task="regression")
    assert str(caught.value).startswith(f"{manifest}: ")
    assert problem in caught.value.problem


def test_mtl_aqa_split_files_are_checked(tmp_path: Path) -> None:
    manifest = mtl_aqa(tmp_path, tmp_path)
    (tmp_path / "test_split_0.pkl").write_bytes(pickle.dumps([(26, 4), (1, 2)]))
    with pytest.raises(ManifestError, match=r"test_split_0.pkl: key \(1, 2\) is in split train"):
        read_takes(manifest, fmt="mtl-aqa", task="regression")
    (tmp_path / "test_split_0.pkl").write_bytes(pickle.dumps([(9, 9)]))
    with pytest.raises(ManifestError, match=r"test_split_0.pkl: key \(9, 9\) is not in "):
        read_takes(manifest, fmt="mtl-aqa", task="regression")


def finediving(folder: Path, layout: str) -> Path:
    """FineDiving's fine-grained annotations in one of its two layouts, numpy arrays and
    numpy scalars inside as in the released files, and its split files."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {
        ("FINADivingWorldCup2021_Men3m_final_r1", 0): ("407c", 88.0, 3.2),
        ("FINADivingWorldCup2021_Men3m_final_r1", 11): ("5253b", np.float64(61.5), 3.0),
        ("01", 1): ("407c", 70.0, 3.2),
    }
    annotations = {}
    for key, (action, score, difficulty) in entries.items():
        transits, labels = np.array([34, 60]), np.array([4] * 3 + [25] * 5, dtype=np.int64)
        if layout == "dict":
            annotations[key] = {
                "action_type": action, "dive_score": score, "difficulty": difficulty,
                "judge_scores": [8.0, 8.5, 9.0], "start_frame": 489, "end_frame": 592,
                "steps_transit_frames": transits, "frames_labels": labels,
                "sub-action_types": {np.int64(4): "Inward", np.int64(25): "Entry"},
            }  # fmt: skip
        else:
            annotations[key] = [action, score, difficulty, transits, labels]
        touch(folder / "videos" / key[0] / f"{key[1]}.mp4")
    path = folder / "FineDiving_fine-grained_annotation.pkl"
    path.write_bytes(pickle.dumps(annotations, protocol=3))
    (folder / "train_split.pkl").write_bytes(pickle.dumps(list(annotations)[:2], protocol=3))
    (folder / "test_split.pkl").write_bytes(pickle.dumps(list(annotations)[2:], protocol=3))
    return path


@pytest.mark.parametrize("layout", ["dict", "list"])
def test_finediving_annotations_are_takes_with_scores_grouped_by_action(
    tmp_path: Path, layout: str
) -> None:
    manifest = finediving(tmp_path, layout)
    data = read_takes(manifest, root=tmp_path / "videos", fmt="finediving", task="regression")
    ids = ["FINADivingWorldCup2021_Men3m_final_r1_0", "FINADivingWorldCup2021_Men3m_final_r1_11",
           "01_1"]  # fmt: skip
    assert [t.take_id for t in data.takes] == ids
    assert [t.target for t in data.takes] == [88.0, 61.5, 70.0]
    assert [t.scenario for t in data.takes] == ["407c", "5253b", "407c"]
    assert [t.split for t in data.takes] == ["train", "train", "test"]
    assert data.schema["group"] == "action_type"
    assert data.takes[1].videos["video"] == str(
        tmp_path / "videos" / "FINADivingWorldCup2021_Men3m_final_r1" / "11.mp4"
    )
    assert data.takes[0].extra["difficulty"] == "3.2"
    assert "frames_labels" not in data.takes[0].extra


def test_missing_clip_videos_are_listed_as_for_any_manifest(tmp_path: Path) -> None:
    manifest = mtl_aqa(tmp_path / "ann", tmp_path / "videos")
    (tmp_path / "videos" / "01_02.mp4").unlink()
    with pytest.raises(
        ManifestError, match=r"key \(1, 2\): take 01_02 view video: video not found"
    ):
        read_takes(manifest, root=tmp_path / "videos", fmt="mtl-aqa", task="regression")


# ---- through skill extract -----------------------------------------------------------------


def format_files(tmp_path: Path, fmt: str) -> tuple[Path, list[str]]:
    """A manifest of `fmt` whose videos are missing, and names its message must list."""
    if fmt == "jigsaws":
        manifest = jigsaws_task(tmp_path)
        shutil.rmtree(manifest.parent / "video")
        return manifest, ["Suturing_B001_capture1.avi", "6 video files"]
    if fmt == "csv":
        manifest = tmp_path / "m.csv"
        manifest.write_text("take,video_a,video_b,score\nt1,a1.mp4,b1.mp4,4\n", encoding="utf-8")
        return manifest, ["2 video files", "a1.mp4"]
    if fmt == "mtl-aqa":
        manifest = mtl_aqa(tmp_path, tmp_path / "nowhere")
        return manifest, ["01_01.mp4", "3 video files"]
    manifest = finediving(tmp_path, "dict")
    return manifest, ["FINADivingWorldCup2021_Men3m_final_r1/11.mp4", "3 video files"]


@pytest.mark.parametrize("fmt", ["csv", "jigsaws", "mtl-aqa", "finediving"])
def test_extract_reads_every_format_by_its_name(tmp_path: Path, fmt: str) -> None:
    """The registry makes --manifest-format take a format: the manifest is read in it (its
    videos listed as missing, before any backbone loads)."""
    manifest, listed = format_files(tmp_path, fmt)
    code, output = invoke_cli(*extract_args(manifest, tmp_path / "s.zarr", "--manifest-format",
                                            fmt, "--task", "regression"))  # fmt: skip
    assert code == 2
    assert output.startswith(f"error: {manifest}")
    for name in listed:
        assert name in output


def jigsaws_of_real_videos(tmp_path: Path) -> Path:
    """A JIGSAWS task folder whose two cameras are real synthetic videos."""
    dataset = make_dataset(tmp_path / "synth", 2).parent
    meta = jigsaws_task(tmp_path, META.split("\n\n")[0] + "\n")
    for trial, take in (("Suturing_B001", "t0001"), ("Suturing_E003", "t0002")):
        for camera, view in (("capture1", "ego"), ("capture2", "exo1")):
            shutil.copyfile(dataset / take / f"{view}.mp4",
                            meta.parent / "video" / f"{trial}_{camera}.avi")  # fmt: skip
    return meta


def test_extract_a_jigsaws_task_for_regression_stores_the_grs(tmp_path: Path) -> None:
    from skill.cache.store import TokenStore

    manifest = jigsaws_of_real_videos(tmp_path)
    store = tmp_path / "s.zarr"
    code, output = invoke_cli(*extract_args(manifest, store, "--task", "regression", "--workers",
                                            "0"))  # fmt: skip
    assert code == 0, output
    opened = TokenStore.open(store)
    assert opened.task["name"] == "regression"
    assert opened.task["schema"]["scores"] == [{"name": "grs", "low": 6, "high": 30}]
    assert opened.views == ["left", "right"]
    table = opened.take_table()
    assert table.ids.tolist() == ["Suturing_B001", "Suturing_E003"]
    assert table.target.tolist() == [[13.0], [24.0]]
    assert table.participant.tolist() == ["B", "E"]


def test_declared_levels_are_ordered_only_when_the_file_says_so(tmp_path: Path) -> None:
    touch(tmp_path / "a.mp4")
    take = {"take": "t", "videos": {"v": "a.mp4"}, "label": "good"}
    plain = jsonl(tmp_path / "p.jsonl", {"schema": {"labels": ["poor", "good"]}}, take)
    assert read_takes(plain).schema == {"labels": ["poor", "good"]}
    with pytest.raises(
        ManifestError, match="p.jsonl:1: task ordinal needs levels in a known order"
    ):
        read_takes(plain, task="ordinal")
    ordered = jsonl(
        tmp_path / "o.jsonl", {"schema": {"labels": ["poor", "good"], "ordered": True}}, take
    )
    assert read_takes(ordered, task="ordinal").takes[0].target == "good"
