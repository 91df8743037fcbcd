"""What a task is: everything about a take's target that the stages need, behind one object.

A task says what is learned from a take (a skill level, a score, ...): how its target is
read from a manifest and checked, how it is stored (one array of the take table), how wide a
head's output is, the loss, what per-clip outputs become before clips and views are
averaged, how a validation split is scored and which score picks the best epoch, the metrics
and baselines of a split, the columns of a prediction file, the plots of a run, and
LightGBM's objective. The stages ask the task; none of them assumes one.

Shapes: n takes, O the head's output width; ``targets`` are the stored form ``(n, *shape)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from skill.errors import SkillError


@dataclass(frozen=True)
class TargetSpec:
    """How a task's targets are stored: one per-take array of the take table."""

    array: str
    """The array's name in the store (e.g. ``label``)."""
    dtype: str
    """Its zarr data type (e.g. ``int8``, ``float32``)."""
    shape: tuple[int, ...] = ()
    """Its shape per take (``()`` for one value)."""
    fill: Any = 0
    """The value of a take without a target (unlabelled)."""
    low: float | None = None
    """The smallest value a stored target may hold (besides ``fill``), if bounded."""
    high: float | None = None
    """The largest value a stored target may hold, if bounded."""
    attrs: dict = field(default_factory=dict)
    """Attributes of the array (e.g. CF's ``flag_meanings``, for xarray users)."""

    def record(self) -> dict:
        return {
            "array": self.array, "dtype": self.dtype, "shape": list(self.shape),
            "fill": self.fill, "low": self.low, "high": self.high, "attrs": dict(self.attrs),
        }  # fmt: skip


