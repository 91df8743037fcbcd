"""``skill adapt``: SkillFormer's recipe, a LoRA adapter on the backbone trained end to end with a
head, on frames decoded once, composed of the two stages: stage one's decode loop writes the
frame store (``adapt.frames``), stage two's epoch loop (``heads.trainer.run_epochs``) trains
on it, fed by the frame store's batches through the adapted backbone (`FrameBatches`).

The frozen base is loaded exactly as ``skill extract`` loads it, LoRA goes on the family's
target modules, and the head's input is computed as ``Backbone.encode`` computes it (cast to
float16 in validation, as the store holds it), so ``skill extract --adapter DIR/adapter``
gives the head exactly its input and ``skill predict DIR/run`` on that store reproduces the
validation predictions. Outputs under ``--out``: ``adapter/`` (PEFT, the same bytes for the
same run), ``run/`` (a run folder) and ``frames.zarr``; ``.checkpoint/`` holds the last
completed epoch (safetensors and JSON), from which a killed adapt resumes. One adapt per
``--out`` at a time (``.adapt.lock``); under torchrun rank 0 holds the lock and writes every
output, and the ranks share decoding and each batch (``adapt.ranks``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.adapt.config import CHECKPOINT, AdaptConfig
from skill.adapt.frames import FrameStore, build_frame_store, prefetched
from skill.adapt.ranks import all_reduce_gradients, barrier, my_share, my_slice, sum_arrays
from skill.cache.files import (
    hold_lock,
    publish_folder,
    remove_dead_staging,
    restore_replaced,
    staging_folder,
    write_bytes_atomically,
)
from skill.cache.per_take import STATUS_COMPLETE
from skill.cache.recovery import write_errors
from skill.devices import resolve_device
from skill.errors import ConfigError, SkillError
from skill.heads.config import FitConfig
from skill.heads.data import Selection, Splits, for_run, resolve_views, split_takes
from skill.heads.trainer import (
    Batch,
    BatchSource,
    BestTracker,
    NeuralHead,
    TrainingState,
    clip_mean_scores,
    deterministic_torch,
    head_options,
    make_optimizer,
    run_epochs,
    save_tensors,
    schedule_record,
)
from skill.pipeline.distributed import Rank
from skill.progress import Task, task
from skill.tasks import resolve_monitor, store_target, task_record

CHECKPOINT_FORMAT = 1


@dataclass
class AdaptResult:
    """What ``run_adapt`` did."""

    out: Path
    epochs_done: int
    finished: bool  # False: stopped by --stop-after-epochs (resume with the same command)
    epochs_planned: int = 0  # the budget in epochs (--epochs, or --steps rounded up)
    adapter_dir: Path | None = None
    run_dir: Path | None = None
    metrics: dict = field(default_factory=dict)
    frames: dict = field(default_factory=dict)  # frame store build counts
    predictions: dict = field(default_factory=dict)  # split -> (take ids, scores (n, O))
    rank: int = 0  # under torchrun: this process's rank (only rank 0 reports)
    task_name: str = "classification"  # the manifest's task the head learned


def run_adapt(cfg: AdaptConfig, report: Callable[[str], None] | None = None) -> AdaptResult:
    """Decode the frames once, train LoRA + head, write adapter/ and run/ (module docstring).
    Under torchrun every rank runs this; only rank 0 reports and writes outside the frame
    store."""
    from skill.pipeline import distributed

    started = time.perf_counter()
    rank = distributed.current_rank()
    device = resolve_device(cfg.extract.device, rank.local_rank)
    distributed.init_process_group(rank, device)
    try:
        with coordinated_out(cfg, rank):
            say = (report or (lambda line: None)) if rank.is_coordinator else (lambda line: None)
            return _run_adapt(cfg, started, say, rank, device)
    finally:
        distributed.shutdown(rank)


@contextlib.contextmanager
def coordinated_out(cfg: AdaptConfig, rank: Rank):
    """Rank 0 checks --out and holds its writer lock for the whole run; every rank raises
    the same error when rank 0 cannot go on."""
    from skill.pipeline.distributed import run_on_coordinator

    with contextlib.ExitStack() as stack:

        def claim_out() -> None:
            if cfg.run_dir.exists() and not (cfg.out / CHECKPOINT).exists():
                raise ConfigError(
                    f"{cfg.out}: already holds a finished adapt (run/); use a new --out"
                )
            with write_errors(cfg.out, "the --out folder", kept="Nothing was changed"):
                cfg.out.mkdir(parents=True, exist_ok=True)
                stack.enter_context(writer_lock(cfg.out))

        run_on_coordinator(rank, claim_out, SkillError)
        yield


def writer_lock(out: Path):
    """One adapt per --out at a time (an flock: the kernel drops it even on SIGKILL); a
    second one is refused naming the holder."""

    def busy(holder: str) -> ConfigError:
        return ConfigError(f"{out}: another skill adapt is writing this folder ({holder})")

    return hold_lock(out / ".adapt.lock", refuse=busy)


def _run_adapt(cfg: AdaptConfig, started: float, report: Callable[[str], None], rank: Rank,
               device: str) -> AdaptResult:  # fmt: skip
    dataset = adapt_dataset(cfg)  # a bad manifest fails before the backbone loads
    backbone = adapt_backbone(cfg, device)
    frames, built = adapt_frames(cfg, backbone, dataset, rank)
    report(
        f"{cfg.frame_store}: {built.completed} takes decoded, {built.skipped} already there, "
        f"{built.failed} failed, {built.failed_views} views failed"
        + (f" (on {rank.world} ranks)" if rank.distributed else "")
    )
    trainer = adapt_trainer(cfg, device, backbone, frames, report, rank)
    result = trainer.run()
    result.frames, result.rank = built.record(), rank.rank
    result.task_name = frames.task["name"]
    if result.finished:
        if rank.is_coordinator:
            publish(cfg, trainer, result, backbone)
        barrier(rank)  # every rank returns once the outputs exist
        result.adapter_dir, result.run_dir = cfg.adapter_dir, cfg.run_dir
        result.metrics["adapt_seconds"] = round(time.perf_counter() - started, 3)
    return result


def adapt_dataset(cfg: AdaptConfig):
    """The manifest's takes and views, as `skill adapt` reads them."""
    from skill.pipeline.manifest import read_takes

    e = cfg.extract
    return read_takes(e.manifest, root=e.root, fmt=e.manifest_format, task=e.task)


