"""Reading a token store for fitting and prediction: view choice, view masks, splits.

A :class:`Selection` holds the chosen views of every completed take in memory, once, as
float16, so that an epoch costs head compute and not I/O. Invalid views stay zeros in ``x``
*and* are False in ``mask``; the mask goes to the head, so a head never has to guess whether
zeros are data. Takes whose chosen views are all invalid are dropped (a head cannot predict
from nothing) and listed in ``Selection.dropped_take_ids``.

The clip axis of a store (``Selection.clip_axis``) is ``samples`` (K interchangeable clips of
a take) or ``sequence`` (K clips in order over the whole take, some absent where a take is
shorter: ``clip_mask``, with their times ``clip_times``). A head that reads clips fitted on a
sequence store reads each view's mean over its valid clips, computed once
(:func:`pooled_selection`); a head that reads sequences is refused a samples store
(:func:`check_clip_axis`).

Splits (:func:`split_takes`): the store's ``split`` column when it names train/val/test;
when no labelled take has such a value, a validation set is carved out grouped by
participant (no participant on both sides), stratified by the participants' labels and
seeded. The same carving fills ``val`` from ``train`` when the column has no val rows.

A store that records pairs of takes (a ranking task's, `TokenStore.pairs`) is split by its
pairs instead (``Splits.pairs``): the training takes are those its training pairs name, and
each held-out split's takes those its pairs name besides training takes; without val pairs,
``val_frac`` of the training pairs (seeded) are held out as val pairs. A split is scored on
its pairs (:func:`scored_rows`), which may name training takes too (EPIC-Skills' protocol).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skill.cache.store import STATUS_COMPLETE, STATUS_FAILED, STATUS_PENDING, TokenStore
from skill.errors import SkillError
from skill.tasks import Task, get_task

# Values of the store's split column, and the split each one means.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


class SelectionError(SkillError, ValueError):
    """A choice of views or takes that leaves nothing to train or predict on, or names a
    view the store does not have; the message says which."""


class ClipAxisError(SelectionError):
    """A head or a run that reads another clip axis than the store has (an ordered sequence
    against interchangeable samples, or the reverse); the message names both."""


CLIP_AXES = ("samples", "sequence")
# Bytes of float32 a block of takes may take when pooling clips: bounds the temporary.
POOL_BYTES = 64 << 20


@dataclass(frozen=True)
class ClipSequence:
    """The clip axis of a sequence store for some takes: which clips hold tokens and where
    they lie. Shapes: n takes, V views, K clips."""

    mask: np.ndarray  # (n, V, K) bool, True = the clip holds tokens
    times: np.ndarray  # (n, V, K, 2) float32 [start, end) in seconds, NaN where absent

    def take(self, rows: np.ndarray) -> ClipSequence:
        """The same for the takes ``rows``."""
        return ClipSequence(self.mask[rows], self.times[rows])


@dataclass
class Selection:
    """Chosen views of the completed takes of one store, in memory.

    Shapes: n takes, V chosen views, K clips, N tokens, D token width.
    """

    x: np.ndarray  # (n, V, K, N, D) float16; zeros where mask is False
    mask: np.ndarray  # (n, V) bool, True = the view holds tokens
    targets: np.ndarray  # (n, *shape) the task's stored targets (see `tasks`)
    take_ids: np.ndarray  # (n,) str
    scenario: np.ndarray  # (n,) str
    participant: np.ndarray  # (n,) str
    split: np.ndarray  # (n,) str, the store's split column as written
    store_rows: np.ndarray  # (n,) int64 row of each take in the store's take table
    view_names: list[str]
    task_name: str  # the store's task
    schema: dict  # the task's schema (classification: its labels)
    provenance: dict
    store_path: str
    store_views: list[str]
    geometry: dict  # clips, tokens, dim of the store
    dropped_take_ids: list[str] = field(default_factory=list)  # complete, no valid chosen view
    n_incomplete: int = 0  # takes of the store that are pending or failed
    clip_axis: str = "samples"  # the store's: "samples" or "sequence"
    clip_mask: np.ndarray | None = None  # (n, V, K) bool, True = the clip holds tokens
    clip_times: np.ndarray | None = None  # (n, V, K, 2) float32 seconds, NaN where absent
    clips_pooled: bool = False  # x holds each view's mean over its valid clips (K = 1)
    train_summary: dict | None = None  # a run's training targets (Task.train_summary), see task
    pairs: np.ndarray | None = None  # (m, 2) rows of the store's pairs, better first; None: none
    pair_split: np.ndarray | None = None  # (m,) str, each pair's split
    dropped_pairs: int = 0  # the store's pairs naming a take not in the selection
    _pooled: Selection | None = field(default=None, repr=False, compare=False)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_views(self) -> int:
        return int(self.x.shape[1])

    @property
    def clips(self) -> int:
        return int(self.x.shape[2])

    @property
    def tokens(self) -> int:
        return int(self.x.shape[3])

    @property
    def dim(self) -> int:
        return int(self.x.shape[4])

    @property
    def task(self) -> Task:
        """The store's task; a run's (``Task.for_run``) once ``train_summary`` is set."""
        task = get_task(self.task_name)
        return task if self.train_summary is None else task.for_run(self.train_summary)

    @property
    def outputs(self) -> int:
        """The width of a head's output for this selection's task."""
        return self.task.output_width(self.schema)

    @property
    def labelled(self) -> np.ndarray:
        """``(n,)`` bool: takes with a target, or named by one of the store's pairs."""
        labelled = self.task.labelled(self.targets)
        if self.pairs is not None:
            labelled = labelled.copy()
            labelled[self.pairs.reshape(-1)] = True
        return labelled

    @property
    def sequence(self) -> ClipSequence | None:
        """The clip mask and times a sequence head reads (and a clip head pools over); None
        for a samples store, and for a selection whose clips are pooled already."""
        if self.clip_axis != "sequence" or self.clips_pooled:
            return None
        return ClipSequence(self.clip_mask, self.clip_times)


