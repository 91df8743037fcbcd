"""Format ``egoexo4d-demonstration``: the official ``proficiency_demonstration_*.json``.

``{"annotations": [record, ...]}`` as the demonstrator files (an object keyed by take_uid is
accepted too); each record names its take and views as the ``egoexo4d`` format reads them
(`egoexo4d._egoexo_take`: views, cameras, take names, missing views, the split from the file
name) and lists its marked moments by category: ``good_executions`` and
``tips_for_improvement``, lists of ``{"video_time": seconds, "expert_uid", "list",
"video_name"}``. They become `Take.events` (`Event`: time, category, expert), good executions
first, each category in file order: the order of the official evaluation's ground truth.

``takes.json`` (EgoExo4D's metadata), looked for in the root, beside the manifest and in the
manifest folder's parent, gives each take_uid its ``duration_sec`` (an event after it is
refused; it is kept in ``Take.extra["duration_sec"]``) and, for a record without
``video_paths``, its cameras (``frame_aligned_videos``, under its ``root_dir``). Without it
durations are unknown and only negative times are refused. The layout is in
docs/demonstration.md; the format is read, never written.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from skill.pipeline.manifest.common import (
    MissingVideo,
    Where,
    check_names,
    duplicate_error,
    find_missing_videos,
    is_number,
    kind,
    split_from_name,
)
from skill.pipeline.manifest.egoexo4d import (
    _annotation_lines,
    _annotation_records,
    _egoexo_take,
    _json_document,
)
from skill.pipeline.manifest.egoexo_layout import ARIA_RGB, EGOEXO_VIEWS, is_camera
from skill.pipeline.manifest.format import ManifestFormat, Parsed, Sample
from skill.pipeline.manifest.registry import register_format
from skill.pipeline.takes import Event, ManifestError, Take
from skill.tasks.demonstration_metrics import CATEGORIES, Events

TAKES_JSON = "takes.json"
ARIA_RGB_STREAM = "rgb"  # the Aria stream that is the ego view (214-1); exo cameras have "0"


def _parse_demonstration(manifest: str, text: str, root: Path) -> Parsed:
    records = _annotation_records(manifest, _json_document(manifest, text))
    lines = _annotation_lines(text)
    metadata = read_takes_json(find_takes_json(manifest, root))
    default_split = split_from_name(manifest)
    takes: list[Take] = []
    missing: list[MissingVideo] = []
    seen: dict[str, tuple[Where, Take]] = {}
    for index, (name, record) in enumerate(records):
        where = Where(manifest, lines[index] if index < len(lines) else None, name)
        take = _demonstration_take(record, root, default_split, metadata, where)
        check_names(take, where)
        if take.take_id in seen:
            raise duplicate_error(seen[take.take_id], (where, take))
        missing += find_missing_videos(take, where, downscaled_tried=True)
        seen[take.take_id] = (where, take)
        takes.append(take)
    return Parsed(takes, list(EGOEXO_VIEWS), missing)


def _demonstration_take(
    record: Any, root: Path, default_split: str, metadata: dict[str, dict], where: Where
) -> Take:
    """One annotation record as a take with its events (checked against its duration)."""
    if not isinstance(record, dict):
        raise where.error(f"expected an annotation object, got {kind(record)}")
    known = (
        metadata.get(record.get("take_uid")) if isinstance(record.get("take_uid"), str) else None
    )
    if known is not None and record.get("video_paths") is None and known["cameras"]:
        record = {**record, "video_paths": known["cameras"]}
    take = _egoexo_take(record, root, default_split, where)
    duration = known["duration"] if known is not None else None
    events = read_events(record, take.take_id, duration, where)
    extra = dict(take.extra)
    if duration is not None:
        extra["duration_sec"] = repr(duration)
    return replace(take, events=events, extra=extra)


def read_events(
    record: dict, take_id: str, duration: float | None, where: Where
) -> tuple[Event, ...]:
    """The record's events, category by category in `CATEGORIES` order, each in file order.

    Refused, naming the take: a category that is not a list, an item without a finite
    ``video_time``, a time below 0 or above `duration` (when known), and a field holding
    timed items under a name that is not a category (an unknown category).
    """
    for key, value in record.items():
        if key not in CATEGORIES and _holds_timed_items(value):
            raise where.error(
                f"take {take_id}: unknown category {key!r}; the categories are "
                f"{', '.join(CATEGORIES)}"
            )
    events: list[Event] = []
    for category in CATEGORIES:
        items = record.get(category)
        if items is None:
            continue
        if not isinstance(items, list):
            raise where.error(
                f"take {take_id}: field {category!r} must be a list of moments, got {kind(items)}"
            )
        for index, item in enumerate(items):
            events.append(_event(item, category, index, take_id, duration, where))
    return tuple(events)


def _holds_timed_items(value: Any) -> bool:
    return isinstance(value, list) and any(
        isinstance(item, dict) and "video_time" in item for item in value
    )


def _event(
    item: Any, category: str, index: int, take_id: str, duration: float | None, where: Where
) -> Event:
    what = f"take {take_id}: {category}[{index}]"
    if not isinstance(item, dict):
        raise where.error(f"{what} must be an object with 'video_time', got {kind(item)}")
    time = item.get("video_time")
    if not is_number(time):
        raise where.error(f"{what}: 'video_time' must be a number of seconds, got {kind(time)}")
    if time < 0 or (duration is not None and time > duration):
        span = f"0 to {duration:g} s ({TAKES_JSON})" if duration is not None else "from 0 s"
        raise where.error(f"{what} at {time:g} s is outside the take's duration ({span})")
    expert = item.get("expert_uid")
    if expert is not None and (isinstance(expert, bool) or not isinstance(expert, (str, int))):
        raise where.error(
            f"{what}: 'expert_uid' must be a string or an integer, got {kind(expert)}"
        )
    return Event(time=float(time), category=category, expert="" if expert is None else str(expert))


# ---------------------------------------------------------------------------------------------
# takes.json


def find_takes_json(manifest: str, root: Path) -> Path | None:
    """EgoExo4D's ``takes.json``: in the root, beside the manifest or in the manifest folder's
    parent (the first found), else None."""
    folder = Path(manifest).resolve().parent
    for candidate in (root / TAKES_JSON, folder / TAKES_JSON, folder.parent / TAKES_JSON):
        if candidate.is_file():
            return candidate
    return None


def read_takes_json(path: Path | None) -> dict[str, dict]:
    """take_uid -> {"duration": seconds or None, "cameras": camera name -> path relative to
    the root} from ``takes.json`` ({} for None); ManifestError naming the file when it is not
    a list of take objects."""
    if path is None:
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(str(path), None, f"cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise ManifestError(str(path), err.lineno, f"invalid JSON: {err.msg}") from None
    if not isinstance(document, list):
        raise ManifestError(str(path), None, f"expected a list of takes, got {kind(document)}")
    found: dict[str, dict] = {}
    for index, take in enumerate(document):
        if not isinstance(take, dict) or not isinstance(take.get("take_uid"), str):
            raise ManifestError(str(path), None, f"take [{index}] has no string 'take_uid'")
        duration = take.get("duration_sec")
        if duration is not None and not (is_number(duration) and duration > 0):
            problem = f"take {take['take_uid']}: 'duration_sec' must be a positive number"
            raise ManifestError(str(path), None, problem)
        found[take["take_uid"]] = {"duration": duration, "cameras": _take_cameras(take)}
    return found


def _take_cameras(take: dict) -> dict[str, str]:
    """camera name -> ``<root_dir>/<relative_path>`` of the take's frame-aligned videos: the
    Aria RGB stream and each exo camera's stream; other streams and collages are left out."""
    root_dir = take.get("root_dir")
    videos = take.get("frame_aligned_videos")
    if not isinstance(root_dir, str) or not isinstance(videos, dict):
        return {}
    cameras: dict[str, str] = {}
    for camera, streams in videos.items():
        if not isinstance(streams, dict) or not is_camera(camera):
            continue
        stream = streams.get(ARIA_RGB_STREAM if ARIA_RGB.fullmatch(camera) else "0")
        relative = stream.get("relative_path") if isinstance(stream, dict) else None
        if isinstance(relative, str) and relative:
            cameras[camera] = f"{root_dir.rstrip('/')}/{relative}"
    return cameras