def adapt_backbone(cfg: AdaptConfig, device: str):
    """The backbone `skill adapt` trains, loaded as `skill extract` loads it, on ``device``."""
    from skill.pipeline.extract import backbone_of

    return backbone_of(cfg.extract, device)


def adapt_frames(cfg: AdaptConfig, backbone, dataset, rank: Rank | None = None):
    """The frame store of ``dataset``'s takes (``--limit`` of them) and the chosen views,
    decoded where it is not already (only the chosen views: the ego preset decodes one view
    of five); returns (store, what was built)."""
    takes = dataset.takes[: cfg.extract.limit] if cfg.extract.limit else dataset.takes
    return build_frame_store(
        cfg.frame_store, cfg.extract, resolve_views(cfg.fit.views, dataset.views), takes,
        backbone=backbone.name, geometry=backbone.geometry,
        task=task_record(dataset.task, dataset.schema), codec=cfg.codec, rank=rank or Rank(),
    )  # fmt: skip


def adapt_trainer(cfg: AdaptConfig, device: str, backbone, frames: FrameStore,
                  report: Callable[[str], None] | None = None,
                  rank: Rank | None = None) -> Trainer:  # fmt: skip
    """The trainer of ``cfg`` over the frame store's usable takes, split as `skill fit`
    splits them."""
    sel = frame_selection(frames, cfg.fit.views, backbone)
    splits = split_takes(sel, cfg.fit.val_frac, cfg.fit.split_seed)
    sel = for_run(sel, splits.train)  # its task's scores as the run reports them
    fit_cfg = fit_config(cfg, device, sel.task)
    return Trainer(cfg, fit_cfg, backbone, frames, sel, splits, report, rank)


