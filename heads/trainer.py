"""The neural trainer: fits any registered ``nn.Module`` head, as :class:`NeuralHead`.

Training: AdamW (no weight decay on biases and norm weights), a linear warmup then a cosine
learning-rate schedule per step over the budget (:meth:`FitConfig.budget`: a number of
optimisation steps, rounded up to whole epochs), the task's loss (optionally balanced), early
stopping on the validation split (checked once an epoch, scored by the task) with the best
epoch's weights restored. With K > 1 cached clips a random clip per take is used each epoch
at train time, and evaluation averages the task's scores (classification: softmax
probabilities) over clips; a head that reads sequences is fed each take's whole clip sequence,
in training and evaluation alike (:class:`SequenceBatches`). A store that records pairs of
takes (a ranking task's) is trained on its training pairs, both takes of each through the head
(:class:`PairBatches`), and validated on its val pairs. View dropout drops each valid view of a training take with
probability ``view_dropout``, never all of them. Each epoch is reported to ``skill.progress``.

The epoch loop (:func:`run_epochs`) is the one of ``skill fit`` and ``skill adapt``: it is fed
by a :class:`BatchSource`, the cached tokens of a store here (:func:`token_source`), the
frames of adapt's frame store through the adapted backbone there
(``adapt.train.FrameBatches``). The same config and store give identical metrics and weights
on one machine on CPU (seeded generators, deterministic torch algorithms during the fit, the
global torch RNG state restored afterwards); CUDA runs are seeded but not bitwise identical.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skill.cache.files import write_bytes_atomically
from skill.devices import resolve_device
from skill.errors import SkillError
from skill.heads.data import (
    ClipSequence,
    Selection,
    Splits,
    check_clip_axis,
    pool_clips,
    scored_rows,
)
from skill.heads.registry import HeadSpec, resolve_head
from skill.progress import task as progress_task
from skill.tasks import Task

if TYPE_CHECKING:
    from skill.heads.config import FitConfig, TrainingBudget


class NeuralHead:
    """:class:`heads.interface.TrainableHead` for a registered ``nn.Module`` head.

    The module maps tokens ``(B, V, N, D)`` float32 and a view mask ``(B, V)`` bool to logits
    ``(B, C)``; it is saved as ``model.safetensors`` and rebuilt from its ``options``.
    ``spec``: the head ``name`` resolved (:func:`heads.registry.resolve_head`), looked up here
    when not given.
    """

    kind = "torch"
    model_file = "model.safetensors"
    step = "epoch"

    def __init__(
        self, name: str, model=None, options: dict | None = None, spec: HeadSpec | None = None
    ):
        self.name, self.model = name, model  # model: nn.Module, on the cpu between calls
        self.spec = spec if spec is not None else resolve_head(name)
        self.options = dict(options or {})
        self.history: list[dict] = []
        self.best = 0
        self.schedule: dict | None = None

    def check_task(self, task: Task, schema: dict) -> None:
        """A per-take head learns any per-take task (whatever loss it gives), a per-clip head
        (``per_clip``) a per-clip task only."""
        check_learns(self.spec, task)

    def fit(self, cfg: FitConfig, sel: Selection, splits: Splits) -> None:
        self.model, self.options, self.history, self.best, budget = train_neural(
            cfg, sel, splits, self.spec
        )
        self.schedule = schedule_record(budget, len(self.history))

    def predict_scores(
        self, x, mask, task: Task, rows=None, batch_size=64, device="cpu", sequence=None
    ) -> np.ndarray:
        return self._scores(self.model, x, mask, task, rows, batch_size, device, sequence)

    def per_view_scores(
        self, x, mask, task: Task, batch_size=64, device="cpu", sequence=None
    ) -> np.ndarray | None:
        # (B, V, N, D) -> (B, V, O), or for a sequence head the same with its clip inputs
        per_view = getattr(self.model, "per_view_logits", None)
        if per_view is None:
            return None
        return self._scores(per_view, x, mask, task, None, batch_size, device, sequence)

    def _scores(self, forward, x, mask, task, rows, batch_size, device, sequence):
        """The scores of ``forward`` (the model or its per-view outputs) for takes ``rows``:
        a sequence head's over the whole sequence; a clip head's over each view's mean of its
        valid clips on a sequence store, else the mean of its scores over the clips."""
        rows = np.arange(len(x)) if rows is None else rows
        if self.spec.reads == "sequence":
            if sequence is None:
                raise ValueError(f"head {self.name!r} reads clip sequences: give their mask")
            return self._on(
                device,
                lambda d: sequence_scores(forward, task, x, mask, sequence, rows, batch_size, d),
            )
        if sequence is not None:  # pooled as the fit pooled its selection (pooled_selection)
            x, mask = pool_clips(x[rows], sequence.mask[rows]), mask[rows]
            rows = np.arange(len(x))
        return self._on(
            device, lambda d: clip_mean_scores(forward, task, x, mask, rows, batch_size, d)
        )

    def _on(self, device: str, compute):
        device = resolve_device(device)
        self.model.to(device)
        try:
            return compute(device)
        finally:
            self.model.to("cpu")

    def save(self, folder: Path) -> None:
        save_tensors(Path(folder) / self.model_file, self.model.state_dict())

    @classmethod
    def load(cls, name: str, folder: Path, file: str, options: dict) -> NeuralHead:
        from safetensors.torch import load_model

        path = Path(folder) / file
        spec = resolve_head(name)
        try:
            model = spec.build(**options)
        except (TypeError, ValueError) as exc:  # options of the right names, wrong values
            raise SkillError(
                f"{Path(folder) / 'config.json'}: model.options do not build head {name!r} ({exc})"
            ) from None
        try:
            load_model(model, str(path), strict=True)
        except RuntimeError as exc:  # missing or unexpected keys, other shapes
            # A run folder of an older version of the head (e.g. `mean` before its per-view
            # projection) cannot be used with this one: say so instead of a traceback.
            first = str(exc).strip().splitlines()[-1].strip()
            raise SkillError(
                f"{path}: weights do not fit this version's {name!r} head ({first}); "
                f"refit the run with this version"
            ) from exc
        return cls(name, model.eval(), options, spec=spec)


def check_learns(spec: HeadSpec, task: Task) -> None:
    """Refuse a head whose outputs are not the task's: per clip against per take, or the
    reverse (ConfigError naming both)."""
    from skill.errors import ConfigError

    task_per_clip = bool(getattr(task, "per_clip", False))
    if spec.per_clip != task_per_clip:
        per = {True: "per clip", False: "per take"}
        raise ConfigError(
            f"--head {spec.name} predicts {per[spec.per_clip]} and task {task.name} is learned "
            f"{per[task_per_clip]}; choose a head that learns {task.name}"
        )


def save_tensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """Tensors to a safetensors file, written whole or not at all, with the mode the umask
    gives (safetensors' own ``save_file`` creates its file 0600)."""
    from safetensors.torch import save

    data = save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                {"format": "pt", **(metadata or {})})  # fmt: skip
    write_bytes_atomically(path, data)


