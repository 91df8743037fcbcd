"""Proxy check of the synthetic dataset, for tests/test_synth.py's slow fusion test: do the
cues survive coarse per-frame statistics, and does fusing views help?"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skill.synth import MANIFEST_NAME, decode_luma, read_manifest
from skill.tasks.classification import EGOEXO4D_LEVELS as LABELS

PROXY_GRID = 4  # thumbnail side of the proxy check; coarse, like one mean-pooled token per frame
PROXY_L2_GRID: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)


def thumbnail_features(luma: np.ndarray, grid: int = PROXY_GRID) -> np.ndarray:
    """Coarse statistics of one video's brightness (F, H, W) -> feature vector (2 g^2 + 6,).

    Per frame a g x g thumbnail (block means); over time its mean, the std of its temporal
    differences, and the motion energy (mean absolute difference) in six time bins."""
    n, h, w = luma.shape
    bh, bw = h // grid, w // grid
    blocks = luma[:, : bh * grid, : bw * grid].astype(np.float32) / 255.0
    thumbs = blocks.reshape(n, grid, bh, grid, bw).mean((2, 4)).reshape(n, -1)
    diffs = np.diff(thumbs, axis=0)
    energy = np.abs(diffs).mean(1)
    bins = [chunk.mean() for chunk in np.array_split(energy, 6)]
    return np.concatenate([thumbs.mean(0), diffs.std(0), bins])


def fit_softmax(
    x: np.ndarray, y: np.ndarray, classes: int, l2: float, steps: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent on standardised
    features x (N, D) and labels y (N,); returns weights (D, C) and bias (C,)."""
    weights = np.zeros((x.shape[1], classes))
    bias = np.zeros(classes)
    onehot = np.eye(classes)[y]
    for _ in range(steps):
        logits = x @ weights + bias
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        grad = (prob - onehot) / len(x)
        weights -= 0.5 * (x.T @ grad + l2 * weights)
        bias -= 0.5 * grad.sum(0)
    return weights, bias


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, l2: float):
    """Standardise on train, fit softmax regression, predict test labels (N_test,)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    weights, bias = fit_softmax((train_x - mean) / std, train_y, len(LABELS), l2)
    return (((test_x - mean) / std) @ weights + bias).argmax(1)


def choose_l2(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 4) -> float:
    """L2 strength by cross-validation on train only, folds grouped by participant."""
    people = np.random.default_rng(0).permutation(np.unique(groups))
    fold_of = {p: i % folds for i, p in enumerate(people)}
    fold = np.array([fold_of[g] for g in groups])
    scores = []
    for l2 in PROXY_L2_GRID:
        hits = 0
        for k in range(folds):
            out = fold == k
            hits += (fit_predict(x[~out], y[~out], x[out], l2) == y[out]).sum()
        scores.append(hits)
    return PROXY_L2_GRID[int(np.argmax(scores))]


def proxy_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray, groups: np.ndarray) -> float:
    """Top-1 on the non-train rows of a softmax regression trained on the train rows."""
    l2 = choose_l2(x[train], y[train], groups[train])
    return float((fit_predict(x[train], y[train], x[~train], l2) == y[~train]).mean())


def proxy_view_features(out_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Thumbnail features per view (takes, D) and the take table (label index, split,
    participant), read from a dataset written by `synthesize`."""
    records = read_manifest(Path(out_dir) / MANIFEST_NAME)
    features = {
        view: np.stack(
            [thumbnail_features(decode_luma(Path(out_dir) / r["videos"][view])) for r in records]
        )
        for view in records[0]["videos"]
    }
    table = {
        "label": np.array([LABELS.index(r["label"]) for r in records]),
        "train": np.array([r["split"] == "train" for r in records]),
        "participant": np.array([r["participant"] for r in records]),
    }
    return features, table


def proxy_view_accuracy(out_dir: Path) -> dict[str, float]:
    """Top-1 on val+test of a linear model on coarse per-frame brightness statistics, per view
    and with all views concatenated ("all"); trained on the train split.

    A cheap stand-in for "do the cues survive a tiny backbone, and does fusion help"."""
    features, table = proxy_view_features(out_dir)
    label, train, people = table["label"], table["train"], table["participant"]
    result = {view: proxy_accuracy(x, label, train, people) for view, x in features.items()}
    joined = np.concatenate(list(features.values()), axis=1)
    result["all"] = proxy_accuracy(joined, label, train, people)
    return result