def fit_config(cfg: AdaptConfig, device: str, task=None) -> FitConfig:
    """The training settings as this run uses them and its run folder records them:
    ``cfg.fit`` on ``device`` and, given the ``task``, with its validation monitor."""
    fit = dataclasses.replace(cfg.fit, device=device)
    if task is None:
        return fit
    return dataclasses.replace(fit, monitor=resolve_monitor(task, fit.monitor))


def frame_selection(frames: FrameStore, views: str, backbone) -> Selection:
    """The completed takes with a valid chosen view, as a ``heads.data.Selection`` of the
    frame store's task, whose ``x`` is a zero-cost placeholder of the token shape ``(n, V,
    K, N, D)`` (the tokens are computed from frames in every step); ``store_rows`` index the
    frame store."""
    task = frames.task
    view_names = resolve_views(views, frames.views)
    view_idx = [frames.views.index(v) for v in view_names]
    valid = frames.valid()[:, view_idx]
    complete = frames.status() == STATUS_COMPLETE
    usable = complete & valid.any(axis=1)
    rows = np.flatnonzero(usable)
    table = frames.takes

    def column(key: str) -> np.ndarray:
        return np.array([str(table[r][key] or "") for r in rows], dtype=object)

    targets = [store_target(task, table[r]["label"]) for r in rows]
    shape = (len(rows), len(view_idx), frames.clips, backbone.tokens_per_clip(), backbone.dim)
    return Selection(
        x=np.broadcast_to(np.zeros((), dtype=np.float16), shape),
        mask=valid[rows],
        targets=np.array(targets, dtype=task["target"]["dtype"]).reshape(
            len(rows), *task["target"]["shape"]
        ),
        take_ids=column("id"),
        scenario=column("scenario"),
        participant=column("participant"),
        split=column("split"),
        store_rows=rows.astype(np.int64),
        view_names=view_names,
        task_name=task["name"],
        schema=dict(task["schema"]),
        provenance={},  # set when the adapter exists: the adapted token store's provenance
        store_path=str(frames.path.resolve()),
        store_views=list(frames.views),
        geometry={"clips": shape[2], "tokens": shape[3], "dim": shape[4]},
        dropped_take_ids=[str(table[r]["id"]) for r in np.flatnonzero(complete & ~usable)],
        n_incomplete=int((~complete).sum()),
    )


# ---- the model ------------------------------------------------------------------------------
def build_model(cfg: AdaptConfig, fit_cfg: FitConfig, backbone, sel: Selection):
    """The backbone with LoRA on its family's targets (trainable) and a fresh head."""
    from peft import get_peft_model

    from skill.heads.registry import build_head

    encoder = get_peft_model(
        backbone.model, lora_config(cfg, backbone.family)
    )  # LoRA weights are the only trainable ones
    if cfg.gradient_checkpointing and getattr(
        backbone.model, "supports_gradient_checkpointing", False
    ):
        enable_checkpointing(backbone.model)
    head = build_head(fit_cfg.head, **head_options(fit_cfg, sel))
    return AdaptModel(backbone, encoder, head, fit_cfg.device).to(backbone.device)


def lora_config(cfg: AdaptConfig, family: str):
    """PEFT's LoraConfig: the family's target modules (TimeSformer: SkillFormer's), r, alpha,
    dropout, no bias (SkillFormer's ``bias="none"``)."""
    from peft import LoraConfig

    from skill.pipeline.backbones import get_family

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(get_family(family).lora_targets), bias="none")  # fmt: skip


