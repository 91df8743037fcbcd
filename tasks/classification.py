"""``classification``: each take is one of C named levels (EgoExo4D's demonstrator
proficiency: Novice, Early, Intermediate, Late Expert).

Stored as an int8 index into the schema's ``labels`` (-1: unlabelled). A head outputs C
logits; the loss is cross-entropy (weighted by inverse class frequency with
``--class-balanced``); clips and views are averaged as softmax probabilities. Metrics:
top-1, balanced accuracy, macro-F1, per scenario, the confusion matrix, beside the training
majority class and chance. LightGBM: its multiclass objective.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from skill.tasks import metrics
from skill.tasks.base import TargetError, TargetSpec
from skill.tasks.registry import register_task

EGOEXO4D_LEVELS = ("Novice", "Early Expert", "Intermediate Expert", "Late Expert")
"""EgoExo4D's proficiency levels, in the order its files and scorer use: the default labels."""
MAX_CLASSES = 127  # an int8 index


class Classification:
    """See the module docstring; shapes: n takes, C classes."""

    name = "classification"
    monitors = ("balanced_accuracy", "loss")
    table_metrics = ("top1", "balanced_accuracy", "macro_f1")
    baseline_name = "majority"
    baseline_metrics = ("top1",)
    metric_labels = {"top1": "top-1", "balanced_accuracy": "bal.acc", "macro_f1": "macro-F1"}
    class_probabilities = True

    # ---- the target in the manifest and the store
    def schema(self, declared: dict | None) -> dict:
        labels = list((declared or {}).get("labels") or EGOEXO4D_LEVELS)
        if len(labels) < 2 or len(set(labels)) != len(labels) or len(labels) > MAX_CLASSES:
            raise TargetError(
                f"classification needs 2 to {MAX_CLASSES} distinct labels, got {labels}"
            )
        if not all(isinstance(label, str) and label for label in labels):
            raise TargetError(f"classification labels must be non-empty text, got {labels}")
        return {"labels": labels}

    def target_spec(self, schema: dict) -> TargetSpec:
        labels = schema["labels"]
        # CF's way to name categories, so that xarray users see what the index means.
        attrs = {
            "flag_values": list(range(len(labels))),
            "flag_meanings": " ".join(label.replace(" ", "_") for label in labels),
            "missing": -1,
        }
        return TargetSpec("label", "int8", (), -1, low=0, high=len(labels) - 1, attrs=attrs)

    def encode(self, value, schema: dict) -> int:
        if value is None:
            return -1
        labels = schema["labels"]
        if value not in labels:
            raise TargetError(
                f"unknown label {value!r}; allowed labels: {', '.join(labels)} (or null for an "
                "unlabelled take)"
            )
        return labels.index(value)

    def decode(self, stored: np.ndarray, schema: dict) -> list:
        labels = schema["labels"]
        return [labels[int(i)] if i >= 0 else None for i in np.asarray(stored).reshape(-1)]

    def labelled(self, stored: np.ndarray) -> np.ndarray:
        return np.asarray(stored) >= 0

    def strata(self, stored: np.ndarray) -> np.ndarray:
        return np.asarray(stored, dtype=np.int64)

    def train_summary(self, schema: dict, train_targets: np.ndarray) -> dict:
        """``class_counts``: training takes per class."""
        counts = np.bincount(np.asarray(train_targets, np.int64), minlength=len(schema["labels"]))
        return {"class_counts": counts.tolist()}

    def summary_targets(self, summary: dict, schema: dict) -> np.ndarray:
        """Training targets with the summary's class counts: what the baselines need."""
        counts = summary["class_counts"]
        return np.repeat(np.arange(len(counts)), counts)

    # ---- learning
    def output_width(self, schema: dict) -> int:
        return len(schema["labels"])

    def sample_weights(self, schema: dict, train_targets: np.ndarray) -> np.ndarray:
        """Inverse class frequency per training take, ``n / (C * count_c)``."""
        y = np.asarray(train_targets, dtype=np.int64)
        return class_weights(y, len(schema["labels"]))[y]

    def make_loss(self, schema: dict, train_targets: np.ndarray, balanced: bool, device: str):
        import torch

        if not balanced:
            return torch.nn.CrossEntropyLoss()
        weights = class_weights(np.asarray(train_targets, np.int64), len(schema["labels"]))
        weight = torch.tensor(weights, dtype=torch.float32, device=device)
        return torch.nn.CrossEntropyLoss(weight=weight)

    def torch_targets(self, stored: np.ndarray):
        import torch

        return torch.from_numpy(np.asarray(stored, dtype=np.int64))

    def to_scores(self, outputs):
        import torch

        return torch.softmax(outputs.float(), dim=-1)

    def fuse_views(self, outputs, mask):
        """``log(mean over valid views of softmax(outputs_v))``: the official EgoExo4D
        baselines' and scorer's fusion; cross-entropy on it is the NLL of the mean."""
        import torch

        log_probs = torch.log_softmax(outputs, dim=-1)  # (B, V, C)
        # Missing views get log-probability -inf, i.e. probability 0 in the sum.
        log_probs = log_probs.masked_fill(~mask[:, :, None], -math.inf)
        count = mask.sum(dim=1, keepdim=True).to(log_probs.dtype)  # (B, 1)
        return torch.logsumexp(log_probs, dim=1) - torch.log(count)  # (B, C)

    def for_run(self, summary: dict) -> Classification:
        return self

    def validation_row(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        y_true = np.asarray(targets, dtype=np.int64)
        y_pred = scores.argmax(axis=1)
        return {
            "val_loss": _nll(scores, y_true),
            "val_top1": metrics.accuracy(y_true, y_pred),
            "val_balanced_accuracy": metrics.balanced_accuracy(y_true, y_pred, scores.shape[1]),
        }

    def monitor_key(self, row: dict, monitor: str) -> tuple:
        # Higher is better; ties in balanced accuracy are broken by the lower loss.
        if monitor == "loss":
            return (-row["val_loss"], row["val_balanced_accuracy"])
        return (row["val_balanced_accuracy"], -row["val_loss"])

    def evaluate(
        self, schema: dict, targets: np.ndarray, scores: np.ndarray, groups: np.ndarray,
        train_targets: np.ndarray,
    ) -> dict:  # fmt: skip
        """n, top1, balanced_accuracy, macro_f1, loss (mean negative log-likelihood),
        per_scenario, confusion (nested lists) and the baselines."""
        num_classes = len(schema["labels"])
        y_true = np.asarray(targets, int)
        y_pred = np.asarray(scores).argmax(axis=1) if len(y_true) else np.zeros(0, int)
        train = np.asarray(train_targets, int)
        return {
            "n": int(len(y_true)),
            "top1": metrics.accuracy(y_true, y_pred),
            "balanced_accuracy": metrics.balanced_accuracy(y_true, y_pred, num_classes),
            "macro_f1": metrics.macro_f1(y_true, y_pred, num_classes),
            "loss": _nll(scores, y_true) if len(y_true) else math.nan,
            "per_scenario": metrics.per_scenario_accuracy(y_true, y_pred, groups),
            "confusion": metrics.confusion_matrix(y_true, y_pred, num_classes).tolist(),
            "baselines": {
                "majority": metrics.majority_baseline(train, y_true, num_classes),
                **metrics.random_baseline(train, y_true, num_classes),
            },
        }

    def describe(self, split: str, scores: dict) -> str:
        base = scores["baselines"]
        major = base["majority"]
        return "\n".join(
            [
                f"{split} (n={scores['n']}):",
                f"  top-1             {scores['top1']:.3f}   majority {major['top1']:.3f}"
                f"   random {base['random_uniform']:.3f} (by train prior {base['random_prior']:.3f})",
                f"  balanced accuracy {scores['balanced_accuracy']:.3f}"
                f"   majority {major['balanced_accuracy']:.3f}",
                f"  macro-F1          {scores['macro_f1']:.3f}   majority {major['macro_f1']:.3f}",
            ]
        )

    def baseline(self, scores: dict) -> float:
        """The training majority class's top-1 on a split."""
        return scores["baselines"]["majority"]["top1"]

    def chance(self, schema: dict) -> float | None:
        return 1.0 / len(schema["labels"])

    def prediction_columns(self, scores: np.ndarray, schema: dict) -> dict[str, list]:
        """``predicted`` (the class name) and ``p_<class>`` per class."""
        return level_columns(schema["labels"], scores.argmax(axis=1), scores)

    def plot_run(self, folder: Path, scores: dict, schema: dict, title: str) -> list[str]:
        """``confusion.png``: the val and test confusion matrices."""
        from skill.tasks.figures import save_confusions

        return save_confusions(folder, scores, schema["labels"], title)

    def lightgbm_objective(self, schema: dict) -> dict:
        return {
            "objective": "multiclass",
            "num_class": len(schema["labels"]),
            "metric": ["multi_logloss", "multi_error"],
        }

    def lightgbm_row(self, evals: dict[str, float]) -> dict:
        """A boosting round's validation scores (LightGBM's metrics) as a validation row."""
        return {"val_loss": evals["multi_logloss"], "val_top1": 1.0 - evals["multi_error"]}

    def lightgbm_scores(self, raw: np.ndarray) -> np.ndarray:
        return np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)


def class_weights(train_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``n / (C * count_c)`` (0 for a class absent from training)."""
    counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    weights = np.zeros(num_classes)
    present = counts > 0
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def _nll(scores: np.ndarray, y_true: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes under probabilities ``scores``."""
    picked = np.asarray(scores)[np.arange(len(y_true)), y_true]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def level_columns(labels: list[str], predicted: np.ndarray, scores: np.ndarray) -> dict[str, list]:
    """Prediction columns of a task with named levels: ``predicted`` (the level name of each
    index in ``predicted``) and ``p_<level>`` from the ``(n, C)`` probabilities ``scores``."""
    columns: dict[str, list] = {"predicted": [labels[int(i)] for i in predicted]}
    for c, name in enumerate(labels):
        columns[f"p_{name}"] = scores[:, c].tolist()
    return columns


register_task(Classification())
