"""Format ``jigsaws``: JIGSAWS' ``<Task>/meta_file_<Task>.txt``.

One trial per line, tab-separated (empty fields between some columns are skipped): the trial
(``Suturing_B001``), the surgeon's self-claimed skill level (``N``, ``I`` or ``E``), the GRS
(the sum of the six criteria, 6..30), then the six modified-OSATS criteria, 1..5 each:
respect for tissue, suture/needle handling, time and motion, flow of operation, overall
performance, quality of final product. The two cameras of the stereo endoscope are two views,
``left`` (``<root>/video/<trial>_capture1.avi``) and ``right`` (``..._capture2.avi``); the
root is the manifest's folder (the task's folder) unless given.

Levels are ordered, Novice < Intermediate < Expert, so ``--task ordinal`` reads them; for
``--task regression`` it gives the GRS (score ``grs``, declared 6..30), keeping the criteria
in `Take.extra` (``jigsaws-criteria``, jigsaws_criteria.py, makes them scores too). A take's participant is the surgeon (the letter of ``B001``), its group
(scenario) the task; there is no split (JIGSAWS is cross-validated by surgeon or by trial). Read
only: write a ``skill`` or ``csv`` manifest to change one.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from skill.pipeline.manifest.common import (
    MissingVideo,
    Where,
    check_names,
    duplicate_error,
    find_missing_videos,
    parse_number,
    resolve,
)
from skill.pipeline.manifest.format import ManifestFormat, Parsed, Sample
from skill.pipeline.manifest.registry import register_format
from skill.pipeline.takes import Take

LEVELS = {"N": "Novice", "I": "Intermediate", "E": "Expert"}
"""The meta file's level codes and the level names skill uses, in order."""
CRITERIA = (
    "respect_for_tissue",
    "suture_needle_handling",
    "time_and_motion",
    "flow_of_operation",
    "overall_performance",
    "quality_of_final_product",
)
GRS = "grs"
GRS_RANGE = (6, 30)
CRITERION_RANGE = (1, 5)
VIEWS = {"left": "capture1", "right": "capture2"}
"""View name -> the suffix of its video file: the stereo endoscope's two cameras."""
_FIELDS = 3 + len(CRITERIA)
_TRIAL = re.compile(r"(?P<task>.+)_(?P<surgeon>[A-Z])(?P<trial>\d+)")
_META_NAME = re.compile(r"meta_file_(?P<task>.+)")


def meta_schema(criteria: bool) -> dict:
    scores = [{"name": GRS, "low": GRS_RANGE[0], "high": GRS_RANGE[1]}]
    if criteria:
        scores += [
            {"name": c, "low": CRITERION_RANGE[0], "high": CRITERION_RANGE[1]} for c in CRITERIA
        ]
    return {"labels": list(LEVELS.values()), "ordered": True, "scores": scores, "group": "task"}


def read_meta_file(manifest: str, text: str, base: Path, criteria: bool) -> Parsed:
    """The trials of a meta file; `criteria`: the six criteria are scores too."""
    file_task = _META_NAME.fullmatch(PurePath(manifest).stem)
    takes: list[Take] = []
    missing: list[MissingVideo] = []
    seen: dict[str, tuple[Where, Take]] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        where = Where(manifest, number)
        take = _trial(raw, base, where, criteria, file_task.group("task") if file_task else "")
        check_names(take, where)
        if take.take_id in seen:
            raise duplicate_error(seen[take.take_id], (where, take))
        missing += find_missing_videos(take, where)
        seen[take.take_id] = (where, take)
        takes.append(take)
    return Parsed(takes, list(VIEWS), missing)


def _read_jigsaws(manifest: str, text: str, base: Path) -> Parsed:
    return read_meta_file(manifest, text, base, criteria=False)


def _trial(raw: str, base: Path, where: Where, criteria: bool, file_task: str) -> Take:
    fields = raw.split()
    if len(fields) != _FIELDS:
        raise where.error(
            f"expected {_FIELDS} fields (trial, level N/I/E, GRS and the six criteria), got "
            f"{len(fields)}"
        )
    trial, level = fields[0], fields[1]
    if level not in LEVELS:
        raise where.error(f"take {trial}: skill level {level!r} is not N, I or E")
    values = [parse_number(text, f"take {trial}: {name}", where)
              for name, text in zip((GRS, *CRITERIA), fields[2:], strict=True)]  # fmt: skip
    named = dict(zip((GRS, *CRITERIA), values, strict=True))
    parts = _TRIAL.fullmatch(trial)
    return Take(
        take_id=trial,
        videos={
            view: resolve(base, f"video/{trial}_{suffix}.avi") for view, suffix in VIEWS.items()
        },
        label=LEVELS[level],
        scenario=parts.group("task") if parts else file_task,
        participant=parts.group("surgeon") if parts else "",
        scores=named if criteria else {GRS: named[GRS]},
        extra={} if criteria else {name: f"{named[name]:g}" for name in CRITERIA},
        source=(where.line, ""),
    )


def _is_jigsaws(sample: Sample) -> bool:
    if sample.first is not None:
        return False
    for raw in sample.text.split("\n"):
        if raw.strip():
            fields = raw.split()
            return len(fields) == _FIELDS and fields[1] in LEVELS
    return False


register_format(
    ManifestFormat(
        name="jigsaws",
        marker="meta-file fields (trial, level N/I/E, seven scores)",
        detect=_is_jigsaws,
        read=_read_jigsaws,
        write=None,
        schema=meta_schema(criteria=False),
        targets=("label", "scores"),
    )
)
