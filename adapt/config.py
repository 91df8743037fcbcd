"""The configuration of ``skill adapt``: one typed record, one docstring per field, from which
the CLI's options are derived (each docstring is its option's help, prose that names other
settings by their option); SkillFormer's three settings as presets. Imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skill.errors import ConfigError
from skill.pipeline.extract_config import (
    DEFAULT_STRIDE,
    TIME_EMBEDDINGS,
    TOKEN_MODES,
    ExtractConfig,
)

# SkillFormer's table (NOTES §1): frames per view, LoRA r / alpha, fusion hidden, lr, views.
PRESETS: dict[str, dict] = {
    "skillformer-ego": {
        "frames": 32,
        "lora_r": 32,
        "lora_alpha": 64,
        "hidden": 1536,
        "lr": 5e-5,
        "views": "ego",
    },  # fmt: skip
    "skillformer-exos": {
        "frames": 24,
        "lora_r": 48,
        "lora_alpha": 96,
        "hidden": 2048,
        "lr": 3e-5,
        "views": "exo",
    },  # fmt: skip
    "skillformer-egoexo": {
        "frames": 16,
        "lora_r": 64,
        "lora_alpha": 128,
        "hidden": 2560,
        "lr": 2e-5,
        "views": "all",
    },  # fmt: skip
}
# Without a preset: SkillFormer's Ego+Exos setting but for the head's own hidden width.
DEFAULTS: dict = {"frames": 16, "lora_r": 64, "lora_alpha": 128, "hidden": None, "lr": 2e-5,
                  "views": "all"}  # fmt: skip
SKILLFORMER_EPOCHS = 4
"""The budget when neither --epochs nor --steps is given (SkillFormer trains 4 epochs)."""
CHECKPOINT = ".checkpoint"
"""Folder under --out holding the last epoch's checkpoint (deleted when adapt finishes)."""


