"""``mean`` head: average every token of every valid view, then an MLP."""

from __future__ import annotations

from torch import Tensor, nn

from skill.heads._ops import check_inputs, check_sizes, classifier_mlp, masked_mean, pool_tokens
from skill.heads.registry import register_head


@register_head("mean")
class MeanHead(nn.Module):
    """Mean over valid views and all their tokens, then an MLP classifier.

    ``forward``: ``(B, V, N, D) float32, (B, V) bool -> (B, C)`` logits.
    Since every view has the same N tokens, the mean of per-view token means over the valid
    views equals the mean over all valid tokens. ``tokens`` is accepted for a uniform
    signature and unused. ``hidden`` = 0 gives a linear probe.
    """

    pools_tokens = True  # its first step is the mean over each view's tokens

    def __init__(
        self,
        dim: int,
        num_views: int,
        num_classes: int,
        tokens: int,
        hidden: int = 512,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_sizes(dim, num_views, num_classes, tokens, hidden)
        self.dim, self.num_views = dim, num_views
        self.classifier = classifier_mlp(dim, hidden, num_classes, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, V, N, D), (B, V) -> (B, C)``."""
        check_inputs(x, mask, self.num_views, self.dim)
        per_view = pool_tokens(x, mask)  # (B, V, D)
        pooled = masked_mean(per_view, mask)  # (B, D)
        return self.classifier(pooled)  # (B, C)
