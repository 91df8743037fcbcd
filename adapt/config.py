"""The configuration of ``skill adapt``, nested from the two stages it is built from: how its
frames are decoded is ``skill extract``'s settings (``extract``, an `ExtractConfig`), how
the head and the adapter train is ``skill fit``'s (``fit``, a `FitConfig`), each with their
own fields, docstrings and checks; SkillFormer's recipe, where its defaults differ from
theirs, is declared once, as the two stage configs' adapt variants (`FrameDecoding`,
`HeadTraining`); the LoRA and the frame store's settings are adapt's own. The CLI's options
are derived from these fields (each docstring is its option's help, prose that names other
settings by their option), the stage settings adapt has no option for left out
(`cli_exclude`); SkillFormer's three settings are presets. Imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from skill.errors import ConfigError
from skill.heads.config import FitConfig
from skill.pipeline.extract_config import DEFAULT_STRIDE, ExtractConfig
from skill.pipeline.sampling import SEQUENCE_STRATEGIES

# SkillFormer's table: frames per view, LoRA r / alpha, fusion hidden, lr, views.
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
FRAME_STORE = "frames.zarr"
"""The frame store under --out."""
RUN = "run"
"""The run folder under --out."""


# ---- SkillFormer's recipe, where it differs from the stages' defaults --------------------
@dataclass
class FrameDecoding(ExtractConfig):
    """How ``skill adapt`` decodes its frames: ``skill extract``'s settings and checks, with
    SkillFormer's windows by default. ``store`` is the frame store (``<--out>/frames.zarr``)
    and ``seed`` the sampling seed (--seed with --jitter, else 0), both set by `AdaptConfig`."""

    store: Path = Path(FRAME_STORE)
    frames: int | None = None
    """Frames per clip (T). Default: the preset's, else 16."""
    clips: int = 4
    """Windows kept per view (K): a fixed pool decoded once; each epoch draws one per view."""
    strategy: str = "windows"

    def __post_init__(self) -> None:
        if self.strategy in SEQUENCE_STRATEGIES:
            # adapt trains on one random clip per view: an ordered sequence is fit's input.
            raise ConfigError(
                f"skill adapt samples interchangeable clips; --sampling {self.strategy} makes "
                "an ordered clip sequence, which skill extract writes and skill fit reads"
            )
        if self.frames is not None:  # else the preset's, filled in (and checked) by AdaptConfig
            super().__post_init__()


@dataclass
class HeadTraining(FitConfig):
    """How ``skill adapt`` trains the head and the adapter together: ``skill fit``'s settings
    and checks (its budget, what a run folder records), with SkillFormer's recipe by default.
    ``store``, ``out_dir`` and ``name`` place the run folder (``<--out>/run``) and ``device``
    follows --device, all set by `AdaptConfig`; adapt drops no views."""

    store: str = ""
    views: str | None = None
    """Views: all, ego, exo or a comma list. Default: the preset's, else all."""
    head: str = "cvf"
    """The head trained with the adapter: any registered neural head (cvf is SkillFormer's)."""
    hidden: int | None = None
    """Hidden width of the head. Default: the preset's, else the head's own."""
    steps: int | None = None
    """Training budget in optimiser steps instead, rounded up to whole epochs (as for skill fit
    --steps). Refused together with --epochs. Default: the budget is --epochs."""
    epochs: int | None = None
    """Training budget in epochs; early stopping may end sooner. Refused together with
    --steps. Default: 4 (SkillFormer's), unless --steps is given."""
    batch_size: int = 2
    """Takes per forward pass (each with all its views)."""
    lr: float | None = None
    """Peak AdamW learning rate of LoRA and head. Default: the preset's, else 2e-5."""
    weight_decay: float = 0.01
    """AdamW weight decay on weight matrices (LoRA and head), not on biases and norms
    (SkillFormer's: AdamW's own default)."""
    patience: int | None = 0
    """Stop after this many epochs without a better validation score (0: never stop early, as
    SkillFormer's run of a fixed budget). The best epoch's adapter and head are kept either
    way."""
    view_dropout: float | None = 0.0
    name: str = RUN


