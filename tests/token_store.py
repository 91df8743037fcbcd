"""A small synthetic token store, written through the real TokenStore API, with a learnable
signal spread over the views.

Classes 0..3 are two bits: ``ego`` carries the high bit, ``exo1`` the low bit, ``exo2``
carries the whole class more weakly, ``exo3`` is noise. So ego alone tops out near 50 %,
while ego + exos can reach ~100 %. Every participant has one label (labels are per person,
as in EgoExo4D) and a personal offset shared by all their takes, a nuisance a model can
memorise. Some views are missing (masked), some takes failed (some with every view masked) or
are still pending, and a few are unlabelled.

A ``sequence`` store (``clip_axis="sequence"``) holds each view's clips in order, one a second,
with their clip times; about a third of the views end early, their last clips absent (padded),
as stride sampling leaves a view shorter than the store's clips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from skill.cache.store import STATUS_COMPLETE, STATUS_FAILED, TakeResult, TakeRow, TokenStore
from skill.tasks import task_record

VIEWS = ["ego", "exo1", "exo2", "exo3"]
LABELS = ["Novice", "Early Expert", "Intermediate Expert", "Late Expert"]
SCENARIOS = ["Cooking", "Dance", "Music"]
PROVENANCE = {
    "backbone": {"name": "synthetic", "weights_sha256": "abc123" * 8},
    "adapter": None,
    "sampling": {"clips": 2, "frames": 4, "stride": 4},
    "token_mode": "mean_patches",
    "preprocessing": {"size": 224, "mean": [0.45] * 3, "std": [0.225] * 3},
    "dtype": "float16",
}
DIM, TOKENS, CLIPS, FRAMES = 32, 4, 2, 4
TASK_SCHEMAS = {
    "classification": {"labels": list(LABELS)},
    "ordinal": {"labels": list(LABELS), "ordered": True},
    "regression": {"scores": [{"name": "score", "low": 0.0, "high": 10.0}], "group": "scenario"},
    "pairwise": {
        "scores": [{"name": "score", "low": 0.0, "high": 10.0}],
        "group": "scenario",
        "margin": 1.0,
    },
    "demonstration": {"categories": ["good_executions", "tips_for_improvement"], "max_events": 4},
}
"""The schema of each task's store (`build_token_store`'s ``task``)."""
SEQUENCE_CLIPS = 6
"""Clips per take of a sequence store unless ``clips_per_take`` says otherwise."""
FPS = 30.0
CLIP_EVERY_S = 1.0
"""Seconds between the starts of a sequence store's clips."""


@dataclass
class SyntheticStore:
    """Where the store is and which takes are special."""

    path: Path
    take_ids: list[str]
    all_views_invalid: list[str] = field(default_factory=list)  # failed: every view masked
    failed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    partly_masked: list[str] = field(default_factory=list)  # complete, some views masked
    clip_axis: str = "samples"
    clips: int = CLIPS
    clip_counts: dict[str, list[int]] = field(default_factory=dict)
    """Sequence stores: the clips each view of each written take holds (0 for an invalid
    view); the clips after them are absent."""


