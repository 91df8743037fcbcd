"""The EgoExo4D demonstration benchmark's prediction file: the table the official evaluation
scores (``ANETdetection.evaluate`` takes four parallel columns, one row per predicted event:
``video-id``, the take's name; ``times``, seconds; ``label``, the category id, 0 for
``good_executions`` and 1 for ``tips_for_improvement``; ``score``), written as one JSON object
with the split it predicts. Its layout is in docs/interop.md; the metric it is scored with is
`skill.tasks.demonstration_metrics`."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from skill.cache.files import write_text_atomically
from skill.errors import SkillError
from skill.tasks.demonstration_metrics import CATEGORIES, Events

COLUMNS: tuple[str, ...] = ("video-id", "times", "label", "score")
"""The official evaluation's prediction columns, in its order."""
SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The benchmark's splits, as its annotation files name them."""


class SubmissionError(SkillError, ValueError):
    """A prediction file that cannot be scored against a split: one line naming the file."""


def submission_payload(pred: Events, split: str) -> dict[str, Any]:
    """The file's JSON object for predictions `pred` (N rows) of `split`: ``split`` and the
    four columns, lists of length N (take names, seconds, category ids, scores)."""
    if split not in SPLITS:
        raise ValueError(f"submission: split must be one of {', '.join(SPLITS)}, not {split!r}")
    return {
        "split": split,
        "video-id": [str(take) for take in pred.takes],
        "times": [float(time) for time in pred.times],
        "label": [int(label) for label in pred.labels],
        "score": [float(score) for score in pred.scores],
    }


def write_submission(path: str | Path, pred: Events, split: str) -> Path:
    """Write `pred` as the prediction file of `split` at `path` (atomically); returns it."""
    out = Path(path)
    text = json.dumps(submission_payload(pred, split), indent=1) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, text)
    return out


def read_submission(path: str | Path, split: str, takes: Iterable[str]) -> Events:
    """The predictions of a file for `split` whose rows all name takes in `takes` (the take
    names of that split) as `Events` (N rows, in file order).

    Refused, in one line naming the file: a file that is not JSON or not the layout (a missing
    column, columns of different lengths, a time, label or score that is not one), a file for
    another split, and a row naming a take that is not in the split.
    """
    name = str(path)
    payload = _load(name)
    written = payload.get("split")
    if written != split:
        raise SubmissionError(
            f"{name}: a prediction file for split {written!r}, not {split!r}; predict --split "
            f"{split}"
        )
    columns = _columns(name, payload)
    known = set(takes)
    for row, take in enumerate(columns["video-id"]):
        if take not in known:
            raise SubmissionError(f"{name}: row {row}: take {take} is not in split {split!r}")
    return Events.of(columns["video-id"], columns["times"], columns["label"], columns["score"])


def _load(name: str) -> dict:
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SubmissionError(f"{name}: cannot read the prediction file: {err}") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        raise SubmissionError(f"{name}:{err.lineno}: invalid JSON: {err.msg}") from None
    if not isinstance(payload, dict):
        raise SubmissionError(f"{name}: expected a JSON object with {', '.join(COLUMNS)}")
    return payload


def _columns(name: str, payload: dict) -> dict[str, list]:
    """The four columns, checked: lists of one length, take names, finite non-negative times,
    category ids, finite scores."""
    absent = [column for column in COLUMNS if not isinstance(payload.get(column), list)]
    if absent:
        raise SubmissionError(
            f"{name}: no list {absent[0]!r}; the columns are {', '.join(COLUMNS)}"
        )
    lengths = {column: len(payload[column]) for column in COLUMNS}
    if len(set(lengths.values())) != 1:
        shown = ", ".join(f"{column} {length}" for column, length in lengths.items())
        raise SubmissionError(f"{name}: the columns differ in length ({shown})")
    checks = {
        "video-id": lambda v: isinstance(v, str) and v != "",
        "times": lambda v: _finite(v) and v >= 0,
        "label": lambda v: (
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(CATEGORIES)
        ),
        "score": _finite,
    }
    for column, fits in checks.items():
        for row, value in enumerate(payload[column]):
            if not fits(value):
                take = payload["video-id"][row]
                raise SubmissionError(
                    f"{name}: row {row} (take {take}): {column} {value!r} is not {_WANTED[column]}"
                )
    return {column: payload[column] for column in COLUMNS}


_WANTED = {
    "video-id": "a take name",
    "times": "a time in seconds (a number, 0 or more)",
    "label": f"a category id (0 to {len(CATEGORIES) - 1}: {', '.join(CATEGORIES)})",
    "score": "a finite number",
}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