# ---- skill adapt -----------------------------------------------------------------------------
@dataclass
class AdaptConfig:
    """Everything ``skill adapt`` needs; the CLI's options are derived from these fields.
    Build one from flat settings with `from_settings`."""

    out: Path
    """Output folder: adapter (the PEFT LoRA adapter), run (a run folder) and frames.zarr (the
    decoded frames)."""
    extract: FrameDecoding
    """How the frames are decoded: skill extract's settings."""
    fit: HeadTraining = field(default_factory=HeadTraining)
    """How the head and the adapter train: skill fit's settings."""
    preset: str = ""
    """skillformer-ego, skillformer-exos or skillformer-egoexo: SkillFormer's frames, LoRA r and
    alpha, fusion hidden width, learning rate and views; options given explicitly win.
    Default: none."""
    lora_r: int | None = None
    """LoRA rank. Default: the preset's, else 64."""
    lora_alpha: int | None = None
    """LoRA alpha (the scale is alpha / r). Default: the preset's, else 128."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA branch (SkillFormer's 0.1)."""
    grad_accum: int = 1
    """Forward passes whose gradients are summed per optimiser step (the batch is --batch-size
    times this)."""
    gradient_checkpointing: bool = True
    """Recompute the backbone's activations in the backward pass (far less memory), when the
    model supports it."""
    prefetch: int = 2
    """Training batches read from the frame store ahead of the one training, in a thread (0:
    read inline)."""
    codec: str = "zstd"
    """Frame store compression: zstd (1.7x smaller on real video) or raw (fastest reads)."""
    stop_after_epochs: int | None = None
    """Stop (checkpoint kept, nothing published) after this many epochs of this invocation; the
    same command then resumes. For tests and time-limited jobs. Default: run to the end."""

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.preset and self.preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        recipe = PRESETS.get(self.preset) or DEFAULTS
        self.lora_r = recipe["lora_r"] if self.lora_r is None else self.lora_r
        self.lora_alpha = recipe["lora_alpha"] if self.lora_alpha is None else self.lora_alpha
        problems = self._problems()
        if problems:
            raise ConfigError("; ".join(problems))
        self.extract = self._decoding(recipe)
        self.fit = self._training(recipe)
        self._check_head()

    def _decoding(self, recipe: dict) -> FrameDecoding:
        """``extract`` with the preset's frames, the frame store and the sampling seed."""
        frames = recipe["frames"] if self.extract.frames is None else self.extract.frames
        seed = self.fit.seed if self.extract.jitter else 0  # matters only with jitter
        return dataclasses.replace(self.extract, frames=frames, store=self.out / FRAME_STORE,
                                   seed=seed)  # fmt: skip

    def _training(self, recipe: dict) -> HeadTraining:
        """``fit`` with the preset's views, hidden width and rate, SkillFormer's budget when
        none is given, and the run folder's place."""
        fit = self.fit
        budget_given = fit.steps is not None or fit.epochs is not None
        return dataclasses.replace(
            fit,
            views=recipe["views"] if fit.views is None else fit.views,
            hidden=recipe["hidden"] if fit.hidden is None else fit.hidden,
            lr=recipe["lr"] if fit.lr is None else fit.lr,
            epochs=fit.epochs if budget_given else SKILLFORMER_EPOCHS,
            store=str(self.out / FRAME_STORE),
            out_dir=str(self.out),
            name=RUN,
            device=self.extract.device,
        )

    def _problems(self) -> list[str]:
        """adapt's own settings out of their range (the stages' configs check theirs)."""
        problems = []
        for name in ("lora_r", "lora_alpha", "grad_accum"):
            value = getattr(self, name)
            if value < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, not {value}")
        if self.codec not in ("zstd", "raw"):
            problems.append("--codec must be zstd or raw")
        if self.prefetch < 0:
            problems.append("--prefetch must be 0 or more")
        if self.stop_after_epochs is not None and self.stop_after_epochs < 1:
            problems.append("--stop-after-epochs must be at least 1")
        return problems

    def _check_head(self) -> None:
        from skill.heads.registry import resolve_head

        spec = resolve_head(self.fit.head)
        if spec.trainable:
            raise ConfigError(
                f"--head {self.fit.head} is not a neural head; adapt trains the head and the "
                "backbone's adapter together, which only a neural head can"
            )
        if spec.reads == "sequence":
            raise ConfigError(
                f"--head {self.fit.head} reads an ordered clip sequence; adapt trains on one "
                "clip per view: choose a clip head (e.g. cvf), or fit it with skill fit on a "
                "store extracted with --sampling sequence"
            )

    # ---- flat settings -------------------------------------------------------------------
    @classmethod
    def from_settings(cls, manifest: Path, out: Path, **settings) -> AdaptConfig:
        """An AdaptConfig from settings named as skill adapt's options name them (``clips=2``,
        ``lr=1e-2``, ``lora_r=8``), each given to the config it belongs to (`SETTINGS`)."""
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise TypeError(f"not settings of skill adapt: {', '.join(unknown)}")
        parts: dict[str, dict] = {"": {"out": out}, "extract": {"manifest": manifest}, "fit": {}}
        for name, value in settings.items():
            parts[place_of(name)][name] = value
        return cls(extract=FrameDecoding(**parts["extract"]), fit=HeadTraining(**parts["fit"]),
                   **parts[""])  # fmt: skip

    def settings(self, fit: FitConfig | None = None) -> dict:
        """Every setting, named as its option names it, in `SETTINGS`' order, as JSON: what a
        run's config.json records under ``adapt`` and what a checkpoint is valid for. ``fit``:
        the training settings as run (the task's monitor filled in), instead of ``self.fit``."""
        where = {"": self, "extract": self.extract, "fit": fit or self.fit}
        values = {name: getattr(where[place_of(name)], name) for name in SETTINGS}
        return json.loads(json.dumps(values, default=str))

    # ---- what adapt writes, and what skill extract is to do --------------------------------
    @property
    def manifest(self) -> Path:
        return self.extract.manifest

    @property
    def adapter_dir(self) -> Path:
        return self.out / "adapter"

    @property
    def run_dir(self) -> Path:
        return self.out / RUN

    @property
    def frame_store(self) -> Path:
        return self.out / FRAME_STORE

    def extract_config(self, store: Path | None = None, adapter: Path | None = None):
        """The `skill extract` settings that give the head exactly its training input: the same
        backbone, frames, windows and token mode (with ``adapter``: the trained one)."""
        decoding = {
            f.name: getattr(self.extract, f.name) for f in dataclasses.fields(ExtractConfig)
        }
        return ExtractConfig(**{**decoding, "store": store or self.out / "tokens.zarr",
                                "adapter": adapter})  # fmt: skip

    def extract_command(self) -> str:
        """The `skill extract` command line matching this adapt (printed at the end)."""
        e = self.extract
        parts = [f"skill extract {e.manifest} --store TOKENS.zarr --backbone {e.backbone}",
                 f"--adapter {self.adapter_dir} --tokens {e.tokens}",
                 f"--time-embedding {e.time_embedding} --frames {e.frames}",
                 f"--clips {e.clips} --sampling {e.strategy}"]  # fmt: skip
        if e.strategy != "uniform":
            parts.append(f"--stride {DEFAULT_STRIDE if e.stride is None else e.stride}")
        if e.jitter:
            parts.append(f"--jitter --seed {e.seed}")
        if e.root:
            parts.append(f"--root {e.root}")
        return " ".join(parts)


