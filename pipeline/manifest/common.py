"""What every manifest format shares: where a record sits, reading the file and its JSON lines,
field checks (labels are never mapped to a default), path resolution and video checks.

Functions here raise `ManifestError` naming the manifest, the line and the problem; the
format modules compose them and add their own rules.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from skill.pipeline.takes import ManifestError, Take, name_problem

SPLITS: tuple[str, ...] = ("train", "val", "test", "")

_SPLIT_IN_NAME = re.compile(r"(?:^|[_.\-])(train|val|test)(?:[_.\-]|$)")


@dataclass(frozen=True)
class Where:
    """Where a record sits, for error messages: the manifest, its line, a record name."""

    manifest: str
    line: int | None
    record: str = ""  # "annotations[3]" for the JSON document format, "" for line formats

    def error(self, problem: str) -> ManifestError:
        prefix = f"{self.record}: " if self.record else ""
        return ManifestError(self.manifest, self.line, prefix + problem)

    def place(self) -> str:
        if not self.record:
            return f"line {self.line}"
        return f"{self.record} (line {self.line})" if self.line is not None else self.record


# ---------------------------------------------------------------------------------------------
# The file and its JSON lines


def read_manifest_bytes(path: Path) -> bytes:
    """The manifest file's bytes; ManifestError when it is missing, a folder or unreadable."""
    name = str(path)
    if path.is_dir():
        raise ManifestError(name, None, "is a directory, not a manifest file")
    if not path.exists():
        raise ManifestError(name, None, "manifest not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ManifestError(name, None, f"cannot read the manifest: {err.strerror}") from None
    if not data.strip():
        raise ManifestError(name, None, "empty file: the manifest lists no takes")
    return data


def read_manifest_text(path: Path) -> str:
    name = str(path)
    text = _decode_utf8(name, read_manifest_bytes(path))
    if not text.strip():
        raise ManifestError(name, None, "empty file: the manifest lists no takes")
    return text


def _decode_utf8(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        problem = f"not UTF-8 text: byte 0x{data[err.start]:02x} at column {column}"
        raise ManifestError(name, line, problem) from None


def first_nonblank_line(text: str) -> tuple[int, str]:
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.strip():
            return number, raw
    raise AssertionError("unreachable: empty manifests are refused before")


def jsonl_records(manifest: str, text: str) -> Iterator[tuple[Where, dict]]:
    """Yield each non-blank line as (where, JSON object). Splits on "\\n" only, since
    str.splitlines would also split on U+2028 and friends, which JSON strings may hold."""
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.strip():
            where = Where(manifest, number)
            yield where, json_object_line(where, raw)


def json_object_line(where: Where, raw: str) -> dict:
    try:
        value = loads_unique(raw)
    except json.JSONDecodeError as err:
        hint = " (the line ends early: truncated?)" if ends_early(err, raw) else ""
        problem = f"invalid JSON at column {err.colno}: {err.msg}{hint}"
        raise where.error(problem) from None
    except DuplicateKeyError as err:
        raise where.error(err.problem()) from None
    if not isinstance(value, dict):
        raise where.error(f"expected a JSON object, got {kind(value)}")
    return value


def ends_early(err: json.JSONDecodeError, text: str) -> bool:
    """Whether the JSON stops before it is complete (a cut download, a partial write).
    An unterminated string can only run to the end: JSON strings cannot hold a raw newline."""
    return err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")


class DuplicateKeyError(ValueError):
    """A JSON object names a key twice (json.loads would keep the last value silently).
    `offset`: where the second occurrence of the key starts in the text parsed."""

    def __init__(self, key: str, offset: int | None = None):
        super().__init__(key)
        self.key, self.offset = key, offset

    def problem(self) -> str:
        return f"duplicate key {self.key!r}: one JSON object names it twice"


def loads_unique(text: str) -> Any:
    """`json.loads` that refuses an object naming a key twice (`DuplicateKeyError`, with the
    offset of the second occurrence). The fast C parser checks; only a refusal is parsed again,
    in Python, to find where the key is."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except DuplicateKeyError as err:
        raise DuplicateKeyError(err.key, _duplicate_offset(text)) from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return value


class _ObjectAt(Exception):
    """Carries a duplicate key out of the Python parser with the offset of its object."""

    def __init__(self, key: str, start: int):
        super().__init__(key)
        self.key, self.start = key, start


def _duplicate_offset(text: str) -> int | None:
    """The offset of the first key named a second time in its object, or None if none is."""
    decoder = json.JSONDecoder(object_pairs_hook=_unique_pairs)

    def parse_object(s_and_end, *args):  # the innermost object with the duplicate is named
        try:
            return json.decoder.JSONObject(s_and_end, *args)
        except DuplicateKeyError as err:
            raise _ObjectAt(err.key, s_and_end[1]) from None

    decoder.parse_object = parse_object
    decoder.scan_once = json.scanner.py_make_scanner(decoder)
    try:
        decoder.decode(text)
    except _ObjectAt as found:
        return _second_key_offset(text, found.start, found.key)
    except ValueError:
        return None
    return None


def _second_key_offset(text: str, index: int, key: str) -> int | None:
    """Where `key` starts the second time among the keys of the object whose '{' is just
    before `index`."""
    decoder, seen = json.JSONDecoder(), False
    index = skip_blank(text, index)
    while index < len(text) and text[index] != "}":
        start = index
        name, index = decoder.raw_decode(text, index)
        if name == key:
            if seen:
                return start
            seen = True
        index = skip_blank(text, skip_blank(text, index) + 1)  # past the ':'
        _, index = decoder.raw_decode(text, index)
        index = skip_blank(text, index)
        if index < len(text) and text[index] == ",":
            index = skip_blank(text, index + 1)
    return None


def skip_blank(text: str, index: int) -> int:
    """The first index at or after `index` that is not JSON whitespace."""
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def line_of(text: str, offset: int) -> int:
    """The 1-based line of `offset` in `text`."""
    return text.count("\n", 0, offset) + 1


# ---------------------------------------------------------------------------------------------
# Field checks


def kind(value: Any) -> str:
    """Describe a JSON value for an error message: 'a number (3)', 'a list', 'null'..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"the string {value[:60]!r}" if value else "an empty string"
    return "a list" if isinstance(value, list) else "an object"


def required_str(record: dict, key: str, where: Where) -> str:
    if key not in record:
        raise where.error(f"missing required field {key!r}")
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"field {key!r} must be a non-empty string, got {kind(value)}")
    return value


def optional_str(record: dict, key: str, where: Where) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise where.error(f"field {key!r} must be a string, got {kind(value)}")
    return value


def read_label(record: dict, key: str, take_id: str, where: Where, required: bool) -> str | None:
    """The label in `key`: a string or None, never mapped to a default (the dataset's task
    checks its value, `check_targets`)."""
    if key not in record:
        if required:
            problem = f"missing required field {key!r} (null for an unlabelled take)"
            raise where.error(f"take {take_id}: {problem}")
        return None
    value = record[key]
    if value is None:
        return None
    if not isinstance(value, str):
        problem = f"field {key!r} must be a label string or null, got {kind(value)}"
        raise where.error(f"take {take_id}: {problem}")
    return value


def check_targets(manifest: str, takes: list[Take], task: str, schema: dict) -> None:
    """Every take's target (`Take.target`) is one the task takes (classification: one of the
    schema's labels; regression: numbers within their declared ranges), else a ManifestError
    naming the manifest's line and the take."""
    from skill.tasks import TargetError, get_task

    checker = get_task(task)
    for take in takes:
        try:
            checker.encode(take.target, schema)
        except TargetError as err:
            raise Where(manifest, *take.source).error(f"take {take.take_id}: {err}") from None


# ---- scores and declared schemas

DECLARED_KEYS = ("labels", "ordered", "scores", "group")
"""What a manifest may declare of its targets: level names (in order, and whether they are
ordered), score names with their ranges, and the name of the group column."""


def is_number(value: Any) -> bool:
    """A finite int or float (JSON's NaN and Infinity, and booleans, are not numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_scores(record: dict, take_id: str, where: Where) -> float | dict | None:
    """A record's scores: ``score`` (one number or null) or ``scores`` (an object of score
    name to number or null), not both; None when it gives neither."""
    if "score" in record and "scores" in record:
        raise where.error(f"take {take_id}: give 'score' (one number) or 'scores', not both")
    if "score" in record:
        value = record["score"]
        if value is not None and not is_number(value):
            raise where.error(
                f"take {take_id}: field 'score' must be a number or null, got {kind(value)}"
            )
        return value
    given = record.get("scores")
    if given is None:
        return None
    if not isinstance(given, dict) or not given:
        problem = f"field 'scores' must be an object of score name to number, got {kind(given)}"
        raise where.error(f"take {take_id}: {problem}")
    for name, value in given.items():
        if not name.strip():
            raise where.error(f"take {take_id}: a score name in 'scores' is empty")
        if value is not None and not is_number(value):
            raise where.error(
                f"take {take_id}: score {name!r} must be a number or null, got {kind(value)}"
            )
    return dict(given)


def parse_number(text: str, what: str, where: Where) -> float | None:
    """A number written as text (a CSV cell, a meta file's field); "" is None."""
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise where.error(f"{what}: {text[:60]!r} is not a number") from None
    if not math.isfinite(value):
        raise where.error(f"{what}: {text!r} is not a finite number")
    return value


class ScoreNames:
    """The score names a manifest's takes use, in the order they first appear, and the first
    take that gives one number (``score``): one number fits a manifest of one score only."""

    def __init__(self) -> None:
        self.names: dict[str, int] = {}  # name -> the line that first names it
        self.single: tuple[Where, str] | None = None

    def add(self, scores: float | dict | None, take_id: str, where: Where) -> None:
        if isinstance(scores, dict):
            for name in scores:
                self.names.setdefault(name, where.line or 0)
        elif scores is not None and self.single is None:
            self.single = (where, take_id)

    def implied(self, declared: dict | None) -> dict | None:
        """The schema the takes imply where the file declares no scores: their score names;
        refuses one number in a manifest that names several scores."""
        if declared and "scores" in declared:
            return None
        if self.single is not None and len(self.names) > 1:
            where, take_id = self.single
            raise where.error(
                f"take {take_id}: 'score' gives one number, but this manifest names the scores "
                f"{', '.join(self.names)}; give 'scores' with their names"
            )
        return {"scores": list(self.names)} if self.names else None


def implied_score_names(takes: Iterable[Take]) -> list[str]:
    """The score names `takes` use (`Take.scores` objects), in the order they first appear."""
    names: dict[str, None] = {}
    for take in takes:
        if isinstance(take.scores, dict):
            names.update(dict.fromkeys(take.scores))
    return list(names)


def declared_schema(value: Any, where: Where) -> dict:
    """A manifest's declaration of its targets (``{"schema": {...}}``'s object), checked for
    its shape; the task checks what it means (`tasks`)."""
    if not isinstance(value, dict):
        raise where.error(f"'schema' must be an object, got {kind(value)}")
    unknown = [key for key in value if key not in DECLARED_KEYS]
    if unknown:
        raise where.error(
            f"'schema' has unknown key(s) {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(DECLARED_KEYS)}"
        )
    if "labels" in value and not (
        isinstance(value["labels"], list) and all(isinstance(x, str) for x in value["labels"])
    ):
        raise where.error("'schema': 'labels' must be a list of level names")
    if "ordered" in value and not isinstance(value["ordered"], bool):
        raise where.error("'schema': 'ordered' must be true or false")
    if "scores" in value:
        _declared_scores(value["scores"], where)
    if "group" in value and not (isinstance(value["group"], str) and value["group"].strip()):
        raise where.error("'schema': 'group' must name the group column (e.g. \"apparatus\")")
    return dict(value)


def _declared_scores(scores: Any, where: Where) -> None:
    if not isinstance(scores, list) or not scores:
        raise where.error("'schema': 'scores' must be a list of score names or {name, low, high}")
    for entry in scores:
        if isinstance(entry, str):
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise where.error(
                f'\'schema\': a score is a name or {{"name", "low", "high"}}, got {kind(entry)}'
            )
        for bound in ("low", "high"):
            if entry.get(bound) is not None and not is_number(entry[bound]):
                raise where.error(
                    f"'schema': score {entry['name']!r}: {bound!r} must be a number, got "
                    f"{kind(entry[bound])}"
                )


def read_split(record: dict, key: str, where: Where, default: str) -> str:
    value = record.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value not in SPLITS:
        raise where.error(f"field {key!r} must be 'train', 'val', 'test' or '', got {kind(value)}")
    return value


def path_value(value: Any, what: str, where: Where, empty_is_missing: bool) -> str | None:
    """A path string, or None for a missing view."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise where.error(f"{what}: path must be a string or null, got {kind(value)}")
    if not value.strip():
        if empty_is_missing:
            return None
        raise where.error(f"{what}: empty path (use null for a missing view)")
    return value


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def label_text(label: str | None) -> str:
    return "null" if label is None else repr(label)


def split_from_name(manifest: str) -> str:
    match = _SPLIT_IN_NAME.search(PurePath(manifest).stem.lower())
    return match.group(1) if match else ""


# ---------------------------------------------------------------------------------------------
# Paths and videos; path helpers work on str with os.path: pathlib costs ~10x more, which shows
# on 10k videos.


def resolve(base: Path, value: str) -> str:
    """`value` made absolute against `base` (an absolute `value` is kept)."""
    return os.path.abspath(os.path.join(base, value))


def video_problem(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "not found"
    if stat.S_ISREG(mode):
        return ""
    return "is a directory, not a video file" if stat.S_ISDIR(mode) else "is not a regular file"


@dataclass(frozen=True)
class MissingVideo:
    """A video file a manifest names that is not there (or is not a regular file)."""

    take_id: str
    view: str
    path: str
    problem: str
    """What `video_problem` says: "not found", "is a directory, not a video file"..."""
    where: Where
    downscaled_tried: bool = False
    """The EgoExo4D layouts looked for the downscaled/448 copy too (the message says so)."""

    def describe(self) -> str:
        """``take T view V: video not found: PATH`` (with the downscaled hint when tried)."""
        hint = (
            " (nor its downscaled/448 copy)"
            if self.downscaled_tried and self.problem == "not found"
            else ""
        )
        prefix = f"{self.where.record}: " if self.where.record else ""
        return (
            f"{prefix}take {self.take_id} view {self.view}: video {self.problem}: {self.path}{hint}"
        )

    @property
    def reason(self) -> str:
        """The failed view's reason when extraction goes on without it (--skip-missing)."""
        if self.problem == "not found":
            return f"video file missing: {self.path}"
        return f"video file {self.problem}: {self.path}"


def find_missing_videos(
    take: Take, where: Where, downscaled_tried: bool = False
) -> list[MissingVideo]:
    """Every view of `take` whose video file is not a readable regular file (one stat each)."""
    missing = []
    for view, video in take.videos.items():
        if video is None:
            continue
        problem = video_problem(video)
        if problem:
            missing.append(
                MissingVideo(take.take_id, view, video, problem, where, downscaled_tried)
            )
    return missing


def shown_name(name: str) -> str:
    """A name as a message shows it: quoted with escapes, long ones cut."""
    return repr(name) if len(name) <= 80 else f"{name[:60]!r}... ({len(name)} characters)"


def check_take_name(take_id: str, where: Where) -> None:
    """The take's name can become a file name (see `name_problem`)."""
    problem = name_problem(take_id)
    if problem:
        raise where.error(f"take name {shown_name(take_id)} {problem}")


def check_names(take: Take, where: Where) -> None:
    """The take's name and its view names can become file names (see `name_problem`)."""
    check_take_name(take.take_id, where)
    for view in take.videos:
        problem = name_problem(view)
        if problem:
            raise where.error(f"take {take.take_id}: view name {shown_name(view)} {problem}")


def check_has_video(take_id: str, videos: dict[str, str | None], where: Where) -> None:
    if all(video is None for video in videos.values()):
        raise where.error(f"take {take_id}: every view is missing; a take needs at least one video")


MISSING_SHOWN = 20
"""Missing videos named in the error message; a list file holds them all."""


class MissingVideosError(ManifestError):
    """Video files a manifest names are missing: the count, the first `MISSING_SHOWN` (with
    their lines) and, when one was written, the file that lists them all. One missing file
    reads as before: the manifest's line and the problem."""

    def __init__(
        self, manifest: str, missing: list[MissingVideo], list_file: str | None = None,
        hint: str = "",
    ):  # fmt: skip
        self.missing, self.list_file = list(missing), list_file
        first = self.missing[0]
        if len(self.missing) == 1:
            line, problem = first.where.line, first.describe()
        else:
            line = None
            shown = "\n  ".join(_listed(m) for m in self.missing[:MISSING_SHOWN])
            more = len(self.missing) - MISSING_SHOWN
            problem = (
                f"{len(self.missing)} video files are missing; the first "
                f"{min(MISSING_SHOWN, len(self.missing))}:\n  {shown}"
                + (f"\n  ... and {more} more" if more > 0 else "")
            )
        if list_file:
            problem += f"\nthe full list ({len(self.missing)}): {list_file}"
        super().__init__(manifest, line, problem + (f"\n{hint}" if hint else ""))


def _listed(missing: MissingVideo) -> str:
    line = missing.where.line
    return f"line {line}: {missing.describe()}" if line is not None else missing.describe()


def missing_videos_text(missing: list[MissingVideo]) -> str:
    """The full list, one tab-separated line per missing file: take, view, path, problem
    (with a header line), for `grep`, a spreadsheet or a download script."""
    lines = ["take\tview\tpath\tproblem"]
    lines += [f"{m.take_id}\t{m.view}\t{m.path}\t{m.problem}" for m in missing]
    return "\n".join(lines) + "\n"


def duplicate_error(first: tuple[Where, Take], again: tuple[Where, Take]) -> ManifestError:
    (a_where, a), (b_where, b) = first, again
    if a.label != b.label:
        return b_where.error(
            f"take {b.take_id} listed twice with conflicting labels: {a_where.place()} says "
            f"{label_text(a.label)}, {b_where.place()} says {label_text(b.label)}"
        )
    if not a_where.record and not b_where.record:
        return b_where.error(
            f"take {b.take_id} listed twice, lines {a_where.line} and {b_where.line}"
        )
    return b_where.error(f"take {b.take_id} listed twice, {a_where.place()} and {b_where.place()}")


# ---------------------------------------------------------------------------------------------
# Writing


def portable(video: str | None, base: Path) -> str | None:
    """`video` relative to `base` when inside it (POSIX separators), else absolute."""
    if video is None:
        return None
    path = Path(os.path.abspath(video))
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def check_writable(takes: list[Take]) -> None:
    if not takes:
        raise ValueError("write_manifest: no takes to write (an empty manifest cannot be read)")
    views = set(takes[0].videos)
    seen: set[str] = set()
    for take in takes:
        if set(take.videos) != views:
            raise ValueError(
                f"write_manifest: take {take.take_id} has views {sorted(take.videos)}, "
                f"take {takes[0].take_id} has {sorted(views)}; all takes must name the same views"
            )
        if take.take_id in seen:
            raise ValueError(f"write_manifest: take {take.take_id} given twice")
        if all(video is None for video in take.videos.values()):
            raise ValueError(f"write_manifest: take {take.take_id} has no video")
        seen.add(take.take_id)
