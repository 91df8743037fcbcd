"""Dataset manifests: a registry of formats, each read into `Take`s and written from them.

One file per format in this package (``skill``: skill_jsonl.py, ``egoexo4d``: egoexo4d.py,
``egoexo4d-demonstration``: egoexo4d_demonstration.py, ``skillformer``: skillformer.py, ``csv``: csv_table.py, ``jigsaws``: jigsaws.py,
``jigsaws-criteria``: jigsaws_criteria.py, ``mtl-aqa``: mtl_aqa.py, ``finediving``:
finediving.py), chosen with ``fmt`` or
detected from the content (each registered text format is asked, the most specific first;
pickles are read only when named, through `safe_pickle`). Every format checks what may become
a path (take and view names follow `skill.pipeline.takes.name_problem`; a JSON key named twice
is refused, naming the line), and every format that writes writes what it reads:
``read_takes(write_manifest(path, takes, root, fmt), root)`` gives `takes` back. The pairs
files of ranking datasets (BEST, EPIC-Skills) are read by `pairs.read_pairs`. The formats and
the EgoExo4D layout rules are described in docs/manifests.md. To add a format, write one
module ending in ``register_format(ManifestFormat(...))`` (format.py, registry.py) and import
it below; shared checks live in common.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from skill.cache.files import write_text_atomically
from skill.pipeline.manifest.common import (
    MissingVideo,
    MissingVideosError,
    Where,
    check_targets,
    check_writable,
    first_nonblank_line,
    implied_score_names,
    json_object_line,
    kind,
    read_manifest_bytes,
    read_manifest_text,
)
from skill.pipeline.manifest.egoexo_layout import EGOEXO_VIEWS
from skill.pipeline.manifest.format import ManifestFormat, Parsed, Sample
from skill.pipeline.manifest.pairs import Pair, PairError, Pairs, read_pairs
from skill.pipeline.manifest.registry import (
    format_names,
    get_format,
    register_format,
    registered_formats,
)
from skill.pipeline.takes import ManifestError, Take
from skill.tasks import DEFAULT_TASK, TargetError, get_task

# One line per format: importing its file registers it (in this order, which is the order
# format_names() and messages list them in).
# isort: off
from skill.pipeline.manifest import skill_jsonl  # noqa: F401
from skill.pipeline.manifest import egoexo4d  # noqa: F401
from skill.pipeline.manifest import egoexo4d_demonstration  # noqa: F401
from skill.pipeline.manifest import skillformer  # noqa: F401
from skill.pipeline.manifest import csv_table  # noqa: F401
from skill.pipeline.manifest import jigsaws  # noqa: F401
from skill.pipeline.manifest import jigsaws_criteria  # noqa: F401
from skill.pipeline.manifest import mtl_aqa  # noqa: F401
from skill.pipeline.manifest import finediving  # noqa: F401
# isort: on


@dataclass(frozen=True)
class Dataset:
    """The takes described by one manifest."""

    takes: list[Take]
    """Takes in manifest order, one per take id."""
    views: list[str]
    """View names that every take's `videos` uses, in order; a missing view maps to None."""
    format: str
    """The format that was read: a registered format's name (never "auto")."""
    source: str
    """The manifest path, as given."""
    missing_videos: tuple[MissingVideo, ...] = ()
    """Video files the manifest names that are missing (only with ``missing_videos="keep"``;
    by default `read_takes` refuses them). Their takes are in `takes` with the paths given."""
    task: str = DEFAULT_TASK
    """The task the takes' targets were checked for (see `tasks`)."""
    schema: dict | None = None
    """That task's schema (classification: the labels; regression: the scores and their
    ranges), as the format and the file declare it, else the task's default."""


# ---------------------------------------------------------------------------------------------
# Public API


