"""Running `skill extract` under torchrun: who this process is, and which takes it owns.

Under `torchrun --nproc-per-node N -m cli extract ...` every rank runs the same command.
Rank 0 is the coordinator (it creates or appends to the store, registers the takes and holds
the writer lock); every rank then extracts its own share of the pending takes and writes only
their chunks, which is safe because a chunk never holds data of two takes.

Messages between ranks are JSON (sent as a byte tensor), never pickle: `broadcast_object_list`
would unpickle whatever rank 0 sent.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from skill.errors import ConfigError

T = TypeVar("T")

# A rank that finished its share waits at the final barrier for the slowest one, which can
# take hours on an unbalanced dataset; torch's default of 30 minutes would fail a good run.
# A rank that dies does not leave the others hanging: torchrun stops the whole group.
COLLECTIVE_TIMEOUT = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Rank:
    """This process's place in the run: `rank` of `world` (a single process is 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

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
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} WORLD_SIZE={world}: not a valid torchrun environment")
    return Rank(rank=rank, world=world, local_rank=local)


def init_process_group(rank: Rank, device: str) -> None:
    """Join the torchrun group: NCCL when extracting on CUDA, gloo on CPU."""
    if not rank.distributed:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend="nccl", timeout=COLLECTIVE_TIMEOUT)
    else:
        dist.init_process_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT)


def collective_device():
    """Tensors of a collective live where the backend wants them: CUDA for NCCL."""
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_from_coordinator(rank: Rank, value):
    """Rank 0's `value` (anything JSON can hold) on every rank; identity for one process."""
    if not rank.distributed:
        return value
    import torch
    import torch.distributed as dist

    device = collective_device()
    payload = json.dumps(value).encode() if rank.is_coordinator else b""
    size = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if rank.is_coordinator:
        buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buffer, src=0)
    return json.loads(bytes(buffer.cpu().numpy()).decode())


def run_on_coordinator(rank: Rank, step: Callable[[], T], errors: type[Exception]) -> T:
    """``step()`` run on rank 0 only, its result (anything JSON can hold) returned on every
    rank. An ``errors`` exception from it is raised on every rank, so that none of them waits
    in a collective that rank 0 will never reach; in one process it propagates as it is."""
    if not rank.distributed:
        return step()
    outcome = None
    if rank.is_coordinator:
        try:
            outcome = {"value": step()}
        except errors as err:
            outcome = {"error": str(err)}
    outcome = broadcast_from_coordinator(rank, outcome)
    if "error" in outcome:
        raise errors(outcome["error"])
    return outcome["value"]


def sum_over_ranks(rank: Rank, counts: Sequence[int]) -> list[int]:
    """Element-wise sum of every rank's `counts` (all ranks get the result)."""
    if not rank.distributed:
        return list(counts)
    import torch
    import torch.distributed as dist

    totals = torch.tensor(list(counts), dtype=torch.int64, device=collective_device())
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    return [int(x) for x in totals.cpu().tolist()]


def gather_from_ranks(rank: Rank, value: int) -> list[int]:
    """Every rank's `value`, in rank order (all ranks get the list)."""
    if not rank.distributed:
        return [int(value)]
    import torch
    import torch.distributed as dist

    device = collective_device()
    mine = torch.tensor([int(value)], dtype=torch.int64, device=device)
    everyone = [torch.zeros_like(mine) for _ in range(rank.world)]
    dist.all_gather(everyone, mine)
    return [int(t.item()) for t in everyone]


def shutdown(rank: Rank) -> None:
    if rank.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def balance_by_cost(costs: Sequence[float], world: int) -> list[list[int]]:
    """Split items between `world` ranks so that their summed costs are close.

    Longest-processing-time-first greedy: items in decreasing cost go to the currently
    lightest rank (ties to the lower rank, then lower index, so every rank computes the same
    plan). Its largest load is at most 4/3 of the best possible. Each rank's list is returned
    in increasing item order."""
    if world < 1:
        raise ValueError(f"world must be at least 1, got {world}")
    loads = [0.0] * world
    shares: list[list[int]] = [[] for _ in range(world)]
    for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        target = min(range(world), key=lambda r: (loads[r], r))
        loads[target] += costs[item]
        shares[target].append(item)
    return [sorted(share) for share in shares]
