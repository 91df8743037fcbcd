"""``TrainableHead``: what every head kind does, whatever its model is.

Two implementations: :class:`heads.trainer.NeuralHead` wraps any registered ``nn.Module``
head (AdamW training loop), :class:`heads.lgbm.LightGBMHead` is gradient-boosted trees.
``fit``, ``predict``, ``sweep`` and the run folder only ever talk to this interface.
Shapes: n takes, V views, K clips, N tokens, D width, O the task's output width.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from skill.heads.config import FitConfig
    from skill.heads.data import ClipSequence, Selection, Splits
    from skill.heads.registry import HeadSpec
    from skill.tasks import Task


@runtime_checkable
class TrainableHead(Protocol):
    """A head kind: trained by ``fit``, applied by ``predict_scores``, kept in a run folder."""

    name: str  # the registered head name
    kind: str  # config.json ``model.kind``: "torch" or "lightgbm"
    model_file: str  # the model's file in the run folder
    step: str  # what one history row is: "epoch" or "round"
    options: dict  # keyword arguments that rebuild the model (config.json ``model.options``)
    history: list[dict]  # one dict per step, after ``fit``
    best: int  # the kept step (1-based), after ``fit``
    schedule: dict | None  # after ``fit``: the resolved training budget (config.json
    # ``schedule``: steps, epochs, patience, and how many were run), None where it has none

    def check_task(self, task: Task, schema: dict) -> None:
        """Refuse a task this head kind cannot learn (ConfigError naming why), before any
        training starts."""

    def fit(self, cfg: FitConfig, sel: Selection, splits: Splits) -> None:
        """Train on ``splits.train`` of ``sel``, early-stopping on ``splits.val``."""

    def predict_scores(
        self,
        x: np.ndarray,
        mask: np.ndarray,
        task: Task,
        rows: np.ndarray | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        sequence: ClipSequence | None = None,
    ) -> np.ndarray:
        """The task's scores ``(len(rows), O)`` (all takes when ``rows`` is None; classification:
        class probabilities) for tokens ``x (n, V, K, N, D)`` float16 and view mask ``(n, V)``
        bool. ``sequence``: the clip mask and times of a sequence store's takes (all n), None
        for a samples store: a sequence head reads the whole sequence, a clip head each
        view's mean over its valid clips; on a samples store, the mean of the scores over
        clips."""

    def per_view_scores(
        self, x: np.ndarray, mask: np.ndarray, task: Task, batch_size: int = 64,
        device: str = "cpu", sequence: ClipSequence | None = None,
    ) -> np.ndarray | None:  # fmt: skip
        """Per-view scores ``(n, V, O)``, or None for a head with one output (``sequence``
        as for :meth:`predict_scores`)."""

    def save(self, folder: Path) -> None:
        """Write the model to ``folder / model_file``."""

    @classmethod
    def load(cls, name: str, folder: Path, file: str, options: dict) -> TrainableHead:
        """The trained head saved in ``folder / file`` (safe formats only, never pickle)."""


def head_type(name: str) -> type[TrainableHead]:
    """The TrainableHead class of a registered head: the class itself when it implements the
    interface, :class:`heads.trainer.NeuralHead` for an ``nn.Module`` head."""
    from skill.heads.registry import resolve_head
    from skill.heads.trainer import NeuralHead

    spec = resolve_head(name)
    return spec.cls if spec.trainable else NeuralHead


def new_head(spec: HeadSpec) -> TrainableHead:
    """An untrained head of the resolved kind ``spec``, ready for ``fit``."""
    if spec.trainable:
        return spec.cls(spec.name)
    from skill.heads.trainer import NeuralHead

    return NeuralHead(spec.name, spec=spec)
