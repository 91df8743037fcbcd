"""Dataset manifests: read the three formats met in the wild into `Take`s; write the project's own.

Formats (facts in shared/NOTES.md §2), chosen with ``fmt`` or detected from the content:

``skill``
    The project's JSON Lines, one take per line::

        {"take": "t001", "videos": {"ego": "t001/ego.mp4", "exo1": null}, "label": "Novice",
         "scenario": "Dance", "participant": "p07", "split": "train", "extra": {"k": "v"}}

    ``take``, ``videos`` and ``label`` (a label or null) are required; ``scenario``,
    ``participant``, ``split`` (train, val, test or "") and ``extra`` are optional. Every line
    names the same views. Paths are relative to ``root``, else to the manifest's folder.
    Custom fields go under ``extra`` (kept, as text, in `Take.extra`); other unknown fields
    are refused as typos.

``egoexo4d``
    The official ``proficiency_demonstrator_*.json``: ``{"annotations": [record, ...]}`` (an
    object keyed by take_uid is accepted too). Paths are relative to the dataset root.

``skillformer``
    SkillFormer's JSON Lines, ``{"video_paths": [ego, exo1..exo4], "analysis": ...,
    "proficiency_level": ...}``, one line per expert commentary; the lines of one take are
    merged into one `Take` (``extra["lines"]`` lists them).

EgoExo4D-style rules (``egoexo4d`` and ``skillformer``):

* Views are always ``ego, exo1..exo4``; a view that is absent, null or "" is missing (None).
* ``takes/<take>/frame_aligned_videos/downscaled/448/<camera>.mp4`` is used in place of
  ``takes/<take>/frame_aligned_videos/<camera>.mp4`` when it exists: the full-resolution
  videos are often not downloaded at all.
* The take id is the take *name*, the folder under ``takes/`` (what the challenge scorer uses).
* Camera names map to views when views are not named (``video_paths`` keyed by camera, a list
  of paths, or no ``video_paths``, in which case the take's folder is listed): the Aria RGB
  stream (``aria<N>`` or ``aria<N>_214-1``: aria01_214-1, aria02_214-1, aria_214-1,
  aria1_214-1) is ``ego``, the first by name if several; the exo cameras ``cam<N>`` then
  ``gp<N>``, sorted by number, are ``exo1..exo4`` in that order. Cameras beyond four (cam05)
  and other Aria streams (SLAM ``_1201-*``, eye tracking ``_211-1``) are left out and listed
  in ``extra["unused_cameras"]``.
* With ``root=None`` the root is the manifest's folder, or its parent when only the parent has
  a ``takes/`` folder (the official layout keeps the manifest in ``<root>/annotations/``).
* The split comes from a ``split`` field, else from the file name
  (``proficiency_demonstrator_val.json`` -> "val").
"""

from __future__ import annotations

import bisect
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePath
from typing import Any

from skill.pipeline.takes import LABELS, ManifestError, Take

FORMATS: tuple[str, ...] = ("auto", "skill", "egoexo4d", "skillformer")
EGOEXO_VIEWS: tuple[str, ...] = ("ego", "exo1", "exo2", "exo3", "exo4")
SPLITS: tuple[str, ...] = ("train", "val", "test", "")

_SKILL_FIELDS = frozenset({"take", "videos", "label", "scenario", "participant", "split", "extra"})
_EGOEXO_CONSUMED = frozenset(
    {"take_name", "video_paths", "scenario_name", "proficiency_score", "split"}
)
# Aria RGB stream only; the SLAM (1201-*) and eye-tracking (211-1) streams are not the ego view.
_ARIA_RGB = re.compile(r"aria\d*(?:_214-1)?", re.IGNORECASE)
_ARIA_ANY = re.compile(r"aria\d*_[\w-]+", re.IGNORECASE)
_EXO_CAMERA = re.compile(r"(cam|gp)(\d+)", re.IGNORECASE)
_SPLIT_IN_NAME = re.compile(r"(?:^|[_.\-])(train|val|test)(?:[_.\-]|$)")
# Folders of the EgoExo4D layout that never name a take (used when no takes/<name>/ is found).
_LAYOUT_FOLDERS = frozenset({"frame_aligned_videos", "downscaled"})


