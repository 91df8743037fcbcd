"""A summary of a store for people (`skill info`) and scripts (`skill info --json`)."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path

import numpy as np

from skill.cache import recovery
from skill.cache.store import STATUS_COMPLETE, STATUS_FAILED, STATUS_PENDING, TokenStore


def store_summary(path: str | Path) -> dict:
    """Counts by split, label and scenario, completion, failures, size and provenance."""
    store = TokenStore.open(path)
    table, status, valid = store.take_table(), store.status(), store.valid()
    errors = store.view_errors()
    label_names = np.array([*store.labels, "(unlabelled)"])
    labels = label_names[np.where(table.label >= 0, table.label, len(store.labels))]
    done = status == STATUS_COMPLETE
    run = _run_state(store, pending=int((status == STATUS_PENDING).sum()))
    return {
        "store": str(store.path),
        "format_version": store.attrs["skill"]["format_version"],
        "package_version": store.attrs["skill"].get("package_version"),
        "takes": store.n_takes,
        "completed": int(done.sum()),
        "failed": int((status == STATUS_FAILED).sum()),
        "pending": int((status == STATUS_PENDING).sum()),
        # state: "in progress" while a writer holds the lock; "interrupted" when work is
        # unfinished without one (also a run killed before it registered any take);
        # "finished" otherwise. `interrupted` is True in both unfinished states.
        "state": run["state"],
        "writer": run["writer"],
        "in_progress": run["writer"] is not None,
        "interrupted": run["state"] != "finished",
        "last_run": run["record"],
        "leftover_temp_files": run["temp_files"],
        "views": store.views,
        "valid_views_of_completed": {
            v: int(valid[done, i].sum()) for i, v in enumerate(store.views)
        },
        "by_split": _count(table.split),
        "by_label": _count(labels),
        "by_scenario": _count(table.scenario),
        "geometry": {
            "clips": store.clips,
            "tokens": store.tokens,
            "dim": store.dim,
            "frames": store.frames,
        },
        "failures": [
            {"take": take, "view": view, "reason": reason}
            for take, view, reason in store.failures()
        ],
        "failed_view_count": int((errors != "").sum()),
        "notes": _notes(store),
        "size_bytes": _size_on_disk(store.path),
        # "packed" (large chunks, fast reads) once a run finished, "write" while writing;
        # per array too, since a pack cut short leaves some arrays of each kind
        "layout": "packed" if store.is_packed() else "write",
        "layout_per_array": store.layout(),
        "provenance": store.provenance,
    }


def _run_state(store: TokenStore, pending: int) -> dict:
    """Who writes now, whether the last run stopped before finishing, and how many temporary
    files killed writes left (never read as data; the next extract deletes them)."""
    state, writer = store.run_state(pending)
    return {
        "state": state,
        "writer": writer,
        "record": store.attrs.get("extract_run"),
        "temp_files": len(recovery.temp_files(store.path)),
    }


def _count(values: np.ndarray) -> dict[str, int]:
    counts = Counter(str(v) if str(v) else "(none)" for v in values)
    return dict(sorted(counts.items()))


def _size_on_disk(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(folder, name))
    return total


def _notes(store: TokenStore) -> list[dict]:
    """Notes on views that decoded (e.g. keyframe sampling that fell back to exact)."""
    ids, notes = store.take_table().ids, store.view_notes()
    return [
        {"take": str(ids[i]), "view": store.views[v], "note": str(notes[i, v])}
        for i, v in zip(*np.nonzero(notes != ""), strict=True)
    ]