@dataclass
class Splits:
    """Row indices into a Selection (labelled takes only) for each split."""

    train: np.ndarray  # (n_train,) int64
    val: np.ndarray  # (n_val,) int64
    test: np.ndarray  # (n_test,) int64, may be empty
    source: str  # "store" (split column), "store+grouped" (val carved from train), "grouped"
    unused: int = 0  # labelled takes whose split value is none of train/val/test
    shared_participants: int = 0  # participants in both train and val (store splits only)
    pairs: dict[str, np.ndarray] | None = None  # split -> (m, 2) selection rows: a ranking store's

    def training_count(self) -> int:
        """What a training epoch goes through: the training pairs of a ranking store, else
        the training takes."""
        return len(self.train) if self.pairs is None else len(self.pairs["train"])

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}


def resolve_views(spec: str, store_views: list[str]) -> list[str]:
    """Views named by ``spec``, in the store's order.

    ``spec`` is ``all``, or a comma list of view names and ``exo`` (every view whose name
    starts with ``exo``), e.g. ``ego``, ``exo``, ``ego,exo2``.
    """
    names = [part.strip() for part in str(spec).split(",") if part.strip()]
    if not names:
        raise SelectionError(f"no views given; choose from all, exo, {', '.join(store_views)}")
    chosen: set[str] = set()
    for name in names:
        if name == "all":
            chosen.update(store_views)
        elif name == "exo":
            exos = [v for v in store_views if v.startswith("exo")]
            if not exos:
                raise SelectionError(f"'exo' given but the store has no exo view ({store_views})")
            chosen.update(exos)
        elif name in store_views:
            chosen.add(name)
        else:
            raise SelectionError(
                f"unknown view {name!r} in {spec!r}; valid views: all, exo, {', '.join(store_views)}"
            )
    return [v for v in store_views if v in chosen]