@dataclass(frozen=True)
class Dataset:
    """The takes described by one manifest."""

    takes: list[Take]
    """Takes in manifest order, one per take id."""
    views: list[str]
    """View names that every take's `videos` uses, in order; a missing view maps to None."""
    format: str
    """The format that was read: "skill", "egoexo4d" or "skillformer" (never "auto")."""
    source: str
    """The manifest path, as given."""


@dataclass(frozen=True)
class _Where:
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
# Public API


def read_takes(path: str | Path, root: str | Path | None = None, fmt: str = "auto") -> Dataset:
    """Read a manifest into a `Dataset`, checking every field and that every video file exists.

    Raises `ManifestError` (file, line, problem) for anything a user can get wrong.
    """
    manifest = str(path)
    if fmt not in FORMATS:
        raise ManifestError(
            manifest, None, f"unknown manifest format {fmt!r}; expected one of {', '.join(FORMATS)}"
        )
    text = _read_manifest_text(Path(path))
    if fmt == "auto":
        fmt = _detect_format(manifest, text)
    base = _root_dir(Path(path), root, fmt)
    parse = {"skill": _parse_skill, "egoexo4d": _parse_egoexo4d, "skillformer": _parse_skillformer}
    takes, views = parse[fmt](manifest, text, base)
    return Dataset(takes=takes, views=views, format=fmt, source=manifest)


def write_manifest(path: str | Path, takes: Iterable[Take], root: str | Path | None = None) -> Path:
    """Write takes as a "skill" JSONL manifest (atomically: a reader never sees half a file).

    Video paths under `root` (default: the manifest's folder) are written relative to it, others
    absolute, so that ``read_takes(path, root)`` gives the same takes back.
    Raises ValueError for takes that could not be read back (differing views, duplicates...).
    """
    out = Path(path)
    base = Path(os.path.abspath(root if root is not None else out.parent))
    takes = list(takes)
    _check_writable(takes)
    lines = [json.dumps(_skill_record(take, base), ensure_ascii=False) for take in takes]
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(partial, out)
    return out


# ---------------------------------------------------------------------------------------------
# Reading the file, finding the format and the root


def _read_manifest_text(path: Path) -> str:
    name = str(path)
    if path.is_dir():
        raise ManifestError(name, None, "is a directory, not a manifest file")
    if not path.exists():
        raise ManifestError(name, None, "manifest not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ManifestError(name, None, f"cannot read the manifest: {err.strerror}") from None
    text = _decode_utf8(name, data)
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


def _detect_format(manifest: str, text: str) -> str:
    number, raw = _first_nonblank_line(text)
    try:
        first = json.loads(raw)
    except json.JSONDecodeError:
        return _detect_document(manifest, text, number, raw)
    if not isinstance(first, dict):
        problem = (
            f"cannot tell the manifest format: the first line is {_kind(first)}, not an object"
        )
        raise ManifestError(manifest, number, problem)
    if "annotations" in first:
        return "egoexo4d"
    if isinstance(first.get("video_paths"), list):
        return "skillformer"
    if "take" in first or "videos" in first:
        return "skill"
    raise ManifestError(
        manifest,
        number,
        "cannot tell the manifest format: the first record has no 'take'/'videos' (skill), "
        "no 'video_paths' list (skillformer) and no 'annotations' (egoexo4d); pass the format",
    )


def _detect_document(manifest: str, text: str, number: int, raw: str) -> str:
    """The first line is not JSON on its own: a pretty-printed official file or a broken line."""
    if '"annotations"' in text:
        return "egoexo4d"  # its parser reports a JSON error with the document's line
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        _json_object_line(_Where(manifest, number), raw)  # raises, naming the JSON error
        raise AssertionError("unreachable: the line did not parse") from None
    problem = f"cannot tell the manifest format: one JSON document ({_kind(document)}) "
    raise ManifestError(manifest, None, problem + "without an 'annotations' list")


def _first_nonblank_line(text: str) -> tuple[int, str]:
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.strip():
            return number, raw
    raise AssertionError("unreachable: empty manifests are refused before")


def _root_dir(manifest: Path, root: str | Path | None, fmt: str) -> Path:
    if root is not None:
        if not Path(root).is_dir():
            raise ManifestError(str(manifest), None, f"root {root} is not a directory")
        return Path(os.path.abspath(root))
    folder = Path(os.path.abspath(manifest)).parent
    # The official layout keeps manifests in <root>/annotations/, beside <root>/takes/.
    if fmt != "skill" and not (folder / "takes").is_dir() and (folder.parent / "takes").is_dir():
        return folder.parent
    return folder


def _jsonl_records(manifest: str, text: str) -> Iterator[tuple[_Where, dict]]:
    """Yield each non-blank line as (where, JSON object). Splits on "\\n" only, since
    str.splitlines would also split on U+2028 and friends, which JSON strings may hold."""
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.strip():
            where = _Where(manifest, number)
            yield where, _json_object_line(where, raw)


def _json_object_line(where: _Where, raw: str) -> dict:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        ends_early = " (the line ends early: truncated?)" if _ends_early(err, raw) else ""
        problem = f"invalid JSON at column {err.colno}: {err.msg}{ends_early}"
        raise where.error(problem) from None
    if not isinstance(value, dict):
        raise where.error(f"expected a JSON object, got {_kind(value)}")
    return value


def _ends_early(err: json.JSONDecodeError, text: str) -> bool:
    """Whether the JSON stops before it is complete (a cut download, a partial write).
    An unterminated string can only run to the end: JSON strings cannot hold a raw newline."""
    return err.pos >= len(text.rstrip()) or err.msg.startswith("Unterminated string")


# ---------------------------------------------------------------------------------------------
# Field checks shared by the formats


def _kind(value: Any) -> str:
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


def _required_str(record: dict, key: str, where: _Where) -> str:
    if key not in record:
        raise where.error(f"missing required field {key!r}")
    value = record[key]
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"field {key!r} must be a non-empty string, got {_kind(value)}")
    return value


