"""What a synthetic dataset is made from: its parameters, file names and their checks."""

from __future__ import annotations

from dataclasses import dataclass

from skill.errors import ConfigError

GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "synth_info.json"
SPLITS: tuple[str, ...] = ("train", "val", "test")
EXO_NAMES: tuple[str, ...] = ("exo1", "exo2", "exo3", "exo4")


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of one synthetic dataset (all of it is a function of these); the field
    docstrings are the options' help of `skill synth`."""

    takes: int = 200
    """Number of takes."""
    seed: int = 0
    """Seed; the same seed and parameters give byte-identical files."""
    size: int = 64
    """Width and height of every video in pixels (even, at least 16)."""
    frames: int = 48
    """Frames per video."""
    fps: int = 15
    """Frame rate written into the videos; motion is defined in seconds."""
    exo_views: int = 4
    """Number of exo cameras (1-4): exo1 front, exo2 left, exo3 right, exo4 high back."""
    participants: int = 20
    """Number of participants (a multiple of 4, at least 12); each has one proficiency level."""
    codec: str = ""
    """Video codec; empty picks libx264 (preset ultrafast) when available, else mpeg4."""

    def __post_init__(self) -> None:
        validate_config(self)

    @property
    def views(self) -> tuple[str, ...]:
        return ("ego", *EXO_NAMES[: self.exo_views])


def validate_config(config: SynthConfig) -> None:
    """Raise ConfigError (a ValueError) naming each parameter a caller got wrong, by its option
    (--exo-views for ``exo_views``)."""
    problems = []
    if config.size < 16 or config.size % 2:
        problems.append(f"--size must be even and at least 16 (yuv420p), not {config.size}")
    if config.frames < 8:
        problems.append(f"--frames must be at least 8, not {config.frames}")
    if config.fps < 1:
        problems.append(f"--fps must be at least 1, not {config.fps}")
    if not 1 <= config.exo_views <= len(EXO_NAMES):
        problems.append(f"--exo-views must be 1 to {len(EXO_NAMES)}, not {config.exo_views}")
    if config.participants < 12 or config.participants % 4:
        problems.append(
            f"--participants must be a multiple of 4 and at least 12, not {config.participants}"
        )
    if config.takes < 12:
        problems.append(
            f"--takes must be at least 12, so that every split has every level, not {config.takes}"
        )
    if problems:
        raise ConfigError("; ".join(problems))
