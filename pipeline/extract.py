"""Stage one: decode the takes of a dataset once and write backbone tokens into a store.

Flow: manifest -> takes -> one decode job per (take, view) in worker processes (decord, then
PyAV; per-video timeout) -> clips batched across takes and views -> `Backbone.encode` -> one
write per take, then that take's completion record.

Rules a user can rely on:
- A view that cannot be decoded is masked (`valid` False) with its reason in `view_error`;
  the take stays usable with the other views. A take with fewer than `min_views` decodable
  views is recorded as failed. A view missing from the manifest is masked, not a failure.
- Completed (and failed) takes are skipped when the same command runs again, so a killed run
  resumes where it stopped; `retry_failed` extracts failed takes again.
- Appending to an existing store is allowed only when the provenance (backbone, weights,
  adapter, preprocessing, sampling, token mode, dtype) is the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cache.store import (
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_PENDING,
    StoreError,
    TakeResult,
    TakeRow,
    TokenStore,
    diff_provenance,
    provenance_identity,
)
from pipeline import distributed
from pipeline.sampling import SamplingConfig
from pipeline.takes import LABELS, Take

TOKEN_MODES = ("frame", "cls", "patch")


@dataclass
class ExtractConfig:
    """Everything `skill extract` needs; built by the CLI, checked when built."""

    manifest: Path
    """Dataset description: the project's JSONL, an EgoExo4D annotation file or SkillFormer JSONL."""
    store: Path
    """The Zarr store to create, or to append to / resume."""
    root: Path | None = None
    """Folder that relative video paths start from (EgoExo4D: the dataset root)."""
    format: str = "auto"
    """Manifest format: auto, skill, egoexo4d or skillformer."""
    backbone: str = "timesformer-base-k600"
    """A registered backbone name, a hub id or a local checkpoint folder."""
    adapter: Path | None = None
    """A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)."""
    tokens: str = "frame"
    """Token mode: frame (one per sampled frame), cls (one per clip) or patch (all)."""
    frames: int = 16
    """Frames per clip (T)."""
    clips: int = 1
    """Clips per view (K)."""
    strategy: str = "uniform"
    """Frame sampling: uniform, windows or segments."""
    stride: int = 4
    """Frame stride inside a window (windows and segments)."""
    segments: int = 4
    """Number of dense segments (segments strategy); frames must be a multiple of it."""
    jitter: bool = False
    """Seeded random clip positions instead of fixed ones (per take and view)."""
    seed: int = 0
    """Seed of the sampling jitter."""
    batch_size: int = 8
    """Clips per backbone forward pass, gathered across takes and views."""
    device: str = "auto"
    """cpu, cuda, cuda:N or auto (CUDA when available)."""
    workers: int = 2
    """Decode worker processes (0 decodes in this process, for debugging only)."""
    timeout_s: float = 120.0
    """Seconds one video may take to decode before its worker is killed and the view failed."""
    min_views: int = 1
    """A take with fewer decodable views than this is recorded as failed."""
    retry_failed: bool = False
    """Extract takes recorded as failed again (completed takes are always skipped)."""
    limit: int | None = None
    """Only the first N takes of the manifest (for trying things out)."""

    def __post_init__(self) -> None:
        self.manifest, self.store = Path(self.manifest), Path(self.store)
        self.root = Path(self.root) if self.root else None
        self.adapter = Path(self.adapter) if self.adapter else None
        problems = []
        if self.tokens not in TOKEN_MODES:
            problems.append(
                f"--tokens must be one of {', '.join(TOKEN_MODES)}, not {self.tokens!r}"
            )
        for name in ("frames", "clips", "batch_size", "min_views"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1")
        if self.workers < 0:
            problems.append("--workers must be 0 or more")
        if self.timeout_s <= 0:
            problems.append("--timeout must be positive")
        if self.limit is not None and self.limit < 1:
            problems.append("--limit must be at least 1")
        if problems:
            raise ValueError("; ".join(problems))
        self.sampling()  # refuses conflicting sampling settings now, not mid-run

    def sampling(self) -> SamplingConfig:
        segmented = self.strategy == "segments"
        if segmented and self.frames % self.segments:
            raise ValueError(
                f"--frames {self.frames} must be a multiple of --segments {self.segments} "
                "for segments sampling (each segment has frames / segments frames)"
            )
        return SamplingConfig(
            strategy=self.strategy,
            frames=self.frames,
            clips=self.clips,
            stride=self.stride if self.strategy == "windows" else 4,
            n_segments=self.segments if segmented else None,
            segment_len=self.frames // self.segments if segmented else None,
            segment_stride=self.stride if segmented else 1,
            jitter=self.jitter,
            seed=self.seed,
        )

    def to_dict(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass
class ExtractSummary:
    """What one run (one rank) did."""

    store: Path
    total: int = 0
    skipped: int = 0
    completed: int = 0
    failed: int = 0
    failed_views: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)


ProgressFn = Callable[[int, int, int], None]  # (takes done, takes to do, failures so far)


def run_extract(cfg: ExtractConfig, progress: ProgressFn | None = None) -> ExtractSummary:
    """Extract every pending take of `cfg.manifest` into `cfg.store`."""
    from pipeline.backbones import load_backbone
    from pipeline.manifest import read_takes

    started = time.perf_counter()
    rank = distributed.current_rank()
    dataset = read_takes(cfg.manifest, root=cfg.root, fmt=cfg.format)
    takes = dataset.takes[: cfg.limit] if cfg.limit else dataset.takes
    backbone = load_backbone(
        cfg.backbone,
        adapter=str(cfg.adapter) if cfg.adapter else None,
        device=_pick_device(cfg.device, rank),
        token_mode=cfg.tokens,
        num_frames=cfg.frames,
        batch_size=cfg.batch_size,
    )
    provenance = build_provenance(cfg, backbone)
    distributed.init_process_group(rank, backbone.device)
    try:
        with _coordinated_store(cfg, rank, provenance, dataset.views, takes) as (store, rows):
            work = _my_pending_takes(cfg, store, rows, takes, rank)
            summary = ExtractSummary(store=cfg.store, total=len(takes))
            summary.skipped = len(takes) - sum(len(share) for share in work["all"])
            _extract_takes(cfg, store, backbone, work["mine"], summary, progress)
            distributed.barrier(rank)
            if rank.is_coordinator:
                summary.failures = store.failures()
    finally:
        distributed.shutdown(rank)
    summary.seconds = time.perf_counter() - started
    return summary


def build_provenance(cfg: ExtractConfig, backbone) -> dict:
    """What makes two stores' tokens comparable; appending requires it to be equal."""
    from cache.store import package_version

    return {
        "backbone": backbone.provenance(),
        "sampling": cfg.sampling().to_dict(),
        "tokens": cfg.tokens,
        "dtype": "float16",
        "created_by": {"package": "skill", "version": package_version()},
    }


def _pick_device(device: str, rank: distributed.Rank) -> str:
    if device != "auto":
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return f"cuda:{local % torch.cuda.device_count()}"


class _coordinated_store:
    """Context manager: rank 0 opens or creates the store, registers the takes and holds the
    writer lock; the other ranks open it once rank 0 says it is ready."""

    def __init__(self, cfg, rank, provenance, views, takes):
        self.cfg, self.rank, self.provenance, self.views, self.takes = (
            cfg,
            rank,
            provenance,
            views,
            takes,
        )
        self._lock = None

    def __enter__(self):
        outcome = None
        if self.rank.is_coordinator:
            outcome = self._prepare()
        outcome = distributed.broadcast_from_coordinator(self.rank, outcome)
        if "error" in outcome:
            raise StoreError(outcome["error"])
        store = self.store if self.rank.is_coordinator else TokenStore.open(self.cfg.store, "a")
        return store, outcome["rows"]

    def _prepare(self) -> dict:
        try:
            self.store = open_store_for_extract(self.cfg.store, self.provenance, self.views)
            self._lock = self.store.writer_lock()
            self._lock.__enter__()
            rows = self.store.add_takes([take_row(t) for t in self.takes])
            return {"rows": rows}
        except StoreError as err:
            self._release()
            if not self.rank.distributed:
                raise
            return {"error": str(err)}

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def __exit__(self, *exc) -> None:
        self._release()


def open_store_for_extract(path: Path, provenance: dict, views: list[str]) -> TokenStore:
    """Open the store to append or resume, or create it; refuse a different provenance."""
    geometry = provenance["backbone"]
    if not path.exists():
        sampling = provenance["sampling"]
        return TokenStore.create(
            path,
            provenance=provenance,
            views=views,
            labels=list(LABELS),
            clips=sampling["clips"],
            tokens=geometry["tokens_per_clip"],
            dim=geometry["dim"],
            frames=sampling["frames"],
        )
    store = TokenStore.open(path, mode="a")
    differences = diff_provenance(
        provenance_identity(store.provenance), provenance_identity(provenance)
    )
    if differences:
        raise StoreError(
            f"{path}: cannot append: the store was extracted with different settings:\n  "
            + "\n  ".join(differences)
            + "\nuse a new --store, or the same settings as the store"
        )
    if list(store.views) != list(views):
        raise StoreError(
            f"{path}: cannot append: the store has views {store.views}, the manifest {views}"
        )
    return store


def take_row(take: Take) -> TakeRow:
    return TakeRow(take.take_id, take.label, take.scenario, take.participant, take.split)


def _my_pending_takes(cfg, store, rows, takes, rank) -> dict:
    """The takes still to extract, split between ranks by cost (video bytes x views)."""
    status = store.status()
    todo_status = {STATUS_PENDING, STATUS_FAILED} if cfg.retry_failed else {STATUS_PENDING}
    pending = [
        (row, take) for row, take in zip(rows, takes, strict=True) if status[row] in todo_status
    ]
    costs = [_take_cost(take) for _, take in pending]
    shares = distributed.balance_by_cost(costs, rank.world)
    return {"all": shares, "mine": [pending[i] for i in shares[rank.rank]]}


def _take_cost(take: Take) -> float:
    # File size is a cheap stand-in for length x views: it costs no decoder open.
    total = 0
    for path in take.videos.values():
        if path:
            try:
                total += os.path.getsize(path)
            except OSError:
                total += 1
    return float(total)


def _extract_takes(cfg, store, backbone, work, summary, progress) -> None:
    from pipeline.extract_loop import ExtractLoop

    loop = ExtractLoop(cfg, store, backbone, summary, progress)
    loop.run(work)


def key_of(take: Take, view: str) -> str:
    """Sampling key: the same take and view always get the same frames."""
    return f"{take.take_id}/{view}"


def assemble_take(
    n_views: int, clips: int, frames: int, tokens_per_clip: int, dim: int
) -> TakeResult:
    """An empty result for one take: every view invalid until it is filled in."""
    return TakeResult(
        tokens=np.zeros((n_views, clips, tokens_per_clip, dim), dtype=np.float16),
        valid=np.zeros(n_views, dtype=bool),
        frame_index=np.full((n_views, clips, frames), -1, dtype=np.int32),
        timestamp=np.full((n_views, clips, frames), np.nan, dtype=np.float32),
        padded=np.zeros(n_views, dtype=np.int16),
        view_error=[""] * n_views,
        status=STATUS_COMPLETE,
    )