def enable_checkpointing(model) -> None:
    """Recompute each layer's activations in the backward pass (transformers 5 names it
    activation checkpointing; 4.x gradient checkpointing). Non-reentrant: the frozen inputs
    need no grad for LoRA weights inside the layers to get theirs."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _module_base():
    import torch

    return torch.nn.Module


class AdaptModel(_module_base()):
    """LoRA backbone + head: uint8 clips ``(B, V, T, H, W, 3)`` and mask ``(B, V)`` -> logits,
    under bf16 autocast on CUDA."""

    def __init__(self, backbone, encoder, head, device: str):
        super().__init__()
        self.encoder, self.head = encoder, head
        self._backbone = [backbone]  # not a submodule: its model is the encoder's base
        self.device_name = device

    def tokens(self, clips, mask):
        """``(B, V, T, H, W, 3)`` uint8, ``(B, V)`` bool -> ``(B, V, N, D)`` float32 tokens
        (zeros where the view is masked; masked views are not encoded)."""
        backbone = self._backbone[0]
        mask = mask.to(backbone.device)
        flat = clips.to(backbone.device, non_blocking=True)[mask]  # (M, T, H, W, 3), valid only
        tokens = backbone.tokens_of(self.encoder, backbone.pixels(flat)).float()  # (M, N, D)
        out = tokens.new_zeros((*mask.shape, *tokens.shape[1:]))
        out[mask] = tokens
        return out

    def forward(self, clips, mask):
        with autocast(self.device_name):
            return self.head(self.tokens(clips, mask), mask.to(self._backbone[0].device))

    def trainable(self) -> dict:
        """name -> parameter of every trainable weight (LoRA and head)."""
        return {n: p for n, p in self.named_parameters() if p.requires_grad}


class _Trainable:
    """What ``BestTracker`` keeps of the model: the trainable weights only."""

    def __init__(self, model: AdaptModel):
        self.model = model

    def state_dict(self) -> dict:
        return self.model.trainable()

    def load_state_dict(self, state: dict) -> None:
        load_trainable(self.model, state)


def autocast(device: str):
    import torch

    if not device.startswith("cuda"):
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16)


# ---- training -----------------------------------------------------------------------------
class FrameBatches(BatchSource):
    """`skill adapt`'s batch source for the epoch loop of ``heads.trainer``: the frame store's
    clips of the training takes, which the model encodes with the adapted backbone. Each
    epoch's order and window per (take, view) are drawn for the whole training split by a
    generator seeded by (seed, epoch), and dropout is seeded by them too, so a resumed run
    draws what an uninterrupted one would. Under torchrun (``rank``) every rank trains on its
    slice of each global batch of ``batch_size * world`` takes, the gradients are summed
    before each step, and each rank scores its share of the takes (``adapt.ranks``). The next
    batches are read in a thread while one trains (``--prefetch``). ``progress`` shows the
    optimiser steps."""

    def __init__(self, cfg: AdaptConfig, frames: FrameStore, sel: Selection,
                 train_rows: np.ndarray, rank: Rank, device: str):  # fmt: skip
        self.cfg, self.frames, self.sel, self.rank, self.device = cfg, frames, sel, rank, device
        self.train_rows = train_rows
        self.view_idx = [frames.views.index(v) for v in sel.view_names]
        self.progress: Task | None = None
        self.epochs = self.steps_per_epoch = 0  # the budget's, for the progress notes

    @property
    def global_batch(self) -> int:
        """Takes per forward pass over all ranks."""
        return self.cfg.fit.batch_size * self.rank.world

    def batches(self, epoch: int) -> Iterator[Batch]:
        import torch

        cfg = self.cfg
        torch.manual_seed(cfg.fit.seed * 100_003 + epoch)  # dropout: seeded per epoch
        if self.progress is not None:
            done = (epoch - 1) * self.steps_per_epoch
            self.progress.update(done, note=f"epoch {epoch}/{self.epochs}")
        plan = self.epoch_plan(np.random.default_rng([cfg.fit.seed, epoch]))
        loaded = prefetched(plan, self.batch, depth=cfg.prefetch)
        for i, ((rows, _, step_takes), inputs) in enumerate(zip(plan, loaded, strict=True)):
            ends_step = (i + 1) % cfg.grad_accum == 0 or i + 1 == len(plan)
            yield Batch(inputs, rows, step_takes, ends_step)
            if ends_step and self.progress is not None:
                self.progress.advance()

    def epoch_plan(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """This rank's batches of one epoch: (rows, windows (rows, V), takes in the global
        optimiser step the batch belongs to). The same plan on every rank: order and windows
        are drawn for the whole training split."""
        cfg = self.cfg
        order = rng.permutation(self.train_rows)
        windows = rng.integers(self.frames.clips, size=(len(order), len(self.view_idx)))
        size = self.global_batch
        starts = list(range(0, len(order), size))
        plan = []
        for i, start in enumerate(starts):
            first = starts[i - i % cfg.grad_accum]  # the step's first global batch
            step_end = min(first + size * cfg.grad_accum, len(order))
            mine = my_slice(np.arange(start, min(start + size, len(order))), self.rank,
                            cfg.fit.batch_size)  # fmt: skip
            plan.append((order[mine], windows[mine], step_end - first))
        return plan

    def batch(self, item) -> tuple:
        """Uint8 clips ``(B, V, T, H, W, 3)`` (window ``windows[b, v]``) and mask ``(B, V)`` of
        one planned batch ``(rows, windows, ...)``, pinned for the copy when training on CUDA."""
        import torch

        rows, windows = item[0], item[1]
        store_rows = self.sel.store_rows[rows]
        shape = (len(rows), len(self.view_idx), self.frames.frames_per_clip,
                 *self.frames.crop)  # fmt: skip
        clips = torch.from_numpy(
            np.stack(
                [
                    self.frames.read_clips(int(r), self.view_idx, w)
                    for r, w in zip(store_rows, windows, strict=True)
                ]
            )  # fmt: skip
            if len(rows)
            else np.zeros((*shape, 3), dtype=np.uint8)
        )
        if str(self.device).startswith("cuda"):
            clips = clips.pin_memory()
        return clips, torch.from_numpy(self.sel.mask[rows])

    def scores(self, model: AdaptModel, rows: np.ndarray) -> np.ndarray:
        """Mean over the K windows of the task's scores of the head (classification: its
        softmax), on float16-rounded tokens as a store holds them: ``(len(rows), O)`` float64
        (each rank computes its share, then the sum)."""
        import torch

        model.eval()
        probs = np.zeros((len(rows), self.sel.outputs))
        share = my_share(np.arange(len(rows)), self.rank)
        batch_size = self.cfg.fit.batch_size
        for start in range(0, len(share), batch_size):
            at = share[start : start + batch_size]
            part = rows[at]
            per_clip = []
            with torch.no_grad(), autocast(self.device):
                for k in range(self.frames.clips):
                    windows = np.full((len(part), len(self.view_idx)), k)
                    clips, mask = self.batch((part, windows))
                    per_clip.append(model.tokens(clips, mask).half().cpu().numpy())
            x = np.stack(per_clip, axis=2)  # (b, V, K, N, D) float16
            mask = self.sel.mask[part]
            probs[at] = clip_mean_scores(model.head, self.sel.task, x, mask,
                                         np.arange(len(part)), len(part), self.device)  # fmt: skip
        return sum_arrays(probs, self.rank)

    def all_reduce(self, params: list) -> None:
        all_reduce_gradients(params, self.rank)

    def sum_over_ranks(self, total: float, seen: int) -> tuple[float, float]:
        total, seen = sum_arrays(np.array([total, seen], dtype=np.float64), self.rank)
        return total, seen


class Trainer:
    """LoRA + head trained end to end by ``heads.trainer``'s epoch loop on the frame store's
    batches (`FrameBatches`), with a checkpoint after every epoch (see the module docstring);
    only rank 0 writes checkpoints."""

    def __init__(self, cfg, fit_cfg, backbone, frames, sel, splits: Splits, report=None,
                 rank: Rank | None = None):  # fmt: skip
        self.cfg, self.fit_cfg, self.backbone = cfg, fit_cfg, backbone
        self.frames, self.sel, self.splits = frames, sel, splits
        self.device = fit_cfg.device
        self.rank = rank or Rank()
        self.history: list[dict] = []
        # The budget of `skill fit` (FitConfig.budget), a step being grad_accum batches of
        # every rank: ceil(ceil(n / b) / (a * w)) = ceil(n / (b * w * a)) steps an epoch.
        self.budget = fit_cfg.budget(len(splits.train), cfg.grad_accum * self.rank.world)
        self.tracker = BestTracker(sel.task, fit_cfg.monitor, self.budget.patience)
        self.source = FrameBatches(cfg, frames, sel, splits.train, self.rank, self.device)
        self.state: TrainingState | None = None
        self.report = report or (lambda line: None)
        self.done = self.ran = 0  # epochs done (checkpointed), and by this invocation

    @property
    def model(self) -> AdaptModel:
        return self.state.model

    @property
    def optimizer(self):
        return self.state.optimizer

    @property
    def scheduler(self):
        return self.state.scheduler

    def setup(self) -> None:
        """The model (LoRA + fresh head), AdamW + schedule over the budget's steps, the loss."""
        sel, fit_cfg = self.sel, self.fit_cfg
        model = build_model(self.cfg, fit_cfg, self.backbone, sel)
        optimizer, scheduler = make_optimizer(model, fit_cfg, self.budget)
        self.state = TrainingState(
            cfg=fit_cfg,
            model=model,
            options=head_options(fit_cfg, sel),
            optimizer=optimizer,
            scheduler=scheduler,
            loss_fn=sel.task.make_loss(
                sel.schema, sel.targets[self.splits.train], fit_cfg.class_balanced, self.device
            ),
            targets=sel.task.torch_targets(sel.targets),
            task=sel.task,
            budget=self.budget,
        )

    def run(self) -> AdaptResult:
        fit_cfg = self.fit_cfg
        with deterministic_torch(fit_cfg.seed, self.device, fit_cfg.threads):
            self.setup()
            self.done = load_checkpoint(self)
            epochs = self.budget.epochs
            # A checkpoint of a run that had stopped early (killed while publishing) trains no more.
            last = self.done if self.done and self.tracker.should_stop(self.done) else epochs
            per_epoch = self.budget.steps_per_epoch
            source = self.source
            source.epochs, source.steps_per_epoch = epochs, per_epoch
            source.progress = task("adapting", total=epochs * per_epoch, unit="step",
                                   done=self.done * per_epoch)  # fmt: skip
            with source.progress:
                finished = run_epochs(
                    self.state, source, self.sel, self.splits, self.tracker, self.history,
                    range(self.done + 1, last + 1), kept=_Trainable(self.model),
                    after_epoch=self.after_epoch,
                )  # fmt: skip
            if not finished:
                return AdaptResult(self.cfg.out, epochs_done=self.done, finished=False,
                                   epochs_planned=epochs)  # fmt: skip
            predictions = {
                name: (self.sel.take_ids[rows], source.scores(self.model, rows))
                for name, rows in self.splits.as_dict().items()
                if name != "train" and len(rows)
            }
        return AdaptResult(self.cfg.out, epochs_done=self.done, finished=True,
                           epochs_planned=epochs, predictions=predictions)  # fmt: skip

    def after_epoch(self, epoch: int, row: dict, note: str, stop: bool) -> bool:
        """Show and report the epoch, checkpoint it; False when --stop-after-epochs pauses
        the run here."""
        epochs, per_epoch = self.budget.epochs, self.budget.steps_per_epoch
        self.source.progress.update(epoch * per_epoch, note=f"epoch {epoch}/{epochs}: {note}")
        scores = ", ".join(
            f"{key.removeprefix('val_').replace('_', ' ')} {value:.4f}"
            for key, value in row.items()
            if key.startswith("val_")
        )  # the task's validation scores, val_loss first
        self.report(
            f"epoch {epoch}/{epochs}: train loss {self.history[-1]['train_loss']:.4f}, val {scores}"
        )
        if self.rank.is_coordinator:
            save_checkpoint(self, epoch)
        barrier(self.rank)  # a rank that goes on finds the checkpoint written
        self.done, self.ran = epoch, self.ran + 1
        paused = self.cfg.stop_after_epochs is not None and self.ran >= self.cfg.stop_after_epochs
        return not (paused and epoch < epochs)


