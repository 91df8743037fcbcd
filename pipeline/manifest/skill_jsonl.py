"""Format ``skill``: the project's JSON Lines, one take per line::

    {"take": "t001", "videos": {"ego": "t001/ego.mp4", "exo1": null}, "label": "Novice",
     "scenario": "Dance", "participant": "p07", "split": "train", "extra": {"k": "v"}}
    {"take": "t002", "videos": {"ego": "t002/ego.mp4"}, "score": 7.5, "group": "ball"}
    {"take": "t003", "videos": {"ego": "t003/ego.mp4"}, "scores": {"tes": 40.1, "pcs": 38.2}}

``take`` and ``videos`` are required, and a level: ``label`` (a label or null), or scores:
``score`` (one number or null) or ``scores`` (score name -> number or null); ``scenario``
(or its synonym ``group``: the action class, apparatus...), ``participant``, ``split``
(train, val, test or "") and ``extra`` are optional. An optional first line
``{"schema": {...}}`` declares the targets (``scores`` with ranges, ``group``'s name, ``labels``
and ``ordered``; docs/manifests.md); without one the score names are those the lines use. Every
line names the same views. Paths are relative to ``root``, else to the manifest's folder.
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
    ScoreNames,
    Where,
    as_text,
    check_has_video,
    check_names,
    declared_schema,
    duplicate_error,
    find_missing_videos,
    jsonl_records,
    kind,
    optional_str,
    path_value,
    portable,
    read_label,
    read_scores,
    read_split,
    required_str,
    resolve,
)
from skill.pipeline.manifest.format import ManifestFormat, Parsed, Sample
from skill.pipeline.manifest.registry import register_format
from skill.pipeline.takes import Take
from skill.tasks.classification import EGOEXO4D_LEVELS

_SKILL_FIELDS = frozenset(
    {"take", "videos", "label", "score", "scores", "scenario", "group", "participant", "split",
     "extra"}
)  # fmt: skip
SCHEMA_KEY = "schema"
"""The one key of the optional first line that declares the manifest's targets."""


def _parse_skill(manifest: str, text: str, base: Path) -> Parsed:
    takes: list[Take] = []
    missing: list[MissingVideo] = []
    seen: dict[str, tuple[Where, Take]] = {}
    views: list[str] = []
    views_line = 0
    declared, declared_line = None, None
    names = ScoreNames()
    for where, record in jsonl_records(manifest, text):
        if SCHEMA_KEY in record:
            if takes or declared is not None:
                raise where.error('a {"schema": ...} line must be the manifest\'s first line')
            declared, declared_line = _schema_line(record, where), where.line
            continue
        take = _skill_take(record, base, where)
        check_names(take, where)
        names.add(take.scores, take.take_id, where)
        if not views:
            views, views_line = list(take.videos), where.line or 0
        _check_same_views(take, views, views_line, where)
        if take.take_id in seen:
            raise duplicate_error(seen[take.take_id], (where, take))
        missing += find_missing_videos(take, where)
        seen[take.take_id] = (where, take)
        takes.append(replace(take, videos={view: take.videos[view] for view in views}))
    if not takes:
        raise Where(manifest, declared_line).error("the manifest lists no takes")
    declared = {**(names.implied(declared) or {}), **(declared or {})}
    return Parsed(takes, views, missing, declared or None, declared_line)


def _schema_line(record: dict, where: Where) -> dict:
    others = [key for key in record if key != SCHEMA_KEY]
    if others:
        raise where.error(
            f"the schema line holds 'schema' only, not {', '.join(map(repr, others))}"
        )
    return declared_schema(record[SCHEMA_KEY], where)


def _skill_take(record: dict, base: Path, where: Where) -> Take:
    take_id = required_str(record, "take", where)
    scores = read_scores(record, take_id, where)
    has_scores = "score" in record or "scores" in record
    return Take(
        take_id=take_id,
        videos=_skill_videos(record, base, take_id, where),
        label=read_label(record, "label", take_id, where, required=not has_scores),
        source=(where.line, where.record),
        scenario=_skill_group(record, take_id, where),
        participant=optional_str(record, "participant", where),
        split=read_split(record, "split", where, default=""),
        scores=scores,
        extra=_skill_extra(record, where),
    )


def _skill_group(record: dict, take_id: str, where: Where) -> str:
    """``scenario``, or ``group`` (its synonym for score datasets): the take table's scenario
    column, which per-group metrics use."""
    if "scenario" in record and "group" in record:
        raise where.error(
            f"take {take_id}: give 'scenario' or 'group', not both (both name the take's group)"
        )
    return optional_str(record, "group" if "group" in record else "scenario", where)


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
    }
    if isinstance(take.scores, dict):
        record["scores"] = dict(take.scores)
    elif take.scores is not None:
        record["score"] = take.scores
    record.update(scenario=take.scenario, participant=take.participant, split=take.split)
    if take.extra:
        record["extra"] = dict(take.extra)
    return record


def _write_skill(takes: list[Take], base: Path, declared: dict | None = None) -> str:
    lines = [json.dumps({SCHEMA_KEY: declared})] if declared else []
    lines += [json.dumps(_skill_record(take, base), ensure_ascii=False) for take in takes]
    return "\n".join(lines) + "\n"


def _is_skill(sample: Sample) -> bool:
    first = sample.first
    return first is not None and ("take" in first or "videos" in first or SCHEMA_KEY in first)


register_format(
    ManifestFormat(
        name="skill",
        marker="'take'/'videos'",
        detect=_is_skill,
        read=_parse_skill,
        write=_write_skill,
        schema={"labels": list(EGOEXO4D_LEVELS), "ordered": True},
        targets=("label", "scores"),
        declares=True,
    )
)