def read_takes(
    path: str | Path,
    root: str | Path | None = None,
    fmt: str = "auto",
    missing_videos: str = "refuse",
    task: str = DEFAULT_TASK,
) -> Dataset:
    """Read a manifest into a `Dataset`, checking every field and that every video file exists.

    `fmt` is a registered format's name, or "auto" to detect it from the content (pickles
    are never detected: name their format); every take's target (`Take.target`: its scores
    for a task whose schema names scores, else its label) is checked by `task` (its schema:
    what the format and the file declare, else the task's default).
    Raises `ManifestError` (file, line, problem) for anything a user can get wrong. Missing
    video files are all found before anything is refused: with ``missing_videos="refuse"``
    they raise one `MissingVideosError` (their count and the first 20; ``.missing`` holds
    all), with ``"keep"`` they are returned in ``Dataset.missing_videos``.
    """
    if missing_videos not in ("refuse", "keep"):
        raise ValueError(f"missing_videos must be 'refuse' or 'keep', not {missing_videos!r}")
    manifest = str(path)
    names = ("auto", *format_names())
    if fmt not in names:
        raise ManifestError(
            manifest, None, f"unknown manifest format {fmt!r}; expected one of {', '.join(names)}"
        )
    reader = None if fmt == "auto" else get_format(fmt)
    if reader is not None and reader.binary:
        read_manifest_bytes(Path(path))  # refuses a missing, empty or unreadable file
        text = ""
    else:
        if reader is None:
            _refuse_undetectable(Path(path))
        text = read_manifest_text(Path(path))
        reader = reader or get_format(detect_format(manifest, text))
    fmt = reader.name
    base = _root_dir(Path(path), root, reader)
    parsed = Parsed(*reader.read(manifest, text, base))
    try:
        schema = get_task(task).schema(_laid_over(reader.schema, parsed.declared))
    except TargetError as err:
        raise ManifestError(manifest, parsed.declared_line, str(err)) from None
    target_field = _target_field(schema)
    takes = [replace(take, target_field=target_field) for take in parsed.takes]
    _check_task_fits(manifest, reader, takes, task)
    check_targets(manifest, takes, task, schema)
    views, missing = parsed.views, parsed.missing
    if missing and missing_videos == "refuse":
        raise MissingVideosError(manifest, missing)
    return Dataset(
        takes=takes, views=views, format=fmt, source=manifest, missing_videos=tuple(missing),
        task=task, schema=schema,
    )  # fmt: skip


def write_manifest(
    path: str | Path,
    takes: Iterable[Take],
    root: str | Path | None = None,
    fmt: str = "skill",
    task: str = DEFAULT_TASK,
    schema: dict | None = None,
) -> Path:
    """Write takes as a `fmt` manifest (atomically: a reader never sees half a file).

    Video paths under `root` (default: the root `read_takes` would pick) are written relative
    to it, others absolute, so that ``read_takes(path, root)`` gives the same takes back.
    `schema`: the targets the file declares (score names and ranges, the group's name; see
    docs/manifests.md), for a format that declares them (``skill``, ``csv``).
    Raises ValueError for takes that could not be read back (differing views, duplicates, views
    or folders the format cannot hold, scores in a format of levels...).
    """
    out = Path(path)
    writer = get_format(fmt)
    if writer.write is None:
        raise ValueError(
            f"write_manifest: the {fmt} format is read, never written; write a skill or csv "
            "manifest"
        )
    if schema and not writer.declares:
        raise ValueError(f"write_manifest: the {fmt} format declares no schema")
    base = Path(os.path.abspath(root if root is not None else _default_root(out, writer)))
    takes = list(takes)
    check_writable(takes)
    _check_targets_writable(takes, writer, task, schema)
    text = writer.write(takes, base, schema)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, text)
    return out


def _check_targets_writable(
    takes: list[Take], writer: ManifestFormat, task: str, declared: dict | None
) -> None:
    """Every take's target is one ``task`` takes (what reading the file back checks), and
    the format holds every target the takes have."""
    if "scores" not in writer.targets:
        scored = next((take for take in takes if take.scores is not None), None)
        if scored is not None:
            raise ValueError(
                f"write_manifest: take {scored.take_id} has scores; the {writer.name} format "
                "holds levels only"
            )
    names = implied_score_names(takes)
    implied = {"scores": names} if names else {}
    checker = get_task(task)
    try:
        schema = checker.schema(_laid_over(writer.schema, {**implied, **(declared or {})}))
    except TargetError as err:
        raise ValueError(f"write_manifest: {err}") from None
    target_field = _target_field(schema)
    for take in takes:
        try:
            checker.encode(replace(take, target_field=target_field).target, schema)
        except TargetError as err:
            raise ValueError(f"write_manifest: take {take.take_id}: {err}") from None


def _laid_over(fmt_schema: dict | None, declared: dict | None) -> dict:
    """What a file declares laid over its format's schema; levels a file names are ordered
    only when it says so (the format's ``ordered`` is about the format's own levels)."""
    merged = dict(fmt_schema or {})
    if declared and "labels" in declared:
        merged.pop("ordered", None)
    return {**merged, **(declared or {})}


def _target_field(schema: dict) -> str:
    """Which of a take's targets a task of ``schema`` learns: its events where the schema
    names event categories (demonstration), its scores where it names scores (regression),
    else its label."""
    if "categories" in schema:
        return "events"
    return "scores" if "scores" in schema else "label"