def load_trainable(model: AdaptModel, state: dict) -> None:
    """Copy ``state`` (name -> tensor) into the model's trainable weights, all of them."""
    import torch

    params = model.trainable()
    if set(state) != set(params):
        raise ValueError(f"trainable weights differ: {sorted(set(state) ^ set(params))[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


# ---- checkpoints ----------------------------------------------------------------------------
RESUME_IGNORES = ("stop_after_epochs", "workers", "timeout_s", "threads", "plots", "device", "out",
                  "prefetch")  # fmt: skip


def checkpoint_identity(trainer: Trainer) -> dict:
    """The settings a checkpoint is only valid for (`AdaptConfig.settings`, as run)."""
    settings = trainer.cfg.settings(fit=trainer.fit_cfg)
    return {k: v for k, v in settings.items() if k not in RESUME_IGNORES}


def save_checkpoint(trainer: Trainer, epoch: int) -> None:
    """The state after ``epoch``, written to a new folder then swapped in (never half written);
    a failed write removes the new folder and keeps the previous checkpoint."""
    folder = trainer.cfg.out / CHECKPOINT
    kept = f"The checkpoint of epoch {epoch - 1} is kept" if epoch > 1 else "Nothing was kept"
    with staging_folder(folder, create=False) as staging:
        with write_errors(folder, f"the checkpoint of epoch {epoch}", kept=kept):
            write_checkpoint(trainer, epoch, staging)
        publish_folder(staging, folder, replace=True)


def write_checkpoint(trainer: Trainer, epoch: int, staging: Path) -> None:
    """The files of the checkpoint after ``epoch`` in the new folder ``staging``."""
    staging.mkdir(parents=True)
    save_tensors(staging / "trainable.safetensors", trainer.model.trainable())
    save_tensors(staging / "best.safetensors", trainer.tracker.state)
    moments, scalars = optimizer_tensors(trainer.optimizer)
    save_tensors(staging / "optimizer.safetensors", moments)
    scheduler = {k: v for k, v in trainer.scheduler.state_dict().items() if k != "lr_lambdas"}
    state = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "config": checkpoint_identity(trainer),
        "world": trainer.rank.world,  # ranks: the global batch is batch_size x this
        "history": trainer.history,
        "best": {"epoch": trainer.tracker.epoch, "score": list(trainer.tracker.score)},
        "scheduler": scheduler,
        "optimizer": scalars,
    }
    write_bytes_atomically(staging / "state.json", (json.dumps(state, indent=1) + "\n").encode())


