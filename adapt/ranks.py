"""`skill adapt` under torchrun: which takes of a batch this rank trains on, the gradient
all-reduce, and predictions gathered from every rank's share.

Data parallel, written out rather than wrapped in ``DistributedDataParallel``: every rank
draws the same epoch plan (order and windows, seeded by (seed, epoch)), trains on its slice of
each global batch (``batch_size`` takes per rank), and before each optimiser step the summed
gradients of the trainable weights (LoRA and head only: a few million numbers) are
all-reduced in one flat buffer. Each take weighs the same in a step whatever rank holds it
(its loss is scaled by 1 / takes in the global step), so the step is the one a single process
would take on the whole global batch, to float rounding; every rank then applies the same
AdamW step to the same weights. A wrapper would overlap the reduce with the backward, which
matters little for so few weights, and would have to wrap a PEFT model whose forward also
serves evaluation.
"""

from __future__ import annotations

import numpy as np

from skill.pipeline import distributed
from skill.pipeline.distributed import Rank


def my_slice(rows: np.ndarray, rank: Rank, per_rank: int) -> np.ndarray:
    """This rank's contiguous part of one global batch of ``per_rank * world`` rows (the last
    batch may leave a rank fewer rows, or none)."""
    return rows[rank.rank * per_rank : (rank.rank + 1) * per_rank]


def my_share(rows: np.ndarray, rank: Rank) -> np.ndarray:
    """This rank's contiguous share of ``rows`` for evaluation (sizes differ by at most one)."""
    return np.array_split(rows, rank.world)[rank.rank]


def all_reduce_gradients(parameters: list, rank: Rank) -> None:
    """Sum every parameter's gradient over the ranks, in one flat buffer (a parameter without
    a gradient on this rank, because it trained on no take, counts as zeros)."""
    if not rank.distributed:
        return
    import torch
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    start = 0
    for p, g in zip(parameters, grads, strict=True):
        size = g.numel()
        p.grad = flat[start : start + size].view_as(p)  # a view: flat is this step's own
        start += size


def sum_arrays(value: np.ndarray, rank: Rank) -> np.ndarray:
    """Element-wise float64 sum of every rank's ``value`` (all ranks get it); a rank fills the
    rows it computed and leaves zeros elsewhere, so the sum is the whole array, exactly."""
    if not rank.distributed:
        return value
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float64))
    tensor = tensor.to(distributed.collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().numpy()


def barrier(rank: Rank) -> None:
    """Wait until every rank is here (rank 0 has written a checkpoint, or the outputs)."""
    if rank.distributed:
        import torch.distributed as dist

        dist.barrier()