_TARGET_WORDS = {"label": "levels ('label')", "scores": "scores ('score' or 'scores')",
                 "events": "timestamped events"}  # fmt: skip


def _check_task_fits(manifest: str, reader: ManifestFormat, takes: list[Take], task: str) -> None:
    """Refuse a task whose targets the manifest does not state while it states others (a
    manifest of scores read for classification, of levels for regression)."""
    wanted = takes[0].target_field if takes else "label"
    other = "label" if wanted == "scores" else "scores"
    if wanted not in reader.targets:
        raise ManifestError(
            manifest,
            None,
            f"--task {task} learns {_TARGET_WORDS[wanted]}, and the {reader.name} format states "
            f"{_TARGET_WORDS[other]} only; choose another --task",
        )
    if any(take.target is not None for take in takes):
        return
    if any(getattr(take, other) is not None for take in takes):
        raise ManifestError(
            manifest,
            None,
            f"--task {task} learns {_TARGET_WORDS[wanted]}, and no take states one; the takes "
            f"state {_TARGET_WORDS[other]}: choose another --task",
        )


_PICKLE_START = 0x80
"""The first byte of a pickle of protocol 2 or later (every pickle a dataset ships)."""


def _refuse_undetectable(path: Path) -> None:
    """A pickle is never detected: formats of pickles are read only when named."""
    try:
        with open(path, "rb") as file:
            start = file.read(1)
    except OSError:
        return  # read_manifest_text names what is wrong
    if start and start[0] == _PICKLE_START:
        named = [f.name for f in registered_formats() if f.binary]
        raise ManifestError(
            str(path),
            None,
            "a pickle, not a text manifest: name its format with --manifest-format "
            f"({', '.join(named)})",
        )


def detect_format(manifest: str, text: str) -> str:
    """The name of the format of `text`, asking each registered format, the most specific
    (highest precedence) first; ManifestError when none recognises it."""
    number, raw = first_nonblank_line(text)
    try:
        first = json.loads(raw)
    except json.JSONDecodeError:
        first = None
    else:
        if not isinstance(first, dict):
            problem = (
                f"cannot tell the manifest format: the first line is {kind(first)}, not an object"
            )
            raise ManifestError(manifest, number, problem)
    sample = Sample(text, first)
    by_precedence = sorted(
        (f for f in registered_formats() if not f.binary), key=lambda f: f.precedence
    )
    for candidate in reversed(by_precedence):
        if candidate.detect(sample):
            return candidate.name
    if first is None and raw.lstrip()[:1] in ("{", "["):
        _undetected_document(manifest, text, number, raw)
    markers = [f"no {f.marker} ({f.name})" for f in by_precedence if f.marker]
    listed = ", ".join(markers[:-1]) + " and " + markers[-1] if len(markers) > 1 else markers[0]
    raise ManifestError(
        manifest,
        number,
        f"cannot tell the manifest format: the first record has {listed}; give it with "
        "--manifest-format",
    )


def _undetected_document(manifest: str, text: str, number: int, raw: str) -> None:
    """The first line is not JSON on its own and no format took it: a broken line, or one JSON
    document that is not an official file."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        json_object_line(Where(manifest, number), raw)  # raises, naming the JSON error
        raise AssertionError("unreachable: the line did not parse") from None
    problem = f"cannot tell the manifest format: one JSON document ({kind(document)}) "
    raise ManifestError(manifest, None, problem + "without an 'annotations' list")


def _root_dir(manifest: Path, root: str | Path | None, fmt: ManifestFormat) -> Path:
    if root is not None:
        if not Path(root).is_dir():
            raise ManifestError(str(manifest), None, f"root {root} is not a directory")
        return Path(os.path.abspath(root))
    return _default_root(manifest, fmt)


def _default_root(manifest: Path, fmt: ManifestFormat) -> Path:
    folder = Path(os.path.abspath(manifest)).parent
    # The official layout keeps manifests in <root>/annotations/, beside <root>/takes/.
    beside = not (folder / "takes").is_dir() and (folder.parent / "takes").is_dir()
    return folder.parent if fmt.root_beside_takes and beside else folder


__all__ = [
    "EGOEXO_VIEWS",
    "Dataset",
    "ManifestFormat",
    "MissingVideo",
    "MissingVideosError",
    "Pair",
    "PairError",
    "Pairs",
    "Parsed",
    "Sample",
    "detect_format",
    "format_names",
    "get_format",
    "read_pairs",
    "read_takes",
    "register_format",
    "write_manifest",
]
