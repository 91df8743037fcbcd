"""Stage one: decode the takes of a dataset once and write backbone tokens into a store.

Flow: manifest -> takes -> one decode job per (take, view) in worker processes (the
`decoders` order, PyAV by default; per-video timeout) -> clips batched across takes and views
-> `Backbone.encode` -> one write per take, then that take's completion record. The decode
loop and the sharing of the takes between ranks (`write_pending`) also write `skill adapt`'s
frame store, with the identity as the encode step.

Rules a user can rely on: a view that cannot be decoded is masked with its reason and a take
with fewer than `min_views` decodable views is recorded as failed; video files the manifest
names but that are not there stop the run before the store is touched or the backbone loads,
listed in ``<store>.missing_videos.txt`` (with `skip_missing` they become failed views);
completed and failed takes are skipped when the same command runs again, so a killed run
resumes where it stopped (`retry_failed` redoes failed takes); Ctrl-C or SIGTERM lets the
take being written finish; appending is allowed only with the same provenance; one writer at
a time (under torchrun the ranks of one run share the work, `pipeline.distributed`); store
problems are refused before the backbone loads, and a write that fails names the store and
take and leaves that take pending.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from skill.cache.files import write_text_atomically
from skill.cache.per_take import rows_to_write
from skill.cache.recovery import remove_leftovers, store_write_errors
from skill.cache.store import (
    StoreError,
    TakeRow,
    TokenStore,
    diff_provenance,
    provenance_identity,
)
from skill.devices import resolve_device
from skill.pipeline import distributed
from skill.pipeline.extract_config import ExtractConfig
from skill.pipeline.extract_loop import BackboneEncoder, ExtractLoop
from skill.pipeline.manifest.pairs import SPLITS as PAIR_SPLITS
from skill.pipeline.manifest.pairs import Pairs, read_pairs
from skill.pipeline.sampling import clip_axis
from skill.pipeline.takes import Take
from skill.tasks import task_record

RUN_RECORD = "extract_run"
"""Root attribute the coordinator keeps about the last run: state running/finished, etc."""


@dataclass
class ExtractSummary:
    """What one run did (under torchrun: the whole run on every rank, see `rank`)."""

    store: Path
    total: int = 0
    """Takes in the manifest (after --limit)."""
    skipped: int = 0
    """Takes already complete (or failed, without --retry-failed) before this run."""
    completed: int = 0
    failed: int = 0
    failed_views: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    """(take, view or '*', reason) of every failure in the store (coordinator only)."""
    missing_videos: int = 0
    """Video files of this run's takes that are missing (recorded as failed views)."""
    missing_list: Path | None = None
    """The file listing them (see `missing_list_path`), when there are any and it was written."""
    removed_temp_files: int = 0
    """Temporary files of killed writes deleted at the start of this run."""
    relayout: list[str] = field(default_factory=list)
    """What this run did to the chunk layout: "unpacked" (to write takes), "packed"."""
    rank: int = 0
    """This process's rank; only rank 0 (the coordinator) should print the summary."""
    world: int = 1


ProgressFn = Callable[[int, int, int], None]  # (takes done, takes to do, failures so far)