def head_options(cfg: FitConfig, sel: Selection, spec: HeadSpec | None = None) -> dict:
    """The keyword arguments that build head ``spec`` (``cfg.head`` resolved; looked up when
    not given) for this config and selection: of the store's sizes, ``hidden`` (the head's
    own when ``cfg.hidden`` is None) and ``dropout``, those its constructor declares."""
    spec = spec if spec is not None else resolve_head(cfg.head)
    hidden = spec.default_hidden if cfg.hidden is None else cfg.hidden
    offered = {
        "dim": sel.dim,
        "num_views": sel.num_views,
        "outputs": sel.outputs,
        "tokens": sel.tokens,
        "view_names": list(sel.view_names),
        "task": sel.task_name,
        "hidden": None if hidden is None else int(hidden),
        "dropout": cfg.dropout,
    }
    return spec.arguments(offered)


@contextlib.contextmanager
def deterministic_torch(seed: int, device: str, threads: int = 1) -> Iterator[None]:
    """Seed torch, set its CPU threads and (on CPU) force deterministic kernels; restore the
    global state after."""
    import torch
    import torch.utils.deterministic

    cuda_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_filling = torch.utils.deterministic.fill_uninitialized_memory
    was_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        if not cuda_devices:
            torch.use_deterministic_algorithms(True)
            # A debugging aid of deterministic mode (NaN in every new tensor), not needed for
            # identical results: it filled each of a sequence head's activations once more.
            torch.utils.deterministic.fill_uninitialized_memory = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            torch.utils.deterministic.fill_uninitialized_memory = was_filling
            torch.set_num_threads(was_threads)


