"""Pairs files of skill ranking datasets: which take of a pair shows more skill, per split.

Two public layouts, one pair per line, the better take first:

* BEST (``data/BEST/splits/<task>/train.txt``, ``test.txt``; the EPIC-Skills copies in
  ``train_split1.txt`` ...): two take ids separated by blanks, ``better worse``.
* EPIC-Skills (``annotations/<Task>/splits/<task>_train_1.csv``, ``..._val_1.csv``): CSV with
  the header ``Better,Worse`` (a trailing empty column is allowed); its ``<task>_gt.csv``
  (``Vid1,Vid2,Best``: the better of the two is named) is read too.

A file's split is given (``read_pairs({"train": path, ...})``) or read from its name
(``train``, ``val`` or ``test`` as a word of it). `read_pairs` returns `Pairs`; what the
pairwise task needs of them is `Pairs.of_split` and `Pairs.rows` (pairs as row numbers of the
take table). Refused, naming the file and line: a line that is not a pair, a take paired with
itself, a pair naming a take that is not among the takes given, and a pair across splits
(with the takes' splits given): a training pair may name training takes only, and a val or
test pair must name a take of its own split and none of the other held-out split (a held-out
take paired with a training take is EPIC-Skills' evaluation protocol).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skill.pipeline.manifest.common import read_manifest_text, shown_name, split_from_name
from skill.pipeline.takes import ManifestError, Take, name_problem

SPLITS = ("train", "val", "test")
HELD_OUT = ("val", "test")


class PairError(ManifestError):
    """A pairs file that cannot be read or a pair that cannot be used; names file and line."""


@dataclass(frozen=True)
class Pair:
    """One annotated pair: `better` shows more skill than `worse` (take ids)."""

    better: str
    worse: str
    split: str
    """The split of the file that lists it: train, val or test."""
    file: str
    line: int


@dataclass(frozen=True)
class Pairs:
    """The pairs of every file read, in file and line order."""

    pairs: tuple[Pair, ...]

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits that have pairs, in the order train, val, test."""
        present = {pair.split for pair in self.pairs}
        return tuple(split for split in SPLITS if split in present)

    def of_split(self, split: str) -> tuple[Pair, ...]:
        return tuple(pair for pair in self.pairs if pair.split == split)

    def take_ids(self) -> set[str]:
        """Every take some pair names."""
        return {take for pair in self.pairs for take in (pair.better, pair.worse)}

    def rows(self, take_ids: Sequence[str], split: str | None = None) -> np.ndarray:
        """``(n, 2)`` int64: each pair (of `split`, or all) as the positions of its better and
        worse take in `take_ids` (a take table's ids); PairError for a take not there."""
        row_of = {take_id: row for row, take_id in enumerate(take_ids)}
        chosen = self.pairs if split is None else self.of_split(split)
        out = np.zeros((len(chosen), 2), dtype=np.int64)
        for i, pair in enumerate(chosen):
            for j, take in enumerate((pair.better, pair.worse)):
                if take not in row_of:
                    raise _error(pair, f"take {shown_name(take)} is not in the store")
                out[i, j] = row_of[take]
        return out


def read_pairs(
    files: Mapping[str, str | Path] | Iterable[str | Path],
    takes: Mapping[str, str] | Iterable[Take] | None = None,
) -> Pairs:
    """The pairs of `files` (split -> file, or files whose names say their split), checked
    against `takes` when given (take id -> split, or `Take`s): every pair names known takes,
    and none crosses splits (see the module docstring). Raises `PairError`."""
    named = _files_by_split(files)
    pairs = [pair for split, path in named for pair in _read_file(Path(path), split)]
    if takes is not None:
        split_of = _splits_of(takes)
        for pair in pairs:
            _check_known(pair, split_of)
            _check_within_splits(pair, split_of)
    return Pairs(tuple(pairs))


def _files_by_split(
    files: Mapping[str, str | Path] | Iterable[str | Path],
) -> list[tuple[str, str | Path]]:
    if isinstance(files, Mapping):
        for split in files:
            if split not in SPLITS:
                raise PairError(
                    str(files[split]), None, f"split {split!r} is not one of {', '.join(SPLITS)}"
                )
        return list(files.items())
    out = []
    for path in files:
        split = split_from_name(str(path))
        if not split:
            raise PairError(
                str(path),
                None,
                "cannot tell the split of this pairs file from its name (train, val or test as "
                "a word of it); give it as {split: file}",
            )
        out.append((split, path))
    return out


