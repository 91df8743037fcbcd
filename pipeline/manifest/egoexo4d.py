"""Format ``egoexo4d``: the official ``proficiency_demonstrator_*.json``.

``{"annotations": [record, ...]}`` (an object keyed by take_uid is accepted too); paths are
relative to the dataset root. Views, camera names, take names and the root follow the
EgoExo4D rules (`egoexo_layout`, docs/manifests.md; shared with ``skillformer``). Written
files are indented JSON, one field per line, readable by the official tools' loaders.
"""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path, PurePath
from typing import Any

from skill.pipeline.manifest.common import (
    DuplicateKeyError,
    MissingVideo,
    Where,
    as_text,
    check_has_video,
    check_names,
    check_take_name,
    duplicate_error,
    ends_early,
    find_missing_videos,
    kind,
    line_of,
    loads_unique,
    optional_str,
    path_value,
    read_label,
    read_split,
    skip_blank,
    split_from_name,
)
from skill.pipeline.manifest.egoexo_layout import (
    EGOEXO_VIEWS,
    is_camera,
    resolved_videos,
    take_names_in_paths,
    views_from_cameras,
    writable_paths,
)
from skill.pipeline.manifest.format import ManifestFormat, Parsed, Sample
from skill.pipeline.manifest.registry import register_format
from skill.pipeline.takes import ManifestError, Take
from skill.tasks.classification import EGOEXO4D_LEVELS

_EGOEXO_CONSUMED = frozenset(
    {"take_name", "take_uid", "video_paths", "scenario_name", "proficiency_score", "split"}
)

_PARTICIPANT_FIELDS = ("university_id", "origin_participant_id", "participant_uid", "participant")


def _parse_egoexo4d(manifest: str, text: str, root: Path) -> Parsed:
    records = _annotation_records(manifest, _json_document(manifest, text))
    lines = _annotation_lines(text)
    default_split = split_from_name(manifest)
    takes: list[Take] = []
    missing: list[MissingVideo] = []
    seen: dict[str, tuple[Where, Take]] = {}
    for index, (name, record) in enumerate(records):
        where = Where(manifest, lines[index] if index < len(lines) else None, name)
        take = _egoexo_take(record, root, default_split, where)
        check_names(take, where)
        if take.take_id in seen:
            raise duplicate_error(seen[take.take_id], (where, take))
        missing += find_missing_videos(take, where, downscaled_tried=True)
        seen[take.take_id] = (where, take)
        takes.append(take)
    return takes, list(EGOEXO_VIEWS), missing


def _json_document(manifest: str, text: str) -> dict:
    try:
        document = loads_unique(text)
    except json.JSONDecodeError as err:
        hint = " (the file ends early: truncated?)" if ends_early(err, text) else ""
        problem = f"invalid JSON at column {err.colno}: {err.msg}{hint}"
        raise ManifestError(manifest, err.lineno, problem) from None
    except DuplicateKeyError as err:
        if err.offset is None:
            raise ManifestError(manifest, None, err.problem()) from None
        where = Where(manifest, line_of(text, err.offset), _record_at(text, err.offset))
        raise where.error(err.problem()) from None
    if not isinstance(document, dict):
        problem = f"expected a JSON object with an 'annotations' list, got {kind(document)}"
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
        problem = f"field 'annotations' must be a list of records, got {kind(annotations)}"
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


def _record_at(text: str, offset: int) -> str:
    """The name of the annotation record that holds `offset` ("annotations[3]" or
    annotations["uid"]), or "" when it is outside every record."""
    decoder = json.JSONDecoder()
    try:
        start = _annotations_value_start(text, decoder)
        if start is None or not start <= offset < decoder.raw_decode(text, start)[1]:
            return ""
        starts = _element_starts(text, start, decoder)
    except (ValueError, IndexError):
        return ""
    index = bisect.bisect_right(starts, offset) - 1
    if index < 0:
        return ""
    if text[start] == "{":
        return f"annotations[{json.dumps(decoder.raw_decode(text, starts[index])[0])}]"
    return f"annotations[{index}]"


def _annotations_value_start(text: str, decoder: json.JSONDecoder) -> int | None:
    index = skip_blank(text, 0)
    if text[index] != "{":
        return None
    index = skip_blank(text, index + 1)
    while text[index] != "}":
        key, index = decoder.raw_decode(text, index)
        index = skip_blank(text, skip_blank(text, index) + 1)  # past the ':'
        if key == "annotations":
            return index
        _, index = decoder.raw_decode(text, index)
        index = skip_blank(text, index)
        if text[index] == ",":
            index = skip_blank(text, index + 1)
    return None


def _element_starts(text: str, index: int, decoder: json.JSONDecoder) -> list[int]:
    """Offsets of the elements of the list (or the keys of the object) starting at `index`."""
    is_object, starts = text[index] == "{", []
    index = skip_blank(text, index + 1)
    while text[index] not in "]}":
        starts.append(index)
        _, index = decoder.raw_decode(text, index)
        if is_object:  # skip the ':' and the value after the key
            index = skip_blank(text, skip_blank(text, index) + 1)
            _, index = decoder.raw_decode(text, index)
        index = skip_blank(text, index)
        if text[index] == ",":
            index = skip_blank(text, index + 1)
    return starts


