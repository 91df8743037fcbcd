"""Format ``csv``: one row per take under a header row::

    take,video_left,video_right,split,participant,group,score
    t001,t001/left.mp4,t001/right.mp4,train,p07,ball,7.5

Columns: ``take`` (required), one ``video_<view>`` per view (at least one; an empty cell is a
missing view), the targets: ``label`` (a level; empty: unlabelled) and the scores, ``score``
(one number) or ``score_<name>`` per named score (empty: none), and optionally ``split``
(train, val, test or empty), ``participant``, ``scenario`` or its synonym ``group``, and
``extra_<key>`` columns (kept as text in `Take.extra`). Other columns are refused as typos.
Lines before the header that start with ``#`` are comments; one of them may declare the
targets as the ``skill`` format's first line does: ``# {"schema": {...}}``. Paths are relative
to ``root``, else to the manifest's folder. Errors name the file and the line (a quoted cell may
span lines: the line where its row starts).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from skill.pipeline.manifest.common import (
    SPLITS,
    MissingVideo,
    ScoreNames,
    Where,
    check_has_video,
    check_names,
    declared_schema,
    duplicate_error,
    find_missing_videos,
    parse_number,
    portable,
    resolve,
)
from skill.pipeline.manifest.format import ManifestFormat, Parsed, Sample
from skill.pipeline.manifest.registry import register_format
from skill.pipeline.takes import Take
from skill.tasks.classification import EGOEXO4D_LEVELS

VIDEO_PREFIX = "video_"
SCORE_PREFIX = "score_"
EXTRA_PREFIX = "extra_"
_PLAIN_COLUMNS = ("take", "label", "score", "split", "participant", "scenario", "group")
_SCHEMA_KEY = "schema"


class _Columns:
    """Where each field is in a row, from the header row."""

    def __init__(self, header: list[str], where: Where):
        self.width = len(header)
        self.index: dict[str, int] = {}
        for i, name in enumerate(header):
            if name in self.index:
                raise where.error(f"column {name!r} is named twice in the header")
            if not (name in _PLAIN_COLUMNS or _prefixed(name)):
                raise where.error(
                    f"unknown column {name!r}; known: take, video_<view>, label, score or "
                    "score_<name>, split, participant, scenario or group, extra_<key>"
                )
            self.index[name] = i
        self.views = [name[len(VIDEO_PREFIX) :] for name in header if name.startswith(VIDEO_PREFIX)]
        self.scores = [
            name[len(SCORE_PREFIX) :] for name in header if name.startswith(SCORE_PREFIX)
        ]
        self.extras = [
            name[len(EXTRA_PREFIX) :] for name in header if name.startswith(EXTRA_PREFIX)
        ]
        if "take" not in self.index:
            raise where.error("the header has no 'take' column")
        if not self.views:
            raise where.error("the header has no video_<view> column (e.g. video_ego)")
        if "score" in self.index and self.scores:
            raise where.error("give a 'score' column or score_<name> columns, not both")
        if "scenario" in self.index and "group" in self.index:
            raise where.error("give a 'scenario' or a 'group' column, not both")

    def cell(self, row: list[str], name: str) -> str:
        return row[self.index[name]] if name in self.index else ""


def _prefixed(name: str) -> bool:
    return any(
        name.startswith(prefix) and len(name) > len(prefix)
        for prefix in (VIDEO_PREFIX, SCORE_PREFIX, EXTRA_PREFIX)
    )


def _parse_csv(manifest: str, text: str, base: Path) -> Parsed:
    lines = text.split("\n")
    first, declared, declared_line = _preamble(manifest, lines)
    rows = _rows(manifest, lines, first)
    header_line, header = next(rows, (first + 1, []))
    columns = _Columns([cell.strip() for cell in header], Where(manifest, header_line))
    takes: list[Take] = []
    missing: list[MissingVideo] = []
    seen: dict[str, tuple[Where, Take]] = {}
    names = ScoreNames()
    for number, row in rows:
        where = Where(manifest, number)
        take = _csv_take(row, columns, base, where)
        check_names(take, where)
        if take.take_id in seen:
            raise duplicate_error(seen[take.take_id], (where, take))
        names.add(take.scores, take.take_id, where)
        missing += find_missing_videos(take, where)
        seen[take.take_id] = (where, take)
        takes.append(take)
    if not takes:
        raise Where(manifest, header_line).error("the manifest lists no takes")
    implied = {"scores": columns.scores} if columns.scores else {}
    declared = {**implied, **(declared or {})}
    return Parsed(takes, columns.views, missing, declared or None, declared_line)


def _preamble(manifest: str, lines: list[str]) -> tuple[int, dict | None, int | None]:
    """Skip blank and ``#`` lines before the header; the one holding ``{"schema": ...}`` is
    the declaration. Returns (index of the header line, declared schema, its line)."""
    declared, declared_line = None, None
    for index, raw in enumerate(lines):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            return index, declared, declared_line
        body = stripped[1:].strip()
        if body.startswith("{"):
            where = Where(manifest, index + 1)
            try:
                value = json.loads(body)
            except json.JSONDecodeError as err:
                raise where.error(f"invalid JSON in the schema comment at column {err.colno}: "
                                  f"{err.msg}") from None  # fmt: skip
            if not isinstance(value, dict) or set(value) != {_SCHEMA_KEY}:
                raise where.error('a JSON comment line must be {"schema": {...}}')
            if declared is not None:
                raise where.error(f"a second schema comment (the first is line {declared_line})")
            declared, declared_line = declared_schema(value[_SCHEMA_KEY], where), index + 1
    raise AssertionError("unreachable: a manifest of blank lines is refused before")


def _rows(manifest: str, lines: list[str], first: int):
    """(line where the row starts, cells) per non-blank row from the header on."""
    body = "\n".join(lines[first:])
    reader = csv.reader(io.StringIO(body, newline=""), strict=True)
    while True:
        start = first + reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            hint = " (the file ends early: truncated?)" if "end of data" in str(err) else ""
            raise Where(manifest, start).error(f"invalid CSV: {err}{hint}") from None
        if any(cell.strip() for cell in row):
            yield start, row


def _csv_take(row: list[str], columns: _Columns, base: Path, where: Where) -> Take:
    if len(row) != columns.width:
        raise where.error(
            f"the row has {len(row)} cells and the header {columns.width} (a missing comma or "
            "a truncated line?)"
        )
    take_id = columns.cell(row, "take").strip()
    if not take_id:
        raise where.error("the 'take' cell is empty")
    videos = {}
    for view in columns.views:
        path = row[columns.index[VIDEO_PREFIX + view]].strip()
        videos[view] = resolve(base, path) if path else None
    check_has_video(take_id, videos, where)
    split = columns.cell(row, "split").strip()
    if split not in SPLITS:
        raise where.error(f"take {take_id}: split must be train, val, test or empty, not {split!r}")
    label = columns.cell(row, "label").strip()
    return Take(
        take_id=take_id,
        videos=videos,
        label=label or None,
        scenario=columns.cell(row, "group" if "group" in columns.index else "scenario").strip(),
        participant=columns.cell(row, "participant").strip(),
        split=split,
        scores=_csv_scores(row, columns, take_id, where),
        extra={key: row[columns.index[EXTRA_PREFIX + key]] for key in columns.extras},
        source=(where.line, where.record),
    )


def _csv_scores(row: list[str], columns: _Columns, take_id: str, where: Where):
    if "score" in columns.index:
        return parse_number(row[columns.index["score"]], f"take {take_id}: column 'score'", where)
    if not columns.scores:
        return None
    values = {
        name: parse_number(
            row[columns.index[SCORE_PREFIX + name]], f"take {take_id}: column 'score_{name}'", where
        )
        for name in columns.scores
    }
    return values if any(value is not None for value in values.values()) else None


# ---- writing -------------------------------------------------------------------------------


def _write_csv(takes: list[Take], base: Path, declared: dict | None = None) -> str:
    views = list(takes[0].videos)
    names = _score_columns(takes)
    extras = list(dict.fromkeys(key for take in takes for key in take.extra))
    header = ["take", *(VIDEO_PREFIX + view for view in views), "label"]
    header += names + ["scenario", "participant", "split"] + [EXTRA_PREFIX + k for k in extras]
    out = io.StringIO()
    if declared:
        out.write(f"# {json.dumps({_SCHEMA_KEY: declared})}\n")
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerow(header)
    for take in takes:
        _check_writable_take(take)
        row: list = [take.take_id]
        row += [portable(take.videos[view], base) or "" for view in views]
        row += [take.label or ""] + _score_cells(take, names)
        row += [take.scenario, take.participant, take.split]
        row += [take.extra.get(key, "") for key in extras]
        writer.writerow(row)
    return out.getvalue()


def _score_columns(takes: list[Take]) -> list[str]:
    """``score`` for takes of one number, ``score_<name>`` for takes of named scores."""
    named = list(dict.fromkeys(k for t in takes if isinstance(t.scores, dict) for k in t.scores))
    single = any(t.scores is not None and not isinstance(t.scores, dict) for t in takes)
    if named and single:
        raise ValueError(
            "write_manifest: some takes give one number as their score and others named scores "
            f"({', '.join(named)}); the csv format holds one or the other"
        )
    return [SCORE_PREFIX + name for name in named] if named else (["score"] if single else [])


def _score_cells(take: Take, names: list[str]) -> list:
    if names == ["score"]:
        return ["" if take.scores is None else float(take.scores)]
    scores = take.scores if isinstance(take.scores, dict) else {}
    values = [scores.get(name[len(SCORE_PREFIX) :]) for name in names]
    return ["" if value is None else float(value) for value in values]


def _check_writable_take(take: Take) -> None:
    if take.label == "":
        raise ValueError(f"write_manifest: take {take.take_id}: an empty label reads back as none")
    for view in take.videos:
        if not view or any(c in view for c in ',\n\r"'):
            raise ValueError(f"write_manifest: view {view!r} cannot name a csv column")


def _is_csv(sample: Sample) -> bool:
    if sample.first is not None:
        return False
    for raw in sample.text.split("\n"):
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            try:
                header = next(csv.reader([stripped]))
            except csv.Error:
                return False
            cells = [cell.strip() for cell in header]
            return "take" in cells and any(cell.startswith(VIDEO_PREFIX) for cell in cells)
    return False


register_format(
    ManifestFormat(
        name="csv",
        marker="'take' and 'video_<view>' columns",
        detect=_is_csv,
        read=_parse_csv,
        write=_write_csv,
        schema={"labels": list(EGOEXO4D_LEVELS), "ordered": True},
        targets=("label", "scores"),
        declares=True,
    )
)
