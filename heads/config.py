"""The settings of ``skill fit``, ``skill predict`` and ``skill sweep``, one dataclass each,
with one docstring per field: the command's help for that option, so written as prose that
names other settings by their option (``--min-steps`` for ``min_steps``), without markup.

Torch-free: importing this module imports no torch, lightgbm or zarr (a test checks), so that
the command line can read these fields cheaply. Each ``__post_init__`` validates and raises
:class:`skill.errors.ConfigError` whose message names the options concerned the same way (the
command line shows each as its flag); a head name is checked against the registry's declared
names, without importing the heads (torch). FitConfig resolves ``--device`` last, which
imports torch when the answer depends on it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from skill.devices import resolve_device
from skill.errors import ConfigError
from skill.heads.lgbm import LightGBMSettings
from skill.heads.registry import declared_head_names, heads_in_order

if TYPE_CHECKING:
    from skill.heads.registry import HeadSpec
    from skill.tasks import Task

FORMATS = ("csv", "egoexo4d", "egoexo4d-labels", "egoexo4d-demonstration")
UNPREDICTABLE = ("refuse", "uniform")
AGGREGATES = ("none", "participant")


def _check_head(head: str, option: str = "--head") -> None:
    names = declared_head_names()
    if head not in names:
        raise ConfigError(f"{option}: {head!r} is not a head; choose from {', '.join(names)}")


def _choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse ``value`` of ``option`` unless it is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{option} must be {_or(choices)}, not {value!r}")


def _or(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


def _folder_name(option: str, name: str) -> None:
    if not name or "/" in name or name.startswith(".") or os.sep in name:
        raise ConfigError(
            f"{option} {name!r} must be a plain folder name (no /, not starting with a dot)"
        )


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
    """The token store to train on (a .zarr folder written by skill extract or skill import
    features)."""
    views: str = "all"
    """Views to use: all, ego, exo (every exo view) or a comma list such as ego,exo2."""
    head: str = "cvf"
    """The head to train: mean, concat, late, cvf, temporal or lightgbm (any registered head);
    on a store of clip sequences (extracted with --sampling sequence or stride) also seqformer
    or viewselect, which read each view's clips in order."""
    hidden: int | None = None
    """Hidden width of the head. Default: the head's own (recorded in the run's config.json)."""
    dropout: float = 0.1
    """Dropout inside the head."""
    steps: int | None = None
    """Training budget in optimisation steps (one batch each), rounded up to whole epochs; the
    warmup and cosine schedule span it and early stopping may end sooner. Refused together
    with --epochs. Default (neither given): derived from the training set, the longer of
    --min-steps steps and --min-epochs epochs."""
    epochs: int | None = None
    """Training budget in epochs instead of steps (early stopping may end sooner). Refused
    together with --steps. Default: see --steps."""
    min_steps: int = DERIVED_MIN_STEPS
    """The derived budget (neither --steps nor --epochs given) is at least this many steps, so
    that a small training set (120 takes: 4 steps an epoch) still gets enough updates."""
    min_epochs: int = DERIVED_MIN_EPOCHS
    """The derived budget (neither --steps nor --epochs given) is at least this many epochs,
    so that a large training set sees every take this often; with --min-steps 1000 and
    --batch-size 32, a set of 1,057 takes or more gets exactly this many (2,000 takes: 30 x 63
    steps)."""
    batch_size: int = 32
    """Takes per optimisation step."""
    lr: float | None = None
    """Peak learning rate of AdamW, reached after the warmup. Default: the head's own (cvf
    3e-3, the other heads 1e-3; recorded in the run's config.json)."""
    weight_decay: float = 0.05
    """AdamW weight decay, applied to weight matrices only (not biases or norm weights)."""
    warmup_frac: float = 0.1
    """Fraction of all steps spent on a linear learning-rate warmup before the cosine decay."""
    class_balanced: bool = False
    """Weight the cross-entropy (LightGBM: the samples) by inverse training class frequency."""
    patience: int | None = None
    """Early stopping in epochs: stop after this many epochs without a better validation
    score (0: never stop early). Default: --patience-frac of the budget's epochs."""
    patience_frac: float = DEFAULT_PATIENCE_FRAC
    """Early stopping when --patience is not given, as a fraction of the budget: stop after
    this fraction of its epochs (rounded up, at least 1) without a better validation score,
    so that a long budget waits as long, relatively, as a short one (0: never stop early)."""
    monitor: str | None = None
    """Validation score for early stopping and best-epoch choice, one of the store's task's:
    classification's balanced_accuracy or loss, ordinal's mae, loss or balanced_accuracy,
    regression's loss or spearman. Default: the task's first (classification:
    balanced_accuracy, ordinal: mae, regression: loss)."""
    seed: int = 0
    """Seed of weight init, batch order, clip choice, view dropout (and LightGBM)."""
    split_seed: int = 0
    """Seed of the participant-grouped validation split (apart from --seed, so that runs over
    several seeds are scored on the same validation takes)."""
    view_dropout: float | None = None
    """Probability of dropping each valid view of a training take (never all of them).
    Default: the head's own when the fit has more than one view (cvf 0.2, the other heads 0),
    0 with one view (recorded in the run's config.json)."""
    val_frac: float = 0.2
    """Fraction of participants held out for validation when the store has no val split."""
    device: str = "auto"
    """Where to train: cpu, cuda, cuda:N or auto (CUDA when available). LightGBM trains on the
    CPU whatever this says."""
    out_dir: str = "runs"
    """Folder that receives the run folder (a sweep: the sweep folder); a relative path starts
    from the working folder."""
    name: str = ""
    """Run folder name. Default: the head, views and seed, as in cvf-ego+exo1-s0. A name that
    is taken gets a suffix -2, -3 and so on."""
    plots: bool = True
    """Write confusion.png and curve.png (about a second per fit; off for quick sweeps), and
    a sweep's sweep.png."""
    allow_unfinished: bool = False
    """Fit on a store that is still being written or was interrupted (its completed takes
    only); refused otherwise."""
    lightgbm: LightGBMSettings = field(default_factory=LightGBMSettings)
    """The lightgbm head's own settings (the --lgbm-* options)."""
    threads: int = 1
    """CPU threads for torch. Heads are small: one thread is as fast as several and cannot
    thrash when other processes share the cores. Raise it for large heads on an idle machine."""

    def __post_init__(self) -> None:
        self.store = str(self.store)
        self.out_dir = str(self.out_dir)
        self._check_ranges()
        self._check_budget_settings()
        _check_head(self.head)
        if self.monitor is not None:
            from skill.tasks import all_monitors

            _choice("--monitor", self.monitor, all_monitors())
        if not self.name:
            self.name = f"{self.head}-{self.views.replace(',', '+').replace(' ', '')}-s{self.seed}"
        _folder_name("--name", self.name)
        try:  # last: it imports torch when the answer depends on it
            self.device = resolve_device(self.device)
        except ConfigError as err:
            raise ConfigError(f"--device: {err}") from None

    def _check_budget_settings(self) -> None:
        """Refuse two settings that each decide the same thing (the budget, the patience)."""
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give the training budget one way: --steps or --epochs, not both")
        derived = {"min_steps": DERIVED_MIN_STEPS, "min_epochs": DERIVED_MIN_EPOCHS}
        changed = [_flag(key) for key, default in derived.items() if getattr(self, key) != default]
        if changed and (self.steps is not None or self.epochs is not None):
            given = "--steps" if self.steps is not None else "--epochs"
            raise ConfigError(
                f"{' and '.join(changed)} shape{'s' if len(changed) == 1 else ''} only the "
                f"budget derived when neither --steps nor --epochs is given; leave out "
                f"{' and '.join(changed)} or {given}"
            )
        if self.patience is not None and self.patience_frac != DEFAULT_PATIENCE_FRAC:
            raise ConfigError(
                "give early stopping one way: --patience (epochs) or --patience-frac (a "
                "fraction of the budget), not both"
            )

    def resolved(self, head: HeadSpec, num_views: int, task: Task) -> FitConfig:
        """This config with the defaults of its head (``head``: ``self.head`` resolved) and of
        the store's task filled in for a fit on ``num_views`` views: ``view_dropout``, ``lr``
        and ``monitor``."""
        from skill.tasks import resolve_monitor

        if head.name != self.head:
            raise ValueError(f"head {head.name!r} resolves a config of head {self.head!r}")
        drop = self.view_dropout
        if drop is None:
            drop = head.multiview_dropout if num_views > 1 else 0.0
        lr = head.default_lr if self.lr is None else self.lr
        monitor = resolve_monitor(task, self.monitor)
        return dataclasses.replace(self, view_dropout=drop, lr=lr, monitor=monitor)

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
        """Refuse values out of their range, naming every one (the lightgbm head's settings
        declare their own ranges)."""
        least = {"steps": 1, "epochs": 1, "min_steps": 0, "min_epochs": 1, "batch_size": 1,
                 "patience": 0, "hidden": 0, "threads": 1, "weight_decay": 0}  # fmt: skip
        between = {"patience_frac": "[0, 1]", "warmup_frac": "[0, 1)", "dropout": "[0, 1)",
                   "view_dropout": "[0, 1)", "val_frac": "(0, 1)"}  # fmt: skip
        problems = _range_problems(self, least, between)
        if self.lr is not None and not self.lr > 0:
            problems.append(f"--lr must be more than 0, not {self.lr}")
        problems += _range_problems(self.lightgbm, self.lightgbm.least, self.lightgbm.within)
        if problems:
            raise ConfigError("; ".join(problems))


