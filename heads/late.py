"""``late`` head: one classifier per view, the task's scores averaged over the valid views."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skill.heads._ops import check_inputs, check_sizes, classifier_mlp, pool_tokens
from skill.heads.registry import register_head
from skill.tasks import get_task


@register_head("late")
class LateHead(nn.Module):
    """Late fusion: per-view classifiers, output = log of the mean of the valid views' softmaxes.

    ``forward``: ``(B, V, N, D) float32, (B, V) bool -> (B, O)`` log-probabilities.
    This is the protocol of the official EgoExo4D baselines and scorer (mean of the views'
    softmaxes). Because the output is already a log-probability, ``softmax(out) == exp(out)``
    and cross-entropy on it is the NLL of the averaged probabilities.
    ``per_view_logits`` gives each view's own logits for the per-view slots of the EgoExo4D
    prediction file.
    ``hidden`` = 0 makes each per-view classifier LayerNorm + Linear. ``task``: the store's
    task, whose ``fuse_views`` averages its scores over the views (ordinal: the level
    distributions, regression: the scores); the above is classification's.
    """

    pools_tokens = True  # its first step is the mean over each view's tokens

    def __init__(
        self,
        dim: int,
        num_views: int,
        outputs: int,
        hidden: int = 256,
        dropout: float = 0.1,
        task: str = "classification",
    ):
        super().__init__()
        check_sizes(dim, num_views, outputs, hidden)
        self.dim, self.num_views = dim, num_views
        self.task = get_task(task)
        self.view_classifiers = nn.ModuleList(
            classifier_mlp(dim, hidden, outputs, dropout) for _ in range(num_views)
        )

    def per_view_logits(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, V, N, D), (B, V) -> (B, V, O)``; rows of missing views are meaningless."""
        check_inputs(x, mask, self.num_views, self.dim)
        per_view = pool_tokens(x, mask)  # (B, V, D)
        logits = [classify(per_view[:, v]) for v, classify in enumerate(self.view_classifiers)]
        return torch.stack(logits, dim=1)  # (B, V, O)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, V, N, D), (B, V) -> (B, O)``: the per-view outputs fused by the task
        (classification: ``log(mean over valid v of softmax(logits_v))``)."""
        return self.task.fuse_views(self.per_view_logits(x, mask), mask)
