"""Stage two, ``skill fit``: train one head on a token store and write a run folder.

Training (neural heads): AdamW (no weight decay on biases and norm weights), a linear warmup
then a cosine learning-rate schedule per step, optional class-balanced cross-entropy, early
stopping on the validation split with the best epoch's weights restored. With K > 1 cached
clips a random clip per take is used each epoch at train time, and class probabilities are
the mean over clips of the softmax at evaluation time. View dropout drops each valid view
of a training take with probability ``view_dropout``, never all of them. The ``lightgbm``
head is trained by :mod:`heads.lgbm`.

Determinism: the same config and store give identical metrics and weights on one machine on
CPU (seeded torch and numpy generators, ``torch.use_deterministic_algorithms`` during the
fit; the global torch RNG state is restored afterwards). CUDA runs are seeded but not
guaranteed bitwise identical.

Run folder ``<out_dir>/<name>/`` (name default ``<head>-<views>-s<seed>``): ``config.json``
(resolved FitConfig, store provenance and path, views, classes, head options, package
version, take-id hash, split sizes), ``model.safetensors`` (or ``model.txt`` for LightGBM),
``metrics.json``, ``predictions.csv`` (val/test probabilities), ``confusion.png``,
``curve.png``. Everything is written in a hidden staging folder that is renamed into place
at the end, so a killed fit never leaves a run that looks complete. An existing run is never
overwritten: the new run gets the first free suffix ``-2``, ``-3``, ...
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.cache.store import package_version
from skill.devices import resolve_device
from skill.heads import head_names
from skill.heads.data import (
    Selection,
    Splits,
    load_selection,
    resolve_views,
    split_takes,
    take_ids_sha256,
)
from skill.heads.metrics import evaluate

RUN_FORMAT_VERSION = 1
MONITORS = ("balanced_accuracy", "loss")
LIGHTGBM = "lightgbm"


@dataclass
class FitConfig:
    """Everything that decides a fit; written resolved to the run's config.json."""

    store: str
    """Path of the token store (``*.zarr``) made by ``skill extract``."""
    views: str = "all"
    """Views to use: ``all``, ``ego``, ``exo`` (every exo view) or a comma list like ``ego,exo2``."""
    head: str = "mean"
    """Head name: mean, concat, late, cvf, temporal or lightgbm."""
    hidden: int | None = None
    """Hidden width of the head; None = the head's own default (resolved in config.json)."""
    dropout: float = 0.1
    """Dropout inside the head."""
    epochs: int = 30
    """Maximum number of epochs (early stopping may end sooner)."""
    batch_size: int = 32
    """Takes per optimisation step."""
    lr: float = 1e-3
    """Peak learning rate of AdamW (reached after the warmup)."""
    weight_decay: float = 0.05
    """AdamW weight decay, applied to weight matrices only (not biases or norm weights)."""
    warmup_frac: float = 0.1
    """Fraction of all steps spent on a linear learning-rate warmup before the cosine decay."""
    class_balanced: bool = False
    """Weight the cross-entropy (LightGBM: the samples) by inverse training class frequency."""
    patience: int = 8
    """Stop after this many epochs without a better validation score; 0 = never stop early."""
    monitor: str = "balanced_accuracy"
    """Validation score for early stopping and best-epoch choice: balanced_accuracy or loss."""
    seed: int = 0
    """Seed of weight init, batch order, clip choice, view dropout (and LightGBM)."""
    split_seed: int = 0
    """Seed of the participant-grouped validation split (kept apart from ``seed`` so that
    runs over several seeds are scored on the same validation takes)."""
    view_dropout: float = 0.0
    """Probability of dropping each valid view of a training take (never all of them)."""
    val_frac: float = 0.2
    """Fraction of participants held out for validation when the store has no val split."""
    device: str = "cpu"
    """cpu, cuda, cuda:N, or auto (cuda when available); resolved at construction."""
    out_dir: str = "runs"
    """Folder that receives the run folder."""
    name: str = ""
    """Run folder name; empty = ``<head>-<views>-s<seed>``. A taken name gets a suffix -2, -3..."""
    plots: bool = True
    """Write confusion.png and curve.png (about a second per fit; off for quick sweeps)."""
    lgbm_rounds: int = 500
    """LightGBM: maximum boosting rounds."""
    lgbm_learning_rate: float = 0.05
    """LightGBM: shrinkage rate."""
    lgbm_num_leaves: int = 15
    """LightGBM: maximum leaves per tree."""
    lgbm_early_stopping: int = 50
    """LightGBM: stop after this many rounds without a better validation log-loss; 0 = off."""
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
        if self.head not in head_names():
            raise ValueError(f"unknown head {self.head!r}; choose from {', '.join(head_names())}")
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        self.device = resolve_device(self.device)
        if not self.name:
            self.name = f"{self.head}-{self.views.replace(',', '+').replace(' ', '')}-s{self.seed}"
        if "/" in self.name or self.name.startswith(".") or os.sep in self.name:
            raise ValueError(f"run name {self.name!r} must be a plain folder name")

    def _check_ranges(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_frac < 1:
            problems.append(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.view_dropout < 1:
            problems.append(f"view_dropout must be in [0, 1), got {self.view_dropout}")
        if not 0 < self.val_frac < 1:
            problems.append(f"val_frac must be in (0, 1), got {self.val_frac}")
        if self.patience < 0 or self.lgbm_early_stopping < 0:
            problems.append("patience and lgbm_early_stopping must be >= 0")
        if self.hidden is not None and self.hidden < 0:
            problems.append(f"hidden must be >= 0, got {self.hidden}")
        if self.threads < 1:
            problems.append(f"threads must be >= 1, got {self.threads}")
        if self.lgbm_rounds < 1 or self.lgbm_num_leaves < 2 or self.lgbm_threads < 1:
            problems.append("lgbm_rounds >= 1, lgbm_num_leaves >= 2 and lgbm_threads >= 1 needed")
        if problems:
            raise ValueError("invalid fit config: " + "; ".join(problems))


@dataclass
class TrainedModel:
    """A trained head: an nn.Module (kind torch) or a LightGBM Booster (kind lightgbm)."""

    kind: str
    model: object
    head_options: dict  # keyword arguments that rebuild the head (torch) or {} (lightgbm)
    history: list[dict]  # one dict per epoch (torch) or boosting round (lightgbm)
    best: int  # best epoch (1-based) or best boosting round


@dataclass
class FitResult:
    """What ``fit`` returns; ``predictions[split] = (take ids (n,), probabilities (n, C))``."""

    run_dir: Path
    metrics: dict
    config: FitConfig
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def fit(cfg: FitConfig, selection: Selection | None = None) -> FitResult:
    """Train ``cfg.head`` on ``cfg.store`` and write the run folder.

    ``selection``: the already loaded views (a sweep loads each view set once); it must
    come from ``cfg.store`` with the views ``cfg.views`` names.
    """
    start = time.perf_counter()
    sel = selection if selection is not None else load_selection(cfg.store, cfg.views)
    _check_selection(cfg, sel)
    splits = split_takes(sel, cfg.val_frac, cfg.split_seed)
    trained = train_model(cfg, sel, splits)
    predictions = {
        name: (sel.take_ids[rows], predict_probabilities(trained, sel.x, sel.mask, rows, cfg))
        for name, rows in splits.as_dict().items()
        if name != "train" and len(rows)
    }
    metrics = fit_metrics(sel, splits, trained, predictions)
    metrics["fit_seconds"] = round(time.perf_counter() - start, 3)
    run_dir = write_run(cfg, sel, splits, trained, metrics, predictions)
    return FitResult(run_dir=run_dir, metrics=metrics, config=cfg, predictions=predictions)


def _check_selection(cfg: FitConfig, sel: Selection) -> None:
    wanted = resolve_views(cfg.views, sel.store_views)
    if sel.view_names != wanted:
        raise ValueError(f"selection holds views {sel.view_names}, config asks for {wanted}")
    if str(Path(cfg.store).resolve()) != sel.store_path:
        raise ValueError(f"selection comes from {sel.store_path}, config names {cfg.store}")
    if sel.n == 0:
        raise ValueError(f"{cfg.store}: no completed take has a valid view among {wanted}")


def train_model(cfg: FitConfig, sel: Selection, splits: Splits) -> TrainedModel:
    """Train the configured head on the train split, early-stopping on the val split."""
    if cfg.head == LIGHTGBM:
        from skill.heads.lgbm import train_lightgbm

        booster, history, best = train_lightgbm(cfg, sel, splits)
        return TrainedModel(
            kind=LIGHTGBM, model=booster, head_options={}, history=history, best=best
        )
    return train_neural(cfg, sel, splits)


def head_options(cfg: FitConfig, sel: Selection) -> dict:
    """Keyword arguments of ``build_head`` for this config and selection, hidden resolved."""
    from skill.heads import HEADS

    hidden = cfg.hidden
    if hidden is None:
        hidden = inspect.signature(HEADS[cfg.head]).parameters["hidden"].default
    return {
        "dim": sel.dim,
        "num_views": sel.num_views,
        "num_classes": sel.num_classes,
        "tokens": sel.tokens,
        "hidden": int(hidden),
        "dropout": cfg.dropout,
    }


# ---- neural training ---------------------------------------------------------------------


@contextlib.contextmanager
def deterministic_torch(seed: int, device: str, threads: int = 1) -> Iterator[None]:
    """Seed torch, set its CPU threads and (on CPU) force deterministic kernels; restore the
    global state after."""
    import torch

    cuda_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        if not cuda_devices:
            torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            torch.set_num_threads(was_threads)


@dataclass
class TrainingState:
    """What one epoch of neural training reads and updates."""

    model: object  # nn.Module
    optimizer: object
    scheduler: object
    loss_fn: object
    rng: np.random.Generator  # batch order, clip choice, view dropout
    tokens: object  # (n, V, K, N', D) torch tensor: the head's input, see `head_input`
    labels: object  # (n,) int64 torch tensor


def start_training(cfg: FitConfig, sel: Selection, splits: Splits) -> TrainingState:
    """A fresh head with its optimizer, schedule and loss; call under `deterministic_torch`."""
    import torch

    from skill.heads import build_head

    model = build_head(cfg.head, **head_options(cfg, sel)).to(cfg.device)
    steps_per_epoch = math.ceil(len(splits.train) / cfg.batch_size)
    optimizer, scheduler = make_optimizer(model, cfg, steps_per_epoch * cfg.epochs)
    return TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=make_loss(cfg, sel.labels[splits.train], sel.num_classes),
        rng=np.random.default_rng(cfg.seed),
        tokens=torch.from_numpy(head_input(cfg.head, sel.x)),
        labels=torch.from_numpy(sel.labels),
    )


# Takes per block when pooling tokens: bounds the float32 temporary.
POOL_BLOCK = 256


def head_input(head: str, x: np.ndarray) -> np.ndarray:
    """What training feeds the head, for every take: ``x (n, V, K, N, D)`` float16 as it is,
    or, for a head whose first step is the mean over each view's N tokens (``pools_tokens``),
    that mean computed once for all epochs: ``(n, V, K, 1, D)`` float32. The head's own mean
    over one token is then the identity: the same function, without converting and averaging
    N tokens of every take in every epoch."""
    from skill.heads import pools_tokens

    if not pools_tokens(head):
        return x
    pooled = np.empty((*x.shape[:3], 1, x.shape[4]), dtype=np.float32)
    for start in range(0, len(x), POOL_BLOCK):
        block = x[start : start + POOL_BLOCK]  # (b, V, K, N, D) float16
        # (b, V, K, N, D) -> (b, V, K, 1, D), accumulated in float32 as the head would
        pooled[start : start + POOL_BLOCK] = block.mean(axis=3, keepdims=True, dtype=np.float32)
    return pooled


def train_neural(cfg: FitConfig, sel: Selection, splits: Splits) -> TrainedModel:
    """AdamW + warmup/cosine training with early stopping; returns the best epoch's model."""
    with deterministic_torch(cfg.seed, cfg.device, cfg.threads):
        state = start_training(cfg, sel, splits)
        model, options = state.model, head_options(cfg, sel)
        tracker = BestTracker(cfg.monitor, cfg.patience)
        history: list[dict] = []
        for epoch in range(1, cfg.epochs + 1):
            train_loss = train_epoch(state, sel.mask, splits.train, cfg)
            row = validation_row(state, sel, splits, cfg)
            lr = state.scheduler.get_last_lr()[0]
            history.append({"epoch": epoch, "train_loss": train_loss, **row, "lr": lr})
            tracker.update(epoch, row, model)
            if tracker.should_stop(epoch):
                break
        model.load_state_dict(tracker.state)
    model.to("cpu").eval()
    return TrainedModel(
        kind="torch", model=model, head_options=options, history=history, best=tracker.epoch
    )


def make_loss(cfg: FitConfig, train_labels: np.ndarray, num_classes: int):
    """Cross-entropy, weighted by inverse class frequency when ``cfg.class_balanced``."""
    import torch

    if not cfg.class_balanced:
        return torch.nn.CrossEntropyLoss()
    weights = torch.tensor(class_weights(train_labels, num_classes), dtype=torch.float32)
    return torch.nn.CrossEntropyLoss(weight=weights.to(cfg.device))


def make_optimizer(model, cfg: FitConfig, total_steps: int):
    """AdamW (decay on >= 2-D weights only) and a per-step linear-warmup + cosine schedule."""
    import torch

    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel is several times cheaper than the per-tensor loop for a 7M-parameter
    # head on the CPU (benchmark 1); older torch builds lack it.
    params = [g for g in groups if g["params"]]
    try:
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, fused=True)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    warmup = int(cfg.warmup_frac * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total_steps))
    return optimizer, scheduler


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear from 1/warmup to 1, then cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def class_weights(train_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse-frequency weights ``n / (C * count_c)`` (0 for a class absent from training)."""
    counts = np.bincount(train_labels, minlength=num_classes).astype(np.float64)
    weights = np.zeros(num_classes)
    present = counts > 0
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def train_epoch(state: TrainingState, mask: np.ndarray, train_rows: np.ndarray, cfg) -> float:
    """One pass over the training takes in a seeded random order; returns the mean loss.

    ``mask (n, V)`` numpy bool of the whole selection; ``train_rows`` index it.
    """
    import torch

    state.model.train()
    order = state.rng.permutation(train_rows)
    total, count = 0.0, 0
    for start in range(0, len(order), cfg.batch_size):
        rows = order[start : start + cfg.batch_size]
        clip = state.rng.integers(state.tokens.shape[2], size=len(rows))
        keep = drop_views(mask[rows], cfg.view_dropout, state.rng)
        x, m = training_batch(state.tokens, rows, clip, keep, cfg.device)
        target = state.labels[torch.from_numpy(rows)].to(cfg.device)
        loss = state.loss_fn(state.model(x, m), target)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
        total += float(loss.detach()) * len(rows)
        count += len(rows)
    return total / max(count, 1)


def drop_views(mask: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    """``(B, V)`` bool mask with each valid view dropped with ``prob``; one always survives."""
    if prob <= 0:
        return mask
    keep = mask & (rng.random(mask.shape) >= prob)
    for row in np.flatnonzero(~keep.any(axis=1)):
        keep[row, rng.choice(np.flatnonzero(mask[row]))] = True
    return keep


def training_batch(tokens, rows: np.ndarray, clip: np.ndarray, keep: np.ndarray, device: str):
    """Gather one clip per take and cast: ``(B, V, N, D) float32`` tokens and ``(B, V)`` mask.

    Tokens of dropped views are zeroed, exactly like a view the store marks invalid.
    """
    import torch

    rows_t, clip_t = torch.from_numpy(rows), torch.from_numpy(clip)
    x = tokens[rows_t, :, clip_t].to(device=device, dtype=torch.float32)  # (B, V, N, D)
    keep_t = torch.from_numpy(np.ascontiguousarray(keep)).to(device)
    return x * keep_t[:, :, None, None], keep_t


def validation_row(state: TrainingState, sel: Selection, splits: Splits, cfg: FitConfig) -> dict:
    """Validation loss, top-1 and balanced accuracy of the current model."""
    from skill.heads.metrics import accuracy, balanced_accuracy

    x = state.tokens.numpy()
    probs = clip_mean_softmax(state.model, x, sel.mask, splits.val, cfg.batch_size, cfg.device)
    y_true = sel.labels[splits.val]
    picked = probs[np.arange(len(y_true)), y_true]
    y_pred = probs.argmax(axis=1)
    return {
        "val_loss": float(-np.log(np.clip(picked, 1e-12, None)).mean()),
        "val_top1": accuracy(y_true, y_pred),
        "val_balanced_accuracy": balanced_accuracy(y_true, y_pred, sel.num_classes),
    }


class BestTracker:
    """Remembers the best epoch's score and weights; says when patience has run out."""

    def __init__(self, monitor: str, patience: int):
        self.monitor, self.patience = monitor, patience
        self.score: tuple[float, float] | None = None
        self.epoch, self.state = 0, None

    def update(self, epoch: int, row: dict, model) -> None:
        """Keep the model's weights when this epoch's validation score is the best so far."""
        # Higher is better; ties in balanced accuracy are broken by the lower loss.
        if self.monitor == "loss":
            score = (-row["val_loss"], row["val_balanced_accuracy"])
        else:
            score = (row["val_balanced_accuracy"], -row["val_loss"])
        if self.score is None or score > self.score:
            self.score, self.epoch = score, epoch
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def should_stop(self, epoch: int) -> bool:
        return self.patience > 0 and epoch - self.epoch >= self.patience


def clip_mean_softmax(
    forward, x: np.ndarray, mask: np.ndarray, rows: np.ndarray, batch_size: int, device: str
) -> np.ndarray:
    """Mean over the K clips of ``softmax(forward(tokens, mask))`` for the given takes.

    ``x (n, V, K, N, D)`` float16, ``mask (n, V)``; ``forward`` maps ``(B, V, N, D), (B, V)``
    to ``(B, C)`` (or ``(B, V, C)`` for per-view logits); returns ``(len(rows), ...)``.
    """
    import torch

    if hasattr(forward, "eval"):
        forward.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            m = torch.from_numpy(mask[batch]).to(device)
            probs = 0
            for k in range(x.shape[2]):
                tokens = torch.from_numpy(x[batch, :, k]).to(device=device, dtype=torch.float32)
                probs = probs + torch.softmax(forward(tokens, m).float(), dim=-1)
            outputs.append((probs / x.shape[2]).cpu().numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float64)


def predict_probabilities(
    trained: TrainedModel, x: np.ndarray, mask: np.ndarray, rows: np.ndarray, cfg: FitConfig
) -> np.ndarray:
    """Class probabilities ``(len(rows), C)`` of a trained head for the given takes."""
    if trained.kind == LIGHTGBM:
        from skill.heads.lgbm import lightgbm_probabilities

        return lightgbm_probabilities(trained.model, x[rows], mask[rows])
    device = cfg.device
    trained.model.to(device)
    try:
        return clip_mean_softmax(trained.model, x, mask, rows, cfg.batch_size, device)
    finally:
        trained.model.to("cpu")


# ---- metrics and the run folder ----------------------------------------------------------


def fit_metrics(sel: Selection, splits: Splits, trained: TrainedModel, predictions: dict) -> dict:
    """metrics.json content: per-split metrics with baselines, split facts, history."""
    train_labels = sel.labels[splits.train]
    metrics: dict = {
        "train": {
            "n": len(splits.train),
            "class_counts": np.bincount(train_labels, minlength=sel.num_classes).tolist(),
        },
    }
    for name, (_, probs) in predictions.items():
        rows = splits.as_dict()[name]
        metrics[name] = evaluate(
            sel.labels[rows], probs, sel.scenario[rows], train_labels, sel.class_names
        )
    metrics["splits"] = {
        "source": splits.source,
        "unused_labelled_takes": splits.unused,
        "shared_participants_train_val": splits.shared_participants,
        "dropped_takes_no_valid_view": len(sel.dropped_take_ids),
        "incomplete_takes": sel.n_incomplete,
    }
    metrics["best_epoch" if trained.kind == "torch" else "best_round"] = trained.best
    metrics["epochs_run" if trained.kind == "torch" else "rounds_run"] = len(trained.history)
    metrics["history"] = trained.history
    return metrics


def write_run(
    cfg: FitConfig,
    sel: Selection,
    splits: Splits,
    trained: TrainedModel,
    metrics: dict,
    predictions: dict,
) -> Path:
    """Write the run folder in a staging folder, then rename it into place; returns its path."""
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{cfg.name}.partial-{os.getpid()}-{time.time_ns()}"
    staging.mkdir()
    try:
        save_model(trained, staging)
        write_json(staging / "metrics.json", metrics)
        write_predictions_csv(staging / "predictions.csv", predictions, sel.class_names)
        if cfg.plots:
            write_plots(staging, sel, trained, metrics)
        write_json(staging / "config.json", run_config(cfg, sel, splits, trained))
        return publish(staging, out_dir, cfg.name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_model(trained: TrainedModel, folder: Path) -> None:
    if trained.kind == LIGHTGBM:
        from skill.heads.lgbm import save_lightgbm

        save_lightgbm(trained.model, folder / "model.txt")
    else:
        from safetensors.torch import save_model as save_safetensors

        save_safetensors(trained.model, str(folder / "model.safetensors"))


def run_config(cfg: FitConfig, sel: Selection, splits: Splits, trained: TrainedModel) -> dict:
    """config.json: all a later ``predict`` needs to rebuild the head and check the store."""
    used = np.concatenate([splits.train, splits.val, splits.test])
    return {
        "skill_run_format": RUN_FORMAT_VERSION,
        "package_version": package_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fit": dataclasses.asdict(cfg),
        "model": {
            "kind": trained.kind,
            "head": cfg.head,
            "options": trained.head_options,
            "file": "model.txt" if trained.kind == LIGHTGBM else "model.safetensors",
        },
        "store": {
            "path": sel.store_path,
            "provenance": sel.provenance,
            "views": sel.store_views,
            "geometry": sel.geometry,
        },
        "view_names": sel.view_names,
        "class_names": sel.class_names,
        "takes": {
            "take_ids_sha256": take_ids_sha256(sel.take_ids[np.sort(used)]),
            "splits_sha256": take_ids_sha256(
                [
                    f"{sel.take_ids[r]}\t{name}"
                    for name, rows in splits.as_dict().items()
                    for r in rows
                ]
            ),
            "n": {name: int(len(rows)) for name, rows in splits.as_dict().items()},
            "split_source": splits.source,
            "train_class_counts": np.bincount(
                sel.labels[splits.train], minlength=sel.num_classes
            ).tolist(),
            "dropped_no_valid_view": sel.dropped_take_ids,
        },
    }


def write_plots(folder: Path, sel: Selection, trained: TrainedModel, metrics: dict) -> None:
    from skill.heads.plots import plot_confusion, plot_curve

    panels = [
        (f"{name} (top-1 {metrics[name]['top1']:.3f})", np.array(metrics[name]["confusion"]))
        for name in ("val", "test")
        if name in metrics
    ]
    plot_confusion(panels, sel.class_names, folder / "confusion.png")
    x_key = "epoch" if trained.kind == "torch" else "round"
    plot_curve(trained.history, folder / "curve.png", x_key, best=trained.best)


def write_predictions_csv(path: Path, predictions: dict, class_names: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["take", "split", "predicted", *(f"p_{c}" for c in class_names)])
        for split, (take_ids, probs) in predictions.items():
            for take, row in zip(take_ids, probs, strict=True):
                writer.writerow(
                    [take, split, class_names[int(row.argmax())], *(f"{p:.6f}" for p in row)]
                )


def publish(staging: Path, out_dir: Path, name: str) -> Path:
    """Rename the staging folder to ``name``, or ``name-2``, ``name-3``... if taken."""
    for attempt in range(1, 10_000):
        target = out_dir / (name if attempt == 1 else f"{name}-{attempt}")
        if target.exists():
            continue
        try:
            os.rename(staging, target)
        except OSError:  # created by someone else between the check and the rename
            continue
        return target
    raise RuntimeError(f"{out_dir}: no free run folder name for {name!r}")


def write_json(path: Path, payload: dict) -> None:
    """Strict JSON (NaN -> null), written to a temporary file and renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def json_safe(value):
    """numpy scalars/arrays to Python, NaN/inf floats to None, recursively."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def load_fit_config(run_dir: str | Path) -> dict:
    """The config.json of a complete run folder (a clear error for anything else)."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a complete run folder (no config.json)")
    config = json.loads(path.read_text())
    if config.get("skill_run_format", 0) > RUN_FORMAT_VERSION:
        raise ValueError(
            f"{path}: run format {config['skill_run_format']} is newer than this skill"
        )
    return config
