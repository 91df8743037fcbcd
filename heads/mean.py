"""``mean`` head: embed each valid view's pooled tokens with one shared projection, average the
embeddings over the valid views, then an MLP."""

from __future__ import annotations

from torch import Tensor, nn

from skill.heads._ops import check_inputs, check_sizes, classifier_mlp, masked_mean, pool_tokens
from skill.heads.registry import register_head


@register_head("mean")
class MeanHead(nn.Module):
    """Mean fusion of learned per-view embeddings, then an MLP classifier.

    ``forward``: ``(B, V, N, D) float32, (B, V) bool -> (B, O)`` logits. Each view's tokens
    are averaged, ``(B, V, D)``, embedded by one projection shared by all views (LayerNorm,
    Linear D -> D, GELU): ``(B, V, D)``, and the embeddings averaged over the valid views,
    ``(B, D)``, before the classifier. The projection is why it learns from several views:
    the mean of the raw tokens of five views loses what tells the levels apart (BENCHMARKS.md,
    benchmark 7), the mean of their embeddings keeps it. Sharing it keeps the head
    independent of view order and count, as a mean is. ``hidden`` = 0 gives a linear
    classifier after the projection.
    """

    pools_tokens = True  # its first step is the mean over each view's tokens

    def __init__(
        self,
        dim: int,
        num_views: int,
        outputs: int,
        hidden: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_sizes(dim, num_views, outputs, hidden)
        self.dim, self.num_views = dim, num_views
        self.view_proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())
        self.classifier = classifier_mlp(dim, hidden, outputs, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, V, N, D), (B, V) -> (B, O)``."""
        check_inputs(x, mask, self.num_views, self.dim)
        per_view = pool_tokens(x, mask)  # (B, V, D)
        embedded = self.view_proj(per_view)  # (B, V, D), missing views excluded just below
        pooled = masked_mean(embedded, mask)  # (B, D)
        return self.classifier(pooled)  # (B, O)
