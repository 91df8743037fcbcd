"""``lightgbm`` head: gradient-boosted trees on pooled per-view features.

Features: per view, the mean over all clips and tokens, ``(D,)`` (on a sequence store, over
its valid clips: :func:`heads.data.pool_clips`); the views are concatenated
in view order, ``(V * D,)``, with NaN for a missing view (LightGBM routes missing values
natively, so a missing view is never mistaken for an all-zero one).

The objective and its metrics are the task's (classification: multiclass, log-loss first).
Reproducibility: ``deterministic=True``, ``force_row_wise=True``, a fixed ``num_threads`` and
``seed`` give an identical model string between runs on one machine. Early stopping watches
the objective's first metric on the validation split; the model keeps the best round.
The model is saved and loaded as LightGBM's own text format only (never pickle). The head's
own settings are :class:`LightGBMSettings`, nested in ``FitConfig.lightgbm`` (the --lgbm-*
options).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from skill.errors import ConfigError
from skill.heads.data import pool_clips
from skill.heads.registry import register_head
from skill.tasks import TargetError, Task

if TYPE_CHECKING:
    from skill.heads.data import Selection, Splits

# Rows per chunk when pooling: bounds the float32 temporary of the pooling.
POOL_CHUNK = 256


@dataclass(frozen=True)
class LightGBMSettings:
    """The ``lightgbm`` head's own settings, nested in ``FitConfig.lightgbm``; one docstring per
    field, the command's help for its option (``--lgbm-rounds`` for ``lgbm_rounds``). The
    ranges are checked with the fit's other settings (``FitConfig``)."""

    lgbm_rounds: int = 500
    """LightGBM: maximum boosting rounds."""
    lgbm_learning_rate: float = 0.05
    """LightGBM: shrinkage rate."""
    lgbm_num_leaves: int = 15
    """LightGBM: maximum leaves per tree."""
    lgbm_early_stopping: int = 50
    """LightGBM: stop after this many rounds without a better validation log-loss (0: off)."""
    lgbm_min_data_in_leaf: int = 10
    """LightGBM: minimum number of takes in a leaf."""
    lgbm_feature_fraction: float = 0.8
    """LightGBM: fraction of the features each tree samples, in (0, 1]."""
    lgbm_bagging_fraction: float = 0.8
    """LightGBM: fraction of the training takes each tree samples (bagging every round), in
    (0, 1]."""
    lgbm_lambda_l2: float = 1.0
    """LightGBM: L2 regularisation of the leaf values."""
    lgbm_threads: int = 1
    """LightGBM: fixed thread count (part of what makes its result reproducible; one thread
    is as fast on a few thousand takes and cannot thrash on shared cores)."""

    least: ClassVar[dict[str, float]] = {
        "lgbm_rounds": 1, "lgbm_num_leaves": 2, "lgbm_early_stopping": 0,
        "lgbm_min_data_in_leaf": 1, "lgbm_lambda_l2": 0, "lgbm_threads": 1,
    }  # fmt: skip
    """The least value of each field that has one."""
    within: ClassVar[dict[str, str]] = {
        "lgbm_feature_fraction": "(0, 1]", "lgbm_bagging_fraction": "(0, 1]",
    }  # fmt: skip
    """The interval of each field that has one."""


@register_head("lightgbm")
class LightGBMHead:
    """:class:`heads.interface.TrainableHead` of gradient-boosted trees: pooled features
    ``(n, V * D)`` (see :func:`pooled_features`) -> the task's scores ``(n, O)`` (with the
    task's objective: classification's multiclass gives probabilities); saved as LightGBM's
    text model ``model.txt``. Runs on the cpu whatever ``device`` says."""

    kind = "lightgbm"
    model_file = "model.txt"
    step = "round"

    def __init__(self, name: str = "lightgbm", booster=None, options: dict | None = None):
        self.name, self.booster = name, booster
        self.options = dict(options or {})  # nothing rebuilds a booster: {}
        self.history: list[dict] = []
        self.schedule: dict | None = None  # rounds and early stopping are its settings
        self.best = 0

    @property
    def model(self):
        """The LightGBM Booster."""
        return self.booster

    def check_task(self, task: Task, schema: dict) -> None:
        lightgbm_objective(task, schema)

    def fit(self, cfg, sel: Selection, splits: Splits) -> None:
        """Train with ``cfg.lightgbm`` (``cfg``: the fit's FitConfig), its seed and balancing."""
        self.booster, self.history, self.best = train_lightgbm(
            cfg.lightgbm, cfg.seed, cfg.class_balanced, sel, splits
        )

    def predict_scores(
        self, x, mask, task: Task, rows=None, batch_size=64, device="cpu", sequence=None
    ) -> np.ndarray:
        if rows is not None:
            x, mask = x[rows], mask[rows]
            sequence = None if sequence is None else sequence.take(rows)
        if sequence is not None:  # the valid clips only, as the fit pooled its selection
            x = pool_clips(x, sequence.mask)
        return lightgbm_scores(self.booster, task, x, mask)

    def per_view_scores(
        self, x, mask, task: Task, batch_size=64, device="cpu", sequence=None
    ) -> None:
        return None  # one output per take

    def save(self, folder: Path) -> None:
        save_lightgbm(self.booster, Path(folder) / self.model_file)

    @classmethod
    def load(cls, name: str, folder: Path, file: str, options: dict) -> LightGBMHead:
        return cls(name, load_lightgbm(Path(folder) / file), options)