def build_token_store(
    path: str | Path,
    *,
    n_participants: int = 40,
    takes_per_participant: int = 5,
    with_splits: bool = True,
    seed: int = 0,
    provenance: dict | None = None,
    views: list[str] | None = None,
    pending: bool = False,
    failed_views: tuple[str, ...] = (),
    clip_axis: str = "samples",
    clips_per_take: int | None = None,
    task: str = "classification",
    pairs_per_take: int = 3,
) -> SyntheticStore:
    """Write the store at ``path``; participants i = 0..P-1 have label i % 4.

    ``failed_views``: views that failed in every take (a take left without a valid view
    failed too).
    ``pending``: leave one take unwritten, as an interrupted extract does (the store is then
    unfinished); otherwise it is failed.
    ``with_splits``: participants go to train/val/test (60/20/20 %) in the split column;
    otherwise the split column is empty. ``views`` (default ego, exo1..exo3) must be a
    subset of those four names (to build stores that lack a view).
    ``clip_axis``: ``samples`` (K interchangeable clips) or ``sequence`` (clips in order, some
    views padded; the provenance records it); ``clips_per_take``: the store's clips K
    (default 2 for samples, 6 for a sequence).
    ``task``: ``demonstration``: 1 or 2 moments per take, visible in their clips
    (`demonstration_events`; a sequence store); ``classification`` or ``ordinal`` (the
    labels), ``regression``: one score in
    0..10 per take, rising with the label (`regression_score`), or ``pairwise``: the same
    score, and pairs of takes of one split whose labels differ, the higher label better
    (`skill_pairs`: ``pairs_per_take`` per take of the split).
    """
    rng = np.random.default_rng(seed)
    views = views or VIEWS
    clips = clips_per_take or (SEQUENCE_CLIPS if clip_axis == "sequence" else CLIPS)
    store = TokenStore.create(
        path,
        provenance=_provenance(provenance, clip_axis, clips),
        views=views,
        task=task_record(task, TASK_SCHEMAS[task]),
        clips=clips,
        tokens=TOKENS,
        dim=DIM,
        frames=FRAMES,
    )
    rows, participant_label = _take_rows(n_participants, takes_per_participant, with_splits)
    if task in ("regression", "pairwise"):
        scores = np.random.default_rng(seed + 1)  # apart from the tokens' generator
        rows = [replace(r, target=regression_score(r.target, scores)) for r in rows]
    if task == "demonstration":
        moments = np.random.default_rng(seed + 3)  # apart from the tokens' generator
        rows = [replace(r, target=demonstration_events(moments, clips)) for r in rows]
    info = SyntheticStore(
        path=Path(path), take_ids=[r.take_id for r in rows], clip_axis=clip_axis, clips=clips
    )
    # A few unlabelled takes, as in a challenge test list.
    for i in (3, 8):
        rows[i] = TakeRow(rows[i].take_id, None, rows[i].scenario, rows[i].participant, "")
        info.unlabelled.append(rows[i].take_id)
    indices = store.add_takes(rows)
    if task == "pairwise":
        pair_rows, pair_splits = skill_pairs(rows, indices, pairs_per_take, seed + 2)
        store.set_pairs(pair_rows, pair_splits)
    offsets = rng.normal(0, 0.3, size=(n_participants, DIM))  # personal nuisance
    for i, row in zip(indices, rows, strict=True):
        person = int(row.participant[1:])
        result = _take_result(rng, participant_label[person], offsets[person], views, clips)
        result.valid[[views.index(v) for v in failed_views]] = False
        role = _special_role(i) or ("no_view" if not result.valid.any() else "")
        if role == "pending" and pending:  # left unwritten: the store is unfinished
            info.pending.append(row.take_id)
            continue
        if role in ("failed", "pending"):
            result.valid[:] = False
            result.status = STATUS_FAILED
            info.failed.append(row.take_id)
        elif role == "no_view":  # as extract records a take none of whose views decoded
            result.valid[:] = False
            result.status = STATUS_FAILED
            info.all_views_invalid.append(row.take_id)
        elif not result.valid.all():
            info.partly_masked.append(row.take_id)
        result.view_error = ["" if ok else "decode failed" for ok in result.valid]
        if clip_axis == "sequence":
            counts = _as_sequence(result, i)
            info.clip_counts[row.take_id] = counts
        if task == "demonstration" and row.target is not None:
            _mark_moments(result, row.target)
        store.write_take(i, result)
    return info


def skill_pairs(
    rows: list[TakeRow], indices: list[int], per_take: int, seed: int
) -> tuple[np.ndarray, list[str]]:
    """Pairs ``(m, 2)`` of store rows within each split, of takes whose participants' labels
    differ, the higher label first, and their splits (``train`` where a store has none; takes
    without a split are left out of a store with splits)."""
    rng = np.random.default_rng(seed)
    level = [int(r.participant[1:]) % len(LABELS) for r in rows]
    named = {r.split for r in rows} - {""}
    out, splits = [], []
    for split in sorted(named or {""}):
        members = [i for i, r in enumerate(rows) if r.split == split]
        for _ in range(per_take * len(members)):
            a, b = rng.choice(members, size=2, replace=False)
            if level[a] != level[b]:
                better, worse = (a, b) if level[a] > level[b] else (b, a)
                out.append((indices[better], indices[worse]))
                splits.append(split or "train")
    return np.asarray(out, dtype=np.int64).reshape(-1, 2), splits


