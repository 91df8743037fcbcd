"""``concat`` head: per-view features side by side in a fixed view order, then an MLP."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skill.heads._ops import check_inputs, check_sizes, classifier_mlp, pool_tokens
from skill.heads.registry import register_head


@register_head("concat")
class ConcatHead(nn.Module):
    """Concatenate the views' pooled tokens; a missing view becomes a learned embedding.

    ``forward``: ``(B, V, N, D) float32, (B, V) bool -> (B, O)`` logits.
    Each view is mean-pooled over its tokens and layer-normed (per view, so that one loud view
    does not dominate); a missing view is replaced by its own learned "missing" vector (V, D),
    and the mask itself is appended as V extra 0/1 features, so the MLP sees
    ``(B, V*D + V)``. Unlike the other heads, the position in the concatenation identifies the
    view, so the view order must be the same at fit and predict time.
    ``hidden`` = 0 gives a linear probe.
    """

    pools_tokens = True  # its first step is the mean over each view's tokens

    def __init__(
        self,
        dim: int,
        num_views: int,
        outputs: int,
        hidden: int = 512,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_sizes(dim, num_views, outputs, hidden)
        self.dim, self.num_views = dim, num_views
        self.view_norm = nn.LayerNorm(dim)
        # Small init: near the normalised features' origin, learned from the missing cases.
        self.missing = nn.Parameter(torch.randn(num_views, dim) * 0.02)  # (V, D)
        self.classifier = classifier_mlp(num_views * dim + num_views, hidden, outputs, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, V, N, D), (B, V) -> (B, O)``."""
        check_inputs(x, mask, self.num_views, self.dim)
        per_view = self.view_norm(pool_tokens(x, mask))  # (B, V, D)
        per_view = torch.where(mask[:, :, None], per_view, self.missing[None])  # (B, V, D)
        features = torch.cat([per_view.flatten(1), mask.to(per_view.dtype)], dim=1)  # (B, V*D + V)
        return self.classifier(features)  # (B, O)
