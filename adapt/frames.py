"""The frame store: the sampled clips of every (take, view) decoded once, for ``skill adapt``.

SkillFormer decodes every video again in every epoch; here the K windows of each (take, view)
are decoded once into ``<out>/frames.zarr``, uint8 frames at the backbone's crop, zstd by
default. It is a per-take store (`cache.per_take`) like the token store, written by the same
decode loop (`pipeline.extract_loop`) with the identity as its encode step, so its sampling
keys, crop, failure rules and resumption are extract's, and ``skill extract --adapter``
later sees exactly the same frames. Each epoch of training draws one of the K windows per
(take, view) with a seeded generator (SkillFormer's one random window, from a fixed,
recorded pool). A write that fails is one line naming the store and the take; the takes
written before are kept and the same command resumes. Its layout is in docs/store.md ("The
frame store"); the codec's figures are in BENCHMARKS.md ("Measurements behind the code").
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from skill.cache.errors import StoreError
from skill.cache.per_take import (
    STATUS_COMPLETE,
    STATUS_PENDING,
    create_aside,
    rows_to_write,
    write_status_last,
)
from skill.cache.recovery import remove_leftovers, store_write_errors
from skill.pipeline.distributed import Rank
from skill.pipeline.takes import Take

FORMAT_VERSION = 2
"""2: the store records its task; format 1 did not, and is refused."""
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


@dataclass
class FrameTake:
    """One take as the frame store writes it, filled in by the decode loop as a token store's
    `TakeResult` is (``padded`` and ``view_note`` are not stored here)."""

    frames: np.ndarray  # (V, K, T, H, W, 3) uint8
    frame_index: np.ndarray  # (V, K, T) int32
    timestamp: np.ndarray  # (V, K, T) float32
    valid: np.ndarray  # (V,) bool
    view_error: list[str]
    padded: np.ndarray  # (V,)
    view_note: list[str]
    status: int = STATUS_COMPLETE

    @property
    def outputs(self) -> np.ndarray:
        """What the clips gave, as the decode loop fills it in: their frames."""
        return self.frames


class FrameStore:
    """A frame store on disk: ``create`` or ``open``, then ``write_take`` / ``read_clips``."""

    def __init__(self, path: Path, group):
        self.path, self._group = path, group
        attrs = dict(group.attrs)
        self.views: list[str] = list(attrs["views"])
        self.takes: list[dict] = list(attrs["takes"])
        self.task: dict = dict(attrs["task"])
        """The task of the manifest the frames came from, as a token store records it."""
        self.provenance: dict = dict(attrs["provenance"])
        self._arrays: dict = {}

    # ---- creating and opening ----------------------------------------------------------
    @classmethod
    def create(
        cls, path: Path, spec: FrameStoreSpec, views: list[str], takes: list[Take], task: dict
    ) -> FrameStore:
        """A new, empty store at ``path``, created aside and renamed into place (a create
        that fails leaves nothing, one line naming the store)."""
        path = Path(path)
        with store_write_errors(path, "the new frame store"):
            path.parent.mkdir(parents=True, exist_ok=True)
            create_aside(path, lambda staging: _create_arrays(staging, spec, views, takes, task))
        return cls.open(path, mode="a")

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
        if version < FORMAT_VERSION:
            raise StoreError(
                f"{path}: frame store format {version} was written by an older skill and "
                "records no task; remove it to decode the frames again, or use a new --out"
            )
        return cls(Path(path), group)

    @classmethod
    def open_or_create(
        cls, path: Path, spec: FrameStoreSpec, views: list[str], takes: list[Take], task: dict
    ) -> FrameStore:
        """Resume a store of the same frames, takes and task, or create it; refuse anything
        else. What killed writers left (zarr's temporary files, staging folders) is removed
        first: the caller holds the --out folder's lock, so no other writer is running."""
        path = Path(path)
        remove_leftovers(path, ())
        if not path.exists():
            return cls.create(path, spec, views, takes, task)
        store = cls.open(path, mode="a")
        problems = store.resume_problems(spec, views, takes, task)
        if problems:
            raise StoreError(
                f"{path}: cannot resume this frame store: {'; '.join(problems)} "
                "(use a new --out, or the same settings)"
            )
        return store

    def resume_problems(
        self, spec: FrameStoreSpec, views: list[str], takes: list[Take], task: dict
    ) -> list[str]:
        """What differs between this store and the one these settings would write."""
        stored = FrameStoreSpec(**self.provenance)
        problems = []
        if stored.identity() != spec.identity():
            problems.append(f"frames were decoded with {stored.identity()}, now {spec.identity()}")
        if self.views != list(views):
            problems.append(f"views {self.views}, now {list(views)}")
        if self.takes != [take_record(take) for take in takes]:
            problems.append("the manifest's takes differ from the store's")
        if (self.task["name"], self.task["schema"]) != (task["name"], task["schema"]):
            problems.append(f"task {self.task['name']} with {self.task['schema']}, now "
                            f"{task['name']} with {task['schema']}")  # fmt: skip
        return problems

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

    def empty_take(self) -> FrameTake:
        """A take of this store's shape with every view invalid, for the decode loop to fill."""
        n_views, clips, frames = len(self.views), self.clips, self.frames_per_clip
        return FrameTake(
            frames=np.zeros((n_views, clips, frames, *self.crop, 3), dtype=np.uint8),
            frame_index=np.full((n_views, clips, frames), -1, dtype=np.int32),
            timestamp=np.full((n_views, clips, frames), np.nan, dtype=np.float32),
            valid=np.zeros(n_views, dtype=bool),
            view_error=[""] * n_views,
            padded=np.zeros(n_views, dtype=np.int16),
            view_note=[""] * n_views,
        )

    def write_take(self, row: int, take: FrameTake) -> None:
        """One take's arrays, then its status (`cache.per_take.write_status_last`); an invalid
        view is written as the fill value, which stores no chunk."""
        valid = np.asarray(take.valid, dtype=bool)
        frames = np.where(valid[:, None, None, None, None, None], take.frames, 0)
        arrays = [("frames", frames), ("frame_index", take.frame_index),
                  ("timestamp", take.timestamp), ("valid", valid),
                  ("view_error", np.asarray(take.view_error, dtype=object))]  # fmt: skip
        write_status_last(self._array, row, arrays, np.int8(take.status))

    def read_clips(self, row: int, views: list[int], clips: np.ndarray) -> np.ndarray:
        """Clip ``clips[i]`` of store view ``views[i]`` of take ``row``: ``(len(views), T, H,
        W, 3)`` uint8 (zeros for an invalid view)."""
        frames = self._array("frames")
        return np.stack([frames[row, v, int(k)] for v, k in zip(views, clips, strict=True)])

    def read_take(self, row: int) -> np.ndarray:
        """All clips of every view of take ``row``: ``(V, K, T, H, W, 3)`` uint8."""
        return np.asarray(self._array("frames")[row])


def _create_arrays(
    path: Path, spec: FrameStoreSpec, views: list[str], takes: list[Take], task: dict
) -> None:
    """The frame store's arrays and attributes, empty, in the folder ``path``."""
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
            "task": task,
            "takes": [take_record(take) for take in takes],
        }
    )


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
    """A take as the frame store's take table holds it: the token store's row of it
    (`pipeline.extract.take_row`) without the dataset's own id."""
    from skill.pipeline.extract import take_row

    row = take_row(take)
    return {"id": row.take_id, "label": row.target, "scenario": row.scenario,
            "participant": row.participant, "split": row.split}  # fmt: skip