def _egoexo_take(record: Any, root: Path, default_split: str, where: Where) -> Take:
    if not isinstance(record, dict):
        raise where.error(f"expected an annotation object, got {kind(record)}")
    take_name = optional_str(record, "take_name", where)
    if take_name:  # checked before it names a folder to list
        check_take_name(take_name, where)
    view_paths, unused = _egoexo_view_paths(record, root, take_name, where)
    take_id = _take_id_from_names(take_name, view_paths, where)
    videos = resolved_videos(view_paths, root)
    check_has_video(take_id, videos, where)
    extra = {
        key: as_text(value)
        for key, value in record.items()
        if key not in _EGOEXO_CONSUMED and isinstance(value, (str, int, float, bool))
    }
    if unused:
        extra["unused_cameras"] = ",".join(unused)
    return Take(
        take_id=take_id,
        videos=videos,
        label=read_label(record, "proficiency_score", take_id, where, required=False),
        source=(where.line, where.record),
        scenario=optional_str(record, "scenario_name", where),
        participant=_egoexo_participant(record, where),
        split=read_split(record, "split", where, default_split),
        uid=optional_str(record, "take_uid", where),
        extra=extra,
    )


def _egoexo_view_paths(
    record: dict, root: Path, take_name: str, where: Where
) -> tuple[dict[str, str | None], list[str]]:
    """(view -> path as written or None, cameras left out) for one annotation record."""
    if record.get("video_paths") is None:
        if not take_name:
            raise where.error("no 'video_paths' and no 'take_name': cannot find the take's videos")
        return views_from_cameras(_discover_cameras(root, take_name, where), where)
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
    return views_from_cameras(entries, where)


def _path_entries(value: Any, where: Where) -> dict[str, str | None]:
    """'video_paths' as name -> path: an object as is, a list keyed by each file's stem."""
    if isinstance(value, dict):
        return {
            key: path_value(path, f"video_paths[{key!r}]", where, empty_is_missing=True)
            for key, path in value.items()
        }
    if not isinstance(value, list):
        problem = f"field 'video_paths' must be an object mapping view to path, got {kind(value)}"
        raise where.error(problem)
    entries: dict[str, str | None] = {}
    for index, item in enumerate(value):
        path = path_value(item, f"video_paths[{index}]", where, empty_is_missing=True)
        if path is not None:
            entries[PurePath(path).stem] = path
    return entries


def _discover_cameras(root: Path, take_name: str, where: Where) -> dict[str, str | None]:
    """Camera videos of a take found on disk, as paths relative to `root` (original location;
    the downscaled copy is preferred later)."""
    folder = PurePath("takes", take_name, "frame_aligned_videos")
    found: dict[str, str | None] = {}
    for sub in (folder / "downscaled" / "448", folder):
        for video in sorted((root / sub).glob("*.mp4")):
            if video.is_file() and is_camera(video.stem):
                found.setdefault(video.stem, (folder / video.name).as_posix())
    if not found:
        raise where.error(
            f"take {take_name}: no 'video_paths' field and no camera videos "
            f"(aria*, cam*, gp*) in {root / folder}"
        )
    return found


def _take_id_from_names(take_name: str, view_paths: dict[str, str | None], where: Where) -> str:
    from_paths = take_names_in_paths(view_paths, where)
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


def _egoexo_participant(record: dict, where: Where) -> str:
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
            raise where.error(f"field {key!r} must be a string or an integer, got {kind(value)}")
        parts.append(str(value))
    return ":".join(parts)


# ---------------------------------------------------------------------------------------------
# Writing


def _write_egoexo4d(takes: list[Take], base: Path, declared: dict | None = None) -> str:
    records = [_egoexo_record(take, base) for take in takes]
    return json.dumps({"annotations": records}, indent=2, ensure_ascii=False) + "\n"


def _egoexo_record(take: Take, base: Path) -> dict[str, Any]:
    """One annotation; `Take.extra` fields follow as top-level text fields (as read), except
    those that would change the participant or a read field."""
    record: dict[str, Any] = {
        "take_name": take.take_id,
        "scenario_name": take.scenario,
        "proficiency_score": take.label,
        "split": take.split,
        **({"take_uid": take.uid} if take.uid else {}),
        "video_paths": writable_paths(take, base, "egoexo4d"),
    }
    if take.participant:
        record["participant"] = take.participant
    taken = _EGOEXO_CONSUMED | set(_PARTICIPANT_FIELDS)
    record.update({key: value for key, value in take.extra.items() if key not in taken})
    return record


def _is_egoexo4d(sample: Sample) -> bool:
    if sample.first is None:  # a pretty-printed document; its reader reports a JSON error
        return '"annotations"' in sample.text
    return "annotations" in sample.first


register_format(
    ManifestFormat(
        name="egoexo4d",
        marker="'annotations'",
        detect=_is_egoexo4d,
        read=_parse_egoexo4d,
        write=_write_egoexo4d,
        precedence=2,
        root_beside_takes=True,
        schema={"labels": list(EGOEXO4D_LEVELS), "ordered": True},
    )
)