def load_selection(
    store_path: str | Path, views: str | list[str], allow_unfinished: bool = False
) -> Selection:
    """Load the chosen views of every completed take into memory.

    ``views``: a spec for :func:`resolve_views`, or an exact list of store view names.
    A store that is still being written or was interrupted is refused (a fit on its few
    completed takes would look like a result) unless ``allow_unfinished``.
    """
    store = TokenStore.open(store_path)
    view_names = (
        resolve_views(views, store.views) if isinstance(views, str) else _check_views(views, store)
    )
    view_idx = [store.views.index(v) for v in view_names]
    with store.reading():  # one chunk layout for all the reads below
        records = store.take_records()
        table, all_valid = records.table, records.valid
        valid = all_valid[:, view_idx]
        complete = records.status == STATUS_COMPLETE
        if not allow_unfinished:
            _require_finished(store, records.status)
        usable = complete & valid.any(axis=1)
        rows = np.flatnonzero(usable)
        if len(rows) == 0:  # never ask the token reader for zero rows
            raise SelectionError(
                _empty_selection(store_path, store, view_names, complete, all_valid)
            )
        x = store.read_tokens(rows, view_idx, records=records)
        pairs = store.pairs() if _ranks_pairs(store.task["name"]) else None
        clip_mask = store.clip_mask(records)[rows][:, view_idx]  # (n, V, K)
        clip_times = store.clip_times()[rows][:, view_idx].astype(np.float32)  # (n, V, K, 2)
    return Selection(
        x=x,
        mask=valid[rows],
        targets=table.target[rows],
        take_ids=table.ids[rows],
        scenario=table.scenario[rows],
        participant=table.participant[rows],
        split=table.split[rows],
        store_rows=rows.astype(np.int64),
        view_names=view_names,
        task_name=store.task["name"],
        schema=dict(store.task["schema"]),
        provenance=dict(store.provenance),
        store_path=str(Path(store_path).resolve()),
        store_views=list(store.views),
        geometry={"clips": store.clips, "tokens": store.tokens, "dim": store.dim},
        dropped_take_ids=[str(t) for t in table.ids[complete & ~usable]],
        n_incomplete=int((~complete).sum()),
        clip_axis=store.clip_axis,
        clip_mask=clip_mask,
        clip_times=clip_times,
        **_selected_pairs(pairs, rows),
    )


def _ranks_pairs(task_name: str) -> bool:
    """Whether a task learns from the pairs a store records (binds them: ``on_pairs``)."""
    return hasattr(get_task(task_name), "on_pairs")


def _selected_pairs(pairs: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray) -> dict:
    """The store's pairs as selection rows (``rows``: the selection's store rows), those
    naming a take outside the selection left out and counted."""
    if pairs is None:
        return {}
    store_rows, splits = pairs
    position = np.full(max(int(rows.max(initial=-1)), int(store_rows.max(initial=-1))) + 1, -1)
    position[rows] = np.arange(len(rows))
    mapped = position[store_rows] if len(store_rows) else np.zeros((0, 2), dtype=np.int64)
    kept = (mapped >= 0).all(axis=1)
    return {
        "pairs": mapped[kept].astype(np.int64),
        "pair_split": splits[kept],
        "dropped_pairs": int((~kept).sum()),
    }


def clip_axis_of(provenance: dict) -> str:
    """The clip axis a provenance records (``samples`` where it records none)."""
    return str(provenance.get("clip_axis") or "samples")


def check_clip_axis(head: str, reads: str, sel: Selection) -> None:
    """Refuse head ``head`` (reading ``reads``: clip or sequence) on a selection it cannot
    read: a sequence head on a samples store (one line naming both)."""
    if reads == "sequence" and sel.clip_axis != "sequence":
        raise ClipAxisError(
            f"{sel.store_path}: head {head!r} reads an ordered clip sequence, but the store's "
            f"clip axis is {sel.clip_axis}; extract with --sampling sequence or stride"
        )