def run_extract(cfg: ExtractConfig, progress: ProgressFn | None = None) -> ExtractSummary:
    """Extract every pending take of `cfg.manifest` into `cfg.store` (see the module doc).
    The takes done are shown by `skill.progress` (when the command turned it on) and passed
    to `progress`, if given.

    Raises ManifestError / StoreError / BackboneError (ValueErrors with a clear message) for
    problems a user can fix, KeyboardInterrupt on Ctrl-C or SIGTERM."""
    from skill.pipeline.manifest import read_takes

    started = time.perf_counter()
    rank = distributed.current_rank()
    dataset = read_takes(
        cfg.manifest, root=cfg.root, fmt=cfg.manifest_format, missing_videos="keep", task=cfg.task
    )
    takes = dataset.takes[: cfg.limit] if cfg.limit else dataset.takes
    missing, listed = check_missing_videos(cfg, rank, takes, dataset.missing_videos)
    pairs = read_pairs_files(cfg.pairs, dataset.takes, takes) if cfg.pairs else None
    # Refused in a second, not after loading the backbone; opened once, here.
    opened = preflight_store(cfg.store) if rank.is_coordinator else None
    backbone = _load_backbone(cfg, rank)
    provenance = build_provenance(cfg, backbone)
    summary = ExtractSummary(store=cfg.store, total=len(takes), rank=rank.rank, world=rank.world)
    summary.missing_videos, summary.missing_list = len(missing), listed
    distributed.init_process_group(rank, backbone.device)
    try:
        with (
            terminate_as_interrupt(),
            _CoordinatedStore(cfg, rank, provenance, dataset, takes, opened, pairs) as coordinated,
        ):
            _run_share(cfg, coordinated, BackboneEncoder(backbone), summary, progress, missing)
    finally:
        distributed.shutdown(rank)
    summary.seconds = time.perf_counter() - started
    return summary


def _run_share(cfg, coordinated, encoder, summary, progress, missing) -> None:
    """Extract this rank's share of the pending takes, then sum the counts of all ranks."""
    rank, store = coordinated.rank, coordinated.store
    summary.skipped = len(coordinated.takes) - len(coordinated.pending)
    summary.removed_temp_files = coordinated.removed_temp_files
    summary.relayout = list(coordinated.relayout)
    shares = write_pending(cfg, store, encoder, coordinated.pending, rank, summary, progress,
                           missing)  # fmt: skip
    if rank.is_coordinator:
        coordinated.finish(takes_per_rank=shares)
        summary.failures = store.failures()
        summary.relayout = list(coordinated.relayout)


# ---- missing video files -------------------------------------------------------------------
MISSING_LIST_SUFFIX = ".missing_videos.txt"


def missing_list_path(store: Path) -> Path:
    """Where the list of missing videos goes: beside the store (``<store>.missing_videos.txt``),
    or in the working folder when the store's folder does not exist or cannot be written (the
    store itself is never created for it). The same on every rank."""
    folder = store.parent
    if not (folder.is_dir() and os.access(folder, os.W_OK)):
        folder = Path.cwd()
    return folder / f"{store.name}{MISSING_LIST_SUFFIX}"


def check_missing_videos(
    cfg: ExtractConfig, rank: distributed.Rank, takes: list[Take], found: tuple
) -> tuple[dict[tuple[str, str], str], Path | None]:
    """The missing videos of this run's `takes`, as (take, view) -> failed-view reason, and
    the file that lists them (None when none is missing or it could not be written). Rank 0
    writes them all to `missing_list_path`; without `cfg.skip_missing` any of them stops the
    run (`MissingVideosError`: the count, the first 20 and the list file)."""
    from skill.pipeline.manifest import MissingVideosError
    from skill.pipeline.manifest.common import missing_videos_text

    wanted = {take.take_id for take in takes}
    missing = [m for m in found if m.take_id in wanted]  # --limit: only the takes to extract
    path = missing_list_path(cfg.store)
    written = True
    if rank.is_coordinator:
        written = _write_missing_list(path, missing_videos_text(missing) if missing else None)
    if missing and not cfg.skip_missing:
        raise MissingVideosError(
            str(cfg.manifest),
            missing,
            list_file=str(path) if written else f"(could not be written to {path})",
            hint="nothing was extracted; fix the paths (or --root), or pass --skip-missing to "
            "extract the other views (the missing ones are recorded as failed views)",
        )
    reasons = {(m.take_id, m.view): m.reason for m in missing}
    # Only rank 0 knows whether it wrote the list (nothing makes the others wait for it).
    return reasons, path if missing and written and rank.is_coordinator else None


def _write_missing_list(path: Path, text: str | None) -> bool:
    """Write the list atomically; None removes a list an earlier run left (none is missing
    now, so it would mislead). False when it cannot be written: the message still lists the
    first 20, and a read-only working folder must not hide them behind its own error."""
    try:
        if text is None:
            path.unlink(missing_ok=True)
            return True
        write_text_atomically(path, text)
        return True
    except OSError:
        return False


