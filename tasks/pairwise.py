"""``pairwise``: which of two takes shows more skill (EPIC-Skills, BEST): a head learns a
scalar skill score per take from annotated pairs, with a margin ranking loss.

The pairs come from pairs files (`pipeline.manifest.pairs`; ``skill extract --pairs``) and
the store records them beside the take table (`TokenStore.pairs`: take-table rows, better
take first, and each pair's split). A take's stored target is an optional per-take score
(float32, NaN where the manifest states none; one score, as regression stores it), kept so
that the learned scores can be compared with it by Spearman's rho where it exists; the pairs,
not the scores, are what is learned.

Training: a head outputs one value per take, its skill score; a batch holds the better takes
of B training pairs followed by their worse takes (``(2B, 1)`` outputs), and the loss is
``torch.nn.MarginRankingLoss`` with target 1: ``mean(max(0, margin - (s_better -
s_worse)))``, ``margin`` from the schema (default 1.0; the scores' scale follows it). Clips
and views are averaged as scores (the mean of the outputs). A task bound to pairs
(:meth:`Pairwise.on_pairs`: ``(m, 2)`` positions into the takes it is then given) scores a
split: pairwise accuracy, the fraction of its pairs whose better take scores higher (a tie
counts half), with the pair count, and Spearman's rho against the per-take score over the
takes that have one; the baseline is chance, 0.5. Validation: the same accuracy on the val
pairs (the default monitor) and the loss. Prediction files hold ``skill_score``. LightGBM is
refused: ``lambdarank`` ranks takes within query groups, and a ranking dataset's pairs cross
any grouping of its takes (EPIC-Skills pairs held-out takes with training ones).
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np

from skill.tasks import metrics
from skill.tasks.base import TargetError
from skill.tasks.registry import register_task
from skill.tasks.regression import Regression

DEFAULT_MARGIN = 1.0
CHANCE = 0.5
"""Pairwise accuracy of scores that order a pair by a coin flip."""
_NO_GROUPS = "task pairwise learns from pairs and has no classes for --class-balanced to balance"
NO_LIGHTGBM = (
    "cannot learn from pairs (its lambdarank objective ranks takes within query groups, and "
    "a ranking dataset's pairs cross any grouping of its takes); fit a neural head"
)


class Pairwise(Regression):
    """See the module docstring. ``pairs (m, 2)``: positions, into the takes later given to
    ``validation_row`` and ``evaluate``, of the pairs that score them (None: unbound)."""

    name = "pairwise"
    monitors = ("pair_accuracy", "loss")
    table_metrics = ("pair_accuracy", "spearman")
    baseline_name = "chance"
    metric_labels = {"pair_accuracy": "pair acc.", "spearman": "rho"}
    class_probabilities = False

    def __init__(self, pairs: np.ndarray | None = None, margin: float = DEFAULT_MARGIN):
        super().__init__()
        self.pairs, self.margin = pairs, margin

    # ---- the target in the manifest and the store
    def schema(self, declared: dict | None) -> dict:
        """Regression's schema with one score (the optional per-take score) and ``margin``."""
        declared = dict(declared or {})
        margin = declared.pop("margin", DEFAULT_MARGIN)
        schema = super().schema(declared)
        if len(schema["scores"]) != 1:
            names = ", ".join(entry["name"] for entry in schema["scores"])
            raise TargetError(f"task pairwise compares one per-take score, not several ({names})")
        if not (_positive(margin)):
            raise TargetError(f"pairwise margin must be a positive number, got {margin!r}")
        return {**schema, "margin": float(margin)}

    # ---- learning
    def output_width(self, schema: dict) -> int:
        return 1

    def sample_weights(self, schema: dict, train_targets: np.ndarray) -> np.ndarray:
        raise TargetError(_NO_GROUPS)

    def make_loss(self, schema: dict, train_targets: np.ndarray, balanced: bool, device: str):
        """The margin ranking loss of a pair batch's outputs ``(2B, 1)``: the better takes'
        scores, then the worse takes'; the targets are not used."""
        if balanced:
            raise TargetError(_NO_GROUPS)
        margin = float(schema.get("margin", self.margin))

        def loss(outputs, targets):
            scores = outputs.reshape(2, -1)
            return margin_ranking_loss(scores[0], scores[1], margin)

        return loss

    def to_scores(self, outputs):
        return outputs.float()

    def for_run(self, summary: dict) -> Pairwise:
        return self

    def on_pairs(self, pairs: np.ndarray) -> Pairwise:
        """This task scoring the pairs ``(m, 2)`` (positions into the takes it is given)."""
        return Pairwise(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), self.margin)

    def validation_row(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        """``val_pair_accuracy`` on the bound pairs and ``val_loss``, their mean margin loss."""
        values = _scores(scores)
        better, worse = self._pair_scores(values)
        hinge = np.maximum(0.0, self.margin - (better - worse))
        return {
            "val_loss": float(hinge.mean()) if len(hinge) else math.nan,
            "val_pair_accuracy": pair_accuracy(better, worse),
        }

    def monitor_key(self, row: dict, monitor: str) -> tuple:
        # Higher is better; undefined values rank below every defined one.
        accuracy = row.get("val_pair_accuracy", math.nan)
        accuracy = accuracy if accuracy == accuracy else -1.0
        loss = row.get("val_loss", math.nan)
        loss = -loss if loss == loss else -math.inf
        return (accuracy, loss) if monitor == "pair_accuracy" else (loss, accuracy)

    def evaluate(
        self, schema: dict, targets: np.ndarray, scores: np.ndarray, groups: np.ndarray,
        train_targets: np.ndarray,
    ) -> dict:  # fmt: skip
        """``n`` takes, ``pairs`` (bound pairs), ``pair_accuracy``, ``spearman`` against the
        per-take score over the ``scored`` takes that have one, ``per_scenario`` (the pairs
        within one group), the ``chance`` baseline."""
        values, truth = _scores(scores), _scores(targets)
        better, worse = self._pair_scores(values)
        known = np.isfinite(truth)
        groups = np.asarray(groups).astype(str)
        return {
            "n": int(len(values)),
            "pairs": int(len(better)),
            "pair_accuracy": pair_accuracy(better, worse),
            "scored": int(known.sum()),
            "spearman": metrics.spearman(truth[known], values[known]),
            "per_scenario": self._per_group(values, groups),
            "baselines": {"chance": {"pair_accuracy": CHANCE, "spearman": math.nan}},
        }

    def describe(self, split: str, scores: dict) -> str:
        rho = (
            f"{_f(scores['spearman'])}   (against the per-take score of {scores['scored']} takes)"
            if scores["scored"]
            else "-   (no take has a per-take score)"
        )
        return "\n".join([
            f"{split} (n={scores['n']} takes, {scores['pairs']} pairs):",
            f"  pairwise accuracy  {_f(scores['pair_accuracy'])}   chance {CHANCE:.3f}",
            f"  Spearman rho       {rho}",
        ])  # fmt: skip

    def baseline(self, scores: dict) -> float:
        return CHANCE

    def chance(self, schema: dict) -> float | None:
        return CHANCE

    def prediction_columns(self, scores: np.ndarray, schema: dict) -> dict[str, list]:
        return {"skill_score": _scores(scores).tolist()}

    def plot_run(self, folder: Path, metrics: dict, schema: dict, title: str) -> list[str]:
        return []

    def lightgbm_objective(self, schema: dict) -> dict:
        raise TargetError(NO_LIGHTGBM)

    # ---- pairs
    def _pair_scores(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = np.zeros((0, 2), dtype=np.int64) if self.pairs is None else self.pairs
        return values[pairs[:, 0]], values[pairs[:, 1]]

    def _per_group(self, values: np.ndarray, groups: np.ndarray) -> dict:
        """Group -> its pairs (both takes in it) and their accuracy."""
        pairs = np.zeros((0, 2), dtype=np.int64) if self.pairs is None else self.pairs
        out = {}
        for name in sorted(set(groups.tolist())):
            inside = (groups[pairs[:, 0]] == name) & (groups[pairs[:, 1]] == name)
            chosen = pairs[inside]
            out[name or "(none)"] = {
                "n": int((groups == name).sum()),
                "pairs": int(len(chosen)),
                "pair_accuracy": pair_accuracy(values[chosen[:, 0]], values[chosen[:, 1]]),
            }
        return out


def margin_ranking_loss(better, worse, margin: float = DEFAULT_MARGIN):
    """``mean(max(0, margin - (better - worse)))``: ``torch.nn.MarginRankingLoss`` with every
    target 1 (the first input should rank higher)."""
    return (margin - (better - worse)).clamp(min=0).mean()


def pair_accuracy(better: np.ndarray, worse: np.ndarray) -> float:
    """The fraction of pairs whose better take scores higher, a tie counting half; NaN for
    no pairs."""
    better, worse = np.asarray(better, float), np.asarray(worse, float)
    if not len(better):
        return math.nan
    return float(((better > worse) + 0.5 * (better == worse)).mean())


def _scores(values: np.ndarray) -> np.ndarray:
    """``(n,)`` float64 of ``(n,)`` or ``(n, 1)`` values."""
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _positive(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < math.inf


def _f(value) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


register_task(Pairwise())
