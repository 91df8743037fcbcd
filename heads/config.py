"""The settings of ``skill fit``, ``skill predict`` and ``skill fit --sweep``, one dataclass
each, with one docstring per field (the CLI's help is derived from them).

Torch-free: importing this module imports no torch, lightgbm or zarr (a test checks), so that
the command line can read these fields cheaply. Each ``__post_init__`` validates and raises
:class:`skill.errors.ConfigError` whose message names the option; looking up a head name
imports the heads registry, and so torch, only when a config is built.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from skill.devices import resolve_device
from skill.errors import ConfigError

MONITORS = ("balanced_accuracy", "loss")
FORMATS = ("csv", "egoexo4d", "egoexo4d-labels")
UNPREDICTABLE = ("refuse", "uniform")
AGGREGATES = ("none", "participant")


def _check_head(head: str, option: str = "head") -> None:
    from skill.heads.registry import head_names

    if head not in head_names():
        raise ConfigError(f"{option}: unknown head {head!r}; choose from {', '.join(head_names())}")


# The defaults of the derived training budget and of the patience (see FitConfig).
DERIVED_MIN_STEPS = 1000
DERIVED_MIN_EPOCHS = 30
DEFAULT_PATIENCE_FRAC = 0.25


@dataclass(frozen=True)
class TrainingBudget:
    """A fit's schedule, resolved from its FitConfig and its training split size; recorded
    in the run folder's config.json (``schedule``) and metrics.json."""

    rule: str
    """How the budget was set: ``steps`` or ``epochs`` (given), or ``derived`` (the longer of
    ``min_steps`` steps and ``min_epochs`` epochs)."""
    train_takes: int
    """Takes in the training split."""
    steps_per_epoch: int
    """Optimisation steps in one pass over the training takes."""
    epochs: int
    """The budget in whole epochs (early stopping may run fewer)."""
    steps: int
    """``epochs`` x ``steps_per_epoch``: what the warmup + cosine schedule spans."""
    warmup_steps: int
    """Steps of the linear warmup (``warmup_frac`` of ``steps``)."""
    patience: int
    """Epochs without a better validation score before stopping; 0 = never stop early."""


