"""What a synthetic dataset is made from: its parameters, file names and their checks."""

from __future__ import annotations

from dataclasses import dataclass

from skill.errors import ConfigError

GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "synth_info.json"
SPLITS: tuple[str, ...] = ("train", "val", "test")
EXO_NAMES: tuple[str, ...] = ("exo1", "exo2", "exo3", "exo4")
KINDS: tuple[str, ...] = ("cues", "order", "moments")
MAX_STEPS = 8  # one distinct drawing per step (world.STEPS)
CUES_FRAMES = 48
STEP_FRAMES = 16  # frames per step of the order kind when --frames is not given
MOMENTS_FRAMES = 128  # frames of a moments take when --frames is not given: 16 slots of 8
MOMENT_SLOT_FRAMES = 8  # frames of a slot of the moments kind (synth/moments.py)
ORDER_FIELDS: tuple[str, ...] = ("kind", "procedure_steps", "swaps")
"""Fields that only the order kind reads: a cues dataset's synth_info.json leaves them out,
so that it stays what it was before the order kind existed."""
TASKS: tuple[str, ...] = ("classification", "ordinal", "regression", "pairwise")
TASK_FIELDS: tuple[str, ...] = ("task", "scores", "score_noise", "pairs_per_take", "pair_gap")
"""Fields that only a task other than classification reads: a classification dataset's
synth_info.json leaves them out, so that it stays what it was before the tasks existed."""
SCORE_RANGE: tuple[float, float] = (0.0, 10.0)
"""The declared range of every score (``--task regression``)."""


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
    frames: int | None = None
    """Frames per video. Default: 48, or 16 per step with --kind order (about a second a
    step at 15 fps)."""
    fps: int = 15
    """Frame rate written into the videos; motion is defined in seconds."""
    exo_views: int = 4
    """Number of exo cameras (1-4): exo1 front, exo2 left, exo3 right, exo4 high back."""
    participants: int = 20
    """Number of participants (a multiple of 4, at least 12); each has one proficiency level."""
    codec: str = ""
    """Video codec; empty picks libx264 (preset ultrafast) when available, else mpeg4."""
    kind: str = "cues"
    """cues: skill shows in every frame (posture, tremor, placement, speed; four levels).
    order: a procedure of --procedure-steps steps, each a distinct drawing that looks the
    same at every level; Late Experts do the steps in their canonical order, Novices swap
    --swaps pairs of them, so skill shows only in the order across the take (two levels;
    docs/synth.md). moments: a long take of short slots of filler drawings, a few of them
    marked moments (a good or a faulty execution at random times), written as the EgoExo4D
    demonstration benchmark's files (learned by skill extract --task demonstration)."""
    procedure_steps: int = 8
    """Steps of the procedure with --kind order (2 to 8), each lasting --frames /
    --procedure-steps frames."""
    swaps: int = 2
    """Pairs of steps a Novice swaps with --kind order (1 to --procedure-steps / 2)."""
    task: str = "classification"
    """What the manifest states of a take, learned by skill extract --task of the same name.
    classification: its level. ordinal, regression, pairwise: a continuous latent skill per
    take (its participant's, varied a little per take) drives the cues, its level is the
    latent binned; ordinal: the levels, declared ordered; regression: --scores from the
    latent; pairwise: pairs files per split, the better take first (docs/synth.md). With
    --kind cues only."""
    scores: str = "score"
    """Names of the scores with --task regression, comma-separated (tes,pcs for two): each the
    latent skill on a 0 to 10 scale plus its own judges' noise (--score-noise)."""
    score_noise: float = 0.3
    """Standard deviation of the judges' noise on the first of --scores, in score units (0 to
    10); the n-th score has n times as much."""
    pairs_per_take: int = 2
    """Pairs per take of a split with --task pairwise (each pair within one split)."""
    pair_gap: float = 0.25
    """The least difference of latent skill between the takes of a pair with --task pairwise,
    in levels (0 to 1): annotators pair takes whose skill visibly differs."""

    def __post_init__(self) -> None:
        if self.frames is None:  # frozen: set the resolved default once
            default = CUES_FRAMES if self.kind != "order" else STEP_FRAMES * self.procedure_steps
            default = MOMENTS_FRAMES if self.kind == "moments" else default
            object.__setattr__(self, "frames", default)
        validate_config(self)

    @property
    def views(self) -> tuple[str, ...]:
        return ("ego", *EXO_NAMES[: self.exo_views])

    @property
    def score_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.scores.split(","))

    @property
    def latent(self) -> bool:
        """Whether a continuous latent skill drives the takes (every task but classification)."""
        return self.task != "classification"


def validate_config(config: SynthConfig) -> None:
    """Raise ConfigError (a ValueError) naming each parameter a caller got wrong, by its option
    (--exo-views for ``exo_views``)."""
    problems = []
    if config.kind not in KINDS:
        problems.append(f"--kind must be one of {', '.join(KINDS)}, not {config.kind!r}")
    if config.kind == "order":
        problems += order_problems(config)
    if config.kind == "moments" and (
        config.frames % MOMENT_SLOT_FRAMES or config.frames < 4 * MOMENT_SLOT_FRAMES
    ):
        problems.append(
            f"--frames must be a multiple of {MOMENT_SLOT_FRAMES} and at least "
            f"{4 * MOMENT_SLOT_FRAMES} with --kind moments, not {config.frames}"
        )
    problems += task_problems(config)
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


def order_problems(config: SynthConfig) -> list[str]:
    """What is wrong with the settings of an order dataset: steps that have no drawing, a
    step too short to hold a clip, swaps that do not fit."""
    steps = config.procedure_steps
    if not 2 <= steps <= MAX_STEPS:
        return [f"--procedure-steps must be 2 to {MAX_STEPS}, not {steps}"]
    problems = []
    if config.frames % steps or config.frames // steps < 8:
        problems.append(
            f"--frames must be a multiple of --procedure-steps with at least 8 frames a step, "
            f"not {config.frames} for {steps} steps"
        )
    if not 1 <= config.swaps <= steps // 2:
        problems.append(f"--swaps must be 1 to {steps // 2} for {steps} steps, not {config.swaps}")
    return problems


def task_problems(config: SynthConfig) -> list[str]:
    """What is wrong with the task settings: an unknown task, a latent task with the order
    kind, score names that are empty or repeated, noise or pairs out of range."""
    if config.task not in TASKS:
        return [f"--task must be one of {', '.join(TASKS)}, not {config.task!r}"]
    problems = []
    if config.latent and config.kind != "cues":
        has = "levels only" if config.kind == "order" else "events only"
        problems.append(
            f"--task {config.task} needs --kind cues (the {config.kind} kind has {has})"
        )
    names = config.score_names
    if not all(names) or len(set(names)) != len(names):
        problems.append(f"--scores must be distinct comma-separated names, not {config.scores!r}")
    if not 0 <= config.score_noise <= 5:
        problems.append(f"--score-noise must be 0 to 5, not {config.score_noise}")
    if config.pairs_per_take < 1:
        problems.append(f"--pairs-per-take must be at least 1, not {config.pairs_per_take}")
    if not 0 <= config.pair_gap < 1:
        problems.append(f"--pair-gap must be at least 0 and below 1, not {config.pair_gap}")
    return problems
