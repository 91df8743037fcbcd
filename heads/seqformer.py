"""``seqformer`` head: a small transformer over each view's ordered clips, views fused by cvf."""

from __future__ import annotations

from torch import Tensor, nn

from skill.heads._ops import (
    ClipEmbedding,
    ClipEncoder,
    check_sequence_inputs,
    check_sizes,
    masked_attention_pool,
    scatter_views,
)
from skill.heads.cvf import CrossViewFusionHead
from skill.heads.registry import register_head

MAX_ATTENTION_HEADS = 4


@register_head("seqformer", reads="sequence")
class SequenceTransformerHead(nn.Module):
    """Per view, a transformer encoder over its clip sequence; the views fused by cvf.

    ``forward``: tokens ``(B, V, K, N, D)`` float32, view mask ``(B, V)`` bool (True = view
    present), clip mask ``(B, V, K)`` bool (True = the clip holds tokens), clip times
    ``(B, V, K, 2)`` float32 (start and end in seconds, 0 where absent) -> ``(B, O)`` logits.

    Steps, for each present view (weights shared by the views):
    1. each clip's N tokens averaged, projected D -> ``hidden`` H, LayerNorm; plus the
       sinusoidal encoding of the clip's centre time in seconds (absolute time, so takes of
       other lengths or strides stay comparable) -> (K, H)
    2. ``layers`` pre-norm transformer encoder layers (:class:`heads._ops.EncoderLayer`:
       ``heads`` attention heads at most, the largest divisor of H; feed-forward 2H; dropout
       on the residual branches), absent clips excluded as keys (key padding mask), then
       LayerNorm
    3. attention pooling over the valid clips (a learned score per clip, softmax over the
       valid ones) -> (H,)
    4. the views' (B, V, H) fused by cvf's :class:`heads.cvf.CrossViewFusionHead` (its
       module, built at width H with hidden 2H: self-attention across the present views,
       gated projection, self-calibration, Linear(H -> O)); missing views are masked there
       and never computed in steps 1-3.
    Absent clips and missing views are zeroed before any arithmetic: what they hold cannot
    reach the output.
    """

    pools_tokens = True  # its first step is the mean over each clip's tokens
    multiview_dropout = 0.2  # cvf's, whose fusion it uses

    def __init__(
        self,
        dim: int,
        num_views: int,
        outputs: int,
        hidden: int = 64,
        layers: int = 1,
        heads: int = MAX_ATTENTION_HEADS,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_sizes(dim, num_views, outputs, hidden)
        self.encoder = ClipEncoder("seqformer", hidden, layers, heads, dropout)
        self.dim, self.num_views = dim, num_views
        self.embed = ClipEmbedding(dim, hidden)
        self.clip_score = nn.Linear(hidden, 1, bias=False)  # a softmax ignores a shift
        self.fusion = CrossViewFusionHead(hidden, num_views, outputs, 2 * hidden, dropout)

    def forward(self, x: Tensor, mask: Tensor, clip_mask: Tensor, clip_times: Tensor) -> Tensor:
        """``(B, V, K, N, D), (B, V), (B, V, K), (B, V, K, 2) -> (B, O)``."""
        check_sequence_inputs(x, mask, clip_mask, clip_times, self.num_views, self.dim)
        views = scatter_views(self.summarise(x, mask, clip_mask, clip_times), mask)  # (B, V, H)
        return self.fusion(views[:, :, None], mask)  # (B, V, 1, H) -> (B, O)

    def summarise(self, x: Tensor, mask: Tensor, clip_mask: Tensor, clip_times: Tensor) -> Tensor:
        """Steps 1-3: ``-> (M, H)``, one row per present view (``mask``'s row-major order)."""
        sequence, padding = self.embed(x, mask, clip_mask, clip_times)  # (M, K, H), (M, K)
        sequence = self.encoder(sequence, padding)
        return masked_attention_pool(sequence, self.clip_score(sequence)[..., 0], padding)