@dataclass
class TrainingState:
    """What one epoch of neural training reads and updates."""

    cfg: FitConfig
    """The fit's config with the head's defaults filled in (``FitConfig.resolved``): the rate
    and view dropout every epoch uses."""
    model: object  # nn.Module
    options: dict  # the keyword arguments the model was built with (config.json model.options)
    optimizer: object
    scheduler: object
    loss_fn: object
    targets: object  # (n, ...) torch tensor: the task's targets as its loss takes them
    task: Task
    budget: TrainingBudget


def start_training(cfg: FitConfig, sel: Selection, splits: Splits, spec: HeadSpec) -> TrainingState:
    """A fresh head ``spec`` (``cfg.head`` resolved) with its optimizer, schedule and loss;
    call under `deterministic_torch`. ``cfg`` is resolved (``FitConfig.resolved``)."""
    if cfg.lr is None or cfg.view_dropout is None or cfg.monitor is None:
        raise ValueError("start_training takes a resolved config (FitConfig.resolved)")
    check_clip_axis(cfg.head, spec.reads, sel)  # adapt's frames are never a sequence store
    options = head_options(cfg, sel, spec)
    model = spec.build(**options).to(cfg.device)
    budget = cfg.budget(splits.training_count())
    optimizer, scheduler = make_optimizer(model, cfg, budget)
    return TrainingState(
        cfg=cfg,
        model=model,
        options=options,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=sel.task.make_loss(
            sel.schema, sel.targets[splits.train], cfg.class_balanced, cfg.device
        ),
        targets=sel.task.torch_targets(sel.targets),
        task=sel.task,
        budget=budget,
    )


# Takes per block when pooling tokens: bounds the float32 temporary.
POOL_BLOCK = 256


def head_input(spec: HeadSpec, x: np.ndarray) -> np.ndarray:
    """What training feeds head ``spec``, for every take: ``x (n, V, K, N, D)`` float16 as it
    is, or, for a head whose first step is the mean over each view's N tokens
    (``pools_tokens``), that mean computed once for all epochs: ``(n, V, K, 1, D)`` float32.
    The head's own mean over one token is then the identity: the same function, without
    converting and averaging N tokens of every take in every epoch. With one token per clip
    there is nothing to average: ``x`` itself."""
    if not spec.pools_tokens or x.shape[3] == 1:
        return x
    pooled = np.empty((*x.shape[:3], 1, x.shape[4]), dtype=np.float32)
    for start in range(0, len(x), POOL_BLOCK):
        block = x[start : start + POOL_BLOCK]  # (b, V, K, N, D) float16
        # (b, V, K, N, D) -> (b, V, K, 1, D), accumulated in float32 as the head would
        pooled[start : start + POOL_BLOCK] = block.mean(axis=3, keepdims=True, dtype=np.float32)
    return pooled