def selection_for(reads: str, sel: Selection) -> Selection:
    """What a head reading ``reads`` is fed of ``sel``: a clip head on a sequence store reads
    each view's mean over its valid clips (:func:`pooled_selection`), anything else ``sel``."""
    if reads == "clip" and sel.sequence is not None:
        return pooled_selection(sel)
    return sel


def pooled_selection(sel: Selection) -> Selection:
    """``sel`` with each view's clips replaced by their mean over the valid ones: x
    ``(n, V, 1, N, D)``; the clip mask says whether a view had any clip, the times span its
    clips. Computed once per selection (kept on it)."""
    if sel._pooled is None:
        times = sel.clip_times
        span = np.stack(
            [np.fmin.reduce(times[..., 0], axis=2), np.fmax.reduce(times[..., 1], axis=2)], -1
        )  # (n, V, 2)
        sel._pooled = dataclasses.replace(
            sel,
            x=pool_clips(sel.x, sel.clip_mask),
            clip_mask=sel.clip_mask.any(axis=2, keepdims=True),
            clip_times=span[:, :, None].astype(np.float32),
            clips_pooled=True,
            _pooled=None,
        )
    return sel._pooled


def for_run(sel: Selection, train_rows: np.ndarray) -> Selection:
    """``sel`` whose task is that of a run trained on its takes ``train_rows`` (regression:
    scores in their own units); a copy, since a sweep shares ``sel`` between fits."""
    summary = sel.task.train_summary(sel.schema, sel.targets[train_rows])
    return dataclasses.replace(sel, train_summary=summary, _pooled=None)


def pool_clips(x: np.ndarray, clip_mask: np.ndarray) -> np.ndarray:
    """Each view's mean over its valid clips: ``x (n, V, K, N, D)`` float16 and ``clip_mask
    (n, V, K)`` -> ``(n, V, 1, N, D)`` float16, accumulated in float32; zeros for a view
    without a valid clip. Tokens of absent clips never enter, whatever they hold."""
    n, views, clips, tokens, dim = x.shape
    out = np.zeros((n, views, 1, tokens, dim), dtype=np.float16)
    block = max(1, POOL_BYTES // max(1, views * tokens * dim * 4))
    for start in range(0, n, block):
        chunk, valid = x[start : start + block], clip_mask[start : start + block]
        total = np.zeros((len(chunk), views, tokens, dim), dtype=np.float32)
        for k in range(clips):
            present = valid[:, :, k, None, None]  # (b, V, 1, 1)
            total += np.where(present, chunk[:, :, k], 0).astype(np.float32)
        count = np.maximum(valid.sum(axis=2), 1).astype(np.float32)  # (b, V)
        out[start : start + block, :, 0] = total / count[:, :, None, None]
    return out


def _require_finished(store: TokenStore, status: np.ndarray) -> None:
    pending = int((status == STATUS_PENDING).sum())
    state, writer = store.run_state(pending)
    if state == "finished":
        return
    complete = int((status == STATUS_COMPLETE).sum())
    by = f" by {writer}" if writer else ""
    raise SelectionError(
        f"{store.path}: the store is {state}{by}: {complete} of {len(status)} takes complete, "
        f"{pending} pending, {int((status == STATUS_FAILED).sum())} failed; let `skill extract` "
        f"finish (run the same command again to resume it), or pass --allow-unfinished to use "
        f"the {complete} completed takes"
    )


def _empty_selection(
    store_path, store: TokenStore, view_names: list[str], complete: np.ndarray, valid: np.ndarray
) -> str:
    """Why no take is left: no completed take at all, or which chosen views failed where."""
    n_complete = int(complete.sum())
    if n_complete == 0:
        return (
            f"{store_path}: no completed take to read ({len(complete)} takes in the store, "
            "all pending or failed); run skill extract to finish them"
        )
    done = valid[complete]
    failed = [
        f"{v} failed in {n_complete - int(done[:, store.views.index(v)].sum())} of "
        f"{n_complete} completed takes"
        for v in view_names
    ]
    others = [v for i, v in enumerate(store.views) if v not in view_names and done[:, i].any()]
    what = (
        f"a valid {view_names[0]} view"
        if len(view_names) == 1
        else f"a valid view among {', '.join(view_names)}"
    )
    with_data = f"views with data: {', '.join(others)}" if others else "no other view has data"
    return f"{store_path}: no completed take has {what} ({'; '.join(failed)}; {with_data})"


def _check_views(views: list[str], store: TokenStore) -> list[str]:
    missing = [v for v in views if v not in store.views]
    if missing:
        raise SelectionError(
            f"{store.path}: the store has no view {', '.join(map(repr, missing))} "
            f"(store views: {', '.join(store.views)})"
        )
    return list(views)


def split_takes(sel: Selection, val_frac: float = 0.2, seed: int = 0) -> Splits:
    """Train/val/test rows of the labelled takes (see the module docstring for the rules)."""
    if sel.pairs is not None:
        return pair_splits(sel, val_frac, seed)
    labelled = np.flatnonzero(sel.labelled)
    if len(labelled) == 0:
        raise SelectionError(f"{sel.store_path}: no labelled completed take to fit on")
    named = np.array([SPLIT_NAMES.get(s.strip().lower(), "") for s in sel.split[labelled]])
    if not named.any():
        train, val = grouped_split(sel, labelled, val_frac, seed)
        splits = Splits(train=train, val=val, test=_empty(), source="grouped")
    else:
        splits = _store_splits(sel, labelled, named, val_frac, seed)
    if len(splits.train) == 0 or len(splits.val) == 0:
        empty = "train" if len(splits.train) == 0 else "val"
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.as_dict().items())
        people = len(set(sel.participant[labelled]))
        source = (
            "the store's split column"
            if splits.source == "store"
            else f"the grouped split (val_frac={val_frac}, {people} "
            f"participant{'' if people == 1 else 's'})"
        )
        hint = (
            "add train takes to the store's split column"
            if empty == "train"
            else "add val takes to the store's split column, or more participants"
        )
        raise SelectionError(
            f"{sel.store_path}: the {empty} split is empty: {source} leaves "
            f"{sizes} labelled takes with a valid view of {', '.join(sel.view_names)} "
            f"({len(sel.dropped_take_ids)} completed takes without one); {hint}"
        )
    return splits