# ---- building it --------------------------------------------------------------------------
@dataclass
class FrameBuild:
    """What one build of the frame store did (under torchrun: all ranks together)."""

    completed: int = 0
    failed: int = 0
    skipped: int = 0
    failed_views: int = 0

    def record(self) -> dict:
        """The counts as a run's metrics record them (``frame_store``)."""
        return {"decoded": self.completed, "failed": self.failed, "skipped": self.skipped,
                "failed_views": self.failed_views}  # fmt: skip


def build_frame_store(
    path: Path,
    cfg,
    views: list[str],
    takes: list[Take],
    *,
    backbone: str,
    geometry,
    task: dict,
    codec: str = "zstd",
    rank: Rank | None = None,
) -> tuple[FrameStore, FrameBuild]:
    """Decode the pending takes into the frame store at ``path`` (created or resumed), through
    the decode loop of ``skill extract`` with the identity as its encode step.

    ``cfg`` is an `ExtractConfig`: how to decode (sampling, workers, timeout, decoders, the
    take rule's --min-views); ``backbone`` and ``geometry`` (its `FrameGeometry`) name what
    the frames are cropped for, ``task`` the manifest's (`tasks.task_record`). Under torchrun
    (``rank``) rank 0 creates or checks the store and lists its pending takes, then every
    rank decodes its share (balanced by video bytes, as extract shares them) and writes their
    chunks, which no other take shares; the counts are summed and every rank returns once all
    takes are written."""
    from skill.pipeline.extract import write_pending
    from skill.pipeline.extract_loop import KeepFrames

    rank = rank or Rank()
    spec = FrameStoreSpec(backbone, asdict(geometry), cfg.sampling.to_dict(), codec)
    store, pending = _open_coordinated(path, spec, views, takes, task, rank)
    built = FrameBuild(skipped=len(takes) - len(pending))
    work = [(row, takes[row]) for row in pending]
    write_pending(cfg, store, KeepFrames(geometry), work, rank, built, what="decoding frames")
    left = np.flatnonzero(store.status() == STATUS_PENDING)
    if len(left):  # never train on fewer takes without saying so
        raise StoreError(
            f"{path}: take {takes[int(left[0])].take_id} and {len(left) - 1} more are still "
            "pending after the build; run the same command again"
        )
    return store, built


def _open_coordinated(path, spec, views, takes, task, rank: Rank) -> tuple[FrameStore, list[int]]:
    """Rank 0 creates or checks the store and lists its pending takes (its error raised on
    every rank); the others open it once rank 0 is done and take rank 0's list, not their
    own reading of ``status``, which may already show takes rank 0 has written."""
    from skill.pipeline import distributed

    opened: list[FrameStore] = []

    def pending_takes() -> list[int]:
        opened.append(FrameStore.open_or_create(path, spec, views, takes, task))
        return rows_to_write(opened[0].status(), range(len(takes)))

    pending = distributed.run_on_coordinator(rank, pending_takes, StoreError)
    return opened[0] if opened else FrameStore.open(path, mode="a"), list(pending)
