"""``ordinal``: each take is one of K *ordered* levels (EgoExo4D's Novice < Early Expert <
Intermediate Expert < Late Expert), learned with CORN (Shi, Cao and Raschka, "Deep neural
networks for rank-consistent ordinal regression based on conditional probabilities").

Stored as classification stores a level: an int8 index into the schema's ``labels`` (-1:
unlabelled); the schema records ``ordered``, and only a manifest format that declares its
labels ordered gives one. A head outputs K-1 logits, ``z_k`` of ``P(y > k | y > k-1)``; the
loss is CORN's (the binary cross-entropy of each conditional task over the takes it
conditions on, ``y > k-1``). The probability of exceeding a level is the product of the
conditionals, ``P(y > k) = prod_{j<=k} sigmoid(z_j)``, and the level probabilities are their
differences, ``P(y = k) = P(y > k-1) - P(y > k)``: these are the task's scores, averaged over
clips and views, written as ``p_<level>`` and into EgoExo4D's prediction files. The predicted
level is CORN's rank-consistent rule, the count of ``P(y > k) > 0.5`` (the median of the
level distribution), which on one clip's outputs is exactly ``corn_label_from_logits`` of
coral-pytorch. Metrics: classification's, the mean absolute error in levels and the
quadratic weighted kappa, beside the training majority level. LightGBM: its multiclass
objective, its class probabilities read by the same rule.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from skill.tasks import metrics
from skill.tasks.base import TargetError
from skill.tasks.classification import Classification, class_weights, level_columns
from skill.tasks.registry import register_task


class Ordinal(Classification):
    """See the module docstring; shapes: n takes, K levels."""

    name = "ordinal"
    monitors = ("mae", "loss", "balanced_accuracy")
    table_metrics = ("top1", "mae", "balanced_accuracy", "qwk")
    baseline_name = "majority"
    baseline_metrics = ("top1", "mae")
    metric_labels = {"top1": "top-1", "balanced_accuracy": "bal.acc", "mae": "MAE",
                     "qwk": "QWK"}  # fmt: skip
    class_probabilities = True

    # ---- the target in the manifest and the store
    def schema(self, declared: dict | None) -> dict:
        if not (declared or {}).get("ordered"):
            raise TargetError(
                "task ordinal needs levels in a known order, and the manifest's format does "
                "not declare its labels ordered; use --task classification"
            )
        return {**super().schema(declared), "ordered": True}

    # ---- learning
    def output_width(self, schema: dict) -> int:
        return len(schema["labels"]) - 1

    def make_loss(self, schema: dict, train_targets: np.ndarray, balanced: bool, device: str):
        if not balanced:
            return corn_loss
        import torch

        weights = class_weights(np.asarray(train_targets, np.int64), len(schema["labels"]))
        weight = torch.tensor(weights, dtype=torch.float32, device=device)
        return lambda logits, levels: corn_loss(logits, levels, weight[levels])

    def to_scores(self, outputs):
        return level_probabilities(outputs.float())

    def fuse_views(self, outputs, mask):
        return fuse_corn_views(outputs, mask)

    def for_run(self, summary: dict) -> Ordinal:
        return self

    def validation_row(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        y_true = np.asarray(targets, dtype=np.int64)
        y_pred = levels_from_probabilities(scores)
        return {
            "val_loss": corn_loss_of_probabilities(scores, y_true),
            "val_top1": metrics.accuracy(y_true, y_pred),
            "val_balanced_accuracy": metrics.balanced_accuracy(y_true, y_pred, scores.shape[1]),
            "val_mae": metrics.mean_absolute_error(y_true, y_pred),
        }

    def monitor_key(self, row: dict, monitor: str) -> tuple:
        # Higher is better; MAE and balanced accuracy move in steps, so ties go to the lower loss.
        if monitor == "mae":
            return (-row["val_mae"], -row["val_loss"])
        if monitor == "loss":
            return (-row["val_loss"], -row["val_mae"])
        return (row["val_balanced_accuracy"], -row["val_loss"])

    def evaluate(
        self, schema: dict, targets: np.ndarray, scores: np.ndarray, groups: np.ndarray,
        train_targets: np.ndarray,
    ) -> dict:  # fmt: skip
        """Classification's entries with the predicted level (CORN's rule) and ``mae``,
        ``qwk``, the CORN ``loss`` and per scenario ``mae``; the majority baseline's too."""
        levels = len(schema["labels"])
        y_true = np.asarray(targets, int)
        y_pred = levels_from_probabilities(scores) if len(y_true) else np.zeros(0, int)
        train = np.asarray(train_targets, int)
        majority = metrics.majority_baseline(train, y_true, levels)
        constant = np.full(len(y_true), majority["label"])
        majority["mae"] = metrics.mean_absolute_error(y_true, constant)
        majority["qwk"] = metrics.quadratic_kappa(y_true, constant, levels)
        return {
            "n": int(len(y_true)),
            "top1": metrics.accuracy(y_true, y_pred),
            "balanced_accuracy": metrics.balanced_accuracy(y_true, y_pred, levels),
            "macro_f1": metrics.macro_f1(y_true, y_pred, levels),
            "mae": metrics.mean_absolute_error(y_true, y_pred),
            "qwk": metrics.quadratic_kappa(y_true, y_pred, levels),
            "loss": corn_loss_of_probabilities(scores, y_true) if len(y_true) else math.nan,
            "per_scenario": _per_scenario(y_true, y_pred, groups),
            "confusion": metrics.confusion_matrix(y_true, y_pred, levels).tolist(),
            "baselines": {"majority": majority, **metrics.random_baseline(train, y_true, levels)},
        }

    def describe(self, split: str, scores: dict) -> str:
        major = scores["baselines"]["majority"]
        return "\n".join(
            [
                super().describe(split, scores),
                f"  MAE (levels)      {scores['mae']:.3f}   majority {major['mae']:.3f}",
                f"  quadratic kappa   {scores['qwk']:.3f}   majority {major['qwk']:.3f}",
            ]
        )

    def prediction_columns(self, scores: np.ndarray, schema: dict) -> dict[str, list]:
        """``predicted`` (the level by CORN's rule) and ``p_<level>`` per level."""
        return level_columns(schema["labels"], levels_from_probabilities(scores), scores)

    def plot_run(self, folder: Path, scores: dict, schema: dict, title: str) -> list[str]:
        """``confusion.png``: the val and test confusion matrices, with their MAE."""
        from skill.tasks.figures import save_confusions

        return save_confusions(folder, scores, schema["labels"], title, ordered=True)


