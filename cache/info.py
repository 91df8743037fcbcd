"""A summary of a store for people (`skill info`) and scripts (`skill info --json`)."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path

import numpy as np

from skill.cache import recovery
from skill.cache.store import STATUS_COMPLETE, STATUS_FAILED, STATUS_PENDING, TokenStore
from skill.tasks import get_task
from skill.tasks.columns import UntabledTargets, column_summary


def store_summary(path: str | Path) -> dict:
    """Counts by split and scenario, what the targets hold (counts by level, the range of each
    score), completion, failures, size and provenance."""
    store = TokenStore.open(path)
    table, status, valid = store.take_table(), store.status(), store.valid()
    errors = store.view_errors()
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
        "task": store.task["name"],
        "targets": _targets(store, table.target),
        "by_scenario": _count(table.scenario),
        "geometry": {
            "clips": store.clips,
            "tokens": store.tokens,
            "dim": store.dim,
            "frames": store.frames,
        },
        "clip_axis": _clip_axis(store, done),
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


def _clip_axis(store: TokenStore, done: np.ndarray) -> dict:
    """What the clip axis holds; for a sequence store also the range of clips a valid view of
    a completed take holds and of their durations (seconds; None when no clip is there)."""
    out: dict = {"axis": store.clip_axis}
    if store.clip_axis != "sequence":
        return out
    mask, times = store.clip_mask()[done], store.clip_times()[done]
    counts = mask.sum(axis=2)[mask.any(axis=2)]
    durations = (times[..., 1] - times[..., 0])[mask]
    out["clips_min"] = int(counts.min()) if counts.size else None
    out["clips_max"] = int(counts.max()) if counts.size else None
    out["duration_s_min"] = float(durations.min()) if durations.size else None
    out["duration_s_max"] = float(durations.max()) if durations.size else None
    return out


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


def _targets(store: TokenStore, stored: np.ndarray) -> dict[str, dict]:
    """What the take table's targets hold, a column at a time (`tasks.columns.column_summary`:
    counts by level, or the range of a score); a task whose targets no column holds gets its
    count of labelled takes only."""
    task, schema = get_task(store.task["name"]), store.task["schema"]
    try:
        return column_summary(task, schema, stored)
    except UntabledTargets:
        labelled = int(task.labelled(stored).sum())
        return {store.task["target"]["array"]: {"labelled": labelled, "takes": len(stored)}}


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


# ---- the summary as lines for people -------------------------------------------------------
_STATE_LINES = {
    "in progress": "IN PROGRESS: being written by {writer}",
    "interrupted": "INTERRUPTED: run the same `skill extract` again to resume",
    "finished": "all takes processed",
}
SHOWN_PER_LIST = 50
"""Failures and notes listed one a line before the rest are only counted."""


def summary_lines(summary: dict) -> list[str]:
    """``store_summary``'s dict as plain lines for `skill info`: counts, problems and the
    provenance in words, each setting shown only where it applies (no Python reprs)."""
    s = summary
    lines = [
        f"store: {s['store']} (format {s['format_version']}, {s['size_bytes'] / 1e6:.1f} MB, "
        f"{s['layout']} layout)",
        f"takes: {s['takes']}  completed: {s['completed']}  failed: {s['failed']}  "
        f"pending: {s['pending']}  ({_STATE_LINES[s['state']].format(writer=s['writer'])})",
    ]
    kinds = set(s["layout_per_array"].values())
    if len(kinds) > 1:  # a pack cut short: say which arrays are which
        packed = sorted(name for name, kind in s["layout_per_array"].items() if kind == "packed")
        lines.append(f"packed arrays: {', '.join(packed)}; the others are in the write layout")
    if s["leftover_temp_files"]:
        lines.append(f"{s['leftover_temp_files']} temporary files of a killed write (never read)")
    lines.append(f"views: {', '.join(s['views'])}")
    lines.append(f"per take and view: {_geometry(s['geometry'])}")
    lines.append(f"clip axis: {_clip_axis_words(s['clip_axis'], s['geometry']['clips'])}")
    for key in ("split", "scenario"):
        counts = ", ".join(f"{name} {count}" for name, count in s[f"by_{key}"].items())
        lines.append(f"takes by {key}: {counts or 'none'}")
    lines += [_target_line(name, column) for name, column in s["targets"].items()]
    lines += _listed("failures", s["failures"], "reason")
    lines += _listed("notes", s["notes"], "note")
    return lines + provenance_lines(s["provenance"])


def _target_line(name: str, column: dict) -> str:
    """One target column in words: its counts by level, or how many takes have a score and
    its range."""
    if "counts" in column:
        counts = ", ".join(f"{value} {count}" for value, count in column["counts"].items())
        return f"takes by {name}: {counts or 'none'}"
    line = f"{name}: {column['labelled']} of {column['takes']} takes labelled"
    if column.get("min") is None:
        return line
    return f"{line}, min {column['min']:.4g}, mean {column['mean']:.4g}, max {column['max']:.4g}"


def _geometry(geometry: dict) -> str:
    clips, frames = geometry["clips"], geometry["frames"]
    return (
        f"{_plural(clips, 'clip')} of {_plural(frames, 'frame')}, "
        f"{_plural(geometry['tokens'], 'token')} of width {geometry['dim']} per clip"
    )


def _clip_axis_words(axis: dict, clips: int) -> str:
    """The clip axis in words: samples, or a sequence with its clip counts and durations."""
    if axis["axis"] != "sequence":
        return f"samples ({_plural(clips, 'interchangeable clip')} of a take)"
    if axis.get("clips_min") is None:
        return "sequence (clips in order, times in clip_time; no clip extracted yet)"
    low, high = axis["clips_min"], axis["clips_max"]
    count = f"{low}" if low == high else f"{low} to {high}"
    short, long = axis["duration_s_min"], axis["duration_s_max"]
    length = (
        f"{short:.3g} s" if np.isclose(short, long, rtol=1e-3) else f"{short:.3g} to {long:.3g} s"
    )
    return (
        f"sequence ({count} clips a view in order, of {length} each; start and end times in "
        "clip_time)"
    )


def _plural(n, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _listed(title: str, items: list[dict], key: str) -> list[str]:
    if not items:
        return []
    lines = [f"{title} ({len(items)}):"]
    lines += [f"  take {i['take']} view {i['view']}: {i[key]}" for i in items[:SHOWN_PER_LIST]]
    if len(items) > SHOWN_PER_LIST:
        lines.append(
            f"  ... and {len(items) - SHOWN_PER_LIST} more (`skill info --json` lists all)"
        )
    return lines


def provenance_lines(provenance: dict) -> list[str]:
    """What made the tokens, in words: the import (if any), backbone, adapter, token mode and
    sampling."""
    lines = []
    imported = provenance.get("imported")
    if imported:
        layout = ", ".join(f"{k} {v}" for k, v in (imported.get("token_layout") or {}).items())
        lines.append(
            f"imported: {imported.get('kind')} from {imported.get('source')} (feature "
            f"{imported.get('feature')}, sha256 {str(imported.get('sha256'))[:12]}...)"
        )
        if layout:
            lines.append(f"imported token layout: {layout}")
    backbone = provenance.get("backbone")
    if backbone:
        lines.append(f"backbone: {_backbone(backbone)}")
        lines.append(f"adapter: {_adapter(backbone.get('adapter'))}")
        if backbone.get("time_embedding"):
            lines.append(f"time embedding: {backbone['time_embedding']}")
    if provenance.get("tokens"):
        lines.append(f"tokens: {provenance['tokens']}")
    if provenance.get("sampling"):
        lines.append(f"sampling: {sampling_line(provenance['sampling'])}")
    return lines


def _adapter(adapter: dict | None) -> str:
    if not adapter:
        return "none"
    where = f" (from {adapter['path']})" if adapter.get("path") else ""
    return f"sha256 {adapter.get('sha256')}{where}"


def _backbone(backbone: dict) -> str:
    name, source, family = backbone.get("name"), backbone.get("source"), backbone.get("family")
    if source is None:  # the registry's presets without a checkpoint: random weights
        details = [f"{family}, a tiny randomly initialised preset, nothing downloaded"]
    else:
        details = [family if source == name else f"{family}, from {source}"]
    if backbone.get("revision"):
        details.append(f"revision {backbone['revision']}")
    if backbone.get("weights_sha256"):
        details.append(f"weights sha256 {backbone['weights_sha256'][:12]}...")
    return f"{name} ({'; '.join(details)})"


def sampling_line(sampling: dict) -> str:
    """A store's sampling record in words, with only the settings its strategy uses: the
    stride only for windows and stride, the segment settings only for segments, the clip step
    only for stride, the seed only with jitter. The record itself keeps every field (``skill info --json``): a store's sampling
    is compared field by field with other stores and runs, so it is shown, not rewritten."""
    strategy = sampling.get("strategy")
    parts = [strategy or "strategy not recorded"]
    if "frames" in sampling:
        frames = f"{_plural(sampling['frames'], 'frame')} a clip"
        if strategy in ("windows", "skillformer-windows", "stride") and "stride" in sampling:
            frames += f" at stride {sampling['stride']}"
        elif strategy == "segments" and sampling.get("n_segments"):
            frames += (
                f" in {_plural(sampling['n_segments'], 'segment')} of "
                f"{sampling.get('segment_len')} at stride {sampling.get('segment_stride', 1)}"
            )
        parts.append(frames)
    if strategy == "stride" and sampling.get("clip_every") is not None:
        unit = sampling.get("clip_every_unit", "frames")
        parts.append(f"a clip every {sampling['clip_every']:g} {unit}")
    if "clips" in sampling:
        most = "at most " if strategy == "stride" else ""
        parts.append(f"{most}{_plural(sampling['clips'], 'clip')} a view")
    jitter = sampling.get("jitter", False)
    parts.append(
        f"random positions (seed {sampling.get('seed', 0)})" if jitter else "fixed positions"
    )
    snap = sampling.get("snap", "exact")
    parts.append("frames moved to the nearest keyframe" if snap == "keyframe" else "exact frames")
    return ", ".join(parts)
