"""Synthetic token stores of the ordinal, regression and pairwise tasks, written through the
real TokenStore API, where a continuous latent skill per take drives the tokens.

Each participant has a skill in 0..1; each take's latent is that skill plus a little
take-to-take noise, clipped to 0..1. Every token of every view is the latent (centred) times
``signal`` along one fixed unit direction of token space, plus the participant's offset (a
nuisance shared by their takes) and Gaussian noise whose spread differs by view (``ego``
cleanest, ``exo3`` noisiest). The level is the latent binned into four equal bins; the scores
are 10 x the latent plus judges' noise (one score ``score``, or two: ``tes`` and ``pcs`` with
different noise); pairs are drawn within each split, latents at least ``PAIR_GAP`` apart, the
higher latent first. Participants go to train / val / test (60 / 20 / 20 %).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skill.cache.store import STATUS_COMPLETE, TakeResult, TakeRow, TokenStore
from skill.tasks import task_record

VIEWS = ["ego", "exo1", "exo2", "exo3"]
VIEW_NOISE = {"ego": 1.0, "exo1": 1.5, "exo2": 2.0, "exo3": 3.0}
LEVELS = ["Novice", "Early Expert", "Intermediate Expert", "Late Expert"]
GROUPS = ["Cooking", "Dance", "Music"]
JUDGE_NOISE = {"score": 0.4, "tes": 0.3, "pcs": 0.6}
"""Judges' noise (standard deviation, on the 0..10 scale) of each score."""
PAIR_GAP = 0.05
TAKE_JITTER = 0.08
"""Take-to-take spread of a participant's latent skill."""
OFFSET_SD = 0.3
DIM, TOKENS, CLIPS, FRAMES, FPS = 32, 4, 2, 4, 30.0
PROVENANCE = {
    "backbone": {"name": "synthetic-latent", "weights_sha256": "0" * 64},
    "adapter": None,
    "sampling": {"clips": CLIPS, "frames": FRAMES, "stride": 4},
    "token_mode": "mean_patches",
    "preprocessing": {"size": 224, "mean": [0.45] * 3, "std": [0.225] * 3},
    "dtype": "float16",
}


@dataclass(frozen=True)
class LatentSpec:
    """What to build: the task, its scores, the size and the strength of the skill signal."""

    task: str
    participants: int = 40
    takes_per_participant: int = 4
    signal: float = 1.0
    scores: tuple[str, ...] = ("score",)
    pairs_per_take: int = 4
    seed: int = 0

    @property
    def name(self) -> str:
        scores = "+".join(self.scores) if self.task == "regression" else ""
        return (
            f"latent-{self.task}{'-' + scores if scores else ''}-p{self.participants}"
            f"x{self.takes_per_participant}-s{self.signal:g}-q{self.pairs_per_take}-d{self.seed}"
        )


def schema_of(spec: LatentSpec) -> dict:
    """The task's schema: ordered levels, or the scores (0..10) grouped by scenario."""
    if spec.task in ("ordinal", "classification"):
        schema: dict = {"labels": list(LEVELS)}
        return {**schema, "ordered": True} if spec.task == "ordinal" else schema
    names = spec.scores if spec.task == "regression" else ("score",)
    scores = [{"name": n, "low": 0.0, "high": 10.0} for n in names]
    extra = {"margin": 1.0} if spec.task == "pairwise" else {}
    return {"scores": scores, "group": "scenario", **extra}


