"""Format ``finediving``: FineDiving's annotation pickles, read through `safe_pickle`.

Keys are ``(event, clip)`` (the event's name, the clip's number). Two layouts of an entry:
``FineDiving_fine-grained_annotation.pkl`` holds a dict (``action_type``, ``dive_score``,
``difficulty``, ``judge_scores``, ``start_frame``, ``end_frame``, ``steps_transit_frames``,
``frames_labels``...), and ``fine-grained_annotation_aqa.pkl``, the one its training code
reads, a list ``[action_type, dive_score, difficulty, steps_transit_frames, frames_labels]``.
A take per key, named ``<event>_<clip>``; its score is ``dive_score`` (``--task regression``,
score ``score``, no declared range), its group (scenario) the action type (``407c``: per-group
rho is per action type), and the other plain fields are kept as text in `Take.extra` (frame
labels are not). The split comes from ``train_split.pkl`` and ``test_split.pkl`` beside the
annotation file when they are there.

FineDiving ships frames (``<event>/<clip>/*.jpg``), not videos: each take has one view,
``video``, the file ``<root>/<event>/<clip>.mp4`` (``--root``: the folder of those videos;
default the annotation file's folder); docs/manifests.md shows how to make them with ffmpeg.
Read only.
"""

from __future__ import annotations

from pathlib import Path

from skill.pipeline.manifest.common import Where
from skill.pipeline.manifest.format import ManifestFormat, Parsed
from skill.pipeline.manifest.mtl_aqa import aqa_reader, score_value, text_fields
from skill.pipeline.manifest.registry import register_format

SPLIT_FILES = {"train": "train_split.pkl", "test": "test_split.pkl"}
GROUP = "action_type"


def _take_id(key: tuple) -> str:
    return f"{key[0]}_{key[1]}"


def _video(key: tuple, take_id: str) -> str:
    return f"{key[0]}/{key[1]}.mp4"


def _describe(entry, where: Where) -> tuple[float | None, str, dict[str, str]]:
    if isinstance(entry, dict):
        if "dive_score" not in entry:
            raise where.error("no 'dive_score' in the annotation")
        score = score_value(entry["dive_score"], "dive_score", where)
        return (
            score,
            _action_type(entry.get("action_type"), where),
            text_fields(entry, {"dive_score", "action_type"}),
        )
    if isinstance(entry, (list, tuple)) and len(entry) >= 3:
        score = score_value(entry[1], "the score (item 1)", where)
        difficulty = score_value(entry[2], "the difficulty (item 2)", where)
        extra = {} if difficulty is None else {"difficulty": f"{difficulty:g}"}
        return score, _action_type(entry[0], where), extra
    raise where.error(
        "a FineDiving annotation is a dict with 'dive_score' or a list [action_type, score, "
        "difficulty, ...]"
    )


def _action_type(value, where: Where) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise where.error(f"action_type {value!r} is not text")
    return value


_READ = aqa_reader(_take_id, _video, _describe, SPLIT_FILES)


def _read_finediving(manifest: str, text: str, base: Path) -> Parsed:
    return _READ(manifest, text, base)


register_format(
    ManifestFormat(
        name="finediving",
        marker="",
        detect=lambda sample: False,
        read=_read_finediving,
        write=None,
        schema={"group": GROUP},
        targets=("scores",),
        binary=True,
    )
)