def load_checkpoint(trainer: Trainer) -> int:
    """Restore the last checkpoint into the trainer; returns its epoch (0: none)."""
    from safetensors.torch import load_file

    folder = trainer.cfg.out / CHECKPOINT
    if trainer.rank.is_coordinator:
        recover_checkpoint(folder)
    barrier(trainer.rank)
    if not (folder / "state.json").is_file():
        return 0
    state = json.loads((folder / "state.json").read_text())
    if state.get("config") != checkpoint_identity(trainer):
        raise ConfigError(
            f"{folder}: the checkpoint was made with other settings; run adapt with the same "
            "options to resume, or use a new --out"
        )
    if state.get("world", 1) != trainer.rank.world:
        raise ConfigError(
            f"{folder}: the checkpoint was made on {state.get('world', 1)} ranks, this run has "
            f"{trainer.rank.world} (another global batch); resume on as many, or use a new --out"
        )
    load_trainable(trainer.model, load_file(str(folder / "trainable.safetensors")))
    # On the cpu: load_state_dict moves moments to their parameter's device and keeps each
    # step count where that AdamW implementation wants it (fused: the device; else the cpu).
    moments = load_file(str(folder / "optimizer.safetensors"))
    trainer.optimizer.load_state_dict(optimizer_state(moments, state["optimizer"]))
    trainer.scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(
        trainer.optimizer.param_groups)})  # fmt: skip
    trainer.history = list(state["history"])
    tracker = trainer.tracker
    tracker.epoch, tracker.score = state["best"]["epoch"], tuple(state["best"]["score"])
    tracker.state = load_file(str(folder / "best.safetensors"))
    return int(state["epoch"])


