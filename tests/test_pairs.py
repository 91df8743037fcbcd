"""Pairs files of ranking datasets (BEST, EPIC-Skills) on small files in their layouts: the
pairs per split, as row numbers of a take table, and every bad pair one line naming the file
and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from skill.pipeline.manifest import Pair, PairError, read_pairs
from skill.pipeline.takes import Take


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def best(folder: Path) -> dict[str, Path]:
    """BEST's data/BEST/splits/<task>/ files: blank-separated, better first."""
    return {
        "train": write(folder / "train.txt", "ogyqIpvkJm8 ex9x1yb-tJo\n7ScnRsPqr-I CaXtx-XNtsE\n"),
        "test": write(folder / "test.txt", "bWhOBhMTLXw 7OB00-ndQCY\n\n7OB00-ndQCY qqYEdyqmlbY\n"),
    }


def test_best_pairs_by_split_and_as_rows(tmp_path: Path) -> None:
    files = best(tmp_path / "origami")
    pairs = read_pairs(list(files.values()))  # the split from the file name
    assert pairs.splits == ("train", "test")
    assert pairs.of_split("test") == (
        Pair("bWhOBhMTLXw", "7OB00-ndQCY", "test", str(files["test"]), 1),
        Pair("7OB00-ndQCY", "qqYEdyqmlbY", "test", str(files["test"]), 3),
    )
    ids = ["qqYEdyqmlbY", "7OB00-ndQCY", "bWhOBhMTLXw", "x"]
    assert pairs.rows(ids, "test").tolist() == [[2, 1], [1, 0]]
    with pytest.raises(PairError, match=r"train.txt:1: take 'ogyqIpvkJm8' is not in the store"):
        pairs.rows(ids)


def test_epic_skills_csv_and_ground_truth_layouts(tmp_path: Path) -> None:
    splits = tmp_path / "Chopstick_Using" / "splits"
    train = write(splits / "chopstick_using_train_1.csv", "Better,Worse,\r\nD1,C1,\r\nE3,F3,\r\n")
    val = write(splits / "chopstick_using_val_1.csv", "Better,Worse,\nA1,G5,\n")
    gt = write(tmp_path / "chopstick_using_gt.csv", "Vid1,Vid2,Best\r\nB1,G1,B1\r\nC1,D2,D2\r\n")
    pairs = read_pairs([train, val])
    assert [(p.better, p.worse, p.split, p.line) for p in pairs.pairs] == [
        ("D1", "C1", "train", 2), ("E3", "F3", "train", 3), ("A1", "G5", "val", 2),
    ]  # fmt: skip
    truth = read_pairs({"test": gt})
    assert [(p.better, p.worse) for p in truth.pairs] == [("B1", "G1"), ("D2", "C1")]


@pytest.mark.parametrize(
    "text, line, problem",
    [
        ("a b\nc c\n", 2, "take 'c' is paired with itself"),
        ("a b\nc\n", 2, "expected 2 take ids (better worse), got ['c']"),
        ("a b c\n", 1, "expected 2 take ids"),
        ("Better,Worse\nA1,\n", 2, "expected 2 take ids (better, worse)"),
        ("Vid1,Vid2,Best\nA1,B1,C1\n", 2, "Best 'C1' is neither 'A1' nor 'B1'"),
        ("a ../b\n", 1, "take id '../b' holds the path separator '/'"),
    ],
)
def test_a_bad_pair_names_file_and_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = write(tmp_path / "train.txt", text)
    with pytest.raises(PairError) as caught:
        read_pairs([path])
    assert (caught.value.path, caught.value.line) == (str(path), line)
    assert problem in caught.value.problem and "\n" not in str(caught.value)


def test_a_file_whose_split_cannot_be_told_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.txt", "a b\n")
    with pytest.raises(PairError, match="cannot tell the split of this pairs file"):
        read_pairs([path])
    with pytest.raises(PairError, match="split 'dev' is not one of train, val, test"):
        read_pairs({"dev": path})


SPLITS = {"tr1": "train", "tr2": "train", "va1": "val", "te1": "test", "te2": "test", "un": ""}


@pytest.mark.parametrize(
    "split, text, problem",
    [
        ("train", "tr1 ghost\n", "take 'ghost' is not among the manifest's takes"),
        ("train", "tr1 te1\n", "a pair across splits: take 'te1' is in split test, and this "
                               "training pair would show it to training"),
        ("test", "te1 va1\n", "take 'va1' is in split val, and this pair is a test pair"),
        ("test", "tr1 tr2\n", "this test pair names no test take (both are training takes)"),
    ],
)  # fmt: skip
def test_pairs_checked_against_the_takes(
    tmp_path: Path, split: str, text: str, problem: str
) -> None:
    path = write(tmp_path / f"{split}.txt", "tr1 tr2\n" if split == "train" else "te1 te2\n")
    path.write_text(path.read_text() + text)
    with pytest.raises(PairError) as caught:
        read_pairs({split: path}, SPLITS)
    assert (caught.value.path, caught.value.line) == (str(path), 2)
    assert problem in caught.value.problem


def test_held_out_pairs_may_pair_a_training_take_as_epic_skills_does(tmp_path: Path) -> None:
    takes = [Take(take_id, {"v": "/x.mp4"}, split=split) for take_id, split in SPLITS.items()]
    val = write(tmp_path / "chopstick_using_val_1.csv", "Better,Worse,\nva1,tr1,\ntr2,va1,\n")
    train = write(tmp_path / "chopstick_using_train_1.csv", "Better,Worse,\ntr1,un,\n")
    pairs = read_pairs([train, val], takes)
    assert [(p.split, p.better, p.worse) for p in pairs.pairs] == [
        ("train", "tr1", "un"), ("val", "va1", "tr1"), ("val", "tr2", "va1"),
    ]  # fmt: skip
    assert pairs.take_ids() == {"tr1", "tr2", "va1", "un"}