# ---------------------------------------------------------------------------------------------
# For the task and the metric


def ground_truth_events(takes: list[Take]) -> Events:
    """The takes' events as the metric's flat table (`Events`, N rows over all takes): take
    names (the official evaluation's video ids), times in seconds, label ids (`CATEGORIES`
    index), scores of one."""
    rows = [(take.take_id, event) for take in takes for event in take.events]
    return Events.of(
        [take_id for take_id, _ in rows],
        [event.time for _, event in rows],
        [CATEGORIES.index(event.category) for _, event in rows],
    )


def take_durations(takes: list[Take]) -> dict[str, float]:
    """take name -> duration in seconds, for the takes whose duration takes.json gave."""
    return {
        take.take_id: float(take.extra["duration_sec"])
        for take in takes
        if math.isfinite(float(take.extra.get("duration_sec", "nan")))
    }


def _is_demonstration(sample: Sample) -> bool:
    if sample.first is not None and "annotations" not in sample.first:
        return False
    if sample.first is None and '"annotations"' not in sample.text:
        return False
    return any(f'"{category}"' in sample.text for category in CATEGORIES)


register_format(
    ManifestFormat(
        name="egoexo4d-demonstration",
        marker="'good_executions'",
        detect=_is_demonstration,
        read=_parse_demonstration,
        write=None,
        precedence=3,
        root_beside_takes=True,
        targets=("label", "events"),
    )
)
