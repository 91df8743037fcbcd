"""The decode loop of every per-take store: decode jobs in, clips batched through an encode
step, takes written out.

Stage one's encode step is the backbone (`BackboneEncoder`: clips in, float16 tokens out, into
a token store); `skill adapt`'s is the identity (`KeepFrames`: each clip kept as its uint8
frames, into its frame store). Everything else is one loop: the sampling keys, the decode
jobs and their failures, the take rule, the write.

Decoding runs in worker processes while this process encodes, so the two overlap. Memory is
bounded: the pool holds a few decode jobs at a time, and a take's frames live only until its
clips are encoded.

A take is written once all its views are decoded (or failed) and all its clips encoded, in
one `write_take` of its store, whose completion record (`status`) goes last
(`cache.per_take`). Ctrl-C / SIGTERM arriving during that write are held until it ends, so an
interrupt never cuts a take in half (SIGKILL can: the take then stays pending and is written
again by the next run).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from skill.cache.per_take import STATUS_COMPLETE, take_status
from skill.cache.recovery import store_write_errors
from skill.pipeline.sampling import clip_bounds
from skill.pipeline.takes import Take
from skill.progress import Task, task


class ClipEncoder(Protocol):
    """The encode step: what becomes of each decoded clip before its take is written."""

    geometry: Any
    """The frames it takes (`pipeline.decode.geometry.FrameGeometry`): what decoding gives."""

    def encode(self, clips: list[np.ndarray]) -> np.ndarray:
        """``B`` clips ``(T, H, W, 3)`` uint8 -> ``(B, ...)``, one output per clip."""
        ...

    def problem(self, output: np.ndarray) -> str | None:
        """Why one clip's output must not be stored (its view is then failed), or None."""
        ...


class BackboneEncoder:
    """Stage one's encode step: the backbone's float16 tokens of each clip."""

    def __init__(self, backbone):
        self.backbone, self.geometry = backbone, backbone.geometry

    def encode(self, clips: list[np.ndarray]) -> np.ndarray:
        """(B, T, H, W, 3) uint8 clips -> (B, N, D) float16 tokens (values beyond float16's
        range become Inf, and fail their view like NaN)."""
        import torch

        stacked = torch.from_numpy(np.stack(clips))  # (B, T, H, W, 3) uint8
        with torch.inference_mode():
            tokens = self.backbone.encode(stacked)  # (B, N, D) float32
        return tokens.float().cpu().numpy().astype(np.float16)

    @staticmethod
    def problem(tokens: np.ndarray) -> str | None:
        return None if np.isfinite(tokens).all() else "the backbone gave NaN or Inf tokens"


class KeepFrames:
    """`skill adapt`'s encode step, the identity: each clip kept as its frames."""

    def __init__(self, geometry):
        self.geometry = geometry

    @staticmethod
    def encode(clips: list[np.ndarray]) -> np.ndarray:
        return np.stack(clips)  # (B, T, H, W, 3) uint8

    @staticmethod
    def problem(frames: np.ndarray) -> str | None:
        return None


@dataclass
class _OpenTake:
    """A take between its first decode job and its write."""

    row: int
    take: Take
    result: Any  # the store's record of one take (`empty_take`), filled in as jobs come back
    views_waiting: set[int] = field(default_factory=set)
    clips_waiting: int = 0

    @property
    def finished(self) -> bool:
        return not self.views_waiting and self.clips_waiting == 0