def pair_splits(sel: Selection, val_frac: float = 0.2, seed: int = 0) -> Splits:
    """The splits of a store that records pairs (see the module docstring)."""
    pairs = {name: sel.pairs[sel.pair_split == name] for name in ("train", "val", "test")}
    views = ", ".join(sel.view_names)
    dropped = (
        f" ({sel.dropped_pairs} pairs name a take without a valid view of {views})"
        if sel.dropped_pairs
        else ""
    )
    if not len(pairs["train"]):
        raise SelectionError(
            f"{sel.store_path}: the store has no training pair to fit on{dropped}; give a "
            "train pairs file to skill extract --pairs"
        )
    source = "pairs"
    if not len(pairs["val"]):
        order = np.random.default_rng(seed).permutation(len(pairs["train"]))
        count = min(max(int(round(val_frac * len(order))), 1), len(order) - 1)
        if count < 1:
            raise SelectionError(
                f"{sel.store_path}: one training pair and no val pair{dropped}; give a val "
                "pairs file to skill extract --pairs"
            )
        pairs["val"] = pairs["train"][np.sort(order[:count])]
        pairs["train"] = pairs["train"][np.sort(order[count:])]
        source = "pairs+carved"
    train = np.unique(pairs["train"])
    held = {}
    for name in ("val", "test"):
        named = np.unique(pairs[name])
        own = np.setdiff1d(named, train)
        held[name] = own if len(own) or name == "test" else named
    return Splits(train=train, val=held["val"], test=held["test"], source=source, pairs=pairs)


