"""Format ``skill``: the project's JSON Lines, one take per line::

    {"take": "t001", "videos": {"ego": "t001/ego.mp4", "exo1": null}, "label": "Novice",
     "scenario": "Dance", "participant": "p07", "split": "train", "extra": {"k": "v"}}

``take``, ``videos`` and ``label`` (a label or null) are required; ``scenario``,
``participant``, ``split`` (train, val, test or "") and ``extra`` are optional. Every line
names the same views. Paths are relative to ``root``, else to the manifest's folder.
Custom fields go under ``extra`` (kept, as text, in `Take.extra`); other unknown fields are
refused as typos.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from skill.pipeline.manifest.common import (
    MissingVideo,
    Where,
    as_text,
    check_has_video,
    check_names,
    duplicate_error,
    find_missing_videos,
    jsonl_records,
    kind,
    optional_str,
    path_value,
    portable,
    read_label,
    read_split,
    required_str,
    resolve,
)
from skill.pipeline.manifest.format import ManifestFormat, Parsed, Sample
from skill.pipeline.manifest.registry import register_format
from skill.pipeline.takes import Take

_SKILL_FIELDS = frozenset({"take", "videos", "label", "scenario", "participant", "split", "extra"})


def _parse_skill(manifest: str, text: str, base: Path) -> Parsed:
    takes: list[Take] = []
    missing: list[MissingVideo] = []
    seen: dict[str, tuple[Where, Take]] = {}
    views: list[str] = []
    views_line = 0
    for where, record in jsonl_records(manifest, text):
        take = _skill_take(record, base, where)
        check_names(take, where)
        if not views:
            views, views_line = list(take.videos), where.line or 0
        _check_same_views(take, views, views_line, where)
        if take.take_id in seen:
            raise duplicate_error(seen[take.take_id], (where, take))
        missing += find_missing_videos(take, where)
        seen[take.take_id] = (where, take)
        takes.append(replace(take, videos={view: take.videos[view] for view in views}))
    return takes, views, missing


def _skill_take(record: dict, base: Path, where: Where) -> Take:
    take_id = required_str(record, "take", where)
    return Take(
        take_id=take_id,
        videos=_skill_videos(record, base, take_id, where),
        label=read_label(record, "label", take_id, where, required=True),
        source=(where.line, where.record),
        scenario=optional_str(record, "scenario", where),
        participant=optional_str(record, "participant", where),
        split=read_split(record, "split", where, default=""),
        extra=_skill_extra(record, where),
    )


def _skill_videos(record: dict, base: Path, take_id: str, where: Where) -> dict[str, str | None]:
    if "videos" not in record:
        raise where.error("missing required field 'videos'")
    videos = record["videos"]
    if not isinstance(videos, dict):
        problem = f"field 'videos' must be an object mapping view name to path, got {kind(videos)}"
        raise where.error(f"take {take_id}: {problem}")
    if not videos:
        raise where.error(f"take {take_id}: field 'videos' is empty; a take needs a view")
    resolved: dict[str, str | None] = {}
    for view, value in videos.items():
        if not view.strip():
            raise where.error(f"take {take_id}: a view name in 'videos' is empty")
        path = path_value(value, f"take {take_id} view {view!r}", where, empty_is_missing=False)
        resolved[view] = None if path is None else resolve(base, path)
    check_has_video(take_id, resolved, where)
    return resolved


def _skill_extra(record: dict, where: Where) -> dict[str, str]:
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
        raise where.error(f"field 'extra' must be an object, got {kind(given)}")
    return {key: as_text(value) for key, value in given.items()}


def _check_same_views(take: Take, views: list[str], views_line: int, where: Where) -> None:
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
        "videos": {view: portable(video, base) for view, video in take.videos.items()},
        "label": take.label,
        "scenario": take.scenario,
        "participant": take.participant,
        "split": take.split,
    }
    if take.extra:
        record["extra"] = dict(take.extra)
    return record


def _write_skill(takes: list[Take], base: Path) -> str:
    lines = [json.dumps(_skill_record(take, base), ensure_ascii=False) for take in takes]
    return "\n".join(lines) + "\n"


def _is_skill(sample: Sample) -> bool:
    return sample.first is not None and ("take" in sample.first or "videos" in sample.first)


register_format(
    ManifestFormat(
        name="skill",
        marker="'take'/'videos'",
        detect=_is_skill,
        read=_parse_skill,
        write=_write_skill,
    )
)