def _optional_str(record: dict, key: str, where: _Where) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise where.error(f"field {key!r} must be a string, got {_kind(value)}")
    return value


def _label(record: dict, key: str, take_id: str, where: _Where, required: bool) -> str | None:
    """The label in `key`: one of LABELS or None; never mapped to a default."""
    if key not in record:
        if required:
            problem = f"missing required field {key!r} (null for an unlabelled take)"
            raise where.error(f"take {take_id}: {problem}")
        return None
    value = record[key]
    if value is None:
        return None
    if not isinstance(value, str):
        problem = f"field {key!r} must be a label string or null, got {_kind(value)}"
        raise where.error(f"take {take_id}: {problem}")
    if value not in LABELS:
        raise where.error(
            f"take {take_id}: unknown label {value!r} in field {key!r}; allowed labels: "
            f"{', '.join(LABELS)} (or null for an unlabelled take)"
        )
    return value


def _split(record: dict, key: str, where: _Where, default: str) -> str:
    value = record.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or value not in SPLITS:
        raise where.error(f"field {key!r} must be 'train', 'val', 'test' or '', got {_kind(value)}")
    return value


def _path_value(value: Any, what: str, where: _Where, empty_is_missing: bool) -> str | None:
    """A path string, or None for a missing view."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise where.error(f"{what}: path must be a string or null, got {_kind(value)}")
    if not value.strip():
        if empty_is_missing:
            return None
        raise where.error(f"{what}: empty path (use null for a missing view)")
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _label_text(label: str | None) -> str:
    return "null" if label is None else repr(label)


def _split_from_name(manifest: str) -> str:
    match = _SPLIT_IN_NAME.search(PurePath(manifest).stem.lower())
    return match.group(1) if match else ""


# Path helpers work on str with os.path: pathlib costs ~10x more, which shows on 10k videos.


def _resolve(base: Path, value: str) -> str:
    """`value` made absolute against `base` (an absolute `value` is kept)."""
    return os.path.abspath(os.path.join(base, value))


def _prefer_downscaled(path: str) -> str:
    """The downscaled/448 copy of an EgoExo4D video when it exists, else `path` itself."""
    folder, name = os.path.split(path)
    if folder.endswith(f"{os.sep}downscaled{os.sep}448"):
        return path
    small = os.path.join(folder, "downscaled", "448", name)
    return small if os.path.isfile(small) else path


def _video_problem(path: str) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "not found"
    if stat.S_ISREG(mode):
        return ""
    return "is a directory, not a video file" if stat.S_ISDIR(mode) else "is not a regular file"


def _check_videos_exist(take: Take, where: _Where, downscaled_tried: bool = False) -> None:
    for view, video in take.videos.items():
        if video is None:
            continue
        problem = _video_problem(video)
        if problem:
            hint = (
                " (nor its downscaled/448 copy)"
                if downscaled_tried and "not found" in problem
                else ""
            )
            raise where.error(f"take {take.take_id} view {view}: video {problem}: {video}{hint}")


def _check_has_video(take_id: str, videos: dict[str, str | None], where: _Where) -> None:
    if all(video is None for video in videos.values()):
        raise where.error(f"take {take_id}: every view is missing; a take needs at least one video")


def _duplicate_error(first: tuple[_Where, Take], again: tuple[_Where, Take]) -> ManifestError:
    (a_where, a), (b_where, b) = first, again
    if a.label != b.label:
        return b_where.error(
            f"take {b.take_id} listed twice with conflicting labels: {a_where.place()} says "
            f"{_label_text(a.label)}, {b_where.place()} says {_label_text(b.label)}"
        )
    if not a_where.record and not b_where.record:
        return b_where.error(
            f"take {b.take_id} listed twice, lines {a_where.line} and {b_where.line}"
        )
    return b_where.error(f"take {b.take_id} listed twice, {a_where.place()} and {b_where.place()}")


# ---------------------------------------------------------------------------------------------
# Format "skill": the project's JSONL


def _parse_skill(manifest: str, text: str, base: Path) -> tuple[list[Take], list[str]]:
    takes: list[Take] = []
    seen: dict[str, tuple[_Where, Take]] = {}
    views: list[str] = []
    views_line = 0
    for where, record in _jsonl_records(manifest, text):
        take = _skill_take(record, base, where)
        if not views:
            views, views_line = list(take.videos), where.line or 0
        _check_same_views(take, views, views_line, where)
        if take.take_id in seen:
            raise _duplicate_error(seen[take.take_id], (where, take))
        _check_videos_exist(take, where)
        seen[take.take_id] = (where, take)
        takes.append(replace(take, videos={view: take.videos[view] for view in views}))
    return takes, views


def _skill_take(record: dict, base: Path, where: _Where) -> Take:
    take_id = _required_str(record, "take", where)
    return Take(
        take_id=take_id,
        videos=_skill_videos(record, base, take_id, where),
        label=_label(record, "label", take_id, where, required=True),
        scenario=_optional_str(record, "scenario", where),
        participant=_optional_str(record, "participant", where),
        split=_split(record, "split", where, default=""),
        extra=_skill_extra(record, where),
    )


def _skill_videos(record: dict, base: Path, take_id: str, where: _Where) -> dict[str, str | None]:
    if "videos" not in record:
        raise where.error("missing required field 'videos'")
    videos = record["videos"]
    if not isinstance(videos, dict):
        problem = f"field 'videos' must be an object mapping view name to path, got {_kind(videos)}"
        raise where.error(f"take {take_id}: {problem}")
    if not videos:
        raise where.error(f"take {take_id}: field 'videos' is empty; a take needs a view")
    resolved: dict[str, str | None] = {}
    for view, value in videos.items():
        if not view.strip():
            raise where.error(f"take {take_id}: a view name in 'videos' is empty")
        path = _path_value(value, f"take {take_id} view {view!r}", where, empty_is_missing=False)
        resolved[view] = None if path is None else _resolve(base, path)
    _check_has_video(take_id, resolved, where)
    return resolved


def _skill_extra(record: dict, where: _Where) -> dict[str, str]:
    """The "extra" object as text values. Unknown top-level fields are refused: in our own
    format they are typos ("scenaro") that would otherwise drop a field silently."""
    unknown = [key for key in record if key not in _SKILL_FIELDS]
    if unknown:
        raise where.error(
            f"unknown field(s) {', '.join(map(repr, unknown))}; known fields: "
            f"{', '.join(sorted(_SKILL_FIELDS))} (put custom fields under 'extra')"
        )
    given = record.get("extra")
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise where.error(f"field 'extra' must be an object, got {_kind(given)}")
    return {key: _as_text(value) for key, value in given.items()}


def _check_same_views(take: Take, views: list[str], views_line: int, where: _Where) -> None:
    missing = [view for view in views if view not in take.videos]
    added = [view for view in take.videos if view not in views]
    if missing or added:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"extra {', '.join(added)}"] if added else []
        )
        raise where.error(
            f"take {take.take_id}: view names differ from line {views_line} "
            f"({', '.join(views)}): {'; '.join(parts)}"
        )


def _skill_record(take: Take, base: Path) -> dict[str, Any]:
    record: dict[str, Any] = {
        "take": take.take_id,
        "videos": {view: _portable(video, base) for view, video in take.videos.items()},
        "label": take.label,
        "scenario": take.scenario,
        "participant": take.participant,
        "split": take.split,
    }
    if take.extra:
        record["extra"] = dict(take.extra)
    return record


def _portable(video: str | None, base: Path) -> str | None:
    """`video` relative to `base` when inside it (POSIX separators), else absolute."""
    if video is None:
        return None
    path = Path(os.path.abspath(video))
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def _check_writable(takes: list[Take]) -> None:
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
        if take.label is not None and take.label not in LABELS:
            raise ValueError(
                f"write_manifest: take {take.take_id} has unknown label {take.label!r}"
            )
        if all(video is None for video in take.videos.values()):
            raise ValueError(f"write_manifest: take {take.take_id} has no video")
        seen.add(take.take_id)


# ---------------------------------------------------------------------------------------------
# Format "egoexo4d": the official proficiency_demonstrator_*.json


def _parse_egoexo4d(manifest: str, text: str, root: Path) -> tuple[list[Take], list[str]]:
    records = _annotation_records(manifest, _json_document(manifest, text))
    lines = _annotation_lines(text)
    default_split = _split_from_name(manifest)
    takes: list[Take] = []
    seen: dict[str, tuple[_Where, Take]] = {}
    for index, (name, record) in enumerate(records):
        where = _Where(manifest, lines[index] if index < len(lines) else None, name)
        take = _egoexo_take(record, root, default_split, where)
        if take.take_id in seen:
            raise _duplicate_error(seen[take.take_id], (where, take))
        _check_videos_exist(take, where, downscaled_tried=True)
        seen[take.take_id] = (where, take)
        takes.append(take)
    return takes, list(EGOEXO_VIEWS)


def _json_document(manifest: str, text: str) -> dict:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        ends_early = " (the file ends early: truncated?)" if _ends_early(err, text) else ""
        problem = f"invalid JSON at column {err.colno}: {err.msg}{ends_early}"
        raise ManifestError(manifest, err.lineno, problem) from None
    if not isinstance(document, dict):
        problem = f"expected a JSON object with an 'annotations' list, got {_kind(document)}"
        raise ManifestError(manifest, None, problem)
    return document


def _annotation_records(manifest: str, document: dict) -> list[tuple[str, Any]]:
    """(name for messages, record) for each annotation: "annotations[3]" or annotations["uid"]."""
    if "annotations" not in document:
        raise ManifestError(manifest, None, "missing required field 'annotations'")
    annotations = document["annotations"]
    if isinstance(annotations, list):
        records = [(f"annotations[{i}]", record) for i, record in enumerate(annotations)]
    elif isinstance(annotations, dict):  # some releases key the records by take_uid
        records = [
            (f"annotations[{json.dumps(uid)}]", _with_take_uid(record, uid))
            for uid, record in annotations.items()
        ]
    else:
        problem = f"field 'annotations' must be a list of records, got {_kind(annotations)}"
        raise ManifestError(manifest, None, problem)
    if not records:
        raise ManifestError(manifest, None, "field 'annotations' is empty: no takes")
    return records


def _with_take_uid(record: Any, uid: str) -> Any:
    if isinstance(record, dict) and "take_uid" not in record:
        return {**record, "take_uid": uid}
    return record


def _annotation_lines(text: str) -> list[int]:
    """Best effort: the 1-based line where each record of the top-level "annotations" starts.

    The document already parsed, so a failure here only means "no line numbers" ([]).
    """
    decoder = json.JSONDecoder()
    newlines = [match.start() for match in re.finditer("\n", text)]
    try:
        start = _annotations_value_start(text, decoder)
        if start is None:
            return []
        return [
            bisect.bisect_left(newlines, offset) + 1
            for offset in _element_starts(text, start, decoder)
        ]
    except (ValueError, IndexError):
        return []


def _skip_blank(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _annotations_value_start(text: str, decoder: json.JSONDecoder) -> int | None:
    index = _skip_blank(text, 0)
    if text[index] != "{":
        return None
    index = _skip_blank(text, index + 1)
    while text[index] != "}":
        key, index = decoder.raw_decode(text, index)
        index = _skip_blank(text, _skip_blank(text, index) + 1)  # past the ':'
        if key == "annotations":
            return index
        _, index = decoder.raw_decode(text, index)
        index = _skip_blank(text, index)
        if text[index] == ",":
            index = _skip_blank(text, index + 1)
    return None


def _element_starts(text: str, index: int, decoder: json.JSONDecoder) -> list[int]:
    """Offsets of the elements of the list (or the keys of the object) starting at `index`."""
    is_object, starts = text[index] == "{", []
    index = _skip_blank(text, index + 1)
    while text[index] not in "]}":
        starts.append(index)
        _, index = decoder.raw_decode(text, index)
        if is_object:  # skip the ':' and the value after the key
            index = _skip_blank(text, _skip_blank(text, index) + 1)
            _, index = decoder.raw_decode(text, index)
        index = _skip_blank(text, index)
        if text[index] == ",":
            index = _skip_blank(text, index + 1)
    return starts


def _egoexo_take(record: Any, root: Path, default_split: str, where: _Where) -> Take:
    if not isinstance(record, dict):
        raise where.error(f"expected an annotation object, got {_kind(record)}")
    take_name = _optional_str(record, "take_name", where)
    view_paths, unused = _egoexo_view_paths(record, root, take_name, where)
    take_id = _take_id_from_names(take_name, view_paths, where)
    videos = _resolved_egoexo_videos(view_paths, root)
    _check_has_video(take_id, videos, where)
    extra = {
        key: _as_text(value)
        for key, value in record.items()
        if key not in _EGOEXO_CONSUMED and isinstance(value, (str, int, float, bool))
    }
    if unused:
        extra["unused_cameras"] = ",".join(unused)
    return Take(
        take_id=take_id,
        videos=videos,
        label=_label(record, "proficiency_score", take_id, where, required=False),
        scenario=_optional_str(record, "scenario_name", where),
        participant=_egoexo_participant(record, where),
        split=_split(record, "split", where, default_split),
        extra=extra,
    )


def _resolved_egoexo_videos(view_paths: dict[str, str | None], root: Path) -> dict[str, str | None]:
    return {
        view: None if path is None else _prefer_downscaled(_resolve(root, path))
        for view, path in view_paths.items()
    }


def _egoexo_view_paths(
    record: dict, root: Path, take_name: str, where: _Where
) -> tuple[dict[str, str | None], list[str]]:
    """(view -> path as written or None, cameras left out) for one annotation record."""
    if record.get("video_paths") is None:
        if not take_name:
            raise where.error("no 'video_paths' and no 'take_name': cannot find the take's videos")
        return _views_from_cameras(_discover_cameras(root, take_name, where), where)
    entries = _path_entries(record["video_paths"], where)
    named_views = [key for key in entries if key in EGOEXO_VIEWS]
    if len(named_views) == len(entries):
        return {view: entries.get(view) for view in EGOEXO_VIEWS}, []
    if named_views:
        others = [key for key in entries if key not in EGOEXO_VIEWS]
        raise where.error(
            f"'video_paths' mixes view names ({', '.join(named_views)}) with other keys "
            f"({', '.join(others)}); use ego, exo1..exo4 or camera names only"
        )
    return _views_from_cameras(entries, where)


def _path_entries(value: Any, where: _Where) -> dict[str, str | None]:
    """'video_paths' as name -> path: an object as is, a list keyed by each file's stem."""
    if isinstance(value, dict):
        return {
            key: _path_value(path, f"video_paths[{key!r}]", where, empty_is_missing=True)
            for key, path in value.items()
        }
    if not isinstance(value, list):
        problem = f"field 'video_paths' must be an object mapping view to path, got {_kind(value)}"
        raise where.error(problem)
    entries: dict[str, str | None] = {}
    for index, item in enumerate(value):
        path = _path_value(item, f"video_paths[{index}]", where, empty_is_missing=True)
        if path is not None:
            entries[PurePath(path).stem] = path
    return entries


