"""``lightgbm`` head: gradient-boosted trees on pooled per-view features.

Features: per view, the mean over all clips and tokens, ``(D,)``; the views are concatenated
in view order, ``(V * D,)``, with NaN for a missing view (LightGBM routes missing values
natively, so a missing view is never mistaken for an all-zero one).

The objective and its metrics are the task's (classification: multiclass, log-loss first).
Reproducibility: ``deterministic=True``, ``force_row_wise=True``, a fixed ``num_threads`` and
``seed`` give an identical model string between runs on one machine. Early stopping watches
the objective's first metric on the validation split; the model keeps the best round.
The model is saved and loaded as LightGBM's own text format only (never pickle).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skill.errors import ConfigError
from skill.heads.data import Selection, Splits
from skill.heads.registry import register_head
from skill.tasks import TargetError, Task

if TYPE_CHECKING:
    from skill.heads.config import FitConfig

# Rows per chunk when pooling: bounds the float32 temporary of the pooling.
POOL_CHUNK = 256


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
        self.schedule: dict | None = None  # rounds and early stopping are lgbm_* settings
        self.best = 0

    @property
    def model(self):
        """The LightGBM Booster."""
        return self.booster

    def check_task(self, task: Task, schema: dict) -> None:
        lightgbm_objective(task, schema)

    def fit(self, cfg: FitConfig, sel: Selection, splits: Splits) -> None:
        self.booster, self.history, self.best = train_lightgbm(cfg, sel, splits)

    def predict_scores(
        self, x, mask, task: Task, rows=None, batch_size=64, device="cpu"
    ) -> np.ndarray:
        if rows is not None:
            x, mask = x[rows], mask[rows]
        return lightgbm_scores(self.booster, task, x, mask)

    def per_view_scores(self, x, mask, task: Task, batch_size=64, device="cpu") -> None:
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


def lightgbm_params(cfg: FitConfig, task: Task, schema: dict) -> dict:
    """LightGBM parameters of a config and the task's objective, with the settings that make
    it deterministic."""
    return {
        **lightgbm_objective(task, schema),
        "learning_rate": cfg.lgbm_learning_rate,
        "num_leaves": cfg.lgbm_num_leaves,
        "min_data_in_leaf": cfg.lgbm_min_data_in_leaf,
        "feature_fraction": cfg.lgbm_feature_fraction,
        "bagging_fraction": cfg.lgbm_bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": cfg.lgbm_lambda_l2,
        "seed": cfg.seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": cfg.lgbm_threads,
        "verbose": -1,
    }


def lightgbm_objective(task: Task, schema: dict) -> dict:
    """The task's LightGBM objective, or a ConfigError saying the task has none."""
    try:
        return task.lightgbm_objective(schema)
    except TargetError as err:
        raise ConfigError(f"--head lightgbm: {err}") from None


def train_lightgbm(cfg: FitConfig, sel: Selection, splits: Splits):
    """Train on the train split, early-stopping on val; returns (booster, history, best round).

    The returned booster holds only the trees up to the best round, exactly as saved.
    """
    import lightgbm as lgb

    task = sel.task
    params = lightgbm_params(cfg, task, sel.schema)
    features = pooled_features(sel.x, sel.mask)
    y_train = sel.targets[splits.train]
    weights = task.sample_weights(sel.schema, y_train) if cfg.class_balanced else None
    train_set = lgb.Dataset(features[splits.train], y_train, weight=weights, free_raw_data=False)
    val_set = lgb.Dataset(features[splits.val], sel.targets[splits.val], reference=train_set)
    evals: dict = {}
    callbacks = [lgb.record_evaluation(evals)]
    if cfg.lgbm_early_stopping:
        callbacks.append(
            lgb.early_stopping(cfg.lgbm_early_stopping, first_metric_only=True, verbose=False)
        )
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=cfg.lgbm_rounds,
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