# ---- CORN ----------------------------------------------------------------------------------


def corn_loss(logits, levels, weights=None):
    """CORN's loss of ``logits (B, K-1)`` for levels ``(B,)`` int64: for each k, the binary
    cross-entropy of ``y > k`` over the takes with ``y > k-1``, summed and divided by the
    number of those terms (coral-pytorch's ``corn_loss``); ``weights (B,)`` weight each take's
    terms (``--class-balanced``)."""
    import torch
    import torch.nn.functional as F

    k = torch.arange(logits.shape[-1], device=logits.device)
    y = levels[:, None]
    above = (y > k).to(logits.dtype)  # (B, K-1): the answer of task k
    counted = (y >= k).to(logits.dtype)  # (B, K-1): task k conditions on y > k-1
    if weights is not None:
        counted = counted * weights[:, None].to(logits.dtype)
    nll = -(above * F.logsigmoid(logits) + (1 - above) * F.logsigmoid(-logits))
    return (nll * counted).sum() / counted.sum()


def corn_levels(logits):
    """CORN's rank-consistent level ``(...)`` int64 of ``logits (..., K-1)``: the count of
    ``P(y > k) = prod_{j<=k} sigmoid(z_j)`` above 0.5."""
    import torch

    return (torch.cumprod(torch.sigmoid(logits), dim=-1) > 0.5).sum(dim=-1)


def level_probabilities(logits):
    """``(..., K-1)`` CORN logits -> ``(..., K)`` level probabilities
    ``P(y = k) = P(y > k-1) - P(y > k)``, ``P(y > -1) = 1``, ``P(y > K-1) = 0``."""
    import torch

    above = torch.cumprod(torch.sigmoid(logits), dim=-1)  # (..., K-1): P(y > k)
    one = torch.ones_like(above[..., :1])
    at_least = torch.cat([one, above], dim=-1)  # (..., K): P(y >= k)
    return at_least - torch.cat([above, torch.zeros_like(one)], dim=-1)


def fuse_corn_views(logits, mask):
    """Per-view CORN logits ``(B, V, K-1)`` and the view mask ``(B, V)`` -> the CORN logits
    ``(B, K-1)`` of the mean over valid views of their level distributions: with
    ``A_k = mean_v P_v(y > k)``, ``z_k = log A_k - log(A_{k-1} - A_k)``, in log space."""
    import torch
    import torch.nn.functional as F

    log_above = torch.cumsum(F.logsigmoid(logits), dim=-1)  # (B, V, K-1): log P_v(y > k)
    log_before = F.pad(log_above[..., :-1], (1, 0))  # log P_v(y > k-1), 0 for k = 0
    log_at = log_before + F.logsigmoid(-logits)  # log P_v(y = k)
    hidden = ~mask[:, :, None]
    # The 1/count of the means cancels in the ratio.
    mean_above = torch.logsumexp(log_above.masked_fill(hidden, -math.inf), dim=1)
    mean_at = torch.logsumexp(log_at.masked_fill(hidden, -math.inf), dim=1)
    return mean_above - mean_at


def levels_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``(n, K)`` level probabilities -> ``(n,)`` CORN's level: the count of
    ``P(y > k) = sum_{j>k} P(y = j)`` above 0.5 (the distribution's median)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    above = np.cumsum(probabilities[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (n, K-1)
    return (above > 0.5).sum(axis=1)


def corn_loss_of_probabilities(probabilities: np.ndarray, levels: np.ndarray) -> float:
    """CORN's loss from level probabilities: a take's CORN terms sum to ``-log P(y = its
    level)`` (the conditionals telescope), over ``min(y + 1, K - 1)`` terms each."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.int64)
    picked = probabilities[np.arange(len(levels)), levels]
    terms = np.minimum(levels + 1, probabilities.shape[1] - 1)
    return float(-np.log(np.clip(picked, 1e-12, None)).sum() / terms.sum())


def _per_scenario(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> dict:
    out = metrics.per_scenario_accuracy(y_true, y_pred, groups)
    groups = np.asarray(groups)
    for name in sorted(set(groups.tolist())):
        rows = groups == name
        out[str(name) or "(none)"]["mae"] = metrics.mean_absolute_error(y_true[rows], y_pred[rows])
    return out


register_task(Ordinal())
