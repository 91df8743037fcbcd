"""Run `skill` with observable events, stopping itself at a chosen one: kill moments for the
soak and the two-writers test that follow what the process did, never the clock.

    python -m tests.kill_points EVENTS_FILE STOP_AT -- <skill arguments>

Every event is appended to EVENTS_FILE as `<name> <count>` the moment it happens. When event
STOP_AT (`name:count`, e.g. `chunk:7`; `none` never stops) happens, the process sends itself
SIGSTOP: it is frozen exactly there, and the test, which sees it stopped (`stopped_or_exited`),
kills it with SIGKILL at that moment. Decode workers are not frozen: they must notice their
parent's death by themselves.

Events (in the main process, which is the only one that writes the store):
- `import`: the command's modules (`skill.cli`) begin to load, inside the entry point.
- `manifest`, `backbone`, `store`: start-up steps done (manifest read, backbone loaded, store
  open with the writer lock held and the takes registered).
- `spawn`: a decode worker process was started (it is still loading its modules).
- `encode`: a batch of clips went through the backbone (tokens not written yet).
- `chunk`: one token chunk of a take was written (a take's write is VIEWS of these, then its
  small arrays, then its status).
- `take`: a take's completion record (`status` complete or failed) was written.
- `relayout`: one array's new chunks were staged during a pack or unpack, before the swap.

This is test instrumentation: it wraps functions from outside, nothing in the package knows.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

_counts: Counter[str] = Counter()
_events_file: Path | None = None
_stop_at: tuple[str, int] | None = None


def fire(event: str) -> None:
    """Record `event`; freeze the process if it is the chosen one."""
    _counts[event] += 1
    count = _counts[event]
    if _events_file is not None:
        with open(_events_file, "a") as out:
            out.write(f"{event} {count}\n")
    if _stop_at == (event, count):
        os.kill(os.getpid(), signal.SIGSTOP)


def _after(owner, name: str, event: str) -> None:
    """Wrap owner.name so that `event` fires after each call returns."""
    original = getattr(owner, name)

    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        fire(event)
        return result

    setattr(owner, name, wrapped)


class _FiringArray:
    """A zarr array whose item writes fire an event (all else passes through)."""

    def __init__(self, array, on_write):
        self._array, self._on_write = array, on_write

    def __setitem__(self, key, value) -> None:
        self._array[key] = value
        self._on_write(value)

    def __getitem__(self, key):
        return self._array[key]

    def __getattr__(self, name):
        return getattr(self._array, name)


def _status_written(value) -> None:
    import numpy as np

    from skill.cache.store import STATUS_PENDING

    if (np.asarray(value) != STATUS_PENDING).any():  # the completion record, not its withdrawal
        fire("take")


class _ImportEvent:
    """A meta path finder that fires `event` when `module` begins to load (and finds
    nothing itself: the import goes on as usual)."""

    def __init__(self, module: str, event: str):
        self.module, self.event = module, event

    def find_spec(self, name, path=None, target=None):
        if name == self.module:
            fire(self.event)
        return None


def install() -> None:
    """Wrap the functions whose end is an event (see the module docstring)."""
    from skill.cache import layout
    from skill.cache.store import TokenStore
    from skill.pipeline import extract, manifest
    from skill.pipeline.decode.pool import DecodePool
    from skill.pipeline.extract_loop import ExtractLoop

    _after(manifest, "read_takes", "manifest")
    _after(extract, "_load_backbone", "backbone")
    _after(extract._CoordinatedStore, "__enter__", "store")
    _after(ExtractLoop, "_encode", "encode")
    _after(layout, "_copy_data", "relayout")
    _after(DecodePool, "_spawn", "spawn")
    sys.meta_path.insert(0, _ImportEvent("skill.cli", "import"))
    original_array = TokenStore._array

    def array(self, name: str):
        found = original_array(self, name)
        if name == "tokens":
            return _FiringArray(found, lambda value: fire("chunk"))
        if name == "status":
            return _FiringArray(found, _status_written)
        return found

    TokenStore._array = array


# ---- the test's side ----------------------------------------------------------------------
def command(events_file: Path, stop_at: str, *skill_args: str) -> list[str]:
    """The command line that runs `skill <skill_args>` under this module."""
    return [sys.executable, "-m", "tests.kill_points", str(events_file), stop_at, "--", *skill_args]


def events(events_file: Path) -> list[str]:
    """The events recorded so far, as `name count` lines."""
    return events_file.read_text().splitlines() if events_file.exists() else []


def stopped_or_exited(proc, timeout: float) -> bool:
    """Wait until `proc` froze itself at its stop event (True) or exited (False). The timeout
    is a guard against a hung run, far above any run's length; reaching it is a failure."""
    deadline = time.monotonic() + timeout
    watched = psutil.Process(proc.pid)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if watched.status() == psutil.STATUS_STOPPED:
                return True
        except psutil.NoSuchProcess:
            return False
        time.sleep(0.01)
    raise AssertionError(f"pid {proc.pid} neither stopped nor exited in {timeout:.0f} s")


def main(argv: list[str]) -> None:
    global _events_file, _stop_at
    events_path, stop_at, separator, *skill_args = argv
    assert separator == "--", "usage: python -m tests.kill_points EVENTS STOP_AT -- ARGS"
    _events_file = Path(events_path)
    if stop_at != "none":
        name, count = stop_at.split(":")
        _stop_at = (name, int(count))
    install()
    from skill.__main__ import main as skill_main  # the entry point, Ctrl-C guard included

    sys.argv = ["skill", *skill_args]
    skill_main()


if __name__ == "__main__":
    main(sys.argv[1:])
