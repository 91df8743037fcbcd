"""``regression``: one or several named scores per take (action quality: one judges' score,
or figure skating's ``tes`` and ``pcs``), each with a declared range or, where none is
declared, the training targets' range.

Schema: ``scores``, a list of ``{"name", "low", "high"}`` (a plain name: no declared range),
and ``group``, what the take table's ``scenario`` column means for this dataset (action
class, apparatus; default ``scenario``): the per-group Spearman correlations are taken over
that column. Stored as float32 ``(n, S)``, NaN where a take has no score (a take with none
is unlabelled). A manifest states a take's target as a number (one score) or an object of
score name to number or null.

Training standardises each score by the mean and standard deviation of the training split
(recorded in the run's ``train_summary``): a head outputs S standardised values, the loss is
their mean squared error over the scores present, and a run's task (``for_run``) maps the
outputs back to the scores' own units, in which everything is averaged (clips, views: the mean
of the scores), reported and written (``score_<name>``). Metrics per score and their mean
over scores: Spearman's rho overall and per group with the groups' Fisher-z mean, Pearson's
r, the relative L2 distance x100 over the score's range, the mean absolute error; beside the
training mean predicted for every take (its relative L2 and MAE; a constant has no rank
correlation, so its rho is undefined). LightGBM: its regression objective, one score only.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np

from skill.tasks import metrics
from skill.tasks.base import TargetError, TargetSpec
from skill.tasks.registry import register_task

DEFAULT_SCORE = "score"
DEFAULT_GROUP = "scenario"
STRATA = 4
"""A participant-grouped split keeps the quarters of the score distribution balanced."""

# A group's rank correlation over fewer takes is +-1 or a few coarse values, and its Fisher z
# (arctanh) then outweighs every larger group: such groups are listed, not averaged.
MIN_FISHER_Z_GROUP = 5


class Regression:
    """See the module docstring; shapes: n takes, S scores. ``center`` and ``scale`` (S,):
    the standardisation a run's outputs are undone by (none: outputs are the scores)."""

    name = "regression"
    monitors = ("loss", "spearman")
    table_metrics = ("spearman", "rel_l2", "pearson", "mae")
    baseline_name = "mean"
    baseline_metrics = ("rel_l2", "mae")  # a constant's rho is undefined
    metric_labels = {"spearman": "rho", "rel_l2": "rel-L2x100", "pearson": "r", "mae": "MAE"}
    class_probabilities = False

    def __init__(self, center: np.ndarray | None = None, scale: np.ndarray | None = None):
        self.center, self.scale = center, scale

    # ---- the target in the manifest and the store
    def schema(self, declared: dict | None) -> dict:
        declared = declared or {}
        given = declared.get("scores") or [DEFAULT_SCORE]
        if not isinstance(given, list):
            raise TargetError(f"regression scores must be a list of names, got {given!r}")
        scores = [_score_entry(entry) for entry in given]
        names = [entry["name"] for entry in scores]
        if len(set(names)) != len(names):
            raise TargetError(f"regression score names must be distinct, got {names}")
        group = declared.get("group") or DEFAULT_GROUP
        if not isinstance(group, str):
            raise TargetError(f"regression group must be a column name, got {group!r}")
        return {"scores": scores, "group": group}

    def target_spec(self, schema: dict) -> TargetSpec:
        scores = schema["scores"]
        ranged = all(entry["low"] is not None for entry in scores)
        low = min(entry["low"] for entry in scores) if ranged else None
        high = max(entry["high"] for entry in scores) if ranged else None
        attrs = {"score_names": [entry["name"] for entry in scores], "missing": "NaN"}
        # "NaN" as zarr's JSON spells it: the attributes stay strict JSON.
        return TargetSpec("score", "float32", (len(scores),), "NaN", low, high, attrs)

    def encode(self, value, schema: dict) -> list[float]:
        scores = schema["scores"]
        names = [entry["name"] for entry in scores]
        if value is None:
            return [math.nan] * len(scores)
        if isinstance(value, dict):
            unknown = [key for key in value if key not in names]
            if unknown:
                raise TargetError(
                    f"unknown score name(s) {', '.join(map(repr, unknown))}; scores: "
                    f"{', '.join(names)}"
                )
            values = [value.get(name) for name in names]
        elif len(scores) == 1:
            values = [value]
        else:
            raise TargetError(
                f"{value!r} is not an object of score name to number (scores: {', '.join(names)})"
            )
        return [_score_value(entry, v) for entry, v in zip(scores, values, strict=True)]

    def decode(self, stored: np.ndarray, schema: dict) -> list:
        names = [entry["name"] for entry in schema["scores"]]
        out: list = []
        for row in _matrix(stored):
            if not np.isfinite(row).any():
                out.append(None)
                continue
            # float32's shortest repr: 7.3 reads back as 7.3, as the manifest said it
            values = [float(str(v)) if np.isfinite(v) else None for v in row.astype(np.float32)]
            out.append(values[0] if len(names) == 1 else dict(zip(names, values, strict=True)))
        return out

    def labelled(self, stored: np.ndarray) -> np.ndarray:
        return np.isfinite(_matrix(stored)).any(axis=1)

    def strata(self, stored: np.ndarray) -> np.ndarray:
        """The quarter of each take's mean rank over its scores (its place in the
        distribution of the given takes)."""
        values = _matrix(stored)
        ranked = np.zeros(values.shape)
        known = np.isfinite(values)
        for s in range(values.shape[1]):
            if known[:, s].any():
                ranked[known[:, s], s] = metrics.ranks(values[known[:, s], s]) / known[:, s].sum()
        place = ranked.sum(axis=1) / np.maximum(known.sum(axis=1), 1)
        return np.minimum((place * STRATA).astype(np.int64), STRATA - 1)

    def train_summary(self, schema: dict, train_targets: np.ndarray) -> dict:
        """Per score: ``scored`` takes, ``mean``, ``std`` (the standardisation), ``min`` and
        ``max`` (the range where none is declared)."""
        values = _matrix(train_targets, len(schema["scores"]))
        summary: dict = {"score_names": [entry["name"] for entry in schema["scores"]]}
        for key in ("scored", "mean", "std", "min", "max"):
            summary[key] = []
        for column in values.T:
            known = column[np.isfinite(column)].astype(np.float64)
            summary["scored"].append(int(len(known)))
            for key, reduce in (("mean", np.mean), ("std", np.std), ("min", np.min),
                                ("max", np.max)):  # fmt: skip
                summary[key].append(float(reduce(known)) if len(known) else None)
        return summary

    def summary_targets(self, summary: dict, schema: dict) -> np.ndarray:
        """Targets with each score's training mean, min and max (what the baselines and a
        range not declared need): per score its min, its max and copies of the one value
        that makes the mean, NaN-padded."""
        columns = [
            _standing_values(n, mean, low, high)
            for n, mean, low, high in zip(
                summary["scored"], summary["mean"], summary["min"], summary["max"], strict=True
            )
        ]
        out = np.full((max(map(len, columns), default=0), len(columns)), np.nan)
        for s, column in enumerate(columns):
            out[: len(column), s] = column
        return out

    # ---- learning
    def output_width(self, schema: dict) -> int:
        return len(schema["scores"])

    def sample_weights(self, schema: dict, train_targets: np.ndarray) -> np.ndarray:
        raise TargetError(_NO_CLASSES)

    def make_loss(self, schema: dict, train_targets: np.ndarray, balanced: bool, device: str):
        """Mean squared error of the outputs against the standardised scores present."""
        import torch

        if balanced:
            raise TargetError(_NO_CLASSES)
        center, scale = standardisation(self.train_summary(schema, train_targets))
        center_t = torch.tensor(center, dtype=torch.float32, device=device)
        scale_t = torch.tensor(scale, dtype=torch.float32, device=device)

        def loss(outputs, targets):
            goal = (targets - center_t) / scale_t
            known = torch.isfinite(goal)
            goal = torch.where(known, goal, torch.zeros_like(goal))
            error = (outputs - goal) * known
            return (error**2).sum() / known.sum().clamp(min=1)

        return loss

    def torch_targets(self, stored: np.ndarray):
        import torch

        return torch.from_numpy(_matrix(stored).astype(np.float32))

    def to_scores(self, outputs):
        import torch

        outputs = outputs.float()
        if self.center is None:
            return outputs
        center = torch.tensor(self.center, dtype=outputs.dtype, device=outputs.device)
        scale = torch.tensor(self.scale, dtype=outputs.dtype, device=outputs.device)
        return outputs * scale + center

    def fuse_views(self, outputs, mask):
        """The mean of the valid views' outputs (the mean of their scores: the map is linear)."""
        weights = mask[:, :, None].to(outputs.dtype)
        return (outputs * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)

    def for_run(self, summary: dict) -> Regression:
        return Regression(*standardisation(summary))

    def validation_row(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        """``val_loss``: the mean squared error in standardised units (the training loss's),
        ``val_spearman``: the mean of the scores' rho."""
        values, scores = _matrix(targets), _matrix(scores)
        scale = np.ones(values.shape[1]) if self.scale is None else self.scale
        known = np.isfinite(values)
        error = np.where(known, (scores - np.where(known, values, 0)) / scale, 0)
        rhos = [
            metrics.spearman(values[known[:, s], s], scores[known[:, s], s])
            for s in range(values.shape[1])
        ]
        return {
            "val_loss": float((error**2).sum() / known.sum()) if known.any() else math.nan,
            "val_spearman": _mean(rhos),
        }

    def monitor_key(self, row: dict, monitor: str) -> tuple:
        # Higher is better; an undefined rho ranks below every defined one.
        rho = row["val_spearman"] if row.get("val_spearman") == row.get("val_spearman") else -2.0
        if monitor == "spearman":
            return (rho, -row["val_loss"])
        return (-row["val_loss"], rho)

    def evaluate(
        self, schema: dict, targets: np.ndarray, scores: np.ndarray, groups: np.ndarray,
        train_targets: np.ndarray,
    ) -> dict:  # fmt: skip
        """``n`` (takes with a score), per score (``scores``: name -> its metrics, range and
        per-group rho) and the mean over scores of ``spearman``, ``spearman_fisher_z`` (the
        Fisher-z mean of the per-group rho), ``pearson``, ``rel_l2`` (x100) and ``mae``;
        ``per_scenario`` (group -> n and the mean rho), the ``mean`` baseline."""
        entries = schema["scores"]
        values = _matrix(targets, len(entries))
        predicted = _matrix(scores, len(entries))
        train = _matrix(train_targets, len(entries))
        groups = np.asarray(groups).astype(str)
        per_score, baseline = {}, {}
        for s, entry in enumerate(entries):
            known = np.isfinite(values[:, s])
            fitted = train[np.isfinite(train[:, s]), s]
            low, high, source = _range(entry, fitted)
            per_score[entry["name"]] = {
                **_score_metrics(values[known, s], predicted[known, s], groups[known], low, high),
                "range": [low, high],
                "range_from": source,
            }
            mean = float(fitted.mean()) if len(fitted) else math.nan
            baseline[entry["name"]] = {
                "value": mean,
                **_score_metrics(
                    values[known, s], np.full(known.sum(), mean), groups[known], low, high
                ),
            }
        return {
            "n": int(np.isfinite(values).any(axis=1).sum()),
            **_means(per_score),
            "scores": per_score,
            "per_scenario": _per_group(per_score),
            "baselines": {"mean": {**_means(baseline), "scores": baseline}},
        }

    def describe(self, split: str, scores: dict) -> str:
        mean = scores["baselines"]["mean"]
        group = next(iter(scores["scores"].values()), {}).get("groups", 0)
        lines = [
            f"{split} (n={scores['n']}):",
            f"  Spearman rho      {_f(scores['spearman'])}   mean: undefined (a constant has "
            "no rank correlation)",
            f"  rho per group     {_f(scores['spearman_fisher_z'])}   (Fisher-z mean over "
            f"{group} group{'s' if group != 1 else ''})",
            f"  Pearson r         {_f(scores['pearson'])}",
            f"  relative L2 x100  {_f(scores['rel_l2'])}   mean {_f(mean['rel_l2'])}",
            f"  MAE               {_f(scores['mae'])}   mean {_f(mean['mae'])}",
        ]
        if len(scores["scores"]) > 1:
            for name, one in scores["scores"].items():
                base = mean["scores"][name]
                lines.append(
                    f"  {name}: rho {_f(one['spearman'])}, r {_f(one['pearson'])}, relative L2 "
                    f"{_f(one['rel_l2'])} (mean {_f(base['rel_l2'])}), MAE {_f(one['mae'])} "
                    f"(mean {_f(base['mae'])})"
                )
        return "\n".join(lines)

    def baseline(self, scores: dict) -> float:
        """The training mean's rho: undefined (NaN), a constant has no rank correlation."""
        return scores["baselines"]["mean"]["spearman"]

    def chance(self, schema: dict) -> float | None:
        return None

    def prediction_columns(self, scores: np.ndarray, schema: dict) -> dict[str, list]:
        """``score_<name>`` per score, in the score's own units."""
        scores = _matrix(scores, len(schema["scores"]))
        return {
            f"score_{entry['name']}": scores[:, s].tolist()
            for s, entry in enumerate(schema["scores"])
        }

    def plot_run(self, folder: Path, metrics: dict, schema: dict, title: str) -> list[str]:
        return []

    def plot_predictions(
        self, folder: Path, predicted: dict, scores: dict, schema: dict, title: str
    ) -> list[str]:
        """``scatter.png``: predicted against true scores of val and test, with rho."""
        from skill.tasks.figures import save, scatter_figure

        entries = schema["scores"]
        panels = [
            (
                split,
                _matrix(predicted[split]["targets"], len(entries)),
                _matrix(predicted[split]["scores"], len(entries)),
                [scores[split]["scores"][e["name"]]["spearman"] for e in entries],
            )
            for split in ("val", "test")
            if split in predicted and "scores" in scores.get(split, {})  # a subclass's may not
        ]
        if not panels:
            return []
        ranges = [tuple(scores[panels[0][0]]["scores"][e["name"]]["range"]) for e in entries]
        names = [entry["name"] for entry in entries]
        save(scatter_figure(panels, names, title, ranges), Path(folder) / "scatter.png")
        return ["scatter.png"]

    def lightgbm_objective(self, schema: dict) -> dict:
        names = [entry["name"] for entry in schema["scores"]]
        if len(names) > 1:
            raise TargetError(
                f"LightGBM learns one score and this store has {len(names)} "
                f"({', '.join(names)}); fit a neural head"
            )
        return {"objective": "regression", "metric": ["l2", "l1"]}

    def lightgbm_row(self, evals: dict[str, float]) -> dict:
        return {"val_loss": evals["l2"], "val_mae": evals["l1"]}

    def lightgbm_scores(self, raw: np.ndarray) -> np.ndarray:
        """The booster's predictions, in the score's own units (it trains on them)."""
        return np.asarray(raw, dtype=np.float64).reshape(len(raw), 1)


_NO_CLASSES = "task regression has no classes for --class-balanced to balance; leave it out"


def standardisation(summary: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each score's training mean and standard deviation from a ``train_summary`` (0 and 1
    where a score had no training value, 1 where it had no spread)."""
    center = np.array([0.0 if m is None else m for m in summary["mean"]])
    scale = np.array([1.0 if s is None or not s > 0 else s for s in summary["std"]])
    return center, scale


def _score_entry(entry) -> dict:
    """A declared score: a name, or ``{"name", "low", "high"}`` with both bounds or neither."""
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise TargetError(f"a regression score is a name or {{name, low, high}}, got {entry!r}")
    unknown = sorted(set(entry) - {"name", "low", "high"})
    if unknown:
        raise TargetError(f"score {entry['name']}: unknown key(s) {', '.join(unknown)}")
    low, high = entry.get("low"), entry.get("high")
    if (low is None) != (high is None):
        raise TargetError(f"score {entry['name']}: give both low and high, or neither")
    if low is not None and not (_number(low) and _number(high) and low < high):
        raise TargetError(
            f"score {entry['name']}: its range {low!r}..{high!r} is not two numbers, low < high"
        )
    return {"name": entry["name"], "low": low, "high": high}


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _score_value(entry: dict, value) -> float:
    """One score as stored, refused when it is not a finite number or outside its range."""
    if value is None:
        return math.nan
    if not _number(value):
        raise TargetError(f"{entry['name']} {value!r} is not a number")
    low, high = entry["low"], entry["high"]
    if low is not None and not low <= value <= high:
        raise TargetError(f"{entry['name']} {value} is outside its declared range {low}..{high}")
    return float(value)


def _matrix(values: np.ndarray, width: int | None = None) -> np.ndarray:
    """``(n, S)`` float64 (a ``(n,)`` input is one score)."""
    values = np.asarray(values, dtype=np.float64)
    if not values.size and width is not None:  # no takes: (0, S) whatever shape they came in
        return values.reshape(0, width)
    return values.reshape(-1, 1) if values.ndim == 1 else values.reshape(len(values), -1)


def _standing_values(n: int, mean, low, high) -> list[float]:
    """Values whose mean, min and max are ``mean``, ``low`` and ``high``: low, high and ``r``
    copies of ``c = ((r + 2) mean - low - high) / r``, the fewest r with c in [low, high]
    (at most n - 2: the training values themselves are such a set)."""
    if not n or mean is None:
        return []
    if not high > low:
        return [mean]
    span = high - low
    need = max(span / (mean - low), span / (high - mean)) if low < mean < high else n
    copies = int(min(max(math.ceil(need) - 2, 1), max(n - 2, 1)))
    middle = min(max(((copies + 2) * mean - low - high) / copies, low), high)
    return [low, high, *([middle] * copies)]


def _range(entry: dict, train: np.ndarray) -> tuple[float, float, str]:
    if entry["low"] is not None:
        return float(entry["low"]), float(entry["high"]), "declared"
    if not len(train):
        return math.nan, math.nan, "training"
    return float(train.min()), float(train.max()), "training"


def _score_metrics(
    values: np.ndarray, predicted: np.ndarray, groups: np.ndarray, low: float, high: float
) -> dict:
    """One score's metrics over the takes that have it."""
    by_group = {}
    for name in sorted(set(groups.tolist())):
        rows = groups == name
        by_group[name or "(none)"] = {
            "n": int(rows.sum()),
            "spearman": metrics.spearman(values[rows], predicted[rows]),
        }
    rhos = [g["spearman"] for g in by_group.values() if g["n"] >= MIN_FISHER_Z_GROUP]
    return {
        "n": int(len(values)),
        "spearman": metrics.spearman(values, predicted),
        "spearman_fisher_z": metrics.fisher_z_mean(rhos),
        "groups": sum(rho == rho for rho in rhos),
        "pearson": metrics.pearson(values, predicted),
        "rel_l2": metrics.relative_l2(values, predicted, low, high),
        "mae": metrics.mean_absolute_error(values, predicted),
        "per_group": by_group,
    }


def _means(per_score: dict) -> dict:
    """The mean over scores of each headline metric."""
    keys = ("spearman", "spearman_fisher_z", "pearson", "rel_l2", "mae")
    return {key: _mean([one[key] for one in per_score.values()]) for key in keys}


def _per_group(per_score: dict) -> dict:
    """Group -> takes (of the first score) and the mean over scores of the group's rho."""
    names = sorted({g for one in per_score.values() for g in one["per_group"]})
    out = {}
    for name in names:
        found = [one["per_group"][name] for one in per_score.values() if name in one["per_group"]]
        out[name] = {"n": found[0]["n"], "spearman": _mean([g["spearman"] for g in found])}
    return out


def _mean(values: list[float]) -> float:
    defined = [v for v in values if v is not None and v == v]
    return float(np.mean(defined)) if defined else math.nan


def _f(value) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


register_task(Regression())