SETTINGS: tuple[str, ...] = (
    "manifest", "out", "backbone", "preset", "views", "root", "manifest_format", "head",
    "hidden", "dropout", "tokens", "time_embedding", "frames", "clips", "strategy", "stride",
    "jitter", "lora_r", "lora_alpha", "lora_dropout", "epochs", "steps", "batch_size",
    "grad_accum", "lr", "weight_decay", "warmup_frac", "class_balanced", "patience", "monitor",
    "gradient_checkpointing", "seed", "split_seed", "val_frac", "device", "threads", "workers",
    "timeout_s", "min_views", "prefetch", "codec", "limit", "plots", "stop_after_epochs",
)  # fmt: skip
"""skill adapt's settings, named as its options name them, in the order its records list
them: each is a field of `AdaptConfig` itself, of ``extract`` or of ``fit`` (`place_of`);
the stage settings not listed keep their stage's value and have no option."""
SHARED = {"device": "extract", "seed": "fit", "batch_size": "fit"}
"""Settings both stages have, and the one adapt's option sets: the device as extract
resolves it (per rank under torchrun; `AdaptConfig` passes it to ``fit``), the seed and the
batch as fit uses them (the sampling seed follows --seed with --jitter; the backbone's
forward batch of stage one has no option here)."""


def place_of(name: str) -> str:
    """Where setting ``name`` lives: "" (`AdaptConfig`), "extract" or "fit"."""
    own = {f.name for f in dataclasses.fields(AdaptConfig)} - {"extract", "fit"}
    if name in own:
        return ""
    if name in SHARED:
        return SHARED[name]
    return "extract" if name in {f.name for f in dataclasses.fields(ExtractConfig)} else "fit"


def cli_exclude() -> tuple[str, ...]:
    """The nested stage settings skill adapt has no option for (dotted names, as
    `cli_config.from_config` takes them, down to the fields of a config nested in a stage's):
    those not in `SETTINGS`, and the other stage's copy of a `SHARED` one."""
    return tuple(
        excluded
        for place, config in (("extract", FrameDecoding), ("fit", HeadTraining))
        for f in dataclasses.fields(config)
        if f.name not in SETTINGS or place_of(f.name) != place
        for excluded in _leaves(config, f, f"{place}.{f.name}")
    )


def _leaves(config: type, f: dataclasses.Field, dotted: str) -> list[str]:
    """``dotted``, or the dotted names of the fields of the config it holds, at any depth."""
    hint = typing.get_type_hints(config)[f.name]
    if not dataclasses.is_dataclass(hint):
        return [dotted]
    return [
        leaf for g in dataclasses.fields(hint) for leaf in _leaves(hint, g, f"{dotted}.{g.name}")
    ]
