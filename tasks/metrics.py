"""Metrics of predicted classes, ordered levels and scores, and the baselines printed beside
them (numpy only).

They follow scikit-learn's defaults: ``balanced_accuracy`` is the mean recall over the
classes that occur in ``y_true``; ``macro_f1`` the mean F1 over the classes in ``y_true`` or
``y_pred`` (a class never predicted scores 0); a confusion matrix's rows are true classes.
Baselines, on the same evaluation labels: ``majority`` (the most common *training* label
predicted for every take, ties to the lower index), ``random_uniform`` (``1 / C``) and
``random_prior`` (guessing with the training frequencies: ``sum_c p_train(c) * p_eval(c)``).
Levels add the mean absolute error and the quadratic weighted kappa; scores Spearman's rho
(ties ranked as scipy does), Pearson's r, the Fisher-z mean of correlations and the relative
L2 distance of action quality assessment.
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


# ---- ordered levels ------------------------------------------------------------------------


def mean_absolute_error(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute difference (in levels for level indices); NaN for no samples."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    return float(np.abs(y_true - y_pred).mean()) if len(y_true) else math.nan


def quadratic_kappa(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Cohen's kappa with quadratic weights over the levels ``0..C-1`` (scikit-learn's
    ``cohen_kappa_score(weights="quadratic", labels=range(C))``): ``1 - sum(w O) / sum(w E)``,
    ``w_ij = (i - j)^2``, O the confusion matrix, E the outer product of its marginals over n.
    NaN for no samples or when E puts no weight off the diagonal (one level in both)."""
    observed = confusion_matrix(y_true, y_pred, num_classes).astype(float)
    n = observed.sum()
    if n == 0:
        return math.nan
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / n
    levels = np.arange(num_classes)
    weights = (levels[:, None] - levels[None, :]) ** 2
    chance = float((weights * expected).sum())
    return 1.0 - float((weights * observed).sum()) / chance if chance > 0 else math.nan


# ---- scores ----------------------------------------------------------------------------------


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their mean rank (scipy's ``rankdata``, method "average")."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    # Runs of equal values: each gets the mean of the positions it spans.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    out = np.empty(len(values))
    out[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return out


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; NaN for fewer than two samples or a constant input (r is undefined)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    norm = math.sqrt(float((dx**2).sum()) * float((dy**2).sum()))
    return float((dx * dy).sum()) / norm if norm > 0 else math.nan


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the ranks (ties averaged); NaN when undefined."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return pearson(ranks(x), ranks(y)) if len(x) >= 2 else math.nan


FISHER_Z_CLIP = 1 - 1e-12
"""|rho| is clipped below 1 before arctanh, so that a group ordered perfectly counts as a
large finite z instead of an infinite one."""


def fisher_z_mean(correlations: list[float]) -> float:
    """``tanh(mean(arctanh(rho)))`` over the defined correlations (NaN ones left out); NaN
    when none is defined. The average of correlations of AQA's per-class protocol."""
    defined = np.asarray([r for r in correlations if r == r], float)
    if not len(defined):
        return math.nan
    return float(np.tanh(np.arctanh(np.clip(defined, -FISHER_Z_CLIP, FISHER_Z_CLIP)).mean()))


def relative_l2(y_true: np.ndarray, y_pred: np.ndarray, low: float, high: float) -> float:
    """``mean(((s - s_hat) / (high - low))^2) * 100`` (AQA's relative L2 distance); NaN for no
    samples or an empty range."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    if not len(y_true) or not high > low:
        return math.nan
    return float((((y_true - y_pred) / (high - low)) ** 2).mean() * 100)