def recover_checkpoint(folder: Path) -> None:
    """Tidy what a save killed half way left: a partial new checkpoint is deleted; if the kill
    fell between the two renames of ``save_checkpoint``, the previous one is put back."""
    restore_replaced(folder, complete=lambda old: (old / "state.json").is_file())


def optimizer_tensors(optimizer) -> tuple[dict, dict]:
    """AdamW's state as (tensors for safetensors, JSON scalars): ``"<param>.<name>"`` keys;
    0-d tensors (the step counts) are stored as shape (1,) and listed in ``scalar_keys``."""
    sd = optimizer.state_dict()
    tensors, scalar_keys = {}, []
    for index, entries in sd["state"].items():
        for name, value in entries.items():
            key = f"{index}.{name}"
            if value.ndim == 0:
                scalar_keys.append(key)
                value = value.reshape(1)
            tensors[key] = value.detach().to("cpu").contiguous()
    return tensors, {"param_groups": sd["param_groups"], "scalar_keys": scalar_keys}


def optimizer_state(tensors: dict, scalars: dict) -> dict:
    """The inverse of ``optimizer_tensors``: a state dict for ``optimizer.load_state_dict``."""
    state: dict = {}
    scalar_keys = set(scalars["scalar_keys"])
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value.reshape(()) if key in scalar_keys else value
    return {"state": state, "param_groups": scalars["param_groups"]}