def _exo_order(camera: str) -> tuple[int, int]:
    match = _EXO_CAMERA.fullmatch(camera)
    assert match is not None
    return (0 if match.group(1).lower() == "cam" else 1, int(match.group(2)))


def _is_camera(name: str) -> bool:
    return bool(
        _ARIA_RGB.fullmatch(name) or _ARIA_ANY.fullmatch(name) or _EXO_CAMERA.fullmatch(name)
    )


def _views_from_cameras(
    cameras: dict[str, str | None], where: _Where
) -> tuple[dict[str, str | None], list[str]]:
    """Map camera names to views with the rule in the module docstring."""
    names = [name for name, path in cameras.items() if path is not None]
    unknown = [name for name in names if not _is_camera(name)]
    if unknown:
        raise where.error(
            f"unknown camera name(s) in 'video_paths': {', '.join(unknown)}; expected view names "
            "(ego, exo1..exo4) or camera names (aria<N>_214-1, cam<N>, gp<N>)"
        )
    ego = sorted(name for name in names if _ARIA_RGB.fullmatch(name))
    exo = sorted((name for name in names if _EXO_CAMERA.fullmatch(name)), key=_exo_order)
    views: dict[str, str | None] = dict.fromkeys(EGOEXO_VIEWS)
    if ego:
        views["ego"] = cameras[ego[0]]
    for view, camera in zip(EGOEXO_VIEWS[1:], exo, strict=False):
        views[view] = cameras[camera]
    other_aria = [name for name in names if _ARIA_ANY.fullmatch(name) and name not in ego]
    return views, ego[1:] + exo[len(EGOEXO_VIEWS) - 1 :] + other_aria


