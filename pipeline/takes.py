"""The unit of a dataset: a take, and the errors raised while reading takes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from skill.errors import SkillError

NAME_MAX_BYTES = 200
"""The longest take or view name, in bytes of UTF-8. Names become file-name components (`skill
export --format npy` writes ``<take>/<view>.npy``); file systems take 255 bytes per component,
and 200 leaves room for the suffix and the few characters an export escapes."""

_UNFIT_CHARACTER = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]")  # separators and Unicode's Cc


@dataclass(frozen=True)
class Event:
    """One marked moment of a take: `time` in seconds from the take's start and its
    `category` (EgoExo4D demonstration: ``good_executions`` or ``tips_for_improvement``);
    `expert` is who marked it ("" when unknown)."""

    time: float
    category: str
    expert: str = ""


@dataclass(frozen=True)
class Take:
    """One performance recorded by several synchronized cameras.

    `videos` maps a view name (``ego``, ``exo1`` ...) to an absolute video path, or to None
    when that view is missing for this take (it is then masked, never filled with zeros).
    `label` is the take's level as the manifest states it (a level's name, the target of
    classification and ordinal), None for an unlabelled take; `scores` its named scores as the
    manifest states them (the target of regression): one number, an object of score name to
    number or None, or None when it has none. `scenario` is the take's group (scenario, action
    class, apparatus: the column per-group metrics use). `uid` is the dataset's own id of the
    take where it has one besides the name (EgoExo4D's ``take_uid``), else "". `source` is
    where the manifest states it: (line, record name). `target_field` names which of `label`
    and `scores` is the target of the task the manifest was read for (`read_takes` sets it).
    `events` are the take's timestamped, categorised moments (`Event`, in the order its format
    gives: ``egoexo4d-demonstration`` lists good executions, then tips; the target of a task
    whose ``target_field`` is ``events``), () when it states none.
    """

    take_id: str
    videos: dict[str, str | None]
    label: str | None = None
    scenario: str = ""
    participant: str = ""
    split: str = ""
    uid: str = ""
    scores: float | dict[str, float | None] | None = None
    events: tuple[Event, ...] = ()
    extra: dict[str, str] = field(default_factory=dict, compare=False)
    source: tuple[int | None, str] = field(default=(None, ""), compare=False)
    target_field: str = field(default="label", compare=False, repr=False)

    @property
    def target(self) -> object:
        """The take's target for the task its manifest was read for: its label, its scores
        (as the manifest states them) or its events as ``(time, category)`` pairs (the task
        checks and encodes them)."""
        if self.target_field == "events":  # who marked a moment is not learned
            return tuple((event.time, event.category) for event in self.events)
        return self.scores if self.target_field == "scores" else self.label


class ManifestError(SkillError, ValueError):
    """A dataset description that cannot be read; names the file, the line and the problem."""

    def __init__(self, path: str, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


def name_problem(name: object) -> str:
    """What makes `name` unfit to be a take or view name, or "" when it is fit.

    A name may become a file-name component: it must be a non-empty string without a path
    separator (/ or \\), NUL or other control character, not ``.`` or ``..``, and at most
    `NAME_MAX_BYTES` bytes of UTF-8.
    """
    if not isinstance(name, str):
        return f"is not a string ({type(name).__name__})"
    if not name:
        return "is empty"
    if name in (".", ".."):
        return f"is {name!r}, which names a folder"
    bad = _UNFIT_CHARACTER.search(name)
    if bad:
        kind = "path separator" if bad.group() in "/\\" else "control character"
        return f"holds the {kind} {bad.group()!r}"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode (it holds a lone surrogate)"
    if size > NAME_MAX_BYTES:
        return f"is {size} bytes of UTF-8, longer than the {NAME_MAX_BYTES} a name may have"
    return ""