@dataclass
class AdaptConfig:
    """Everything ``skill adapt`` needs; the CLI's options are derived from these fields."""

    manifest: Path
    """Dataset description: the project's JSONL, an EgoExo4D annotation file or SkillFormer JSONL."""
    out: Path
    """Output folder: adapter (the PEFT LoRA adapter), run (a run folder) and frames.zarr (the
    decoded frames)."""
    backbone: str = "timesformer-base-k600"
    """A registered backbone name (skill backbones lists them), a hub id or a local
    checkpoint folder."""
    preset: str = ""
    """skillformer-ego, skillformer-exos or skillformer-egoexo: SkillFormer's frames, LoRA r and
    alpha, fusion hidden width, learning rate and views; options given explicitly win.
    Default: none."""
    views: str | None = None
    """Views: all, ego, exo or a comma list. Default: the preset's, else all."""
    root: Path | None = None
    """Folder that relative video paths start from (EgoExo4D: the dataset root). Default: the
    manifest's folder (or its parent, when only the parent has a takes folder, as in
    EgoExo4D's layout)."""
    manifest_format: str = "auto"
    """Manifest format: auto (told by the file), skill, egoexo4d or skillformer."""
    head: str = "cvf"
    """The head trained with the adapter: any registered neural head (cvf is SkillFormer's)."""
    hidden: int | None = None
    """Hidden width of the head. Default: the preset's, else the head's own."""
    dropout: float = 0.1
    """Dropout inside the head."""
    tokens: str = "frame"
    """Token mode fed to the head, as skill extract --tokens will store it: frame, cls, patch
    or mean_all (timesformer: the mean over all tokens, CLS included: SkillFormer's feature)."""
    time_embedding: str = "nearest"
    """timesformer, at a frame count other than the checkpoint's: nearest (transformers') or
    linear (SkillFormer's) interpolation of the time embeddings. The adapter is trained with it,
    recorded in adapter/skill_adapter.json, and skill extract --adapter must use the same."""
    frames: int | None = None
    """Frames per clip (T). Default: the preset's, else 16."""
    clips: int = 4
    """Windows kept per view (K): a fixed pool decoded once; each epoch draws one per view."""
    strategy: str = "windows"
    """Frame sampling: windows, skillformer-windows (SkillFormer's placement: steps of 4 and 5
    for 16 frames at stride 4), uniform or segments, as for skill extract --sampling."""
    stride: int | None = None
    """Frame step inside each window or segment. Default: 4 (SkillFormer's)."""
    jitter: bool = False
    """Seeded random window positions instead of centred ones (pass the same to extract)."""
    lora_r: int | None = None
    """LoRA rank. Default: the preset's, else 64."""
    lora_alpha: int | None = None
    """LoRA alpha (the scale is alpha / r). Default: the preset's, else 128."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA branch (SkillFormer's 0.1)."""
    epochs: int | None = None
    """Training budget in epochs; early stopping may end sooner. Refused together with
    --steps. Default: 4 (SkillFormer's), unless --steps is given."""
    steps: int | None = None
    """Training budget in optimiser steps instead, rounded up to whole epochs (as for skill fit
    --steps). Refused together with --epochs. Default: the budget is --epochs."""
    batch_size: int = 2
    """Takes per forward pass (each with all its views)."""
    grad_accum: int = 1
    """Forward passes whose gradients are summed per optimiser step (the batch is --batch-size
    times this)."""
    lr: float | None = None
    """Peak AdamW learning rate of LoRA and head. Default: the preset's, else 2e-5."""
    weight_decay: float = 0.01
    """AdamW weight decay on weight matrices (LoRA and head), not on biases and norms."""
    warmup_frac: float = 0.1
    """Fraction of the optimiser steps spent on a linear warmup before the cosine decay."""
    class_balanced: bool = False
    """Weight the cross-entropy by inverse training class frequency."""
    patience: int = 0
    """Stop after this many epochs without a better validation score (0: never stop early).
    The best epoch's adapter and head are kept either way."""
    monitor: str = "balanced_accuracy"
    """Validation score for early stopping and the best epoch: balanced_accuracy or loss."""
    gradient_checkpointing: bool = True
    """Recompute the backbone's activations in the backward pass (far less memory), when the
    model supports it."""
    seed: int = 0
    """Seed of LoRA and head init, batch order, window choice and dropout."""
    split_seed: int = 0
    """Seed of the participant-grouped validation split (as skill fit's)."""
    val_frac: float = 0.2
    """Fraction of participants held out for validation when the manifest has no val split."""
    device: str = "auto"
    """Where to train: cpu, cuda, cuda:N or auto (CUDA when available); bf16 autocast on CUDA."""
    threads: int = 1
    """CPU threads for torch, as for skill fit. Raise it to train on the CPU of an idle
    machine."""
    workers: int = 2
    """Decode worker processes for the frame store (0: decode in this process)."""
    timeout_s: float = 120.0
    """Seconds one video may take to decode before its worker is killed and the view failed."""
    min_views: int = 1
    """A take with fewer decodable views than this is recorded as failed (not trained on)."""
    prefetch: int = 2
    """Training batches read from the frame store ahead of the one training, in a thread (0:
    read inline)."""
    codec: str = "zstd"
    """Frame store compression: zstd (1.7x smaller on real video) or raw (fastest reads)."""
    limit: int | None = None
    """Only the first N takes of the manifest, for trying things out. Default: every take."""
    plots: bool = True
    """Write confusion.png and curve.png into the run folder."""
    stop_after_epochs: int | None = None
    """Stop (checkpoint kept, nothing published) after this many epochs of this invocation; the
    same command then resumes. For tests and time-limited jobs. Default: run to the end."""

    def __post_init__(self) -> None:
        self.manifest, self.out = Path(self.manifest), Path(self.out)
        self.root = Path(self.root) if self.root else None
        if self.preset and self.preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        for name, value in (PRESETS.get(self.preset) or DEFAULTS).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self._resolve_budget()
        problems = self._problems()
        if problems:
            raise ConfigError("; ".join(problems))
        from skill.heads.config import _check_head
        from skill.heads.registry import head_class, is_trainable

        _check_head(self.head, "--head")
        if is_trainable(head_class(self.head)):
            raise ConfigError(
                f"--head {self.head} is not a neural head; adapt trains the head and the "
                "backbone's adapter together, which only a neural head can"
            )
        self.extract_config()  # conflicting sampling settings are refused now

    def _resolve_budget(self) -> None:
        """One budget, in epochs or steps; neither = SkillFormer's epochs."""
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give the training budget one way: --steps or --epochs, not both")
        if self.steps is None and self.epochs is None:
            self.epochs = SKILLFORMER_EPOCHS
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, not {self.steps}")

    def _problems(self) -> list[str]:
        problems = []
        if self.tokens not in TOKEN_MODES:
            problems.append(
                f"--tokens must be one of {', '.join(TOKEN_MODES)}, not {self.tokens!r}"
            )
        if self.time_embedding not in TIME_EMBEDDINGS:
            problems.append(
                f"--time-embedding must be one of {', '.join(TIME_EMBEDDINGS)}, "
                f"not {self.time_embedding!r}"
            )
        for name in ("frames", "clips", "batch_size", "grad_accum", "epochs", "lora_r",
                     "lora_alpha", "min_views"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, not {value}")
        if self.lr <= 0:
            problems.append(f"--lr must be more than 0, not {self.lr}")
        if not 0 <= self.warmup_frac < 1:
            problems.append(f"--warmup-frac must be in [0, 1), not {self.warmup_frac}")
        if self.codec not in ("zstd", "raw"):
            problems.append("--codec must be zstd or raw")
        if self.monitor not in ("balanced_accuracy", "loss"):
            problems.append("--monitor must be balanced_accuracy or loss")
        if self.prefetch < 0:
            problems.append("--prefetch must be 0 or more")
        if self.stop_after_epochs is not None and self.stop_after_epochs < 1:
            problems.append("--stop-after-epochs must be at least 1")
        return problems

    @property
    def adapter_dir(self) -> Path:
        return self.out / "adapter"

    @property
    def run_dir(self) -> Path:
        return self.out / "run"

    @property
    def frame_store(self) -> Path:
        return self.out / "frames.zarr"

    def extract_config(self, store: Path | None = None, adapter: Path | None = None):
        """The `skill extract` settings that give the head exactly its training input: the same
        backbone, frames, windows and token mode (with ``adapter``: the trained one)."""
        return ExtractConfig(
            manifest=self.manifest,
            store=store or self.out / "tokens.zarr",
            root=self.root,
            manifest_format=self.manifest_format,
            backbone=self.backbone,
            adapter=adapter,
            tokens=self.tokens,
            time_embedding=self.time_embedding,
            frames=self.frames,
            clips=self.clips,
            strategy=self.strategy,
            stride=self.stride,
            jitter=self.jitter,
            seed=self.seed if self.jitter else 0,  # the sampling seed matters only with jitter
            device=self.device,
            workers=self.workers,
            timeout_s=self.timeout_s,
            min_views=self.min_views,
            limit=self.limit,
        )

    def extract_command(self) -> str:
        """The `skill extract` command line matching this adapt (printed at the end)."""
        parts = [f"skill extract {self.manifest} --store TOKENS.zarr --backbone {self.backbone}",
                 f"--adapter {self.adapter_dir} --tokens {self.tokens}",
                 f"--time-embedding {self.time_embedding} --frames {self.frames}",
                 f"--clips {self.clips} --sampling {self.strategy}"]  # fmt: skip
        if self.strategy != "uniform":
            parts.append(f"--stride {DEFAULT_STRIDE if self.stride is None else self.stride}")
        if self.jitter:
            parts.append(f"--jitter --seed {self.seed}")
        if self.root:
            parts.append(f"--root {self.root}")
        return " ".join(parts)