class Task(Protocol):
    """One kind of target (see the module docstring). Implementations are plain classes
    registered by ``tasks.register_task``; numpy in every method but the loss and the
    output transform, which import torch when called."""

    name: str
    monitors: tuple[str, ...]
    """Validation scores that may pick the best epoch (``--monitor``); the first is the
    default."""
    table_metrics: tuple[str, ...]
    """Metrics a sweep tabulates (mean and spread over seeds), the first one headlined."""
    baseline_name: str
    """The baseline every result is printed beside (classification: ``majority``)."""
    baseline_metrics: tuple[str, ...]
    """The table metrics a sweep shows the baseline's value of (classification: ``top1``;
    optional: the headline alone when a task leaves it out)."""
    metric_labels: dict[str, str]
    """Short names of metrics for table headers (e.g. ``top1`` -> ``top-1``), where wanted."""
    class_probabilities: bool
    """Whether the scores are probabilities over the schema's ``labels`` with a
    ``predicted`` label column (what EgoExo4D's prediction files are written from)."""

    # ---- the target in the manifest and the store (numpy only)
    def schema(self, declared: dict | None) -> dict:
        """The task's schema (e.g. the class names) from what a manifest format declares
        (None: the task's default)."""

    def target_spec(self, schema: dict) -> TargetSpec:
        """How targets of this schema are stored."""

    def encode(self, value: Any, schema: dict) -> Any:
        """A manifest's target (None: none) as the store holds it; raises TargetError saying
        what is wrong with it."""

    def decode(self, stored: np.ndarray, schema: dict) -> list:
        """Stored targets ``(n, *shape)`` as a manifest states them (None where none)."""

    def labelled(self, stored: np.ndarray) -> np.ndarray:
        """``(n,)`` bool: which stored targets are present."""

    def strata(self, stored: np.ndarray) -> np.ndarray:
        """``(n,)`` int: groups a participant-grouped split keeps balanced (labelled rows)."""

    def train_summary(self, schema: dict, train_targets: np.ndarray) -> dict:
        """What a run records of its training targets (classification: the class counts)."""

    def summary_targets(self, summary: dict, schema: dict) -> np.ndarray:
        """Targets standing for the training targets that ``train_summary`` summarised: what
        the baselines of a later prediction are computed from."""

    # ---- learning
    def output_width(self, schema: dict) -> int:
        """O, the width of a head's output."""

    def sample_weights(self, schema: dict, train_targets: np.ndarray) -> np.ndarray:
        """``(n,)`` weights that make each group of training takes count alike
        (``--class-balanced``); raises TargetError for a task without groups."""

    def make_loss(self, schema: dict, train_targets: np.ndarray, balanced: bool, device: str):
        """A callable ``(outputs (B, O), targets (B, *shape)) -> scalar`` torch loss;
        ``balanced``: weight the training takes so that each group counts alike (where the
        task has groups; refuse otherwise)."""

    def torch_targets(self, stored: np.ndarray):
        """Stored targets as the tensor the loss takes."""

    def to_scores(self, outputs):
        """A head's raw outputs ``(..., O)`` (torch) as the scores averaged over clips and
        views at evaluation (classification: probabilities)."""

    def fuse_views(self, outputs, mask):
        """Per-view outputs ``(B, V, O)`` (torch) and the view mask ``(B, V)`` as one output
        ``(B, O)`` whose scores are the mean of the valid views' scores: what a late-fusion
        head outputs (classification: the log of the mean softmax)."""

    def for_run(self, summary: dict) -> Task:
        """This task as a run whose training targets ``summary`` (``train_summary``) describes
        applies it to its heads' outputs (regression: scores back in their own units from the
        standardised outputs it trains); a task whose outputs need nothing of the training
        targets returns itself."""

    def validation_row(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        """``val_<name>`` scores of the validation split, ``val_loss`` among them."""

    def monitor_key(self, row: dict, monitor: str) -> tuple:
        """What the best epoch maximises, from a validation row."""

    def evaluate(
        self, schema: dict, targets: np.ndarray, scores: np.ndarray, groups: np.ndarray,
        train_targets: np.ndarray,
    ) -> dict:  # fmt: skip
        """metrics.json's entry of a split: ``n``, the task's metrics, ``per_scenario`` (by
        ``groups``) and ``baselines`` (computed from ``train_targets``)."""

    def describe(self, split: str, metrics: dict) -> str:
        """The metrics of a split as the lines a user reads, baselines beside them."""

    def baseline(self, scores: dict) -> float:
        """The baseline's headline metric on a split (from ``evaluate``'s result)."""

    def chance(self, schema: dict) -> float | None:
        """The headline metric of guessing blindly (a sweep's chance line), if defined."""

    def prediction_columns(self, scores: np.ndarray, schema: dict) -> dict[str, list]:
        """A prediction file's columns for scores ``(n, O)``: column -> (n,) values."""

    def plot_run(self, folder: Path, metrics: dict, schema: dict, title: str) -> list[str]:
        """Write the task's figures of a run into ``folder``; returns their file names."""

    # Optional: a task that plots a run's predictions themselves (regression's scatter) has
    # ``plot_predictions(folder, predicted, metrics, schema, title) -> list[str]``, where
    # ``predicted`` is split -> {"targets", "scores", "groups"} of the val and test takes.

    def lightgbm_objective(self, schema: dict) -> dict:
        """LightGBM's objective parameters (raises ValueError if it has none for the task)."""

    def lightgbm_row(self, evals: dict[str, float]) -> dict:
        """One boosting round's values of the objective's metrics as a validation row
        (``val_loss`` among them)."""

    def lightgbm_scores(self, raw: np.ndarray) -> np.ndarray:
        """A booster's predictions as scores ``(n, O)``."""


class TargetError(SkillError, ValueError):
    """A target that a task cannot take; the message says what is wrong with it."""


def encode_all(task: Task, values: Sequence, schema: dict, where: Callable[[int], str]) -> list:
    """Every manifest target encoded, a bad one refused naming its place (``where(i)``)."""
    out = []
    for i, value in enumerate(values):
        try:
            out.append(task.encode(value, schema))
        except TargetError as err:
            raise TargetError(f"{where(i)}: {err}") from None
    return out