def train_neural(cfg: FitConfig, sel: Selection, splits: Splits, spec: HeadSpec):
    """AdamW + warmup/cosine training of head ``spec`` (``cfg.head`` resolved; ``cfg``
    resolved) with early stopping; returns the best epoch's model (on the cpu, in eval mode),
    its head options, the history, the best epoch and the budget."""
    with deterministic_torch(cfg.seed, cfg.device, cfg.threads):
        state = start_training(cfg, sel, splits, spec)
        model, options = state.model, state.options
        pairs = None if splits.pairs is None else splits.pairs["train"]
        source = token_source(state.cfg, sel, splits.train, spec, pairs)
        tracker = BestTracker(sel.task, cfg.monitor, state.budget.patience)
        history: list[dict] = []
        what = f"fit {cfg.head} on {cfg.views}"
        with progress_task(what, total=state.budget.epochs, unit="epoch") as shown:

            def show(epoch: int, row: dict, note: str, stop: bool) -> bool:
                shown.update(epoch, note=note)
                return True

            epochs = range(1, state.budget.epochs + 1)
            run_epochs(state, source, sel, splits, tracker, history, epochs, after_epoch=show)
    model.to("cpu").eval()
    return model, options, history, tracker.epoch, state.budget


def validation_note(row: dict, history: list[dict], tracker: BestTracker, stopped: bool) -> str:
    """What a fit's progress shows after an epoch: its validation scores, the best epoch's
    and whether early stopping ended the fit."""
    key = f"val_{tracker.monitor}"
    note = ", ".join(
        f"{k.removeprefix('val_')} {v:.3f}" for k, v in row.items() if k.startswith("val_")
    )
    best = [h for h in history if h["epoch"] == tracker.epoch]  # none: before a resume
    if best:
        note += f"; best epoch {tracker.epoch} ({tracker.monitor} {best[0][key]:.3f})"
    return f"{note}; stopped early (patience {tracker.patience})" if stopped else note


def schedule_record(budget: TrainingBudget, epochs_run: int) -> dict:
    """config.json ``schedule``: the resolved budget and how much of it was run."""
    import dataclasses

    return {
        **dataclasses.asdict(budget),
        "epochs_run": epochs_run,
        "steps_run": epochs_run * budget.steps_per_epoch,
    }


