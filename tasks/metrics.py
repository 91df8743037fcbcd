"""Metrics of predicted classes and the baselines printed beside them (numpy only).

They follow scikit-learn's defaults: ``balanced_accuracy`` is the mean recall over the
classes that occur in ``y_true``; ``macro_f1`` the mean F1 over the classes in ``y_true`` or
``y_pred`` (a class never predicted scores 0); a confusion matrix's rows are true classes.
Baselines, on the same evaluation labels: ``majority`` (the most common *training* label
predicted for every take, ties to the lower index), ``random_uniform`` (``1 / C``) and
``random_prior`` (guessing with the training frequencies: ``sum_c p_train(c) * p_eval(c)``).
"""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return matrix


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Top-1 accuracy; NaN for no samples."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else math.nan


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean per-class recall over the classes present in ``y_true``; NaN for no samples."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return math.nan
    return float((np.diag(matrix)[present] / support[present]).mean())


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Mean F1 over the classes present in ``y_true`` or ``y_pred``; NaN for no samples."""
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    true_pos = np.diag(matrix).astype(float)
    support, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    present = (support + predicted) > 0
    if not present.any():
        return math.nan
    # F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (support + predicted)
    f1 = 2 * true_pos[present] / (support[present] + predicted[present])
    return float(f1.mean())


def per_scenario_accuracy(
    y_true: np.ndarray, y_pred: np.ndarray, scenario: np.ndarray
) -> dict[str, dict]:
    """``{scenario: {"n": count, "top1": accuracy}}``, scenarios sorted by name."""
    y_true, y_pred, scenario = np.asarray(y_true), np.asarray(y_pred), np.asarray(scenario)
    out = {}
    for name in sorted(set(scenario.tolist())):
        rows = scenario == name
        out[str(name) or "(none)"] = {
            "n": int(rows.sum()),
            "top1": accuracy(y_true[rows], y_pred[rows]),
        }
    return out


def majority_label(train_labels: np.ndarray, num_classes: int) -> int:
    """Most common training label; ties go to the lower class index."""
    return int(np.bincount(np.asarray(train_labels, int), minlength=num_classes).argmax())


def majority_baseline(train_labels: np.ndarray, y_true: np.ndarray, num_classes: int) -> dict:
    """Scores of predicting the training majority label for every evaluation take."""
    label = majority_label(train_labels, num_classes)
    y_pred = np.full(len(y_true), label)
    return {
        "label": label,
        "top1": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, num_classes),
        "macro_f1": macro_f1(y_true, y_pred, num_classes),
    }


def random_baseline(train_labels: np.ndarray, y_true: np.ndarray, num_classes: int) -> dict:
    """Expected top-1 of uniform guessing and of guessing by the training label prior."""
    train_prior = np.bincount(np.asarray(train_labels, int), minlength=num_classes)
    eval_prior = np.bincount(np.asarray(y_true, int), minlength=num_classes)
    if train_prior.sum() == 0 or eval_prior.sum() == 0:
        prior = math.nan
    else:
        prior = float((train_prior / train_prior.sum()) @ (eval_prior / eval_prior.sum()))
    return {"random_uniform": 1.0 / num_classes, "random_prior": prior}