def latents(spec: LatentSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each take's latent skill in 0..1 and its participant's index."""
    person = np.repeat(np.arange(spec.participants), spec.takes_per_participant)
    skill = rng.random(spec.participants)
    jitter = rng.normal(0, TAKE_JITTER, size=person.size)
    return np.clip(skill[person] + jitter, 0.0, 1.0), person


def target_of(spec: LatentSpec, latent: float, rng: np.random.Generator):
    """A take's target as a manifest states it: its level's name, or its score(s)."""
    if spec.task in ("ordinal", "classification"):
        return LEVELS[min(int(latent * len(LEVELS)), len(LEVELS) - 1)]
    names = spec.scores if spec.task == "regression" else ("score",)
    values = {
        n: round(float(np.clip(10 * latent + rng.normal(0, JUDGE_NOISE.get(n, 0.4)), 0, 10)), 2)
        for n in names
    }
    return values if len(values) > 1 else values[names[0]]


def take_rows(spec: LatentSpec, latent: np.ndarray, person: np.ndarray, rng) -> list[TakeRow]:
    """The take table: participants cycle train x3, val, test; scenario is the group."""
    rows = []
    for i, (value, p) in enumerate(zip(latent, person, strict=True)):
        split = ("train", "train", "train", "val", "test")[int(p) % 5]
        rows.append(
            TakeRow(
                take_id=f"p{p:03d}_take{i % spec.takes_per_participant}",
                target=target_of(spec, float(value), rng),
                scenario=GROUPS[int(p) % len(GROUPS)],
                participant=f"p{p:03d}",
                split=split,
            )
        )
    return rows


def latent_pairs(rows: list[TakeRow], latent: np.ndarray, per_take: int, seed: int):
    """Pairs of take-table rows within each split, latents at least PAIR_GAP apart, the
    higher latent first, and their splits."""
    rng = np.random.default_rng(seed)
    out, splits = [], []
    for split in sorted({r.split for r in rows}):
        members = [i for i, r in enumerate(rows) if r.split == split]
        for _ in range(per_take * len(members)):
            a, b = rng.choice(members, size=2, replace=False)
            if abs(latent[a] - latent[b]) >= PAIR_GAP:
                out.append((a, b) if latent[a] > latent[b] else (b, a))
                splits.append(split)
    return np.asarray(out, dtype=np.int64).reshape(-1, 2), splits


def take_result(latent: float, offset: np.ndarray, direction: np.ndarray, signal: float, rng):
    """Tokens (V, K, N, D): the latent along ``direction``, the offset, each view's noise."""
    noise = np.array([VIEW_NOISE[v] for v in VIEWS])[:, None, None, None]
    tokens = rng.normal(0, 1, size=(len(VIEWS), CLIPS, TOKENS, DIM)) * noise
    tokens += offset + signal * (latent - 0.5) * direction
    frames = np.tile(np.arange(FRAMES), (len(VIEWS), CLIPS, 1))
    timestamp = frames / FPS
    clip_time = np.stack([timestamp[..., 0], timestamp[..., -1] + 1 / FPS], axis=-1)
    return TakeResult(
        tokens=tokens.astype(np.float16),
        valid=np.ones(len(VIEWS), dtype=bool),
        frame_index=frames,
        timestamp=timestamp,
        padded=np.zeros(len(VIEWS), dtype=int),
        view_error=[""] * len(VIEWS),
        status=STATUS_COMPLETE,
        clip_time=clip_time,
    )


def build_latent_store(path: Path, spec: LatentSpec) -> Path:
    """Write the store of ``spec`` at ``path`` (which must not exist)."""
    rng = np.random.default_rng(spec.seed)
    latent, person = latents(spec, rng)
    rows = take_rows(spec, latent, person, np.random.default_rng(spec.seed + 1))
    store = TokenStore.create(
        path, provenance=PROVENANCE, views=VIEWS, task=task_record(spec.task, schema_of(spec)),
        clips=CLIPS, tokens=TOKENS, dim=DIM, frames=FRAMES,
    )  # fmt: skip
    indices = store.add_takes(rows)
    if spec.task == "pairwise":
        pairs, splits = latent_pairs(rows, latent, spec.pairs_per_take, spec.seed + 2)
        store.set_pairs(np.asarray(indices)[pairs], splits)
    direction = rng.normal(size=DIM)
    direction /= np.linalg.norm(direction)
    offsets = rng.normal(0, OFFSET_SD, size=(spec.participants, DIM))
    for i, value, p in zip(indices, latent, person, strict=True):
        store.write_take(i, take_result(float(value), offsets[p], direction, spec.signal, rng))
    return path
