"""What a manifest format is: a name, how it recognises a file, how it reads and writes takes.

A format is data, not a class to subclass: one `ManifestFormat` per file in this package,
which ends by registering it (`registry.register_format`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from skill.pipeline.takes import Take


class Parsed(NamedTuple):
    """What a format's reader returns: the takes in file order, the view names, and every
    video file the manifest names that is missing (`common.MissingVideo`, in file order): the
    caller decides whether that stops the run (`read_takes`) or masks those views (extract
    --skip-missing). `declared`: the target schema the file itself declares or implies (score
    names and ranges, a group's name, labels), laid over the format's `schema`; `declared_line`:
    the line that declares it, for messages."""

    takes: list[Take]
    views: list[str]
    missing: list
    declared: dict | None = None
    declared_line: int | None = None


@dataclass(frozen=True)
class Sample:
    """What detection looks at."""

    text: str
    """The whole manifest, decoded."""
    first: dict | None
    """Its first non-blank line parsed as JSON on its own (always an object), or None when that
    line is not JSON by itself (a pretty-printed document)."""


@dataclass(frozen=True)
class ManifestFormat:
    """One manifest format. Readers raise `ManifestError` (file, line, problem); writers raise
    ValueError for takes the format cannot hold so that reading them back would differ."""

    name: str
    """What ``--manifest-format`` and ``read_takes(fmt=...)`` call it."""
    marker: str
    """What detection looks for, as the "cannot tell the format" message names it ("": the
    format is never detected, only named)."""
    detect: Callable[[Sample], bool]
    """Whether a file is in this format (asked only about files no more specific format took)."""
    read: Callable[[str, str, Path], Parsed]
    """(manifest path as given, its text, root folder) -> (takes, view names, missing videos)
    (a `binary` format is given "" for the text and reads the file itself)."""
    write: Callable[[list[Take], Path, dict | None], str] | None
    """(takes, root folder, the schema to declare or None) -> the manifest's text; paths under
    the root are written relative. None: the format is read, never written."""
    precedence: int = 0
    """Detection asks formats with a higher precedence first: a more specific marker wins
    ('annotations' over a 'video_paths' list over 'take'/'videos')."""
    schema: dict | None = None
    """The task schema the format's targets follow (EgoExo4D: its four levels, in order, and
    ``ordered``: True, which lets ``--task ordinal`` read them); None: the task's default."""
    root_beside_takes: bool = False
    """With no root given, the root may be the manifest folder's parent: the EgoExo4D layout
    keeps manifests in <root>/annotations/, beside <root>/takes/."""
    targets: tuple[str, ...] = ("label",)
    """Which targets its files state: ``label`` (levels), ``scores`` (named scores) or both."""
    declares: bool = False
    """Whether a file declares its own target schema (score ranges...), so that
    ``write_manifest(schema=...)`` can write one."""
    binary: bool = False
    """Whether its files are not text (pickles): named with --manifest-format, never detected."""
