"""The frame store: the sampled clips of every (take, view) decoded once, for ``skill adapt``.

SkillFormer decodes every video again in every epoch; here the K windows of each (take, view)
are decoded once, by the extract stage's ``DecodePool`` (worker processes, per-video
timeout) and ``decode_view`` (same sampling keys ``<take>/<view>``, same resize and crop as
the backbone's), so that ``skill extract --adapter`` later sees exactly the same frames.
Failure rules are extract's: a view that cannot be decoded is masked with its reason, a take
with fewer than ``min_views`` decodable views is recorded as failed, a view missing from the
manifest is masked. Each epoch of training draws one of the K windows per (take, view) with
a seeded generator (SkillFormer's one random window, from a fixed, recorded pool).

Layout (Zarr format 3, ``<out>/frames.zarr``)::

    frames       (take, view, clip, frame, H, W, 3) uint8   one chunk per (take, view)
    frame_index  (take, view, clip, frame) int32, -1 = none
    timestamp    (take, view, clip, frame) float32 seconds, NaN = none
    valid        (take, view) bool
    view_error   (take, view) str, "" = ok
    status       (take,) int8: 0 pending, 1 complete, 2 failed; written LAST per take
    attrs        skill_frames (format version), provenance (backbone geometry, sampling,
                 codec), views, takes (id, label, scenario, participant, split)

A take's ``status`` is written after its arrays: a killed build leaves the take pending and
the next build (same provenance and takes, else refused) decodes only pending takes. The
store is created in a staging folder beside it (``cache.files.staging_folder``) and renamed
into place, so a create that fails leaves nothing; a resumed build first removes zarr's
temporary files and the staging folders of dead processes. A write that fails (a full
disk, a read-only folder) is one line naming the store and the take; the takes written
before are kept and the same command resumes.

Codec, measured by ``bench/frame_store.py`` (warm page cache, one core, 4 takes x 4 views x
2 clips x 8 frames at 224x224x3 = 150,528 B per raw frame; zstd level 1, one chunk per
(take, view))::

    content                              codec  bytes/frame  ratio  read MB/s (decoded uint8)
    real footage (pancake, mmaction2     raw    150,530      1.00x  4,147
      demo, NASA, big buck bunny)        zstd    87,300      1.72x    723
    synthetic renders (skill.synth)      raw    150,530      1.00x  2,144
                                         zstd    70,310      2.14x  1,001

Choice: **zstd** by default (``codec="raw"`` is kept for the fastest reads). It stores real
footage in 58 % of the bytes (a full EgoExo4D frame store: 66 GB instead of 114 GB at K=4,
T=16, see the README), and even one core decompresses 723 MB/s = 300 clips of 16 frames
per second, which should be several times what one GPU trains TimeSformer-base on end to
end (an estimate, not measured here: forward + backward of a 16-frame clip at 224 px are
expected to take tens of milliseconds; ``bench/adapt_epoch.py`` measures the epoch: on the CPU
the reads are 0.02 % of it). Commands: ``python -m bench.frame_store --videos
<the four files of ../shared/media>`` and ``python -m bench.frame_store --takes 4``.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from skill.cache.files import publish_folder, remove_dead_staging, staging_folder
from skill.cache.recovery import store_write_errors, temp_files
from skill.cache.store import STATUS_COMPLETE, STATUS_FAILED, STATUS_PENDING, StoreError
from skill.pipeline.distributed import Rank
from skill.pipeline.takes import Take
from skill.progress import task

FORMAT_VERSION = 1
CODECS = ("raw", "zstd")


@dataclass(frozen=True)
class FrameStoreSpec:
    """What the frames depend on: compared on resume, recorded in the attributes."""

    backbone: str
    geometry: dict  # FrameGeometry as a dict (shortest_edge, crop_height, crop_width, resample)
    sampling: dict  # SamplingConfig.to_dict()
    codec: str = "zstd"

    def identity(self) -> dict:
        """Everything but the codec: a store written with another codec holds the same frames."""
        data = asdict(self)
        data.pop("codec")
        return data


class FrameStore:
    """A frame store on disk: ``create`` or ``open``, then ``write_take`` / ``read_clips``."""

    def __init__(self, path: Path, group):
        self.path, self._group = path, group
        attrs = dict(group.attrs)
        self.views: list[str] = list(attrs["views"])
        self.takes: list[dict] = list(attrs["takes"])
        self.provenance: dict = dict(attrs["provenance"])
        self._arrays: dict = {}

    # ---- creating and opening ----------------------------------------------------------
    @classmethod
    def create(cls, path: Path, spec: FrameStoreSpec, views: list[str], takes: list[Take]):
        """A new, empty store at ``path``: built in a staging folder beside it, then renamed
        into place (a create that fails leaves nothing, one line naming the store)."""
        path = Path(path)
        with store_write_errors(path, "the new frame store"):
            path.parent.mkdir(parents=True, exist_ok=True)
            with staging_folder(path, create=False) as staging:
                cls._create_arrays(staging, spec, views, takes)
                publish_folder(staging, path)
        return cls.open(path, mode="a")

    @staticmethod
    def _create_arrays(path: Path, spec: FrameStoreSpec, views: list[str], takes: list[Take]):
        import zarr

        sampling, geometry = spec.sampling, spec.geometry
        k, t = int(sampling["clips"]), int(sampling["frames"])
        h, w = int(geometry["crop_height"]), int(geometry["crop_width"])
        n, v = len(takes), len(views)
        group = zarr.open_group(str(path), mode="w", zarr_format=3)

        def array(name, shape, chunks, dtype, fill, compressors="auto"):
            group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill,
                               compressors=compressors)  # fmt: skip

        frames_codec = None if spec.codec == "raw" else zarr.codecs.ZstdCodec(level=1)
        array("frames", (n, v, k, t, h, w, 3), (1, 1, k, t, h, w, 3), "uint8", 0, frames_codec)
        array("frame_index", (n, v, k, t), (1, v, k, t), "int32", -1)
        array("timestamp", (n, v, k, t), (1, v, k, t), "float32", float("nan"))
        array("valid", (n, v), (1, v), "bool", False)
        array("view_error", (n, v), (1, v), str, "")
        array("status", (n,), (1,), "int8", STATUS_PENDING)
        group.attrs.update(
            {
                "skill_frames": {"format_version": FORMAT_VERSION},
                "provenance": asdict(spec),
                "views": list(views),
                "takes": [take_record(take) for take in takes],
            }
        )

    @classmethod
    def open(cls, path: Path, mode: str = "r") -> FrameStore:
        import zarr

        if not (Path(path) / "zarr.json").is_file():
            raise StoreError(f"{path}: not a frame store (no zarr.json)")
        group = zarr.open_group(str(path), mode=mode, zarr_format=3)
        version = dict(group.attrs).get("skill_frames", {}).get("format_version")
        if version is None:
            raise StoreError(f"{path}: not a frame store (no skill_frames attribute)")
        if version > FORMAT_VERSION:
            raise StoreError(f"{path}: frame store format {version} is newer than this skill")
        return cls(Path(path), group)

    @classmethod
    def open_or_create(
        cls, path: Path, spec: FrameStoreSpec, views: list[str], takes: list[Take]
    ) -> FrameStore:
        """Resume a store of the same frames and takes, or create it; refuse anything else.
        What killed writers left (zarr's temporary files, staging folders) is removed first:
        the caller holds the --out folder's lock, so no other writer is running."""
        path = Path(path)
        remove_dead_staging(path.parent, path.name)
        if not path.exists():
            return cls.create(path, spec, views, takes)
        store = cls.open(path, mode="a")
        for temp in temp_files(path):
            temp.unlink(missing_ok=True)
        stored = FrameStoreSpec(**store.provenance)
        problems = []
        if stored.identity() != spec.identity():
            problems.append(f"frames were decoded with {stored.identity()}, now {spec.identity()}")
        if store.views != list(views):
            problems.append(f"views {store.views}, now {list(views)}")
        if store.takes != [take_record(take) for take in takes]:
            problems.append("the manifest's takes differ from the store's")
        if problems:
            raise StoreError(
                f"{path}: cannot resume this frame store: {'; '.join(problems)} "
                "(use a new --out, or the same settings)"
            )
        return store

    # ---- reading and writing -----------------------------------------------------------
    def _array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    @property
    def clips(self) -> int:
        return int(self._array("frames").shape[2])

    @property
    def frames_per_clip(self) -> int:
        return int(self._array("frames").shape[3])

    @property
    def crop(self) -> tuple[int, int]:
        """(H, W) of every stored frame."""
        shape = self._array("frames").shape
        return int(shape[4]), int(shape[5])

    def status(self) -> np.ndarray:
        return np.asarray(self._array("status")[:])

    def valid(self) -> np.ndarray:
        return np.asarray(self._array("valid")[:])

    def view_errors(self) -> np.ndarray:
        return np.asarray(self._array("view_error")[:])

    def write_take(self, row: int, take: DecodedTake) -> None:
        """One take's arrays, then its status (the completion record)."""
        g = self._array
        g("status")[row] = np.int8(STATUS_PENDING)
        for v in range(len(self.views)):
            if take.valid[v]:
                g("frames")[row, v] = take.frames[v]
        g("frame_index")[row] = take.frame_index
        g("timestamp")[row] = take.timestamp
        g("valid")[row] = take.valid
        g("view_error")[row] = np.asarray(take.view_error, dtype=object)
        g("status")[row] = np.int8(take.status)

    def read_clips(self, row: int, views: list[int], clips: np.ndarray) -> np.ndarray:
        """Clip ``clips[i]`` of store view ``views[i]`` of take ``row``: ``(len(views), T, H,
        W, 3)`` uint8 (zeros for an invalid view)."""
        frames = self._array("frames")
        return np.stack([frames[row, v, int(k)] for v, k in zip(views, clips, strict=True)])

    def read_take(self, row: int) -> np.ndarray:
        """All clips of every view of take ``row``: ``(V, K, T, H, W, 3)`` uint8."""
        return np.asarray(self._array("frames")[row])


def prefetched(items: Iterable, load: Callable, depth: int = 2) -> Iterator:
    """``load(item)`` for each item, in order, computed up to ``depth`` items ahead in one
    background thread (reading and decompressing the next batches from the frame store while
    this one trains; the training step spends its time in torch kernels, which release the
    GIL). ``depth`` 0: inline."""
    if depth < 1:
        yield from (load(item) for item in items)
        return
    from concurrent.futures import ThreadPoolExecutor

    source = iter(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="skill-prefetch") as pool:
        first = itertools.islice(source, depth)
        pending = collections.deque(pool.submit(load, item) for item in first)
        while pending:
            future = pending.popleft()
            for item in source:  # one more in flight for the one taken out
                pending.append(pool.submit(load, item))
                break
            yield future.result()


def take_record(take: Take) -> dict:
    return {
        "id": take.take_id,
        "label": take.label,
        "scenario": take.scenario,
        "participant": take.participant,
        "split": take.split,
    }


# ---- building it --------------------------------------------------------------------------
@dataclass
class DecodedTake:
    """One take's decoded views, before its write."""

    frames: np.ndarray  # (V, K, T, H, W, 3) uint8
    frame_index: np.ndarray  # (V, K, T) int32
    timestamp: np.ndarray  # (V, K, T) float32
    valid: np.ndarray  # (V,) bool
    view_error: list[str]
    status: int = STATUS_COMPLETE
    waiting: int = 0  # views whose decode job has not come back


@dataclass
class BuildSummary:
    decoded: int = 0
    failed: int = 0
    skipped: int = 0
    failed_views: int = 0


def build_frame_store(
    path: Path,
    spec: FrameStoreSpec,
    views: list[str],
    takes: list[Take],
    *,
    geometry,
    sampling,
    workers: int = 2,
    timeout_s: float = 120.0,
    min_views: int = 1,
    job: Callable | None = None,
    rank: Rank | None = None,
) -> tuple[FrameStore, BuildSummary]:
    """Decode the pending takes into the frame store at ``path`` (created or resumed).

    ``geometry`` is the backbone's ``FrameGeometry``, ``sampling`` a ``SamplingConfig``;
    ``job`` replaces ``decode_view`` (tests). Under torchrun (``rank``) rank 0 creates or
    checks the store, then every rank decodes its share of the pending takes (balanced by
    video bytes, as extract shares them) and writes their chunks, which no other take
    shares; the counts are summed and every rank returns once all takes are written."""
    from skill.pipeline import distributed
    from skill.pipeline.decode.pool import DecodePool
    from skill.pipeline.decode.view import decode_view
    from skill.pipeline.extract import take_cost

    rank = rank or Rank()
    store, pending = _open_coordinated(path, spec, views, takes, rank)
    shares = distributed.balance_by_cost([take_cost(takes[row]) for row in pending], rank.world)
    todo = [pending[i] for i in shares[rank.rank]]
    build = _Build(store, views, takes, geometry, sampling, min_views)
    pool = DecodePool(num_workers=workers, timeout_s=timeout_s,
                      max_outstanding=max(2, 2 * workers), job=job or decode_view)  # fmt: skip
    with task("decoding frames", total=len(todo), unit="take") as shown:
        with pool:
            for (row, v), decoded, error in pool.imap_unordered(build.jobs(todo)):
                build.receive(row, v, decoded, error)
                shown.update(build.written, note=f"{build.summary.failed} failed")
        for row in list(build.open):  # takes without any view in the manifest
            build.finish(row)
        shown.update(build.written)
    summary = build.summary
    counts = (summary.decoded, summary.failed, summary.failed_views)
    # A collective: it returns once every rank has written its takes.
    summary.decoded, summary.failed, summary.failed_views = distributed.sum_over_ranks(rank, counts)
    summary.skipped = len(takes) - len(pending)
    left = np.flatnonzero(store.status() == STATUS_PENDING)
    if len(left):  # never train on fewer takes without saying so
        raise StoreError(
            f"{path}: take {takes[int(left[0])].take_id} and {len(left) - 1} more are still "
            "pending after the build; run the same command again"
        )
    return store, summary


def _open_coordinated(path, spec, views, takes, rank: Rank) -> tuple[FrameStore, list[int]]:
    """Rank 0 creates or checks the store and lists its pending takes (its error raised on
    every rank); the others open it once rank 0 is done and take rank 0's list, not their
    own reading of ``status``, which may already show takes rank 0 has written."""
    from skill.pipeline import distributed

    opened: list[FrameStore] = []

    def pending_takes() -> list[int]:
        opened.append(FrameStore.open_or_create(path, spec, views, takes))
        status = opened[0].status()
        return [r for r in range(len(takes)) if status[r] == STATUS_PENDING]

    pending = distributed.run_on_coordinator(rank, pending_takes, StoreError)
    return opened[0] if opened else FrameStore.open(path, mode="a"), list(pending)


class _Build:
    """The takes between their first decode job and their write."""

    def __init__(self, store, views, takes, geometry, sampling, min_views):
        self.store, self.views, self.takes = store, views, takes
        self.geometry, self.sampling, self.min_views = geometry, sampling, min_views
        self.shape = (len(views), sampling.clips, sampling.frames, geometry.crop_height,
                      geometry.crop_width, 3)  # fmt: skip
        self.open: dict[int, DecodedTake] = {}
        self.summary = BuildSummary()

    @property
    def written(self) -> int:
        """Takes written so far (complete or failed)."""
        return self.summary.decoded + self.summary.failed

    def jobs(self, rows: list[int]) -> Iterator[tuple]:
        """One decode job per (take, view) present in the manifest, drawn lazily."""
        for row in rows:
            take = self.takes[row]
            state = self.open[row] = empty_take(self.shape)
            present = [v for v, view in enumerate(self.views) if take.videos.get(view)]
            state.waiting = len(present)
            if not present:
                self.finish(row)
            for v in present:
                key = f"{take.take_id}/{self.views[v]}"  # extract's sampling key (key_of)
                args = (take.videos[self.views[v]], self.sampling, key, self.geometry)
                yield ((row, v), args)

    def receive(self, row: int, v: int, decoded, error: str | None) -> None:
        state = self.open[row]
        state.waiting -= 1
        if error is not None:
            state.view_error[v] = f"{Path(self.takes[row].videos[self.views[v]]).name}: {error}"
        else:
            state.frames[v] = decoded.frames
            state.frame_index[v] = decoded.indices
            state.timestamp[v] = decoded.timestamps
            state.valid[v] = True
        if state.waiting == 0:
            self.finish(row)

    def finish(self, row: int) -> None:
        """extract's take rule (fewer than min_views decodable views fails it), then the write."""
        state = self.open.pop(row)
        if int(state.valid.sum()) < self.min_views:
            state.status = STATUS_FAILED
        with store_write_errors(self.store.path, f"take {self.takes[row].take_id} (row {row})"):
            self.store.write_take(row, state)
        failed = state.status == STATUS_FAILED
        self.summary.failed += int(failed)
        self.summary.decoded += int(not failed)
        self.summary.failed_views += sum(1 for e in state.view_error if e)


def empty_take(shape: tuple[int, ...]) -> DecodedTake:
    """Every view invalid until decoded: ``shape`` is ``(V, K, T, H, W, 3)``."""
    n_views, clips, frames = shape[:3]
    return DecodedTake(
        frames=np.zeros(shape, dtype=np.uint8),
        frame_index=np.full((n_views, clips, frames), -1, dtype=np.int32),
        timestamp=np.full((n_views, clips, frames), np.nan, dtype=np.float32),
        valid=np.zeros(n_views, dtype=bool),
        view_error=[""] * n_views,
    )
