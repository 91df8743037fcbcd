"""The unit of a dataset: a take, and the errors raised while reading takes."""

from __future__ import annotations

from dataclasses import dataclass, field

from skill.errors import SkillError

# EgoExo4D proficiency labels, in the order the official files and scorer use.
LABELS: tuple[str, ...] = ("Novice", "Early Expert", "Intermediate Expert", "Late Expert")


@dataclass(frozen=True)
class Take:
    """One performance recorded by several synchronized cameras.

    `videos` maps a view name (``ego``, ``exo1`` ...) to an absolute video path, or to None
    when that view is missing for this take (it is then masked, never filled with zeros).
    `label` is one of LABELS or None for an unlabelled take. `uid` is the dataset's own id of
    the take where it has one besides the name (EgoExo4D's ``take_uid``), else "".
    """

    take_id: str
    videos: dict[str, str | None]
    label: str | None = None
    scenario: str = ""
    participant: str = ""
    split: str = ""
    uid: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False)


class ManifestError(SkillError, ValueError):
    """A dataset description that cannot be read; names the file, the line and the problem."""

    def __init__(self, path: str, line: int | None, problem: str):
        self.path, self.line, self.problem = str(path), line, problem
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
