"""The configuration of stage one, `skill extract`: one typed record, one docstring per
field, from which the CLI's options are derived (each docstring is its option's help, so it
is prose that names other settings by their option, --stride for ``stride``). Imports nothing
heavy (`skill --help`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from skill.errors import ConfigError
from skill.pipeline.backbones.registry import TIME_EMBEDDINGS, token_mode_names
from skill.pipeline.sampling import CLIP_EVERY_UNITS, SNAP_MODES, STRATEGIES, SamplingConfig
from skill.tasks import get_task, task_names

DEFAULT_STRIDE = 4
"""Frame step inside a window or segment when --stride is not given."""
WINDOW_STRATEGIES = ("windows", "skillformer-windows", "stride")
"""The strategies whose windows (clips) --stride sets."""


@dataclass
class ExtractConfig:
    """Everything `skill extract` needs; the CLI's options are derived from these fields
    (`skill.cli_config`), and conflicting settings are refused when it is built."""

    manifest: Path
    """Dataset description: the project's JSONL or CSV, an EgoExo4D annotation file, SkillFormer
    JSONL, a JIGSAWS meta file or an MTL-AQA or FineDiving annotation pickle (docs/manifests.md)."""
    store: Path
    """The Zarr store to create, or to append to or resume."""
    root: Path | None = None
    """Folder that relative video paths start from (EgoExo4D: the dataset root). Default: the
    manifest's folder (or its parent, when only the parent has a takes folder, as in
    EgoExo4D's layout)."""
    manifest_format: str = "auto"
    """Manifest format: auto (told by the file), skill, egoexo4d, skillformer, csv, jigsaws,
    jigsaws-criteria, mtl-aqa or finediving (pickles are never told: name them)."""
    task: str = "classification"
    """What is learned from a take, which the store records: classification (each take one of
    the manifest's levels), ordinal (the levels in order, for a format that declares them
    ordered), regression (named scores) or pairwise (a skill score per take, learned from
    the pairs of --pairs)."""
    pairs: list[Path] = field(default_factory=list)
    """--task pairwise: pairs files (BEST or EPIC-Skills layout, the better take first), a comma
    list; each is train, val or test as a word of its name says, or as SPLIT=FILE states. The
    store records them (replacing those it had). Default: none (the store keeps its own)."""
    backbone: str = "timesformer-base-k600"
    """A registered backbone name (skill backbones lists them), a hub id or a local
    checkpoint folder."""
    adapter: Path | None = None
    """A PEFT LoRA adapter folder (adapter_config.json and adapter_model.safetensors), as skill
    adapt writes. Default: the backbone as it is."""
    tokens: str = "frame"
    """Token mode: frame (one per sampled frame), cls (one per clip), patch (all) or
    mean_all (timesformer: one per clip, the mean over all tokens, CLS included: SkillFormer's
    feature)."""
    time_embedding: str = "nearest"
    """timesformer, at a frame count other than the checkpoint's: nearest (transformers'
    interpolation of the time embeddings) or linear (SkillFormer's, applied once at load)."""
    frames: int = 16
    """Frames per clip (T)."""
    clips: int = 1
    """Clips per view (K); with --sampling stride the most a view may have (a view needing
    more fails)."""
    strategy: str = "uniform"
    """Frame sampling: uniform, windows, skillformer-windows or segments (clips that are
    samples of a take), sequence or stride (the take as an ordered clip sequence). windows
    steps by exactly --stride; skillformer-windows places a window's frames as SkillFormer
    does, evenly over frames x stride frames and rounded down (steps of 4 and 5 for 16 frames
    at stride 4): use it for a model imported from SkillFormer. sequence spreads --clips x
    --frames frames evenly over the whole video, cut in order into --clips clips; stride starts
    a clip of --frames at --stride every --clip-every frames or seconds, as many as fit."""
    stride: int | None = None
    """Frame step inside each window or stride clip (with skillformer-windows a window spans
    --frames x --stride frames) or each segment. Refused with uniform and sequence sampling,
    where frames are spread over the whole video. Default: 4."""
    segments: int = 4
    """Number of dense segments with --sampling segments; --frames must be a multiple of it."""
    clip_every: float | None = None
    """With --sampling stride (required there, refused otherwise): a clip starts every this
    many frames, or seconds with --clip-every-unit seconds. Default: none, as the other
    samplings place their clips themselves."""
    clip_every_unit: str | None = None
    """The unit of --clip-every: frames or seconds. Default: frames."""
    jitter: bool = False
    """Seeded random clip positions instead of fixed ones (per take and view)."""
    seed: int = 0
    """Seed of the sampling jitter."""
    snap: str = "exact"
    """exact: the sampled frames themselves; keyframe: each sampled position moved to the
    nearest keyframe, so each frame costs one keyframe decode (far less CPU; benchmark 6) but
    lands up to half a keyframe interval (x264: 250 frames) away. Frames snapping to the same
    keyframe repeat it (the stored frame indices show it); a view whose keyframes cannot be
    trusted is decoded exactly, and the store notes it. Recorded in the provenance: a keyframe
    store never mixes with an exact one."""
    batch_size: int = 8
    """Clips per backbone forward pass, gathered across takes and views."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto (CUDA when available)."""
    workers: int = 2
    """Decode worker processes (0: decode in this process, for debugging only)."""
    timeout_s: float = 120.0
    """Seconds one video may take to decode before its worker is killed and the view failed."""
    decoders: list[str] = field(default_factory=lambda: ["auto"])
    """Video decoders tried in order, a comma list, each passing a file it cannot be trusted
    with to the next: decord, pyav, torchcodec (the optional extra), or auto (PyAV, the
    fastest in benchmark 3). A decoder alone fails the views it cannot read.

    PyAV reads every file it can open, so decoders after it are never tried.
    """
    decode_device: str = "cpu"
    """Where torchcodec decodes: cpu, or cuda / cuda:N (NVDEC; needs a CUDA build of
    torchcodec). decord and PyAV always decode on the CPU."""
    min_views: int = 1
    """A take with fewer decodable views than this is recorded as failed."""
    retry_failed: bool = False
    """Extract takes recorded as failed again (completed takes are always skipped)."""
    skip_missing: bool = False
    """Go on when video files the manifest names are missing: each is recorded as a failed
    view ("video file missing: PATH"), a take with none of its videos as a failed take.
    Without it the run stops before decoding, listing them all."""
    limit: int | None = None
    """Only the first N takes of the manifest, for trying things out. Default: every take."""
    pack: bool = True
    """When the run finishes, rewrite the small per-take chunks into large ones so that
    skill fit reads the store at disk speed (benchmark 2). A later run that writes takes
    unpacks the store first (which costs a rewrite), and packs it again at its end."""

    def __post_init__(self) -> None:
        self.manifest, self.store = Path(self.manifest), Path(self.store)
        self.root = Path(self.root) if self.root else None
        self.adapter = Path(self.adapter) if self.adapter else None
        problems = []
        if self.task not in task_names():
            problems.append(f"--task must be one of {', '.join(task_names())}, not {self.task!r}")
        elif self.pairs and not hasattr(get_task(self.task), "on_pairs"):
            problems.append(f"--pairs: task {self.task} does not learn from pairs; use --task "
                            "pairwise")  # fmt: skip
        self.pairs = [Path(str(path).strip()) for path in self.pairs if str(path).strip()]
        if self.tokens not in token_mode_names():
            problems.append(
                f"--tokens must be one of {', '.join(token_mode_names())}, not {self.tokens!r}"
            )
        if self.time_embedding not in TIME_EMBEDDINGS:
            problems.append(
                f"--time-embedding must be one of {', '.join(TIME_EMBEDDINGS)}, "
                f"not {self.time_embedding!r}"
            )
        for name in ("frames", "clips", "batch_size", "min_views", "segments", "stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, not {value}")
        if self.workers < 0:
            problems.append(f"--workers must be 0 or more, not {self.workers}")
        if self.seed < 0:
            problems.append(f"--seed must be 0 or more, not {self.seed}")
        if self.strategy not in STRATEGIES:
            problems.append(
                f"--sampling must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}"
            )
        if self.snap not in SNAP_MODES:
            problems.append(f"--snap must be one of {', '.join(SNAP_MODES)}, not {self.snap!r}")
        if self.clip_every is not None and not self.clip_every > 0:
            problems.append(f"--clip-every must be positive, not {self.clip_every:g}")
        if self.clip_every_unit is not None and self.clip_every_unit not in CLIP_EVERY_UNITS:
            problems.append(
                f"--clip-every-unit must be one of {', '.join(CLIP_EVERY_UNITS)}, "
                f"not {self.clip_every_unit!r}"
            )
        if self.timeout_s <= 0:
            problems.append("--timeout must be positive")
        if self.limit is not None and self.limit < 1:
            problems.append("--limit must be at least 1")
        problems += self._decoder_problems()
        if problems:
            raise ConfigError("; ".join(problems))
        # Derived once, here: conflicting sampling settings are refused before any work.
        self.sampling: SamplingConfig = self._derive_sampling()

    def _decoder_problems(self) -> list[str]:
        """--decoders names known decoders (auto alone); --decode-device cuda needs torchcodec."""
        self.decoders = [name.strip() for name in self.decoders if name.strip()]
        problems = []
        try:
            order = self.decoder_order
        except ValueError as err:  # the decoder module's own check, as an option's message
            problems.append(f"--{err}")
            order = ()
        device = self.decode_device
        if not (device == "cpu" or device == "cuda" or re.fullmatch(r"cuda:\d+", device)):
            problems.append(f"--decode-device must be cpu, cuda or cuda:N, not {device!r}")
        elif device != "cpu" and order and "torchcodec" not in order:
            problems.append(
                f"--decode-device {device} decodes with torchcodec only; add torchcodec to "
                "--decoders (decord and PyAV decode on the CPU)"
            )
        return problems

    @property
    def decoder_order(self) -> tuple[str, ...]:
        """The decoders tried, in order: ``decoders`` with ``auto`` written out (ValueError
        for names that are not decoders)."""
        from skill.pipeline.decode.registry import backend_order  # numpy: when a config is built

        return backend_order(self.decoders)

    @property
    def decode_options(self) -> dict[str, object]:
        """The keyword arguments of `pipeline.decode.view.decode_view` these settings give."""
        return {"backend": self.decoder_order, "device": self.decode_device}

    def _derive_sampling(self) -> SamplingConfig:
        segmented = self.strategy == "segments"
        if self.stride is not None and self.strategy in ("uniform", "sequence"):
            raise ConfigError(
                f"--stride is the frame step inside a window or segment; {self.strategy} "
                "sampling has neither (use --sampling windows, skillformer-windows, segments "
                "or stride, or leave --stride out)"
            )
        self._check_clip_every()
        if segmented and self.frames % self.segments:
            raise ConfigError(
                f"--frames {self.frames} must be a multiple of --segments {self.segments} "
                "for segments sampling (each segment has frames / segments frames)"
            )
        step = DEFAULT_STRIDE if self.stride is None else self.stride
        try:
            return SamplingConfig(
                strategy=self.strategy,
                frames=self.frames,
                clips=self.clips,
                stride=step if self.strategy in WINDOW_STRATEGIES else DEFAULT_STRIDE,
                n_segments=self.segments if segmented else None,
                segment_len=self.frames // self.segments if segmented else None,
                segment_stride=step if segmented else 1,
                jitter=self.jitter,
                seed=self.seed,
                snap=self.snap,
                clip_every=self.clip_every,
                clip_every_unit=self.clip_every_unit or "frames",
            )
        except ValueError as err:  # a safety net: the checks above come first
            raise ConfigError(str(err)) from None

    def _check_clip_every(self) -> None:
        """--clip-every (with its unit) belongs to stride sampling, which needs it: a whole
        number of frames, on a fixed grid (no --jitter)."""
        given = [
            flag
            for flag, value in (("--clip-every", self.clip_every),
                                ("--clip-every-unit", self.clip_every_unit))
            if value is not None
        ]  # fmt: skip
        if self.strategy != "stride":
            if given:
                raise ConfigError(
                    f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to "
                    f"--sampling stride only, not --sampling "
                    f"{self.strategy} (use --sampling stride, or leave "
                    f"{'them' if len(given) > 1 else 'it'} out)"
                )
            return
        if self.clip_every is None:
            raise ConfigError(
                "--sampling stride needs --clip-every: a clip starts every N frames (or seconds "
                "with --clip-every-unit seconds)"
            )
        if (self.clip_every_unit or "frames") == "frames" and not float(
            self.clip_every
        ).is_integer():
            raise ConfigError(
                f"--clip-every {self.clip_every:g} frames is not a whole number of frames "
                "(use --clip-every-unit seconds for a step in seconds)"
            )
        if self.jitter:
            raise ConfigError(
                "--jitter: --sampling stride starts its clips on a fixed grid (--clip-every); "
                "leave --jitter out"
            )