def make_optimizer(model, cfg: FitConfig, budget: TrainingBudget):
    """AdamW (decay on >= 2-D weights only) and a per-step linear-warmup + cosine schedule
    spanning ``budget.steps``."""
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
    factor = warmup_cosine(budget.warmup_steps, budget.steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor per step: linear from 1/warmup to 1, then cosine down to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


# ---- the epoch loop, fed by a batch source ---------------------------------------------------
@dataclass
class Batch:
    """One forward pass of a training epoch."""

    inputs: tuple
    """What the model takes: ``(tokens (B, V, N, D) float32, mask (B, V))`` of a store, or
    adapt's ``(clips (B, V, T, H, W, 3) uint8, mask (B, V))``."""
    rows: np.ndarray
    """The batch's takes (selection rows: their targets); empty for a rank left none."""
    step_takes: int
    """Takes of the optimiser step the batch belongs to, over every rank: each take weighs
    the same in a step, whatever the size of its batch."""
    ends_step: bool = True
    """Whether the optimiser steps after this batch (gradients of the batches before it in
    the step are summed)."""


class BatchSource:
    """Where the epoch loop's batches come from, and how it scores takes: what `skill fit`
    (:class:`TokenBatches`) and `skill adapt` (``adapt.train.FrameBatches``) differ in. The
    two hooks serve a source whose batches several processes share (no-ops here)."""

    def batches(self, epoch: int) -> Iterator[Batch]:
        """The training batches of ``epoch`` (from 1), in order."""
        raise NotImplementedError

    def scores(self, model, rows: np.ndarray) -> np.ndarray:
        """The task's scores of ``model`` for takes ``rows``, the mean over their clips:
        ``(len(rows), O)``."""
        raise NotImplementedError

    def all_reduce(self, params: list) -> None:
        """Before each optimiser step: the gradients of ``params`` summed over processes."""

    def sum_over_ranks(self, total: float, seen: int) -> tuple[float, float]:
        """An epoch's summed loss and takes, over processes."""
        return total, seen


class TokenBatches(BatchSource):
    """`skill fit`'s batch source: a selection's cached tokens, the head's input
    (:func:`head_input`), in a seeded random order of the training takes, one random clip per
    take and its views dropped with ``cfg.view_dropout``. ``cfg`` is resolved."""

    def __init__(self, cfg: FitConfig, sel: Selection, train_rows: np.ndarray, spec: HeadSpec):
        import torch

        self.cfg, self.sel, self.train_rows = cfg, sel, train_rows
        self.tokens = torch.from_numpy(head_input(spec, sel.x))  # (n, V, K, N', D)
        self.rng = np.random.default_rng(cfg.seed)  # batch order, clip choice, view dropout

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = self.rng.permutation(self.train_rows)
        for start in range(0, len(order), self.cfg.batch_size):
            rows = order[start : start + self.cfg.batch_size]
            yield Batch(self.batch_inputs(rows), rows, len(rows))

    def batch_inputs(self, rows: np.ndarray) -> tuple:
        """The model's inputs for takes ``rows``: one random clip each, views dropped."""
        clip = self.rng.integers(self.tokens.shape[2], size=len(rows))
        keep = drop_views(self.sel.mask[rows], self.cfg.view_dropout, self.rng)
        return training_batch(self.tokens, rows, clip, keep, self.cfg.device)

    def scores(self, model, rows: np.ndarray) -> np.ndarray:
        cfg, x = self.cfg, self.tokens.numpy()
        return clip_mean_scores(model, self.sel.task, x, self.sel.mask, rows, cfg.batch_size,
                                cfg.device)  # fmt: skip


class SequenceBatches(BatchSource):
    """`skill fit`'s batch source for a head that reads sequences: whole clip sequences of a
    sequence store's selection, tokens ``(B, V, K, N', D)`` float32 (N' = 1 for a head that
    pools tokens), the view mask ``(B, V)``, the clip mask ``(B, V, K)`` and the clip times
    ``(B, V, K, 2)`` (0 where absent), in a seeded random order of the training takes; views
    dropped with ``cfg.view_dropout`` (their clips too). No clip is drawn: evaluation reads
    the same whole sequences. ``cfg`` is resolved."""

    def __init__(self, cfg: FitConfig, sel: Selection, train_rows: np.ndarray, spec: HeadSpec):

        self.cfg, self.sel, self.train_rows = cfg, sel, train_rows
        self.tokens = head_input(spec, sel.x)  # (n, V, K, N', D)
        self.sequence = ClipSequence(
            sel.clip_mask, np.nan_to_num(sel.clip_times * sel.clip_mask[..., None], nan=0.0)
        )
        self.rng = np.random.default_rng(cfg.seed)  # batch order, view dropout

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = self.rng.permutation(self.train_rows)
        for start in range(0, len(order), self.cfg.batch_size):
            rows = order[start : start + self.cfg.batch_size]
            yield Batch(self.batch_inputs(rows), rows, len(rows))

    def batch_inputs(self, rows: np.ndarray) -> tuple:
        """The model's inputs for takes ``rows``: whole sequences, views dropped."""
        keep = drop_views(self.sel.mask[rows], self.cfg.view_dropout, self.rng)
        return sequence_batch(self.tokens, self.sequence, rows, keep, self.cfg.device)

    def scores(self, model, rows: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        return sequence_scores(model, self.sel.task, self.tokens, self.sel.mask, self.sequence,
                               rows, cfg.batch_size, cfg.device)  # fmt: skip


class PairBatches(BatchSource):
    """`skill fit`'s batch source for a store that records pairs (a ranking task): a seeded
    random order of the training pairs ``(m, 2)``, ``cfg.batch_size`` pairs a batch, whose
    takes are the better takes of its pairs followed by their worse takes (what a ranking
    task's loss reads of the ``(2B, O)`` outputs), each take's inputs as ``takes`` (a
    :class:`TokenBatches` or :class:`SequenceBatches`) makes them; scored as ``takes``
    scores."""

    def __init__(self, takes: TokenBatches | SequenceBatches, pairs: np.ndarray):
        self.takes, self.pairs = takes, np.asarray(pairs, dtype=np.int64).reshape(-1, 2)

    def batches(self, epoch: int) -> Iterator[Batch]:
        order = self.takes.rng.permutation(len(self.pairs))
        size = self.takes.cfg.batch_size
        for start in range(0, len(order), size):
            chosen = self.pairs[order[start : start + size]]
            rows = np.concatenate([chosen[:, 0], chosen[:, 1]])
            yield Batch(self.takes.batch_inputs(rows), rows, len(rows))

    def scores(self, model, rows: np.ndarray) -> np.ndarray:
        return self.takes.scores(model, rows)


def token_source(
    cfg: FitConfig, sel: Selection, train_rows: np.ndarray, spec: HeadSpec,
    pairs: np.ndarray | None = None,
):  # fmt: skip
    """The batch source of `skill fit` for head ``spec``: whole sequences for a head that
    reads them (:class:`SequenceBatches`), else one random clip per take
    (:class:`TokenBatches`); over the training ``pairs`` (:class:`PairBatches`) when given."""
    kind = SequenceBatches if spec.reads == "sequence" else TokenBatches
    takes = kind(cfg, sel, train_rows, spec)
    return takes if pairs is None else PairBatches(takes, pairs)


def sequence_batch(
    tokens: np.ndarray, sequence: ClipSequence, rows: np.ndarray, keep: np.ndarray, device: str
):
    """The inputs of a sequence head for takes ``rows`` of ``tokens (n, V, K, N, D)`` with
    views ``keep`` ``(B, V)``: tokens ``(B, V, K, N, D)`` float32, ``keep``, the clip mask
    ``(B, V, K)`` and the clip times ``(B, V, K, 2)``; the tokens, clips and times of dropped
    views are zeroed and masked, exactly like a view the store marks invalid."""
    import torch

    keep_t = torch.from_numpy(np.ascontiguousarray(keep)).to(device)
    clips = torch.from_numpy(sequence.mask[rows]).to(device) & keep_t[:, :, None]
    times = torch.from_numpy(sequence.times[rows]).to(device) * clips[..., None]
    # numpy's gather of float16 rows is a few times faster than torch's on the CPU
    x = torch.from_numpy(tokens[rows]).to(device=device, dtype=torch.float32)
    x[~keep_t] = 0.0  # the dropped views only
    return x, keep_t, clips, times


def train_epoch(state: TrainingState, source: BatchSource, epoch: int = 1) -> float:
    """One pass over the training takes, the batches ``source`` gives for ``epoch``: each
    batch's loss, weighted by its share of its optimiser step, is backpropagated, and AdamW
    and the schedule step after the last batch of each step. Returns the mean loss per take."""
    import torch

    model = state.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    total, seen = 0.0, 0
    state.optimizer.zero_grad(set_to_none=True)
    for batch in source.batches(epoch):
        if len(batch.rows):
            target = state.targets[torch.from_numpy(batch.rows)].to(state.cfg.device)
            loss = state.loss_fn(model(*batch.inputs).float(), target)
            (loss * (len(batch.rows) / batch.step_takes)).backward()
            total += float(loss.detach()) * len(batch.rows)
            seen += len(batch.rows)
        if batch.ends_step:
            source.all_reduce(params)
            state.optimizer.step()
            state.scheduler.step()
            state.optimizer.zero_grad(set_to_none=True)
    total, seen = source.sum_over_ranks(total, seen)
    return float(total / max(seen, 1))


def run_epochs(
    state: TrainingState, source: BatchSource, sel: Selection, splits: Splits,
    tracker: BestTracker, history: list[dict], epochs: Iterable[int], kept=None,
    after_epoch: Callable[[int, dict, str, bool], bool] | None = None,
) -> bool:  # fmt: skip
    """The epoch loop: for each of ``epochs``, a training pass (:func:`train_epoch`), the
    task's validation row, a line of ``history``, the best epoch's weights kept by
    ``tracker`` (of ``kept``: the model, or what of it trains) and early stopping.
    ``after_epoch(epoch, row, note, stop)`` reports the epoch (``note``: its validation, the
    best epoch, the stop); False from it pauses the run: True is returned once the loop ran
    to its end or stopped early, the best epoch's weights restored into ``kept``, and False
    when it paused, the weights left as the last epoch made them."""
    kept = state.model if kept is None else kept
    for epoch in epochs:
        train_loss = train_epoch(state, source, epoch)
        row = validation_row(state, source, sel, splits)
        lr = state.scheduler.get_last_lr()[0]
        history.append({"epoch": epoch, "train_loss": train_loss, **row, "lr": lr})
        tracker.update(epoch, row, kept)
        stop = tracker.should_stop(epoch)
        note = validation_note(row, history, tracker, stop)
        if after_epoch is not None and not after_epoch(epoch, row, note, stop) and not stop:
            return False
        if stop:
            break
    kept.load_state_dict(tracker.state)
    return True


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


def validation_row(
    state: TrainingState, source: BatchSource, sel: Selection, splits: Splits
) -> dict:
    """The task's validation scores of the current model (``val_loss`` among them), the
    takes scored by ``source`` (a ranking store's: those its val pairs name)."""
    rows, task = scored_rows(sel, splits, "val")
    scores = source.scores(state.model, rows)
    return task.validation_row(scores, sel.targets[rows])


class BestTracker:
    """Remembers the best epoch's score and weights; says when patience has run out."""

    def __init__(self, task: Task, monitor: str, patience: int):
        self.task, self.monitor, self.patience = task, monitor, patience
        self.score: tuple | None = None
        self.epoch, self.state = 0, None

    def update(self, epoch: int, row: dict, model) -> None:
        """Keep the model's weights when this epoch's validation score is the best so far."""
        score = self.task.monitor_key(row, self.monitor)  # higher is better
        if self.score is None or score > self.score:
            self.score, self.epoch = score, epoch
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def should_stop(self, epoch: int) -> bool:
        return self.patience > 0 and epoch - self.epoch >= self.patience


def sequence_scores(
    forward, task: Task, x: np.ndarray, mask: np.ndarray, sequence: ClipSequence,
    rows: np.ndarray, batch_size: int, device: str,
) -> np.ndarray:  # fmt: skip
    """The task's scores of ``forward(tokens, mask, clip_mask, clip_times)`` over each take's
    whole clip sequence (no mean over clips) for the given takes.

    ``x (n, V, K, N, D)`` float16, ``mask (n, V)``, ``sequence`` the clip mask and times of
    all n takes (times NaN or 0 where absent); returns ``(len(rows), O)`` (or ``(len(rows),
    V, O)`` for per-view outputs).
    """
    import torch

    if hasattr(forward, "eval"):
        forward.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            keep = torch.from_numpy(mask[batch]).to(device)
            clips = torch.from_numpy(sequence.mask[batch]).to(device) & keep[:, :, None]
            times = torch.from_numpy(np.nan_to_num(sequence.times[batch], nan=0.0)).to(device)
            tokens = torch.from_numpy(x[batch]).to(device=device, dtype=torch.float32)
            logits = forward(tokens, keep, clips, times * clips[..., None])
            outputs.append(task.to_scores(logits).cpu().numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float64)


def clip_mean_scores(
    forward, task: Task, x: np.ndarray, mask: np.ndarray, rows: np.ndarray, batch_size: int,
    device: str,
) -> np.ndarray:  # fmt: skip
    """Mean over the K clips of the task's scores of ``forward(tokens, mask)`` (classification:
    its softmax) for the given takes.

    ``x (n, V, K, N, D)`` float16, ``mask (n, V)``; ``forward`` maps ``(B, V, N, D), (B, V)``
    to ``(B, O)`` (or ``(B, V, O)`` for per-view outputs); returns ``(len(rows), ...)``.
    """
    import torch

    if hasattr(forward, "eval"):
        forward.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            m = torch.from_numpy(mask[batch]).to(device)
            total = 0
            for k in range(x.shape[2]):
                tokens = torch.from_numpy(x[batch, :, k]).to(device=device, dtype=torch.float32)
                total = total + task.to_scores(forward(tokens, m))
            outputs.append((total / x.shape[2]).cpu().numpy())
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float64)
