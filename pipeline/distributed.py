"""Running `skill extract` under torchrun: who this process is, and which takes it owns.

Under `torchrun --nproc-per-node N -m cli extract ...` every rank runs the same command.
Rank 0 is the coordinator (it creates or appends to the store and holds the writer lock);
every rank then extracts its own share of the pending takes and writes only their chunks,
which is safe because a (take, view) chunk is never shared between takes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Rank:
    """This process's place in the run: `rank` of `world` (a single process is 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def is_coordinator(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def current_rank() -> Rank:
    """Read torchrun's environment; without it this is a single-process run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return Rank(rank=rank, world=world)


def init_process_group(rank: Rank, device: str) -> None:
    """Join the torchrun group: NCCL when extracting on CUDA, gloo on CPU."""
    if not rank.distributed:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def broadcast_from_coordinator(rank: Rank, value):
    """Rank 0's `value` on every rank (a JSON-like object; identity for one process)."""
    if not rank.distributed:
        return value
    import torch.distributed as dist

    box = [value if rank.is_coordinator else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(rank: Rank) -> None:
    if rank.distributed:
        import torch.distributed as dist

        dist.barrier()


def shutdown(rank: Rank) -> None:
    if rank.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def balance_by_cost(costs: Sequence[float], world: int) -> list[list[int]]:
    """Split items between `world` ranks so that their summed costs are close.

    Longest-processing-time-first greedy: items in decreasing cost go to the currently
    lightest rank (ties to the lower rank, then lower index, so every rank computes the same
    plan). Each rank's list is returned in increasing item order."""
    loads = [0.0] * world
    shares: list[list[int]] = [[] for _ in range(world)]
    for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        target = min(range(world), key=lambda r: (loads[r], r))
        loads[target] += costs[item]
        shares[target].append(item)
    return [sorted(share) for share in shares]