def _range_problems(settings: object, least: dict[str, float], between: dict[str, str]) -> list:
    """What is out of range among ``settings``' fields: each field of ``least`` below its least
    value, each field of ``between`` outside its interval (a None field is never out)."""
    problems = [
        f"{_flag(key)} must be at least {low}, not {getattr(settings, key)}"
        for key, low in least.items()
        if getattr(settings, key) is not None and getattr(settings, key) < low
    ]
    for key, interval in between.items():
        value = getattr(settings, key)
        if value is not None and not _within(value, interval):
            problems.append(f"{_flag(key)} must be in {interval}, not {value}")
    return problems


def _flag(field_name: str) -> str:
    """How messages and docstrings name a field: as its option (``min_steps``: --min-steps)."""
    return "--" + field_name.replace("_", "-")


def _within(value: float, interval: str) -> bool:
    """Whether ``value`` lies in ``interval``, written as [0, 1), (0, 1] and so on."""
    low, high = (float(x) for x in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below


@dataclass
class PredictConfig:
    """Everything that decides a ``predict``: which run, which store, which outputs."""

    store: str
    """The token store to predict (a .zarr folder), extracted like the run's store."""
    run: str
    """Run folder written by skill fit (holds config.json and the model file)."""
    out_csv: str | None = None
    """The CSV of per-take class probabilities to write; needed with --format csv. Default
    with the other formats: no CSV."""
    format: str = "csv"
    """Output format: csv (the CSV only); egoexo4d (also the official EgoExo4D JSON of per-view
    logits); egoexo4d-labels (also the challenge's newer JSON: the take names and one class
    name each); egoexo4d-demonstration (a demonstration run: the benchmark's prediction file of
    the timestamped events of --split)."""
    out_json: str | None = None
    """With --format egoexo4d, egoexo4d-labels or egoexo4d-demonstration: the prediction JSON
    to write. Default: the CSV's path with the suffix .json."""
    views: str | None = None
    """Views to feed, a subset of the run's (written as for skill fit --views); the others are
    masked. Default: all the run's views."""
    order: list[str] | None = None
    """With --format egoexo4d: the takes in the order the JSON is to list them, by name or by
    take uid; on the command line a file of them: one a line, a JSON list, or a prediction
    file's JSON object (its videos). Default: the store's take order."""
    split: str | None = None
    """Predict only the takes of this split of the store, such as val or test. Default: every
    take."""
    unpredictable: str = "refuse"
    """egoexo4d formats: what to do with a take of the file that cannot be predicted (not
    completed, or no valid view among the run's views): refuse (an error listing them) or
    uniform (all-zero logits; egoexo4d-labels: the run's most frequent training class)."""
    aggregate: str = "none"
    """none, or participant: each take gets the mean of the probabilities of the predicted
    takes of its participant (every output and metric). Outside the benchmark's input rules,
    which score each take on its own videos."""
    device: str = "auto"
    """Where a neural head runs: cpu, cuda, cuda:N or auto (CUDA when available). LightGBM
    runs on the CPU whatever this says."""
    batch_size: int = 64
    """Takes per forward pass of a neural head."""
    allow_unfinished: bool = False
    """Predict from a store that is still being written or was interrupted (its completed
    takes only); refused otherwise."""

    def __post_init__(self) -> None:
        self.store, self.run = str(self.store), str(self.run)
        _choice("--aggregate", self.aggregate, AGGREGATES)
        _choice("--unpredictable", self.unpredictable, UNPREDICTABLE)
        if self.split is not None:
            self.split = str(self.split)
        self.out_csv = None if self.out_csv is None else str(self.out_csv)
        self.out_json = None if self.out_json is None else str(self.out_json)
        _choice("--format", self.format, FORMATS)
        if self.format == "csv" and self.out_csv is None:
            raise ConfigError("--format csv writes a CSV file: give its path with --out-csv")
        if self.format != "csv" and self.out_json is None:
            if self.out_csv is None:
                raise ConfigError(
                    f"--format {self.format} writes a prediction JSON: give its path with "
                    "--out-json, or a CSV path with --out-csv (the JSON then takes its name)"
                )
            self.out_json = os.path.splitext(self.out_csv)[0] + ".json"
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.order is not None:
            self.order = [str(t) for t in self.order]


@dataclass
class SweepConfig:
    """A grid of fits: every head x view set x seed, each on top of ``fit``'s settings."""

    fit: FitConfig
    """The settings shared by every fit (its head, views, seed and name are replaced)."""
    heads: list[str] = field(default_factory=heads_in_order)
    """Heads to fit, a comma list of registered head names. Default: every registered head (on
    a store whose clip axis is samples, all but those that read clip sequences)."""
    view_sets: list[str] = field(default_factory=lambda: ["ego", "exo", "all"])
    """View sets to fit on, separated by semicolons, each written as for skill fit --views
    (ego, or ego,exo2); each is loaded once."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds per head and view set; the table reports mean and sample std over them."""
    stores: list[str] = field(default_factory=list)
    """More token stores to sweep, one per backbone or adapter, extracted from the same takes;
    the table gets a backbone column. The store given as the argument is swept too, first
    when this list does not name it. Default: that store alone.

    Stores whose completed takes, splits, labels or participants differ are refused before
    any fit (a comparison is only fair on the same takes)."""
    name: str = "sweep"
    """Sweep folder name inside the --out-dir folder. A folder of that name recording the same
    settings (its sweep.json) is resumed: finished runs are kept, the rest fitted; one with
    other settings is left alone and the sweep gets a suffix -2, -3 and so on."""

    def __post_init__(self) -> None:
        self.heads, self.view_sets = list(self.heads), list(self.view_sets)
        if not self.heads or not self.view_sets or not self.seeds:
            raise ConfigError(
                "a sweep needs at least one head, one view set and one seed (--heads, "
                "--view-sets, --seeds)"
            )
        for head in self.heads:
            _check_head(head, "--heads")
        try:
            self.seeds = [int(s) for s in self.seeds]
        except (TypeError, ValueError):
            bad = [s for s in self.seeds if not str(s).strip().lstrip("-").isdigit()]
            raise ConfigError(
                f"--seeds must be integers, not {', '.join(map(repr, bad))}"
            ) from None
        _folder_name("--name", self.name)
        self.stores = [str(s) for s in self.stores]
        seen: dict[str, str] = {}
        for store in self.stores:
            where = os.path.realpath(store)
            if where in seen:
                raise ConfigError(
                    f"--stores: {store} is listed twice"
                    + (f" (as {seen[where]})" if seen[where] != store else "")
                )
            seen[where] = store

    def store_paths(self) -> list[str]:
        """The stores to sweep, in order: ``stores``, with ``fit.store`` first when it is not
        among them (``[fit.store]`` when ``stores`` is empty)."""
        listed = {os.path.realpath(s) for s in self.stores}
        first = [] if os.path.realpath(self.fit.store) in listed else [self.fit.store]
        return first + self.stores