def _discover_cameras(root: Path, take_name: str, where: _Where) -> dict[str, str | None]:
    """Camera videos of a take found on disk, as paths relative to `root` (original location;
    the downscaled copy is preferred later)."""
    folder = PurePath("takes", take_name, "frame_aligned_videos")
    found: dict[str, str | None] = {}
    for sub in (folder / "downscaled" / "448", folder):
        for video in sorted((root / sub).glob("*.mp4")):
            if video.is_file() and _is_camera(video.stem):
                found.setdefault(video.stem, (folder / video.name).as_posix())
    if not found:
        raise where.error(
            f"take {take_name}: no 'video_paths' field and no camera videos "
            f"(aria*, cam*, gp*) in {root / folder}"
        )
    return found


def _take_folder(path: str) -> str | None:
    """The <name> of the last takes/<name>/ folder in `path` (never the file name itself)."""
    parts = os.path.normpath(path).split(os.sep)
    for index in range(len(parts) - 3, -1, -1):
        if parts[index] == "takes":
            return parts[index + 1]
    return None


def _take_names_in_paths(view_paths: dict[str, str | None], where: _Where) -> str | None:
    names = {_take_folder(path) for path in view_paths.values() if path is not None} - {None}
    if len(names) > 1:
        raise where.error(f"video paths point into different takes: {', '.join(sorted(names))}")
    return names.pop() if names else None