@dataclass
class FitConfig:
    """Everything that decides a fit; written resolved to the run's config.json."""

    store: str
    """Path of the token store (``*.zarr``) made by ``skill extract``."""
    views: str = "all"
    """Views to use: ``all``, ``ego``, ``exo`` (every exo view) or a comma list like ``ego,exo2``."""
    head: str = "cvf"
    """Head name, one of the registered heads (``skill.heads.head_names()``): mean, concat,
    late, cvf, temporal or lightgbm."""
    hidden: int | None = None
    """Hidden width of the head; None = the head's own default (resolved in config.json)."""
    dropout: float = 0.1
    """Dropout inside the head."""
    steps: int | None = None
    """Training budget in optimisation steps (one batch each), rounded up to whole epochs; the
    warmup and cosine schedule span it and early stopping may end sooner. None (with
    ``epochs`` None) = derived from the training set: the longer of ``min_steps`` steps and
    ``min_epochs`` epochs. Refused together with ``epochs``."""
    epochs: int | None = None
    """Training budget in epochs instead of steps (early stopping may end sooner). Refused
    together with ``steps``."""
    min_steps: int = DERIVED_MIN_STEPS
    """Derived budget (neither steps nor epochs given): at least this many steps, so that a
    small training set (120 takes: 4 steps an epoch) still gets enough updates to learn."""
    min_epochs: int = DERIVED_MIN_EPOCHS
    """Derived budget (neither steps nor epochs given): at least this many epochs, so that a
    large training set sees every take this often; with ``min_steps`` 1000 and batch 32, a
    set of 1,057 takes or more gets exactly this many (2,000 takes: 30 x 63 steps)."""
    batch_size: int = 32
    """Takes per optimisation step."""
    lr: float | None = None
    """Peak learning rate of AdamW (reached after the warmup). None = the head's default
    (``cvf``: 3e-3, the other heads 1e-3); resolved in config.json."""
    weight_decay: float = 0.05
    """AdamW weight decay, applied to weight matrices only (not biases or norm weights)."""
    warmup_frac: float = 0.1
    """Fraction of all steps spent on a linear learning-rate warmup before the cosine decay."""
    class_balanced: bool = False
    """Weight the cross-entropy (LightGBM: the samples) by inverse training class frequency."""
    patience: int | None = None
    """Early stopping in epochs: stop after this many epochs without a better validation
    score; 0 = never stop early. None = ``patience_frac`` of the budget's epochs."""
    patience_frac: float = DEFAULT_PATIENCE_FRAC
    """Early stopping when ``patience`` is None, as a fraction of the budget: stop after this
    fraction of its epochs (rounded up, at least 1) without a better validation score, so
    that a long budget waits as long, relatively, as a short one; 0 = never stop early."""
    monitor: str = "balanced_accuracy"
    """Validation score for early stopping and best-epoch choice: balanced_accuracy or loss."""
    seed: int = 0
    """Seed of weight init, batch order, clip choice, view dropout (and LightGBM)."""
    split_seed: int = 0
    """Seed of the participant-grouped validation split (kept apart from ``seed`` so that
    runs over several seeds are scored on the same validation takes)."""
    view_dropout: float | None = None
    """Probability of dropping each valid view of a training take (never all of them). None =
    the head's default when the fit has more than one view (``cvf``: 0.2; the other heads 0)
    and 0 with one view; resolved in config.json."""
    val_frac: float = 0.2
    """Fraction of participants held out for validation when the store has no val split."""
    device: str = "cpu"
    """cpu, cuda, cuda:N, or auto (cuda when available); resolved at construction."""
    out_dir: str = "runs"
    """Folder that receives the run folder."""
    name: str = ""
    """Run folder name; empty = ``<head>-<views>-s<seed>``. A taken name gets a suffix -2, -3..."""
    plots: bool = True
    """Write confusion.png and curve.png (about a second per fit; off for quick sweeps), and
    a sweep's sweep.png."""
    allow_unfinished: bool = False
    """Fit on a store that is still being written or was interrupted (its completed takes
    only); refused otherwise."""
    lgbm_rounds: int = 500
    """LightGBM: maximum boosting rounds."""
    lgbm_learning_rate: float = 0.05
    """LightGBM: shrinkage rate."""
    lgbm_num_leaves: int = 15
    """LightGBM: maximum leaves per tree."""
    lgbm_early_stopping: int = 50
    """LightGBM: stop after this many rounds without a better validation log-loss; 0 = off."""
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
    threads: int = 1
    """CPU threads for torch while training. Heads are small: one thread is as fast as several
    and cannot thrash when other processes share the cores (measured 10x slower with 2 threads
    on a loaded 2-core machine). Raise it for large heads on an idle machine."""

    def __post_init__(self) -> None:
        self.store = str(self.store)
        self.out_dir = str(self.out_dir)
        self._check_ranges()
        self._check_budget_settings()
        _check_head(self.head)
        if self.monitor not in MONITORS:
            raise ConfigError(f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        self.device = resolve_device(self.device)
        if not self.name:
            self.name = f"{self.head}-{self.views.replace(',', '+').replace(' ', '')}-s{self.seed}"
        if "/" in self.name or self.name.startswith(".") or os.sep in self.name:
            raise ConfigError(f"name: run name {self.name!r} must be a plain folder name")

    def _check_budget_settings(self) -> None:
        """Refuse two settings that each decide the same thing (the budget, the patience)."""
        if self.steps is not None and self.epochs is not None:
            raise ConfigError(
                "steps, epochs: give the training budget one way, in steps or in epochs"
            )
        derived = {"min_steps": DERIVED_MIN_STEPS, "min_epochs": DERIVED_MIN_EPOCHS}
        changed = [key for key, default in derived.items() if getattr(self, key) != default]
        if changed and (self.steps is not None or self.epochs is not None):
            given = "steps" if self.steps is not None else "epochs"
            raise ConfigError(
                f"{', '.join(changed)}: shapes only the derived budget, and {given} is given"
            )
        if self.patience is not None and self.patience_frac != DEFAULT_PATIENCE_FRAC:
            raise ConfigError(
                "patience, patience_frac: give early stopping one way, in epochs or as a "
                "fraction of the budget"
            )

    def resolved(self, num_views: int) -> FitConfig:
        """This config with the head's defaults filled in for a fit on ``num_views`` views:
        ``view_dropout`` and ``lr``."""
        from skill.heads.registry import default_lr, multiview_dropout

        drop = self.view_dropout
        if drop is None:
            drop = multiview_dropout(self.head) if num_views > 1 else 0.0
        lr = default_lr(self.head) if self.lr is None else self.lr
        return dataclasses.replace(self, view_dropout=drop, lr=lr)

    def budget(self, train_takes: int, grad_accum: int = 1) -> TrainingBudget:
        """The resolved budget for a training split of ``train_takes`` takes, with
        ``grad_accum`` batches per optimisation step (``skill adapt``; 1 for ``skill fit``)."""
        batches = max(1, math.ceil(train_takes / self.batch_size))
        steps_per_epoch = math.ceil(batches / grad_accum)
        if self.epochs is not None:
            epochs, rule = self.epochs, "epochs"
        elif self.steps is not None:
            epochs, rule = math.ceil(self.steps / steps_per_epoch), "steps"
        else:
            from_steps = math.ceil(self.min_steps / steps_per_epoch)
            epochs, rule = max(self.min_epochs, from_steps), "derived"
        if self.patience is not None:
            patience = self.patience
        elif self.patience_frac > 0:
            patience = max(1, math.ceil(self.patience_frac * epochs))
        else:
            patience = 0
        steps = epochs * steps_per_epoch
        return TrainingBudget(
            rule=rule,
            train_takes=train_takes,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            steps=steps,
            warmup_steps=int(self.warmup_frac * steps),
            patience=patience,
        )

    def _check_ranges(self) -> None:
        problems = []
        for key in ("steps", "epochs"):
            value = getattr(self, key)
            if value is not None and value < 1:
                problems.append(f"{key} must be >= 1, got {value}")
        if self.min_steps < 0 or self.min_epochs < 1:
            problems.append(
                f"min_steps must be >= 0 and min_epochs >= 1, got {self.min_steps} and "
                f"{self.min_epochs}"
            )
        if not 0 <= self.patience_frac <= 1:
            problems.append(f"patience_frac must be in [0, 1], got {self.patience_frac}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_frac < 1:
            problems.append(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.view_dropout is not None and not 0 <= self.view_dropout < 1:
            problems.append(f"view_dropout must be in [0, 1), got {self.view_dropout}")
        if not 0 < self.val_frac < 1:
            problems.append(f"val_frac must be in (0, 1), got {self.val_frac}")
        if self.patience is not None and self.patience < 0:
            problems.append(f"patience must be >= 0, got {self.patience}")
        if self.lgbm_early_stopping < 0:
            problems.append(f"lgbm_early_stopping must be >= 0, got {self.lgbm_early_stopping}")
        if self.hidden is not None and self.hidden < 0:
            problems.append(f"hidden must be >= 0, got {self.hidden}")
        if self.threads < 1:
            problems.append(f"threads must be >= 1, got {self.threads}")
        if self.lgbm_rounds < 1:
            problems.append(f"lgbm_rounds must be >= 1, got {self.lgbm_rounds}")
        if self.lgbm_num_leaves < 2:
            problems.append(f"lgbm_num_leaves must be >= 2, got {self.lgbm_num_leaves}")
        if self.lgbm_threads < 1:
            problems.append(f"lgbm_threads must be >= 1, got {self.lgbm_threads}")
        if self.lgbm_min_data_in_leaf < 1:
            problems.append(f"lgbm_min_data_in_leaf must be >= 1, got {self.lgbm_min_data_in_leaf}")
        for key in ("lgbm_feature_fraction", "lgbm_bagging_fraction"):
            if not 0 < getattr(self, key) <= 1:
                problems.append(f"{key} must be in (0, 1], got {getattr(self, key)}")
        if self.lgbm_lambda_l2 < 0:
            problems.append(f"lgbm_lambda_l2 must be >= 0, got {self.lgbm_lambda_l2}")
        if problems:
            raise ConfigError("invalid fit config: " + "; ".join(problems))


@dataclass
class PredictConfig:
    """Everything that decides a ``predict``: which run, which store, which outputs."""

    store: str
    """Path of the token store (``*.zarr``) to predict; extracted like the run's store."""
    run: str
    """Run folder written by ``skill fit`` (holds config.json and the model file)."""
    out_csv: str | None = None
    """CSV of per-take class probabilities; needed for format csv."""
    format: str = "csv"
    """Output format: csv (``out_csv``); egoexo4d (also the official EgoExo4D JSON of per-view
    logits); egoexo4d-labels (also the challenge's newer JSON: ``videos``, the take names, and
    ``predictions``, one class name each)."""
    out_json: str | None = None
    """egoexo4d, egoexo4d-labels: the prediction JSON; default ``out_csv`` with suffix ``.json``."""
    views: str | None = None
    """Subset of the run's views to feed (spec as for fit); the others are masked. None = all."""
    order: list[str] | None = None
    """egoexo4d: takes in the order the JSON lists them, by name or by take uid (the file
    names them by name); None = the store's take order."""
    split: str | None = None
    """Predict only the takes of this split of the store (e.g. val or test); None = every take."""
    unpredictable: str = "refuse"
    """egoexo4d formats: what to do with a take of the file that cannot be predicted (not
    completed, or no valid view among the run's views): refuse (an error listing them) or
    uniform (all-zero logits; egoexo4d-labels: the run's most frequent training class)."""
    aggregate: str = "none"
    """none, or participant: each take gets the mean of the probabilities of the predicted
    takes of its participant (every output and metric). Outside the benchmark's input rules,
    which score each take on its own videos."""
    device: str = "cpu"
    """cpu, cuda, cuda:N, or auto; resolved by a neural head (LightGBM always runs on cpu)."""
    batch_size: int = 64
    """Takes per forward pass of a neural head."""
    allow_unfinished: bool = False
    """Predict from a store that is still being written or was interrupted (its completed
    takes only); refused otherwise."""

    def __post_init__(self) -> None:
        self.store, self.run = str(self.store), str(self.run)
        if self.aggregate not in AGGREGATES:
            raise ConfigError(
                f"aggregate: unknown choice {self.aggregate!r}; choose from {', '.join(AGGREGATES)}"
            )
        if self.unpredictable not in UNPREDICTABLE:
            raise ConfigError(
                f"unpredictable: unknown choice {self.unpredictable!r}; choose from "
                + ", ".join(UNPREDICTABLE)
            )
        if self.split is not None:
            self.split = str(self.split)
        self.out_csv = None if self.out_csv is None else str(self.out_csv)
        self.out_json = None if self.out_json is None else str(self.out_json)
        if self.format not in FORMATS:
            raise ConfigError(
                f"format: unknown format {self.format!r}; choose from {', '.join(FORMATS)}"
            )
        if self.format == "csv" and self.out_csv is None:
            raise ConfigError("out_csv: csv format needs out_csv")
        if self.format != "csv" and self.out_json is None:
            if self.out_csv is None:
                raise ConfigError(
                    f"out_json: {self.format} format needs out_json (or out_csv to derive it from)"
                )
            self.out_json = os.path.splitext(self.out_csv)[0] + ".json"
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.order is not None:
            self.order = [str(t) for t in self.order]


@dataclass
class SweepConfig:
    """A grid of fits: every head x view set x seed, each on top of ``fit``'s settings."""

    fit: FitConfig
    """The settings shared by every fit (its head, views, seed and name are replaced)."""
    heads: list[str] = field(
        default_factory=lambda: ["mean", "concat", "late", "cvf", "temporal", "lightgbm"]
    )
    """Heads to fit, each a registered head name."""
    view_sets: list[str] = field(default_factory=lambda: ["ego", "exo", "all"])
    """View sets to fit on (each a views spec like ``ego`` or ``ego,exo2``); each loaded once."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds per (head, view set); the table reports mean and sample std over them."""
    stores: list[str] = field(default_factory=list)
    """Token stores to sweep, one per backbone or adapter, extracted from the same takes; the
    table gets a backbone column. The store argument (``fit.store``) is swept too: it is put
    first when not listed. Empty = just that store.

    Stores whose completed takes, splits, labels or participants differ are refused before
    any fit (a comparison is only fair on the same takes)."""
    name: str = "sweep"
    """Sweep folder name inside ``fit.out_dir``. A folder of that name recording the same
    settings (its sweep.json) is resumed: finished runs are kept, the rest fitted; one with
    other settings is left alone and the sweep gets a suffix -2, -3..."""

    def __post_init__(self) -> None:
        self.heads, self.view_sets = list(self.heads), list(self.view_sets)
        if not self.heads or not self.view_sets or not self.seeds:
            raise ConfigError(
                "heads, view_sets, seeds: a sweep needs at least one head, one view set and "
                "one seed"
            )
        for head in self.heads:
            _check_head(head, "heads")
        try:
            self.seeds = [int(s) for s in self.seeds]
        except (TypeError, ValueError):
            raise ConfigError(f"seeds must be integers, not {self.seeds!r}") from None
        if not self.name or "/" in self.name or self.name.startswith(".") or os.sep in self.name:
            raise ConfigError(f"name: sweep name {self.name!r} must be a plain folder name")
        self.stores = [str(s) for s in self.stores]
        seen: dict[str, str] = {}
        for store in self.stores:
            where = os.path.realpath(store)
            if where in seen:
                raise ConfigError(
                    f"stores: {store} is listed twice"
                    + (f" (as {seen[where]})" if seen[where] != store else "")
                )
            seen[where] = store

    def store_paths(self) -> list[str]:
        """The stores to sweep, in order: ``stores``, with ``fit.store`` first when it is not
        among them (``[fit.store]`` when ``stores`` is empty)."""
        listed = {os.path.realpath(s) for s in self.stores}
        first = [] if os.path.realpath(self.fit.store) in listed else [self.fit.store]
        return first + self.stores