# ---- outputs --------------------------------------------------------------------------------
def publish(cfg: AdaptConfig, trainer: Trainer, result: AdaptResult, backbone) -> None:
    """adapter/ (the best epoch's LoRA), then run/ through ``heads.run_folder`` with the
    provenance the adapted token store will have; the checkpoint goes last."""
    from skill.heads import run_folder
    from skill.heads.train import fit_metrics
    from skill.pipeline.backbones import adapter_sha256
    from skill.pipeline.extract import build_provenance

    model = trainer.model
    shutil.rmtree(cfg.run_dir, ignore_errors=True)  # left by a publish killed before its end
    publish_adapter(cfg, model, backbone)
    adapter = {"path": str(cfg.adapter_dir.resolve()), "sha256": adapter_sha256(cfg.adapter_dir)}
    provenance = build_provenance(cfg.extract_config(adapter=cfg.adapter_dir), backbone)
    provenance["backbone"]["adapter"] = adapter
    sel = trainer.sel
    sel.provenance = provenance
    head = NeuralHead(cfg.fit.head, model.head.to("cpu").eval(), head_options(trainer.fit_cfg, sel))
    head.history, head.best = trainer.history, trainer.tracker.epoch
    head.schedule = schedule_record(trainer.budget, len(trainer.history))
    metrics = fit_metrics(sel, trainer.splits, head, result.predictions)
    metrics["frame_store"] = result.frames
    run_dir = run_folder.write_run(trainer.fit_cfg, sel, trainer.splits, head, metrics,
                                   result.predictions)  # fmt: skip
    record = json.loads((run_dir / "config.json").read_text())
    record["adapt"] = {"config": cfg.settings(fit=trainer.fit_cfg), "adapter": adapter,
                       "extract_command": cfg.extract_command(),
                       "world": trainer.rank.world}  # fmt: skip
    with write_errors(run_dir, "the run record", kept="The last checkpoint is kept"):
        run_folder.write_json(run_dir / "config.json", record)
    shutil.rmtree(cfg.out / CHECKPOINT, ignore_errors=True)
    result.adapter_dir, result.run_dir, result.metrics = cfg.adapter_dir, run_dir, metrics


def publish_adapter(cfg: AdaptConfig, model: AdaptModel, backbone) -> None:
    """adapter/ (the best epoch's LoRA, already loaded into ``model``), written beside and
    renamed into place; a failed write leaves no adapter/ and keeps the last checkpoint."""
    from skill.pipeline.backbones.adapter import save_adapter

    with write_errors(cfg.adapter_dir, "the adapter", kept="The last checkpoint is kept"):
        remove_dead_staging(cfg.adapter_dir.parent, cfg.adapter_dir.name)  # a killed publish
        with staging_folder(cfg.adapter_dir, create=False) as staging:
            save_adapter(model.encoder, staging, backbone.provenance(), made_by="skill adapt")
            publish_folder(staging, cfg.adapter_dir, replace=True)