def _take_id_from_names(take_name: str, view_paths: dict[str, str | None], where: _Where) -> str:
    from_paths = _take_names_in_paths(view_paths, where)
    if take_name and from_paths and take_name != from_paths:
        raise where.error(
            f"take_name is {take_name!r} but the video paths are in takes/{from_paths}/"
        )
    if take_name or from_paths:
        return take_name or str(from_paths)
    raise where.error(
        "no 'take_name' field and no video path of the form takes/<take_name>/...: "
        "cannot name the take"
    )


def _egoexo_participant(record: dict, where: _Where) -> str:
    """university_id and origin_participant_id joined by ':' (an id is unique per university)."""
    keys = ("university_id", "origin_participant_id")
    if not any(key in record for key in keys):
        keys = ("participant_uid", "participant")
    parts = []
    for key in keys:
        value = record.get(key)
        if value is None or value == "":
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise where.error(f"field {key!r} must be a string or an integer, got {_kind(value)}")
        parts.append(str(value))
    return ":".join(parts)


# ---------------------------------------------------------------------------------------------
# Format "skillformer": SkillFormer's JSONL, one line per commentary


def _parse_skillformer(manifest: str, text: str, root: Path) -> tuple[list[Take], list[str]]:
    default_split = _split_from_name(manifest)
    merged: dict[str, tuple[_Where, Take]] = {}
    lines: dict[str, list[int]] = {}
    resolved: dict[tuple[str | None, ...], dict[str, str | None]] = {}  # repeats skip the stats
    for where, record in _jsonl_records(manifest, text):
        take = _skillformer_take(record, root, default_split, where, resolved)
        if take.take_id in merged:
            _check_same_take(merged[take.take_id], (where, take))
        else:
            _check_videos_exist(take, where, downscaled_tried=True)
            merged[take.take_id] = (where, take)
        lines.setdefault(take.take_id, []).append(where.line or 0)
    takes = [
        replace(take, extra={**take.extra, "lines": ",".join(map(str, lines[take.take_id]))})
        for _, take in merged.values()
    ]
    return takes, list(EGOEXO_VIEWS)