def _load_backbone(cfg: ExtractConfig, rank: distributed.Rank):
    return backbone_of(cfg, resolve_device(cfg.device, rank.local_rank))


def backbone_of(cfg: ExtractConfig, device: str):
    """The backbone ``cfg`` names, loaded as it says (adapter, token mode, frames, time
    embedding), on ``device``: what extract encodes with and what adapt trains."""
    from skill.pipeline.backbones import load_backbone

    return load_backbone(
        cfg.backbone,
        adapter=str(cfg.adapter) if cfg.adapter else None,
        device=device,
        token_mode=cfg.tokens,
        num_frames=cfg.frames,
        batch_size=cfg.batch_size,
        time_embedding=cfg.time_embedding,
    )


def build_provenance(cfg: ExtractConfig, backbone) -> dict:
    """What makes two stores' tokens comparable; appending requires it to be equal."""
    from skill.cache.store import package_version

    return {
        "backbone": backbone.provenance(),
        "sampling": cfg.sampling.to_dict(),
        "clip_axis": clip_axis(cfg.sampling),
        "tokens": cfg.tokens,
        "dtype": "float16",
        "created_by": {"package": "skill", "version": package_version()},
    }


# ---- the store: checks, coordination, leftovers -------------------------------------------
def preflight_store(path: Path) -> TokenStore | None:
    """Refuse a store this run could not write, without writing anything: not a store, a
    newer format, a read-only location, another writer busy. Returns the store, opened to
    write (None when it is to be created). Provenance is checked later (it needs the loaded
    backbone)."""
    if not path.exists() and not path.is_symlink():
        parent = path.parent
        if not parent.is_dir():
            raise StoreError(f"{path}: cannot create the store: folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise StoreError(f"{path}: cannot create the store: {parent} is read-only")
        return None
    store = TokenStore.open(path, mode="a")  # not a store / newer format / read-only
    holder = store.writer_busy()
    if holder is not None:
        raise store.busy_error(holder)
    return store


class _CoordinatedStore:
    """Context manager: rank 0 opens or creates the store (``opened``: the store preflight
    opened, None when there was none), takes the writer lock, deletes leftovers of killed
    runs, registers the takes and lists those still to write; the other ranks open the store
    once rank 0 says it is ready, and take rank 0's list (not their own reading of `status`,
    which may already show takes rank 0 has written). On exit rank 0 releases the lock."""

    def __init__(
        self, cfg, rank, provenance, dataset, takes, opened: TokenStore | None = None,
        pairs: Pairs | None = None,
    ):  # fmt: skip
        self.cfg, self.rank, self.provenance, self.pairs = cfg, rank, provenance, pairs
        self.views, self.takes = dataset.views, takes
        self.task = task_record(dataset.task, dataset.schema)
        self.opened = opened
        self.store: TokenStore | None = None
        self.rows: list[int] = []
        self.pending: list[tuple[int, Take]] = []
        """(row, take) of the takes still to write, the same list on every rank."""
        self.removed_temp_files = 0
        self.relayout: list[str] = []
        self._lock = None
        self._record: dict = {}

    def __enter__(self) -> _CoordinatedStore:
        outcome = distributed.run_on_coordinator(self.rank, self._prepare, StoreError)
        if not self.rank.is_coordinator:
            self.store = _open_as_worker(self.cfg.store)
        self.rows = outcome["rows"]
        self.pending = [(self.rows[i], self.takes[i]) for i in outcome["pending"]]
        self.removed_temp_files = outcome["removed"]
        self.relayout = outcome["relayout"]
        return self

    def _prepare(self) -> dict:
        try:
            store = self._open(self.opened)
            lock = store.writer_lock()
            lock.__enter__()  # StoreBusy when another command writes
            self._lock = lock
            if not store.is_current():  # another command wrote it while the backbone loaded
                store = self._open(None)
            self.store = store
            with store_write_errors(store.path, "the take table"):
                removed = remove_leftovers(store.path, store.relayout_arrays)
                self._record = _run_record(self.cfg, self.rank, len(self.takes))
                store.set_attr(RUN_RECORD, self._record)
                if store.is_packed() and _writes_takes(self.cfg, store, self.takes):
                    store.unpack()  # writers of different takes need one chunk per take
                    self.relayout.append("unpacked")
                rows = store.add_takes([take_row(t) for t in self.takes])
                if self.pairs is not None:
                    ids, splits = list(store.take_table().ids), [p.split for p in self.pairs.pairs]
                    store.set_pairs(self.pairs.rows(ids), splits)
            pending = rows_to_write(store.status(), rows, self.cfg.retry_failed)
            return {"rows": rows, "pending": pending, "removed": removed,
                    "relayout": self.relayout}  # fmt: skip
        except BaseException:  # a StoreError, or Ctrl-C while preparing: no __exit__ runs
            self._release()
            raise

    def _open(self, opened: TokenStore | None) -> TokenStore:
        return open_store_for_extract(
            self.cfg.store, self.provenance, self.views, self.task, opened=opened
        )

    def finish(self, takes_per_rank: list[int]) -> None:
        """Rank 0, after every rank wrote its takes: the store is packed (no writer is left,
        the writer lock is still held), then the run record says finished. A run killed
        while packing ended before its work did, so its record says "packing" and `skill
        info` reports it interrupted: the next run completes the pack."""
        self._record.update(takes_per_rank=takes_per_rank)
        if self.cfg.pack:
            self._set_record(state="packing")
            # Also completes a pack that a killed run left half done (pack skips what is).
            with store_write_errors(self.store.path, "the packed layout (all takes are kept)"):
                if self.store.pack():
                    self.relayout.append("packed")
        self._set_record(state="finished", finished=_now())

    def _set_record(self, **changes) -> None:
        self._record.update(changes)
        with store_write_errors(self.store.path, "the run record"):
            self.store.set_attr(RUN_RECORD, self._record)

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def __exit__(self, *exc) -> None:
        self._release()


def _open_as_worker(path: Path) -> TokenStore:
    try:
        return TokenStore.open(path, mode="a")
    except StoreError as err:
        raise StoreError(f"{err} (under torchrun every rank must see the same --store)") from err


def _run_record(cfg: ExtractConfig, rank: distributed.Rank, n_takes: int) -> dict:
    return {
        "state": "running",
        "started": _now(),
        "finished": None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "world": rank.world,
        "manifest": str(cfg.manifest),
        "manifest_takes": n_takes,
        # The run's settings, `auto` decoders written out as their order: what the
        # provenance does not need for comparing tokens but a reader needs to redo the run.
        "config": _resolved_settings(cfg),
    }


def _resolved_settings(cfg: ExtractConfig) -> dict:
    """The config as JSON, with ``auto`` decoders written as the order they stand for."""
    settings = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    settings["decoders"] = list(cfg.decoder_order)
    return settings


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def open_store_for_extract(
    path: Path, provenance: dict, views: list[str], task: dict, opened: TokenStore | None = None
) -> TokenStore:
    """Open the store to append or resume (``opened``: the store, when it is open already),
    or create it; refuse a different provenance, other views or another task (``task``:
    what the store records, `tasks.task_record`)."""
    if opened is None and not path.exists():
        try:
            return _create_store(path, provenance, views, task)
        except StoreError:
            if not (path / "zarr.json").is_file():
                raise
            # Another command created it at the same moment: treat it as an existing store
            # (its writer lock decides which of the two goes on).
    store = opened if opened is not None else TokenStore.open(path, mode="a")
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
    if (store.task["name"], store.task["schema"]) != (task["name"], task["schema"]):
        raise StoreError(
            f"{path}: cannot append: the store's task is {store.task['name']} with "
            f"{store.task['schema']}, the run's {task['name']} with {task['schema']}"
        )
    return store


def _create_store(path: Path, provenance: dict, views: list[str], task: dict) -> TokenStore:
    geometry, sampling = provenance["backbone"], provenance["sampling"]
    return TokenStore.create(
        path,
        provenance=provenance,
        views=views,
        task=task,
        clips=sampling["clips"],
        tokens=geometry["tokens_per_clip"],
        dim=geometry["dim"],
        frames=sampling["frames"],
    )


def _writes_takes(cfg: ExtractConfig, store: TokenStore, takes: list[Take]) -> bool:
    """Whether this run will write any take: a take new to the store, or one still to do."""
    row_of = {take_id: row for row, take_id in enumerate(store.take_table().ids.tolist())}
    if any(take.take_id not in row_of for take in takes):
        return True
    rows = [row_of[take.take_id] for take in takes]
    return bool(rows_to_write(store.status(), rows, cfg.retry_failed))


def read_pairs_files(files: list[Path], manifest_takes: list[Take], takes: list[Take]) -> Pairs:
    """The pairs of ``files`` (``SPLIT=FILE``, or a file whose name says its split) checked
    against the manifest's takes (`pipeline.manifest.pairs.read_pairs`: a take not among them
    or a pair across splits is refused, naming file and line); with --limit, the pairs naming
    a take beyond it are left out."""
    read = []
    for path in files:
        split, _, named = str(path).partition("=")
        given = {split: named} if named and split in PAIR_SPLITS else [path]
        read += read_pairs(given, manifest_takes).pairs
    kept = {take.take_id for take in takes}
    return Pairs(tuple(pair for pair in read if {pair.better, pair.worse} <= kept))


def take_row(take: Take) -> TakeRow:
    """A take as the store's take table is given it (the store's task encodes its target)."""
    return TakeRow(take.take_id, take.target, take.scenario, take.participant, take.split, take.uid)


# ---- sharing the work ----------------------------------------------------------------------
def write_pending(cfg: ExtractConfig, store, encoder, work: list[tuple[int, Take]], rank,
                  summary, progress: ProgressFn | None = None, missing=None,
                  what: str = "extracting") -> list[int]:  # fmt: skip
    """Write this rank's share of ``work`` (the (row, take) pairs still to write, the same
    list on every rank) into the per-take ``store`` through the decode loop with ``encoder``
    (`pipeline.extract_loop`), then sum every rank's counts into ``summary`` (``completed``,
    ``failed``, ``failed_views``). Shares are balanced by `take_cost`. Returns the takes each
    rank wrote; a collective: it returns once every rank has written all of its takes."""
    shares = distributed.balance_by_cost([take_cost(take) for _, take in work], rank.world)
    mine = [work[i] for i in shares[rank.rank]]
    ExtractLoop(cfg, store, encoder, summary, progress, missing=missing, what=what).run(mine)
    written = distributed.gather_from_ranks(rank, summary.completed + summary.failed)
    counts = (summary.completed, summary.failed, summary.failed_views)
    summary.completed, summary.failed, summary.failed_views = distributed.sum_over_ranks(
        rank, counts
    )
    return written


# Cost of a view beyond its length (opening the file, seeking, K clips through the backbone),
# in the unit of take_cost: bytes of video.
VIEW_OVERHEAD_BYTES = 256 * 1024


def take_cost(take: Take) -> float:
    """Estimated cost of a take: video length x views. A view's length is its file size
    (bytes grow with duration at the dataset's bitrate, and reading it opens no decoder),
    plus a fixed overhead per view; a missing view costs nothing."""
    total = 0.0
    for path in take.videos.values():
        if path:
            try:
                total += os.path.getsize(path) + VIEW_OVERHEAD_BYTES
            except OSError:
                total += VIEW_OVERHEAD_BYTES
    return total


# ---- interrupts ------------------------------------------------------------------------------
@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler or torchrun stopping us) raises KeyboardInterrupt like Ctrl-C, so
    both unwind the same way: the take being written finishes, workers stop, the lock is
    released. Only the main thread can handle signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