def scored_rows(sel: Selection, splits: Splits, split: str):
    """The takes that score ``split`` and the task that scores them: the split's takes, and
    for a store with pairs the other takes its pairs name after them, with the task bound to
    those pairs (``on_pairs``: their positions among the rows returned)."""
    rows = splits.as_dict()[split]
    if splits.pairs is None:
        return rows, sel.task
    pairs = splits.pairs[split]
    extra = np.setdiff1d(np.unique(pairs), rows)
    rows = np.concatenate([rows, extra]).astype(np.int64)
    position = np.zeros(sel.n, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    return rows, sel.task.on_pairs(position[pairs])


def pairs_within(sel: Selection, keep: np.ndarray) -> dict:
    """The selection's pairs of the takes ``keep`` (n,) bool as rows among them (the pairs
    naming another take left out): the fields of a Selection of those takes."""
    if sel.pairs is None:
        return {}
    position = np.cumsum(keep) - 1
    kept = keep[sel.pairs].all(axis=1)
    return {
        "pairs": position[sel.pairs[kept]].astype(np.int64),
        "pair_split": sel.pair_split[kept],
        "dropped_pairs": sel.dropped_pairs + int((~kept).sum()),
    }


def pair_metrics(sel: Selection, scores: np.ndarray, train_targets: np.ndarray) -> dict:
    """The task's metrics of each split that has pairs, and of ``all`` pairs, each over the
    takes its pairs name (scores ``(n, O)`` of every take of ``sel``)."""
    out = {}
    for split in ("all", *sorted(set(sel.pair_split.tolist()))):
        pairs = sel.pairs if split == "all" else sel.pairs[sel.pair_split == split]
        rows = np.unique(pairs)
        position = np.zeros(sel.n, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        out[split] = sel.task.on_pairs(position[pairs]).evaluate(
            sel.schema, sel.targets[rows], scores[rows], sel.scenario[rows], train_targets
        )
    return out


def _store_splits(
    sel: Selection, labelled: np.ndarray, named: np.ndarray, val_frac: float, seed: int
) -> Splits:
    train, val, test = (labelled[named == name] for name in ("train", "val", "test"))
    source = "store"
    if len(val) == 0 and len(train):
        train, val = grouped_split(sel, train, val_frac, seed)
        source = "store+grouped"
    shared = set(sel.participant[train]) & set(sel.participant[val]) - {""}
    return Splits(
        train=train,
        val=val,
        test=test,
        source=source,
        unused=int((named == "").sum()),
        shared_participants=len(shared),
    )


def grouped_split(
    sel: Selection, rows: np.ndarray, val_frac: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` into (train, val) so that no participant is on both sides.

    Participants are grouped by their most common stratum (the task's grouping of targets:
    classification's label) and ``round(val_frac * count)`` of each stratum's participants (at
    least one when the stratum has two or more) go to val, so that every class is represented
    in val when possible. A take without a participant is its own group. Seeded: the same
    seed gives the same split.
    """
    groups = np.array(
        [
            p if p else f"\0take:{t}"
            for p, t in zip(sel.participant[rows], sel.take_ids[rows], strict=True)
        ]
    )
    names, inverse = np.unique(groups, return_inverse=True)
    strata = sel.task.strata(sel.targets[rows])
    _, strata = np.unique(strata, return_inverse=True)  # non-negative ints for bincount
    group_label = np.array([np.bincount(strata[inverse == g]).argmax() for g in range(len(names))])
    rng = np.random.default_rng(seed)
    val_groups: list[int] = []
    for label in np.unique(group_label):
        members = rng.permutation(np.flatnonzero(group_label == label))
        count = int(round(val_frac * len(members)))
        if len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        val_groups += members[:count].tolist()
    if not val_groups and len(names) >= 2:
        val_groups = [int(rng.integers(len(names)))]
    in_val = np.isin(inverse, val_groups)
    return rows[~in_val], rows[in_val]


def take_ids_sha256(take_ids: np.ndarray) -> str:
    """sha256 of the take ids, one per line, in the given order."""
    return hashlib.sha256("\n".join(map(str, take_ids)).encode()).hexdigest()


def _empty() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)