def _skillformer_take(
    record: dict,
    root: Path,
    default_split: str,
    where: _Where,
    resolved: dict[tuple[str | None, ...], dict[str, str | None]],
) -> Take:
    """One line as a Take; `resolved` caches the videos of paths already seen on a line."""
    view_paths = _skillformer_paths(record, where)
    take_id = _take_names_in_paths(view_paths, where) or _take_folder_fallback(
        view_paths, root, where
    )
    _optional_str(record, "analysis", where)  # type check only: commentary is not used here
    key = tuple(view_paths.values())
    if key not in resolved:
        resolved[key] = _resolved_egoexo_videos(view_paths, root)
    return Take(
        take_id=take_id,
        videos=dict(resolved[key]),
        label=_label(record, "proficiency_level", take_id, where, required=True),
        scenario=_optional_str(record, "scenario", where),
        participant=_optional_str(record, "participant", where),
        split=_split(record, "split", where, default_split),
    )


def _skillformer_paths(record: dict, where: _Where) -> dict[str, str | None]:
    if "video_paths" not in record:
        raise where.error("missing required field 'video_paths'")
    paths = record["video_paths"]
    if not isinstance(paths, list):
        problem = f"field 'video_paths' must be a list [ego, exo1..exo4], got {_kind(paths)}"
        raise where.error(problem)
    if not 1 <= len(paths) <= len(EGOEXO_VIEWS):
        raise where.error(
            f"field 'video_paths' has {len(paths)} entries; expected 1 to 5 ([ego, exo1..exo4])"
        )
    view_paths: dict[str, str | None] = dict.fromkeys(EGOEXO_VIEWS)
    for index, (view, value) in enumerate(zip(EGOEXO_VIEWS, paths, strict=False)):
        what = f"video_paths[{index}] ({view})"
        view_paths[view] = _path_value(value, what, where, empty_is_missing=True)
    if all(path is None for path in view_paths.values()):
        raise where.error("field 'video_paths' has no path; a take needs at least one video")
    return view_paths