class ExtractLoop:
    """Runs one rank's share of takes into a per-take store: see the module docstring.

    ``cfg`` is an `ExtractConfig` (workers, timeout, decoders, sampling, batch size, the take
    rule's --min-views); ``store`` the per-take store written (``views``, ``path``,
    ``empty_take()``, ``write_take(row, take)``); ``encoder`` the encode step; ``summary``
    counts the takes written (``completed``, ``failed``, ``failed_views``); ``what`` names
    the step the user sees."""

    decode_job: Callable | None = None
    """The function decode workers run per (take, view), a top-level function; None means
    `pipeline.decode.view.decode_view`. Tests replace it to simulate a decoder that hangs."""

    def __init__(self, cfg, store, encoder: ClipEncoder, summary, progress=None, missing=None,
                 what: str = "extracting"):  # fmt: skip
        self.cfg, self.store, self.encoder = cfg, store, encoder
        # (take, view) -> reason of video files known to be missing (extract --skip-missing):
        # failed views that are never sent to a decoder
        self.missing: dict[tuple[str, str], str] = dict(missing or {})
        self.summary, self.progress, self.what = summary, progress, what
        self.views = list(store.views)
        self.sampling = cfg.sampling
        self.open: dict[int, _OpenTake] = {}
        # (row, view, clip, frames (T, H, W, 3) uint8) waiting for an encode batch
        self.clip_queue: deque[tuple[int, int, int, np.ndarray]] = deque()
        self.done = 0
        self.step: Task | None = None  # the progress the user sees (skill.progress)

    def run(self, work: list[tuple[int, Take]]) -> None:
        from skill.pipeline.decode.pool import DecodePool
        from skill.pipeline.decode.view import decode_view

        pool = DecodePool(
            num_workers=self.cfg.workers,
            timeout_s=self.cfg.timeout_s,
            max_outstanding=max(2, 2 * self.cfg.workers),
            job=type(self).decode_job or decode_view,
        )
        with task(self.what, total=len(work), unit="take") as self.step, pool:
            self._report(len(work))
            for job_id, decoded, error in pool.imap_unordered(self._decode_jobs(work)):
                self._receive(job_id, decoded, error)
                self._encode_ready(flush=False)
                self._write_finished(len(work))
            self._encode_ready(flush=True)
            self._write_finished(len(work))  # takes whose views were all missing or failed

    # ---- decode side ---------------------------------------------------------------------
    def _decode_jobs(self, work: list[tuple[int, Take]]) -> Iterator[tuple]:
        """Decode jobs, opening takes lazily: the pool draws as many as it can hold."""
        for row, take in work:
            state = _OpenTake(row=row, take=take, result=self.store.empty_take())
            result = state.result
            self.open[row] = state
            for v, view in enumerate(self.views):
                path = take.videos.get(view)
                if not path:  # a view missing from the manifest is masked, not a failure
                    continue
                missing = self.missing.get((take.take_id, view))
                if missing:
                    result.view_error[v] = missing
                else:
                    state.views_waiting.add(v)
            for v in sorted(state.views_waiting):
                key = key_of(take, self.views[v])
                path = take.videos[self.views[v]]
                args = (path, self.sampling, key, self.encoder.geometry)
                yield ((row, v), args, self.cfg.decode_options)

    def _receive(self, job_id, decoded, error: str | None) -> None:
        row, v = job_id
        state = self.open[row]
        state.views_waiting.discard(v)
        if error is not None:
            name = Path(state.take.videos[self.views[v]] or "").name
            state.result.view_error[v] = f"{name}: {error}"
            return
        result = state.result
        result.valid[v] = True
        clips = len(decoded.indices)  # K; stride sampling: the clips that fit (the rest absent)
        result.frame_index[v, :clips] = decoded.indices
        result.timestamp[v, :clips] = decoded.timestamps
        if getattr(result, "clip_time", None) is not None:  # adapt's frame store keeps none
            result.clip_time[v, :clips] = clip_bounds(decoded.timestamps, decoded.info.fps)
        result.padded[v] = decoded.padded
        result.view_note[v] = decoded.note
        for k in range(clips):
            self.clip_queue.append((row, v, k, decoded.frames[k]))
            state.clips_waiting += 1

    # ---- encode side ---------------------------------------------------------------------
    def _encode_ready(self, flush: bool) -> None:
        batch_size = self.cfg.batch_size
        while len(self.clip_queue) >= batch_size or (flush and self.clip_queue):
            batch = [
                self.clip_queue.popleft() for _ in range(min(batch_size, len(self.clip_queue)))
            ]
            outputs = self._encode([clip for *_, clip in batch])
            for (row, v, k, _), output in zip(batch, outputs, strict=True):
                state = self.open[row]
                state.result.outputs[v, k] = output
                state.clips_waiting -= 1
                problem = self.encoder.problem(output)
                if problem:
                    self._fail_view(state, v, f"{problem} (clip {k})")

    def _fail_view(self, state: _OpenTake, v: int, reason: str) -> None:
        """Mask view v of an open take with its reason: its outputs are never written."""
        if state.result.valid[v]:
            name = Path(state.take.videos[self.views[v]] or "").name
            state.result.valid[v] = False
            state.result.view_error[v] = f"{name}: {reason}"

    def _encode(self, clips: list[np.ndarray]) -> np.ndarray:
        """The encode step of one batch of clips (`ClipEncoder.encode`)."""
        return self.encoder.encode(clips)

    # ---- store side ----------------------------------------------------------------------
    def _write_finished(self, total: int) -> None:
        for row in [row for row, state in self.open.items() if state.finished]:
            state = self.open.pop(row)
            failed = self._decide_status(state.result)
            self._write(state)
            # Counted once written: the summary never claims a take the store lacks.
            self.summary.failed += int(failed)
            self.summary.completed += int(not failed)
            self.summary.failed_views += sum(1 for e in state.result.view_error if e)
            self.done += 1
            self._report(total)

    def _decide_status(self, result) -> bool:
        """The take rule (`cache.per_take.take_status`, with --min-views); True for a take
        that failed."""
        result.status = take_status(result.valid, self.cfg.min_views)
        return result.status != STATUS_COMPLETE

    def _write(self, state: _OpenTake) -> None:
        what = f"take {state.take.take_id} (row {state.row})"
        with store_write_errors(self.store.path, what), interrupts_held():
            self.store.write_take(state.row, state.result)

    def _report(self, total: int) -> None:
        if self.step is not None:
            self.step.update(self.done, note=f"{self.summary.failed} failed")
        if self.progress is not None:
            self.progress(self.done, total, self.summary.failed)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """SIGINT and SIGTERM arriving inside the block raise KeyboardInterrupt when it ends; a
    second one raises at once (the user insists, e.g. a write stuck on a dead network disk).
    Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum, frame):
        if received:
            raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    if received:
        raise KeyboardInterrupt(f"stopped by signal {signal.Signals(received[0]).name}")


# ---- one take ------------------------------------------------------------------------------
def key_of(take: Take, view: str) -> str:
    """Sampling key: the same take and view always get the same frames."""
    return f"{take.take_id}/{view}"
