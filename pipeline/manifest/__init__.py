"""Dataset manifests: a registry of formats, each read into `Take`s and written from them.

One file per format in this package (``skill``: skill_jsonl.py, ``egoexo4d``: egoexo4d.py,
``skillformer``: skillformer.py), chosen with ``fmt`` or detected from the content (each
registered format is asked, the most specific first). Every format checks what may become a
path (take and view names follow `skill.pipeline.takes.name_problem`; a JSON key named twice
is refused, naming the line) and writes what it reads:
``read_takes(write_manifest(path, takes, root, fmt), root)`` gives `takes` back. The formats
and the EgoExo4D layout rules are described in docs/manifests.md. To add a format, write one
module ending in ``register_format(ManifestFormat(...))`` (format.py, registry.py) and import
it below; shared checks live in common.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from skill.cache.files import write_text_atomically
from skill.pipeline.manifest.common import (
    MissingVideo,
    MissingVideosError,
    Where,
    check_targets,
    check_writable,
    first_nonblank_line,
    json_object_line,
    kind,
    read_manifest_text,
)
from skill.pipeline.manifest.egoexo_layout import EGOEXO_VIEWS
from skill.pipeline.manifest.format import ManifestFormat, Sample
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
from skill.pipeline.manifest import skillformer  # noqa: F401
# isort: on


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
    missing_videos: tuple[MissingVideo, ...] = ()
    """Video files the manifest names that are missing (only with ``missing_videos="keep"``;
    by default `read_takes` refuses them). Their takes are in `takes` with the paths given."""
    task: str = DEFAULT_TASK
    """The task the takes' targets were checked for (see `tasks`)."""
    schema: dict | None = None
    """That task's schema (classification: the labels), as the format declares it or the
    task's default."""


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

    `fmt` is a registered format's name, or "auto" to detect it from the content; every
    take's target is checked by `task` (its schema: what the format declares, else the
    task's default).
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
    text = read_manifest_text(Path(path))
    if fmt == "auto":
        fmt = detect_format(manifest, text)
    reader = get_format(fmt)
    base = _root_dir(Path(path), root, reader)
    takes, views, missing = reader.read(manifest, text, base)
    try:
        schema = get_task(task).schema(reader.schema)
    except TargetError as err:
        raise ManifestError(manifest, None, str(err)) from None
    check_targets(manifest, takes, task, schema)
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
) -> Path:
    """Write takes as a `fmt` manifest (atomically: a reader never sees half a file).

    Video paths under `root` (default: the root `read_takes` would pick) are written relative
    to it, others absolute, so that ``read_takes(path, root)`` gives the same takes back.
    Raises ValueError for takes that could not be read back (differing views, duplicates, views
    or folders the format cannot hold...).
    """
    out = Path(path)
    writer = get_format(fmt)
    base = Path(os.path.abspath(root if root is not None else _default_root(out, writer)))
    takes = list(takes)
    check_writable(takes)
    _check_targets_writable(takes, writer, task)
    text = writer.write(takes, base)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, text)
    return out


def _check_targets_writable(takes: list[Take], writer: ManifestFormat, task: str) -> None:
    """Every take's target is one ``task`` takes (what reading the file back checks)."""
    checker = get_task(task)
    schema = checker.schema(writer.schema)
    for take in takes:
        try:
            checker.encode(take.label, schema)
        except TargetError as err:
            raise ValueError(f"write_manifest: take {take.take_id}: {err}") from None


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
    by_precedence = sorted(registered_formats(), key=lambda f: f.precedence)
    for candidate in reversed(by_precedence):
        if candidate.detect(sample):
            return candidate.name
    if first is None:
        _undetected_document(manifest, text, number, raw)
    markers = [f"no {f.marker} ({f.name})" for f in by_precedence]
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
    "Sample",
    "detect_format",
    "format_names",
    "get_format",
    "read_takes",
    "register_format",
    "write_manifest",
]