def _splits_of(takes: Mapping[str, str] | Iterable[Take]) -> dict[str, str]:
    if isinstance(takes, Mapping):
        return dict(takes)
    return {take.take_id: take.split for take in takes}


# ---- one file ------------------------------------------------------------------------------


def _read_file(path: Path, split: str) -> list[Pair]:
    """The pairs of one file: blank-separated (BEST) or CSV (EPIC-Skills), a header optional."""
    name = str(path)
    text = read_manifest_text(path)
    lines = [(number, raw.rstrip("\r")) for number, raw in enumerate(text.split("\n"), 1)]
    lines = [(number, raw) for number, raw in lines if raw.strip()]
    comma = "," in lines[0][1]
    rows = [(number, _cells(raw, comma)) for number, raw in lines]
    columns = _header(rows[0][1])
    if columns is not None:
        rows = rows[1:]
    if not rows:
        raise PairError(name, lines[0][0], "the file lists no pairs")
    return [_pair(cells, columns, split, name, number) for number, cells in rows]


def _cells(raw: str, comma: bool) -> list[str]:
    if not comma:
        return raw.split()
    cells = next(csv.reader(io.StringIO(raw)))
    while cells and not cells[-1].strip():  # EPIC-Skills' lines end with a comma
        cells.pop()
    return [cell.strip() for cell in cells]


def _header(cells: list[str]) -> tuple[str, ...] | None:
    """The layout a header row names (``better, worse`` or ``vid1, vid2, best``), or None when
    the first row is a pair."""
    lowered = tuple(cell.lower() for cell in cells)
    if lowered == ("better", "worse"):
        return ("better", "worse")
    if lowered == ("vid1", "vid2", "best"):
        return ("vid1", "vid2", "best")
    return None


def _pair(
    cells: list[str], columns: tuple[str, ...] | None, split: str, name: str, number: int
) -> Pair:
    width = len(columns) if columns else 2
    if len(cells) != width or not all(cells):
        expected = ", ".join(columns) if columns else "better worse"
        raise PairError(name, number, f"expected {width} take ids ({expected}), got {cells}")
    for take in cells:
        problem = name_problem(take)
        if problem:
            raise PairError(name, number, f"take id {shown_name(take)} {problem}")
    if columns == ("vid1", "vid2", "best"):
        first, second, best = cells
        if best not in (first, second):
            raise PairError(name, number, f"Best {best!r} is neither {first!r} nor {second!r}")
        better, worse = (first, second) if best == first else (second, first)
    else:
        better, worse = cells
    if better == worse:
        raise PairError(name, number, f"take {shown_name(better)} is paired with itself")
    return Pair(better, worse, split, name, number)


# ---- against the takes ---------------------------------------------------------------------


def _error(pair: Pair, problem: str) -> PairError:
    return PairError(pair.file, pair.line, problem)


def _check_known(pair: Pair, split_of: dict[str, str]) -> None:
    for take in (pair.better, pair.worse):
        if take not in split_of:
            raise _error(pair, f"take {shown_name(take)} is not among the manifest's takes")


def _check_within_splits(pair: Pair, split_of: dict[str, str]) -> None:
    """A training pair names training takes only; a held-out pair names a take of its split
    and none of the other held-out split. Takes without a split are not checked."""
    splits = {take: split_of[take] for take in (pair.better, pair.worse) if split_of[take]}
    if pair.split == "train":
        for take, split in splits.items():
            if split != "train":
                raise _error(
                    pair,
                    f"a pair across splits: take {shown_name(take)} is in split {split}, and "
                    "this training pair would show it to training",
                )
        return
    other = next(split for split in HELD_OUT if split != pair.split)
    for take, split in splits.items():
        if split == other:
            raise _error(
                pair,
                f"a pair across splits: take {shown_name(take)} is in split {other}, and this "
                f"pair is a {pair.split} pair",
            )
    if len(splits) == 2 and pair.split not in splits.values():
        raise _error(
            pair,
            f"a pair across splits: this {pair.split} pair names no {pair.split} take (both "
            "are training takes)",
        )


__all__ = ["Pair", "PairError", "Pairs", "read_pairs"]
