"""Decoding in worker processes, so that a video that hangs or crashes its decoder costs that
video only, never the run. ``DecodePool`` runs one top-level function (``decode_view`` by
default) in its own processes, one task at a time per worker: a task past its timeout has its
worker SIGKILLed (a hung decoder cannot be interrupted any other way), a worker that dies under
a task has the task reported as a crash, workers are replaced when dead and recycled after a
number of tasks (decord leaks memory), die with their parent, leave Ctrl-C to it, and hold at
most a bounded number of results. Workers are started with ``spawn`` (a forked worker would
inherit the parent's decoder state, threads and locks); jobs and results cross between our own
processes only, so nothing a user supplies is unpickled (docs/decoding.md, "Worker
processes"). The pool is not thread-safe: use it from one thread."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection, wait
from typing import Any

from skill.cache.files import process_alive
from skill.pipeline.decode.registry import preload_decoders
from skill.pipeline.decode.view import decode_view

Result = tuple[Hashable, Any, "str | None"]
"""(job id, the job's return value or None, the error reason or None)."""

START_METHODS: tuple[str, ...] = ("spawn", "forkserver")
# Seconds between the parent's checks when no worker reports; bounds timeout overshoot.
POLL_INTERVAL_S = 0.2
# Seconds a worker asked to stop gets before SIGKILL.
STOP_GRACE_S = 2.0
# Seconds a new worker may take to start (imports, initializer) before it is killed.
STARTUP_TIMEOUT_S = 300.0
# Workers dying before they are ready, in a row, before the pool gives up.
MAX_STARTUP_FAILURES = 3
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass
class PoolStats:
    """Counters of what happened in a pool (for logs and tests)."""

    spawned: int = 0
    """Worker processes started."""
    recycled: int = 0
    """Workers stopped after max_tasks_per_worker tasks."""
    timed_out: int = 0
    """Tasks whose worker was killed for running past the timeout."""
    crashed: int = 0
    """Tasks whose worker died under them."""
    succeeded: int = 0
    """Tasks that returned a value."""
    failed: int = 0
    """Tasks reported with an error reason (timeouts and crashes included)."""


@dataclass(eq=False)
class _Worker:
    """Parent-side record of one worker process."""

    process: Any
    conn: Connection
    spawned_at: float
    ready: bool = False
    """The worker has imported everything and run the initializer."""
    task_id: Hashable | None = None
    started_at: float = 0.0
    tasks_done: int = 0
    busy: bool = False


@dataclass
class _Task:
    job_id: Hashable
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


class DecodePool:
    """Worker processes running ``job`` with a per-task timeout (docs/decoding.md, "Worker
    processes").

    Use as a context manager; ``submit`` + ``results``, or ``imap_unordered`` / ``map_ordered``.
    ``job`` and ``initializer`` must be top-level functions (workers import them by name).
    ``initializer`` runs once in each new worker before it takes tasks, outside any task's
    timeout (the default imports the decoders; pass None for jobs that do not decode).
    """

    def __init__(
        self,
        num_workers: int,
        timeout_s: float,
        max_tasks_per_worker: int = 200,
        job: Callable[..., Any] = decode_view,
        start_method: str = "spawn",
        max_outstanding: int | None = None,
        initializer: Callable[[], Any] | None = preload_decoders,
    ):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if max_tasks_per_worker < 1:
            raise ValueError(f"max_tasks_per_worker must be >= 1, got {max_tasks_per_worker}")
        if start_method not in START_METHODS:
            raise ValueError(f"start_method {start_method!r} is not one of {START_METHODS}")
        self.num_workers, self.timeout_s = num_workers, float(timeout_s)
        self.max_tasks_per_worker, self.job = max_tasks_per_worker, job
        self.initializer = initializer
        self._startup_failures = 0
        self.max_outstanding = max_outstanding or max(2, 2 * num_workers)
        self.stats = PoolStats()
        self._context = multiprocessing.get_context(start_method)
        self._workers: list[_Worker] = []
        self._pending: deque[_Task] = deque()
        self._early: list[Result] = []  # results collected by start(), yielded next
        self._closed = False

    # -- public API -------------------------------------------------------------------

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def submit(self, job_id: Hashable, *args: Any, **kwargs: Any) -> None:
        """Queue ``job(*args, **kwargs)``; its result comes out of ``results()``."""
        if self._closed:
            raise RuntimeError("DecodePool is closed")
        self._pending.append(_Task(job_id, args, kwargs))

    def results(self) -> Iterator[Result]:
        """Results of all submitted jobs, as they complete (any order)."""
        while self._outstanding():
            yield from self._step()

    def imap_unordered(self, jobs: Iterable[tuple[Any, ...]]) -> Iterator[Result]:
        """Run ``(job_id, args)`` or ``(job_id, args, kwargs)`` items, drawn lazily; results
        as they complete. At most ``max_outstanding`` jobs are in the pool at a time."""
        yield from self._run(jobs)

    def map_ordered(self, jobs: Iterable[tuple[Any, ...]]) -> Iterator[Result]:
        """Like ``imap_unordered`` but results in the order of ``jobs``. A slow job holds
        back later results, never more than ``max_outstanding`` of them."""
        order: deque[Hashable] = deque()
        done: dict[Hashable, Result] = {}

        def remember(item_ids: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
            for item in item_ids:
                order.append(item[0])
                yield item

        for result in self._run(remember(jobs), held=lambda: len(done)):
            done[result[0]] = result
            while order and order[0] in done:
                yield done.pop(order.popleft())

    def start(self) -> None:
        """Start all workers now and wait until they are ready (otherwise they start on the
        first call to ``results`` / ``imap_unordered`` / ``map_ordered``); queued jobs are
        handed out, their results come out of the next ``results`` call."""
        if self._closed:
            raise RuntimeError("DecodePool is closed")
        while len(self._workers) < self.num_workers:
            self._spawn()
        while any(not w.ready for w in self._workers):
            self._early.extend(self._advance())
        self._dispatch()

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers."""
        return [w.process.pid for w in self._workers if w.process.is_alive()]

    def close(self) -> None:
        """Stop all workers (busy ones are killed) and drop queued jobs."""
        self._closed = True
        self._pending.clear()
        for worker in self._workers:
            if worker.busy:
                _kill(worker)
            else:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(STOP_GRACE_S)
            if worker.process.is_alive():
                _kill(worker)
            worker.conn.close()
        self._workers.clear()

    # -- scheduling -------------------------------------------------------------------

    def _outstanding(self) -> int:
        return len(self._early) + len(self._pending) + sum(w.busy for w in self._workers)

    def _run(
        self, jobs: Iterable[tuple[Any, ...]], held: Callable[[], int] = lambda: 0
    ) -> Iterator[Result]:
        """Feed jobs lazily, keeping pending + running + held-back results bounded."""
        source = iter(jobs)
        exhausted = False
        while True:
            while not exhausted and self._outstanding() + held() < self.max_outstanding:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                job_id, args, kwargs = _unpack_job(item)
                self.submit(job_id, *args, **kwargs)
            if not self._outstanding():
                return
            yield from self._step()

    def _step(self) -> list[Result]:
        """Make progress: start tasks, wait a little, collect finished/killed tasks."""
        if self._early:
            early, self._early = self._early, []
            return early
        if self.num_workers == 0:
            return [self._run_inline(self._pending.popleft())]
        return self._advance()

    def _advance(self) -> list[Result]:
        """Hand out tasks, wait for replies (at most until the nearest deadline), kill
        overdue and stuck workers; returns the tasks that finished."""
        self._dispatch()
        finished = self._collect(self._wait_time())
        finished += self._kill_overdue()
        self._kill_stuck_starting()
        self._dispatch()
        return finished

    def _run_inline(self, task: _Task) -> Result:
        """Inline mode: the job in this process, its exception turned into a reason."""
        try:
            value = self.job(*task.args, **task.kwargs)
        except Exception as error:
            return self._record((task.job_id, None, _reason_of(error)))
        return self._record((task.job_id, value, None))

    def _dispatch(self) -> None:
        """Hand queued tasks to idle workers, starting workers up to num_workers."""
        while self._pending:
            worker = self._idle_worker()
            if worker is None:
                return
            task = self._pending.popleft()
            try:
                worker.conn.send((task.job_id, task.args, task.kwargs))
            except (OSError, ValueError):  # the worker died while idle: replace it
                self._pending.appendleft(task)
                self._retire(worker)
                continue
            worker.busy, worker.task_id, worker.started_at = True, task.job_id, time.monotonic()

    def _idle_worker(self) -> _Worker | None:
        """A ready, idle worker; starts missing workers (they become ready later)."""
        while len(self._workers) < self.num_workers:
            self._spawn()
        for worker in self._workers:
            if worker.ready and not worker.busy:
                return worker
        return None

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_worker_main,
            args=(child_end, self.job, self.initializer, os.getpid()),
            name=f"skill-decode-{self.stats.spawned}",
            daemon=True,
        )
        # Started before the block: starting it would unblock SIGINT inside it.
        resource_tracker.ensure_running()
        with _born_ignoring_interrupts():
            process.start()
        child_end.close()
        self.stats.spawned += 1
        worker = _Worker(process=process, conn=parent_end, spawned_at=time.monotonic())
        self._workers.append(worker)
        return worker

    def _wait_time(self) -> float:
        """Until the nearest task deadline, at most POLL_INTERVAL_S."""
        now = time.monotonic()
        deadlines = [w.started_at + self.timeout_s - now for w in self._workers if w.busy]
        return max(0.0, min([POLL_INTERVAL_S, *deadlines]))

    def _collect(self, wait_s: float) -> list[Result]:
        """Results sent by workers, and tasks of workers that died."""
        watched: dict[Any, _Worker] = {}
        for worker in self._workers:
            watched[worker.conn] = worker
            watched[worker.process.sentinel] = worker
        finished: list[Result] = []
        for ready in wait(list(watched), timeout=wait_s):
            worker = watched[ready]
            if worker not in self._workers:
                continue  # already retired in this round
            if worker.conn.poll():
                finished += self._receive(worker)
            elif not worker.process.is_alive() or ready is worker.process.sentinel:
                finished += self._bury(worker)
        return finished

    def _receive(self, worker: _Worker) -> list[Result]:
        """One reply from a worker; recycle the worker when it has done enough tasks."""
        try:
            status, job_id, payload = worker.conn.recv()
        except (EOFError, OSError):
            return self._bury(worker)
        if status == "ready":
            worker.ready, self._startup_failures = True, 0
            return []
        worker.busy, worker.task_id = False, None
        worker.tasks_done += 1
        if worker.tasks_done >= self.max_tasks_per_worker:
            self.stats.recycled += 1
            with contextlib.suppress(OSError):
                worker.conn.send(None)
            self._retire(worker)
        if status == "ok":
            return [self._record((job_id, payload, None))]
        return [self._record((job_id, None, payload))]

    def _bury(self, worker: _Worker) -> list[Result]:
        """A worker died: report its task as a crash (if it had one)."""
        task_id, busy = worker.task_id, worker.busy
        worker.process.join(STOP_GRACE_S)
        self._retire(worker)
        if not worker.ready:
            self._startup_failed(_crash_reason(worker.process.exitcode))
        if not busy:
            return []
        self.stats.crashed += 1
        return [self._record((task_id, None, _crash_reason(worker.process.exitcode)))]

    def _kill_overdue(self) -> list[Result]:
        """SIGKILL workers whose task ran past the timeout."""
        now = time.monotonic()
        finished: list[Result] = []
        for worker in list(self._workers):
            if worker.busy and now - worker.started_at > self.timeout_s:
                if worker.conn.poll():  # it finished just in time
                    finished += self._receive(worker)
                    continue
                _kill(worker)
                self._retire(worker)
                self.stats.timed_out += 1
                reason = f"timed out after {self.timeout_s:g} s"
                finished.append(self._record((worker.task_id, None, reason)))
        return finished

    def _kill_stuck_starting(self) -> None:
        """Workers that do not become ready in STARTUP_TIMEOUT_S are killed."""
        now = time.monotonic()
        for worker in list(self._workers):
            if not worker.ready and now - worker.spawned_at > STARTUP_TIMEOUT_S:
                _kill(worker)
                self._retire(worker)
                self._startup_failed(f"not ready after {STARTUP_TIMEOUT_S:g} s")

    def _startup_failed(self, reason: str) -> None:
        """A worker died or hung before taking tasks; several in a row stop the pool, since
        respawning would loop forever (e.g. the job's module cannot be imported)."""
        self._startup_failures += 1
        if self._startup_failures >= MAX_STARTUP_FAILURES:
            self.close()
            raise RuntimeError(
                f"decode workers fail to start ({self._startup_failures} in a row, last: "
                f"{reason}); run with num_workers=0 to see the error"
            )

    def _retire(self, worker: _Worker) -> None:
        """Forget a worker (stopped, dead or killed); a new one starts when needed."""
        if worker in self._workers:
            self._workers.remove(worker)
        worker.process.join(STOP_GRACE_S if worker.process.is_alive() else 0)
        if worker.process.is_alive():
            _kill(worker)
        worker.conn.close()

    def _record(self, result: Result) -> Result:
        if result[2] is None:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
        return result


def _unpack_job(item: tuple[Any, ...]) -> tuple[Hashable, tuple[Any, ...], dict[str, Any]]:
    """(job_id, args) or (job_id, args, kwargs)."""
    if len(item) == 2:
        return item[0], tuple(item[1]), {}
    if len(item) == 3:
        return item[0], tuple(item[1]), dict(item[2])
    raise ValueError(f"a job is (job_id, args) or (job_id, args, kwargs), got {item!r}")


@contextlib.contextmanager
def _born_ignoring_interrupts() -> Iterator[None]:
    """Processes started inside the block begin with SIGINT ignored (a disposition that
    survives exec, and that Python keeps at start-up), so that a Ctrl-C reaching the whole
    process group while they import is not a traceback in each. This process keeps its own
    handler: SIGINT is blocked meanwhile, so one arriving then is delivered after the block,
    not lost. Only the main thread can change signal handling; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.SIG_DFL if handler is None else handler)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _kill(worker: _Worker) -> None:
    """SIGKILL and reap."""
    with contextlib.suppress(OSError):
        worker.process.kill()
    worker.process.join(STOP_GRACE_S)


def _crash_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        return f"decoder crashed (killed by signal {name})"
    return f"decoder crashed (exit code {exitcode})"


def _reason_of(error: BaseException) -> str:
    """A job's exception as a one-line reason: DecodeError's own reason, else type: text."""
    reason = getattr(error, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    return f"{type(error).__name__}: {error}"


# ----------------------------------------------------------------------------- worker side


def _worker_main(
    conn: Connection,
    job: Callable[..., Any],
    initializer: Callable[[], Any] | None,
    parent_pid: int,
) -> None:
    """Worker loop: say ("ready", None, None), then receive (job_id, args, kwargs) and reply
    (status, job_id, payload) with status "ok" or "error".

    ``None`` (or a closed pipe) stops the worker.
    """
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already ignored from birth, see _spawn
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while it was born
    if initializer is not None:
        initializer()
    conn.send(("ready", None, None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job_id, args, kwargs = message
        try:
            reply = ("ok", job_id, job(*args, **kwargs))
        except Exception as error:
            reply = ("error", job_id, _reason_of(error))
        try:
            conn.send(reply)
        except (OSError, EOFError):
            return
        except Exception as error:  # the result could not be pickled
            conn.send(("error", job_id, f"result could not be sent back: {_reason_of(error)}"))


def _die_with_parent(parent_pid: int) -> None:
    """Exit when the pool's process dies: PDEATHSIG on Linux, plus a polling thread."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    initial_ppid = os.getppid()
    if not process_alive(parent_pid):
        os._exit(1)  # the parent died before prctl took effect
    watchdog = threading.Thread(
        target=_watch_parent, args=(parent_pid, initial_ppid), daemon=True, name="parent-watch"
    )
    watchdog.start()


def _watch_parent(parent_pid: int, initial_ppid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != initial_ppid or not process_alive(parent_pid):
            os._exit(1)