def pooled_features(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``x (n, V, K, N, D)`` float16, ``mask (n, V)`` -> ``(n, V * D)`` float32, NaN if missing."""
    n, views, _, _, dim = x.shape
    out = np.empty((n, views, dim), dtype=np.float32)
    for start in range(0, n, POOL_CHUNK):
        chunk = x[start : start + POOL_CHUNK].astype(np.float32)
        out[start : start + POOL_CHUNK] = chunk.mean(axis=(2, 3))
    out[~mask] = np.nan
    return out.reshape(n, views * dim)


def lightgbm_params(settings: LightGBMSettings, seed: int, task: Task, schema: dict) -> dict:
    """LightGBM parameters of the head's settings, a seed and the task's objective, with the
    settings that make it deterministic."""
    return {
        **lightgbm_objective(task, schema),
        "learning_rate": settings.lgbm_learning_rate,
        "num_leaves": settings.lgbm_num_leaves,
        "min_data_in_leaf": settings.lgbm_min_data_in_leaf,
        "feature_fraction": settings.lgbm_feature_fraction,
        "bagging_fraction": settings.lgbm_bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": settings.lgbm_lambda_l2,
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": settings.lgbm_threads,
        "verbose": -1,
    }


def lightgbm_objective(task: Task, schema: dict) -> dict:
    """The task's LightGBM objective, or a ConfigError saying the task has none."""
    try:
        return task.lightgbm_objective(schema)
    except TargetError as err:
        raise ConfigError(f"--head lightgbm: {err}") from None


def train_lightgbm(
    settings: LightGBMSettings, seed: int, balanced: bool, sel: Selection, splits: Splits
):
    """Train on the train split, early-stopping on val; returns (booster, history, best round).
    ``balanced``: weight the samples by inverse training class frequency (--class-balanced).

    The returned booster holds only the trees up to the best round, exactly as saved.
    """
    import lightgbm as lgb

    task = sel.task
    params = lightgbm_params(settings, seed, task, sel.schema)
    features = pooled_features(sel.x, sel.mask)
    # One value per take (a regression store's (n, 1) scores: the objective takes one score).
    y_train = sel.targets[splits.train].reshape(len(splits.train))
    weights = task.sample_weights(sel.schema, y_train) if balanced else None
    train_set = lgb.Dataset(features[splits.train], y_train, weight=weights, free_raw_data=False)
    y_val = sel.targets[splits.val].reshape(len(splits.val))
    val_set = lgb.Dataset(features[splits.val], y_val, reference=train_set)
    evals: dict = {}
    callbacks = [lgb.record_evaluation(evals)]
    if settings.lgbm_early_stopping:
        callbacks.append(
            lgb.early_stopping(settings.lgbm_early_stopping, first_metric_only=True, verbose=False)
        )
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=settings.lgbm_rounds,
        valid_sets=[train_set, val_set],
        valid_names=["train", "val"],
        callbacks=callbacks,
    )
    best = booster.best_iteration or booster.current_iteration()
    # Round-trip through the text format: the in-memory model is then exactly the saved one.
    booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return booster, lightgbm_history(evals, task, params["metric"][0]), best


def lightgbm_history(evals: dict, task: Task, loss: str) -> list[dict]:
    """Per boosting round: the train loss (the objective's first metric) and the task's
    validation row."""
    train, val = evals["train"], evals["val"]
    return [
        {
            "round": i + 1,
            "train_loss": train[loss][i],
            **task.lightgbm_row({name: values[i] for name, values in val.items()}),
        }
        for i in range(len(val[loss]))
    ]


def lightgbm_scores(booster, task: Task, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The task's scores ``(n, O)`` for tokens ``x (n, V, K, N, D)`` and ``mask (n, V)``."""
    if len(x) == 0:
        return np.zeros((0, 0))
    return task.lightgbm_scores(booster.predict(pooled_features(x, mask)))


def save_lightgbm(booster, path: str | Path) -> None:
    """Save as LightGBM's text model format."""
    Path(path).write_text(booster.model_to_string())


def load_lightgbm(path: str | Path):
    """Load a text model saved by :func:`save_lightgbm` (text only, no pickle)."""
    import lightgbm as lgb

    return lgb.Booster(model_str=Path(path).read_text())
