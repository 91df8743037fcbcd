"""A small synthetic token store, written through the real TokenStore API, with a learnable
signal spread over the views.

Classes 0..3 are two bits: ``ego`` carries the high bit, ``exo1`` the low bit, ``exo2``
carries the whole class more weakly, ``exo3`` is noise. So ego alone tops out near 50 %,
while ego + exos can reach ~100 %. Every participant has one label (labels are per person,
as in EgoExo4D) and a personal offset shared by all their takes, a nuisance a model can
memorise. Some views are missing (masked), some takes failed (some with every view masked) or
are still pending, and a few are unlabelled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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
) -> SyntheticStore:
    """Write the store at ``path``; participants i = 0..P-1 have label i % 4.

    ``failed_views``: views that failed in every take (a take left without a valid view
    failed too).
    ``pending``: leave one take unwritten, as an interrupted extract does (the store is then
    unfinished); otherwise it is failed.
    ``with_splits``: participants go to train/val/test (60/20/20 %) in the split column;
    otherwise the split column is empty. ``views`` (default ego, exo1..exo3) must be a
    subset of those four names (to build stores that lack a view).
    """
    rng = np.random.default_rng(seed)
    views = views or VIEWS
    store = TokenStore.create(
        path,
        provenance=provenance or PROVENANCE,
        views=views,
        task=task_record("classification", {"labels": list(LABELS)}),
        clips=CLIPS,
        tokens=TOKENS,
        dim=DIM,
        frames=FRAMES,
    )
    rows, participant_label = _take_rows(n_participants, takes_per_participant, with_splits)
    info = SyntheticStore(path=Path(path), take_ids=[r.take_id for r in rows])
    # A few unlabelled takes, as in a challenge test list.
    for i in (3, 8):
        rows[i] = TakeRow(rows[i].take_id, None, rows[i].scenario, rows[i].participant, "")
        info.unlabelled.append(rows[i].take_id)
    indices = store.add_takes(rows)
    offsets = rng.normal(0, 0.3, size=(n_participants, DIM))  # personal nuisance
    for i, row in zip(indices, rows, strict=True):
        person = int(row.participant[1:])
        result = _take_result(rng, participant_label[person], offsets[person], views)
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
        store.write_take(i, result)
    return info


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


def _take_result(rng, label: int, offset: np.ndarray, views: list[str]) -> TakeResult:
    """Tokens (V, K, N, D) float16 with the class signal of each view, and ~10 % masked views."""
    high, low = label >> 1, label & 1
    tokens = rng.normal(0, 0.7, size=(len(views), CLIPS, TOKENS, DIM)) + offset
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
    frames = np.tile(np.arange(FRAMES), (len(views), CLIPS, 1))
    frames[~valid] = -1
    return TakeResult(
        tokens=tokens.astype(np.float16),
        valid=valid,
        frame_index=frames,
        timestamp=np.where(frames >= 0, frames / 30.0, np.nan),
        padded=np.zeros(len(views), dtype=int),
        view_error=[""] * len(views),
        status=STATUS_COMPLETE,
    )


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