def _take_folder_fallback(view_paths: dict[str, str | None], root: Path, where: _Where) -> str:
    """The take id when no path has takes/<name>/: the first video's folder, skipping layout
    folders (frame_aligned_videos, downscaled, 448)."""
    first = next(path for path in view_paths.values() if path is not None)
    for folder in Path(_resolve(root, first)).parents:
        if folder.name and folder.name not in _LAYOUT_FOLDERS and not folder.name.isdigit():
            return folder.name
    raise where.error(f"cannot name the take of {first}: no folder above it")


def _check_same_take(first: tuple[_Where, Take], again: tuple[_Where, Take]) -> None:
    """Repeated lines of one take (one per commentary) must agree on everything but the text."""
    (a_where, a), (b_where, b) = first, again
    if a.label != b.label:
        raise _duplicate_error(first, again)
    for view in EGOEXO_VIEWS:
        if a.videos[view] != b.videos[view]:
            raise b_where.error(
                f"take {b.take_id} repeated with other videos: view {view} is "
                f"{b.videos[view] or 'missing'} here but {a.videos[view] or 'missing'} "
                f"on {a_where.place()}"
            )
    for field in ("scenario", "participant", "split"):
        if getattr(a, field) != getattr(b, field):
            raise b_where.error(
                f"take {b.take_id} repeated with another {field}: {getattr(b, field)!r} here, "
                f"{getattr(a, field)!r} on {a_where.place()}"
            )
