"""Format ``skillformer``: SkillFormer's JSON Lines::

    {"video_paths": [ego, exo1, exo2, exo3, exo4], "analysis": "...", "proficiency_level": "Novice"}

One line per expert commentary; the lines of one take are merged into one `Take`
(``extra["lines"]`` lists them). Views, take names and the root follow the EgoExo4D rules
(`egoexo_layout`, docs/manifests.md). SkillFormer's own loader maps unknown labels to Novice;
this one refuses them. Written files hold one line per take, with an empty ``analysis``, and
the optional ``scenario``, ``participant`` and ``split`` fields this reader takes.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from skill.pipeline.manifest.common import (
    MissingVideo,
    Where,
    check_names,
    duplicate_error,
    find_missing_videos,
    jsonl_records,
    kind,
    optional_str,
    path_value,
    read_label,
    read_split,
    resolve,
    split_from_name,
)
from skill.pipeline.manifest.egoexo_layout import (
    EGOEXO_VIEWS,
    resolved_videos,
    take_folder,
    take_names_in_paths,
    writable_paths,
)
from skill.pipeline.manifest.format import ManifestFormat, Parsed, Sample
from skill.pipeline.manifest.registry import register_format
from skill.pipeline.takes import Take
from skill.tasks.classification import EGOEXO4D_LEVELS

# Folders of the EgoExo4D layout that never name a take (used when no takes/<name>/ is found).
_LAYOUT_FOLDERS = frozenset({"frame_aligned_videos", "downscaled"})


def _parse_skillformer(manifest: str, text: str, root: Path) -> Parsed:
    default_split = split_from_name(manifest)
    merged: dict[str, tuple[Where, Take]] = {}
    missing: list[MissingVideo] = []
    lines: dict[str, list[int]] = {}
    resolved: dict[tuple[str | None, ...], dict[str, str | None]] = {}  # repeats skip the stats
    for where, record in jsonl_records(manifest, text):
        take = _skillformer_take(record, root, default_split, where, resolved)
        check_names(take, where)
        if take.take_id in merged:
            _check_same_take(merged[take.take_id], (where, take))
        else:
            missing += find_missing_videos(take, where, downscaled_tried=True)
            merged[take.take_id] = (where, take)
        lines.setdefault(take.take_id, []).append(where.line or 0)
    takes = [
        replace(take, extra={**take.extra, "lines": ",".join(map(str, lines[take.take_id]))})
        for _, take in merged.values()
    ]
    return takes, list(EGOEXO_VIEWS), missing


def _skillformer_take(
    record: dict,
    root: Path,
    default_split: str,
    where: Where,
    resolved: dict[tuple[str | None, ...], dict[str, str | None]],
) -> Take:
    """One line as a Take; `resolved` caches the videos of paths already seen on a line."""
    view_paths = _skillformer_paths(record, where)
    take_id = take_names_in_paths(view_paths, where) or _take_folder_fallback(
        view_paths, root, where
    )
    optional_str(record, "analysis", where)  # type check only: commentary is not used here
    key = tuple(view_paths.values())
    if key not in resolved:
        resolved[key] = resolved_videos(view_paths, root)
    return Take(
        take_id=take_id,
        videos=dict(resolved[key]),
        label=read_label(record, "proficiency_level", take_id, where, required=True),
        source=(where.line, where.record),
        scenario=optional_str(record, "scenario", where),
        participant=optional_str(record, "participant", where),
        split=read_split(record, "split", where, default_split),
    )


def _skillformer_paths(record: dict, where: Where) -> dict[str, str | None]:
    if "video_paths" not in record:
        raise where.error("missing required field 'video_paths'")
    paths = record["video_paths"]
    if not isinstance(paths, list):
        problem = f"field 'video_paths' must be a list [ego, exo1..exo4], got {kind(paths)}"
        raise where.error(problem)
    if not 1 <= len(paths) <= len(EGOEXO_VIEWS):
        raise where.error(
            f"field 'video_paths' has {len(paths)} entries; expected 1 to 5 ([ego, exo1..exo4])"
        )
    view_paths: dict[str, str | None] = dict.fromkeys(EGOEXO_VIEWS)
    for index, (view, value) in enumerate(zip(EGOEXO_VIEWS, paths, strict=False)):
        what = f"video_paths[{index}] ({view})"
        view_paths[view] = path_value(value, what, where, empty_is_missing=True)
    if all(path is None for path in view_paths.values()):
        raise where.error("field 'video_paths' has no path; a take needs at least one video")
    return view_paths


def _take_folder_fallback(view_paths: dict[str, str | None], root: Path, where: Where) -> str:
    """The take id when no path has takes/<name>/: the first video's folder, skipping layout
    folders (frame_aligned_videos, downscaled, 448)."""
    first = next(path for path in view_paths.values() if path is not None)
    for folder in Path(resolve(root, first)).parents:
        if folder.name and folder.name not in _LAYOUT_FOLDERS and not folder.name.isdigit():
            return folder.name
    raise where.error(f"cannot name the take of {first}: no folder above it")


def _check_same_take(first: tuple[Where, Take], again: tuple[Where, Take]) -> None:
    """Repeated lines of one take (one per commentary) must agree on everything but the text."""
    (a_where, a), (b_where, b) = first, again
    if a.label != b.label:
        raise duplicate_error(first, again)
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


# ---------------------------------------------------------------------------------------------
# Writing


def _write_skillformer(takes: list[Take], base: Path, declared: dict | None = None) -> str:
    lines = [json.dumps(_skillformer_record(take, base), ensure_ascii=False) for take in takes]
    return "\n".join(lines) + "\n"


def _skillformer_record(take: Take, base: Path) -> dict[str, Any]:
    paths = writable_paths(take, base, "skillformer")
    named = {take_folder(path) for path in paths.values() if path is not None} - {None}
    if not named:  # the reader names such a take by its first video's folder
        where = Where("", None)
        folder = _take_folder_fallback(paths, base, where)
        if folder != take.take_id:
            raise ValueError(
                f"write_manifest: take {take.take_id}: the skillformer format names a take by "
                f"its videos' folder, here {folder!r}; put them in takes/{take.take_id}/"
            )
    return {
        "video_paths": [paths[view] for view in EGOEXO_VIEWS],
        "analysis": "",
        "proficiency_level": take.label,
        "scenario": take.scenario,
        "participant": take.participant,
        "split": take.split,
    }


def _is_skillformer(sample: Sample) -> bool:
    return sample.first is not None and isinstance(sample.first.get("video_paths"), list)


register_format(
    ManifestFormat(
        name="skillformer",
        marker="'video_paths' list",
        detect=_is_skillformer,
        read=_parse_skillformer,
        write=_write_skillformer,
        precedence=1,
        root_beside_takes=True,
        schema={"labels": list(EGOEXO4D_LEVELS), "ordered": True},
    )
)
