"""Format ``mtl-aqa``: MTL-AQA's ``final_annotations_dict.pkl``, read through `safe_pickle`.

The pickle maps ``(event, clip)`` (two ints) to a dict of the dive's annotations:
``final_score`` (the judges' score times the difficulty), ``difficulty``, ``start_frame`` and
``end_frame`` (in the event's whole video), ``primary_view``, ``position``, ``armstand``,
``rotation_type``, ``ss_no``, ``tw_no``. A take per key, named ``<event>_<clip>`` with two
digits each (``01_01``, as the per-dive frame folders of later work are named); its score is
``final_score`` (``--task regression``, score ``score``, no declared range: the training
range), the other annotations are kept as text in `Take.extra`. The split comes from
``train_split_0.pkl`` and ``test_split_0.pkl`` (lists of keys) beside the annotation file when
they are there.

MTL-AQA ships frames, not one video per dive: each take has one view, ``video``, the file
``<root>/<take>.mp4`` (``--root``: the folder of those videos; default the annotation file's
folder). docs/manifests.md shows how to make them with ffmpeg from the dive's frame folder or
from the event's video and the dive's start and end frames. Read only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from skill.pipeline.manifest.common import (
    MissingVideo,
    Where,
    check_names,
    find_missing_videos,
    is_number,
    read_manifest_bytes,
    resolve,
)
from skill.pipeline.manifest.format import ManifestFormat, Parsed
from skill.pipeline.manifest.registry import register_format
from skill.pipeline.manifest.safe_pickle import load_pickle
from skill.pipeline.takes import ManifestError, Take

VIEW = "video"
SPLIT_FILES = {"train": "train_split_0.pkl", "test": "test_split_0.pkl"}


def load_annotations(manifest: str) -> dict:
    """The annotation pickle's dict (keys normalised to tuples), loaded safely."""
    value = load_pickle(read_manifest_bytes(Path(manifest)), manifest)
    if not isinstance(value, dict) or not value:
        raise ManifestError(manifest, None, "expected a dict of (event, clip) -> annotations")
    return {_key(manifest, key): entry for key, entry in value.items()}


def _key(source: str, key: Any) -> tuple:
    if isinstance(key, list):
        key = tuple(key)
    if not (
        isinstance(key, tuple)
        and len(key) == 2
        and all(isinstance(part, (int, str)) and not isinstance(part, bool) for part in key)
    ):
        raise ManifestError(source, None, f"key {key!r} is not an (event, clip) pair")  # fmt: skip
    return key


def split_of_keys(manifest: str, keys: set[tuple], files: dict[str, str]) -> dict[tuple, str]:
    """Each key's split from the split pickles beside the manifest (lists of keys), where
    they are; a key of a split file that is not annotated, or in two splits, is refused."""
    folder = Path(manifest).parent
    split_of: dict[tuple, str] = {}
    for split, name in files.items():
        path = folder / name
        if not path.is_file():
            continue
        listed = load_pickle(read_manifest_bytes(path), str(path))
        if not isinstance(listed, (list, tuple)):
            raise ManifestError(str(path), None, "expected a list of (event, clip) keys")
        for key in map(lambda k: _key(str(path), k), listed):
            if key not in keys:
                raise ManifestError(str(path), None, f"key {key!r} is not in {manifest}")
            if split_of.get(key, split) != split:
                raise ManifestError(str(path), None, f"key {key!r} is in split {split_of[key]} too")
            split_of[key] = split
    return split_of


def aqa_reader(
    take_id: Callable[[tuple], str],
    video: Callable[[tuple, str], str],
    describe: Callable[[dict | list | tuple, Where], tuple[float | None, str, dict[str, str]]],
    split_files: dict[str, str],
) -> Callable[[str, str, Path], Parsed]:
    """A reader of an AQA annotation pickle: `take_id` names a key's take, `video` gives its
    video path under the root, `describe` reads an entry as (score, group, extra)."""

    def read(manifest: str, text: str, base: Path) -> Parsed:
        annotations = load_annotations(manifest)
        split_of = split_of_keys(manifest, set(annotations), split_files)
        takes: list[Take] = []
        missing: list[MissingVideo] = []
        for key, entry in annotations.items():
            where = Where(manifest, None, f"key {key!r}")
            score, group, extra = describe(entry, where)
            take = Take(
                take_id=take_id(key),
                videos={VIEW: resolve(base, video(key, take_id(key)))},
                scenario=group,
                split=split_of.get(key, ""),
                scores=score,
                extra=extra,
                source=(None, where.record),
            )
            check_names(take, where)
            missing += find_missing_videos(take, where)
            takes.append(take)
        return Parsed(takes, [VIEW], missing)

    return read


def score_value(value: Any, field: str, where: Where) -> float | None:
    """An annotation's score: a number (numpy's too), or None."""
    if value is None:
        return None
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()  # a numpy scalar
    if not is_number(value):
        raise where.error(f"{field} {value!r} is not a number")
    return float(value)


def text_fields(entry: dict, skip: set[str]) -> dict[str, str]:
    """An annotation's plain fields (numbers, text, lists of them) as text, for Take.extra."""
    out = {}
    for key, value in entry.items():
        if key in skip or not isinstance(key, str):
            continue
        if hasattr(value, "item") and getattr(value, "shape", None) == ():
            value = value.item()
        if isinstance(value, str):
            out[key] = value
        elif isinstance(value, (int, float, bool, list, tuple)):
            try:
                out[key] = json.dumps(value)
            except TypeError:
                continue  # lists of arrays: frame labels, not metadata
    return out


def _mtl_take_id(key: tuple) -> str:
    return "_".join(f"{part:02d}" if isinstance(part, int) else part for part in key)


def _mtl_describe(entry, where: Where) -> tuple[float | None, str, dict[str, str]]:
    if not isinstance(entry, dict):
        raise where.error("an MTL-AQA annotation must be a dict with 'final_score'")
    if "final_score" not in entry:
        raise where.error("no 'final_score' in the annotation")
    score = score_value(entry["final_score"], "final_score", where)
    return score, "", text_fields(entry, {"final_score"})


_READ = aqa_reader(_mtl_take_id, lambda key, take: f"{take}.mp4", _mtl_describe, SPLIT_FILES)


def _read_mtl_aqa(manifest: str, text: str, base: Path) -> Parsed:
    return _READ(manifest, text, base)


register_format(
    ManifestFormat(
        name="mtl-aqa",
        marker="",
        detect=lambda sample: False,
        read=_read_mtl_aqa,
        write=None,
        targets=("scores",),
        binary=True,
    )
)