MOMENT_DIMS = {"good_executions": slice(24, 28), "tips_for_improvement": slice(28, 32)}
"""The token dimensions a demonstration store's moment of each category raises in its clip."""


def demonstration_events(rng: np.random.Generator, clips: int) -> list[list]:
    """A take's 1 or 2 moments ``[time, category]`` at the centres of distinct clips among
    the first half (clips every CLIP_EVERY_S seconds: present in every valid view)."""
    first = max(clips // 2, 1)
    chosen = rng.choice(first, size=min(int(rng.integers(1, 3)), first), replace=False)
    names = list(MOMENT_DIMS)
    centre = FRAMES / FPS / 2
    return [
        [round(float(k) * CLIP_EVERY_S + centre, 3), names[int(rng.integers(len(names)))]]
        for k in sorted(chosen)
    ]


def _mark_moments(result: TakeResult, events: list[list]) -> None:
    """Raise the dimensions of each moment's category in the clip holding it, in every view
    that holds that clip."""
    for time, category in events:
        k = int(time // CLIP_EVERY_S)
        for v in range(len(result.valid)):
            if result.valid[v] and k < result.tokens.shape[1] and result.frame_index[v, k, 0] >= 0:
                result.tokens[v, k, :, MOMENT_DIMS[category]] += 3.0


def regression_score(label: str, rng: np.random.Generator) -> float:
    """A take's score in 0..10: 2.5 per level above Novice, plus 1.25 and a little noise."""
    return round(float(np.clip(2.5 * LABELS.index(label) + 1.25 + rng.normal(0, 0.3), 0, 10)), 2)


def _provenance(given: dict | None, clip_axis: str, clips: int) -> dict:
    """The store's provenance: ``given`` or the default, with its clip axis and clips."""
    if given is not None and clip_axis == "samples":
        return given
    provenance = json.loads(json.dumps(given or PROVENANCE))
    if clips != CLIPS or clip_axis == "sequence":
        provenance["sampling"] = {**provenance.get("sampling", {}), "clips": clips}
    if clip_axis == "sequence":
        provenance["sampling"]["strategy"] = "sequence"
        provenance["clip_axis"] = "sequence"
    return provenance


def _as_sequence(result: TakeResult, row: int) -> list[int]:
    """Lay a take's clips out in order, one every CLIP_EVERY_S seconds, and end about a third
    of its views early (their last clips absent: zeros, frame index -1, NaN times); returns
    the clips each view holds."""
    n_views, clips = result.valid.shape[0], result.tokens.shape[1]
    counts = []
    for v in range(n_views):
        count = clips if (row + v) % 3 else max(1, clips // 2)
        count = count if result.valid[v] else 0
        counts.append(count)
        starts = np.arange(clips) * int(CLIP_EVERY_S * FPS)
        result.frame_index[v] = starts[:, None] + np.arange(FRAMES)
        result.frame_index[v, count:] = -1
        result.tokens[v, count:] = 0
    result.timestamp = np.where(result.frame_index >= 0, result.frame_index / FPS, np.nan)
    result.clip_time = _clip_time(result.timestamp)
    return counts


def _take_rows(n_participants: int, per: int, with_splits: bool) -> tuple[list[TakeRow], list[int]]:
    participant_label = [p % len(LABELS) for p in range(n_participants)]
    rows = []
    for p in range(n_participants):
        # groups of 4 participants (one per label) cycle train, train, train, val, test
        part = (p // len(LABELS)) % 5
        split = ("train", "train", "train", "val", "test")[part] if with_splits else ""
        for t in range(per):
            rows.append(
                TakeRow(
                    take_id=f"p{p:02d}_take{t}",
                    target=LABELS[participant_label[p]],
                    scenario=SCENARIOS[p % len(SCENARIOS)],
                    participant=f"p{p:02d}",
                    split=split,
                )
            )
    return rows, participant_label


def _special_role(i: int) -> str:
    """Fixed rows that are pending, failed or have no valid view (never the unlabelled 3, 8)."""
    return {5: "pending", 17: "failed", 29: "no_view", 41: "no_view"}.get(i, "")


def _take_result(
    rng, label: int, offset: np.ndarray, views: list[str], clips: int = CLIPS
) -> TakeResult:
    """Tokens (V, K, N, D) float16 with the class signal of each view, and ~10 % masked views."""
    high, low = label >> 1, label & 1
    tokens = rng.normal(0, 0.7, size=(len(views), clips, TOKENS, DIM)) + offset
    signal = {
        "ego": (slice(0, 4), 2.0 * (2 * high - 1)),
        "exo1": (slice(4, 8), 2.0 * (2 * low - 1)),
        "exo2": (slice(8 + 2 * label, 10 + 2 * label), 1.5),
    }
    for v, name in enumerate(views):
        if name in signal:
            dims, value = signal[name]
            tokens[v, :, :, dims] += value
    valid = rng.random(len(views)) > 0.1
    if not valid.any():
        valid[rng.integers(len(views))] = True
    tokens[~valid] = 0
    frames = np.tile(np.arange(FRAMES), (len(views), clips, 1))
    frames[~valid] = -1
    timestamp = np.where(frames >= 0, frames / FPS, np.nan)
    return TakeResult(
        tokens=tokens.astype(np.float16),
        valid=valid,
        frame_index=frames,
        timestamp=timestamp,
        padded=np.zeros(len(views), dtype=int),
        view_error=[""] * len(views),
        status=STATUS_COMPLETE,
        clip_time=_clip_time(timestamp),
    )


def _clip_time(timestamp: np.ndarray) -> np.ndarray:
    """(V, K, 2) [start, end) seconds of clips of frames at ``timestamp (V, K, T)``, as
    extraction records them: the first frame's time, the last frame's time plus one frame."""
    return np.stack([timestamp[..., 0], timestamp[..., -1] + 1 / FPS], axis=-1)


_BUILT: dict[tuple, SyntheticStore] = {}


def shared_token_store(tmp_path_factory, name: str = "synthetic", **options) -> SyntheticStore:
    """Build a store once per test session (per name and options) and share it read-only."""
    key = (str(tmp_path_factory.getbasetemp()), name, json.dumps(options, sort_keys=True))
    if key not in _BUILT:
        folder = tmp_path_factory.mktemp(f"store-{name}")
        _BUILT[key] = build_token_store(folder / f"{name}.zarr", **options)
    return _BUILT[key]


def edit_take(
    path: str | Path,
    take_id: str,
    *,
    split: str | None = None,
    label: str | None = None,
    participant: str | None = None,
) -> None:
    """Change one take's split, label or participant in a built store (to make stores that
    disagree)."""
    import zarr

    store = TokenStore.open(path)
    row = list(store.take_table().ids).index(take_id)
    for name, value in (("split", split), ("participant", participant)):
        if value is not None:
            zarr.open_array(str(path), path=name, mode="r+", zarr_format=3)[row] = value
    if label is not None:
        index = store.task["schema"]["labels"].index(label)
        zarr.open_array(str(path), path="label", mode="r+", zarr_format=3)[row] = index
    recommit_take_table(path)


def rename_label(path: str | Path, old: str, new: str) -> None:
    """Rename one of a built store's labels (its takes keep their label index)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    task = group.attrs["task"]
    task["schema"]["labels"] = [new if name == old else name for name in task["schema"]["labels"]]
    group.attrs["task"] = task
    recommit_take_table(path)


def recommit_take_table(path: str | Path) -> None:
    """Record the digest of a take table edited on purpose, as a coordinator that wrote it
    would (an edit without it is damage, which is what the store's checks catch)."""
    import zarr

    from skill.cache import placement
    from skill.cache.store import TAKE_TEXT_COLUMNS

    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    n = group.attrs["n_takes"]
    columns = {
        name: np.array(group[name][:n].tolist(), dtype=str) for name in TAKE_TEXT_COLUMNS.values()
    }
    task = group.attrs["task"]
    array = task["target"]["array"]
    digest = placement.table_digests(
        group.attrs["store_id"], task, columns, array, np.asarray(group[array][:n])
    )
    group.attrs["take_table"] = {"rows": n, "digest": digest}
