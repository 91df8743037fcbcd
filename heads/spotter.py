"""``spotter`` head: finds timestamped moments in a clip sequence (the demonstration task).

A per-clip head (``per_clip = True``): it learns only a task that is per clip, and such a
task only heads like it (`NeuralHead.check_task`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skill.heads._ops import (
    ClipEmbedding,
    ClipEncoder,
    check_sequence_inputs,
    check_sizes,
    scatter_views,
)
from skill.heads.registry import register_head

MAX_ATTENTION_HEADS = 4


@register_head("spotter", reads="sequence")
class MomentSpotterHead(nn.Module):
    """Per clip, a score per category and an offset to the event, over the fused views.

    ``forward``: tokens ``(B, V, K, N, D)`` float32, view mask ``(B, V)`` bool (True = view
    present), clip mask ``(B, V, K)`` bool (True = the clip holds tokens), clip times
    ``(B, V, K, 2)`` float32 (start and end in seconds, 0 where absent) -> ``(B, K, O + 2)``:
    per clip the O outputs of a per-clip task (the demonstration task: C category logits and
    the offset), then the clip's centre in seconds and 1 where any present view holds the
    clip (0 where padded: its outputs are all 0). Not the ``(B, O)`` of a per-take head.

    Steps:
    1. each present view's clips: N tokens averaged, projected D -> ``hidden`` H, LayerNorm,
       plus the sinusoidal encoding of the clip's centre time (:class:`heads._ops.ClipEmbedding`)
    2. the views fused per clip: the mean over the present views that hold the clip -> (K, H)
    3. ``layers`` pre-norm transformer encoder layers over the clips (absent clips are not
       keys), then LayerNorm
    4. per clip, Linear(H -> H), GELU, Linear(H -> O).
    Absent clips and missing views are zeroed before any arithmetic, and never keys: what they
    hold cannot reach the output.
    """

    pools_tokens = True  # its first step is the mean over each clip's tokens
    per_clip = True  # learns a per-clip task (outputs per clip), and no per-take one
    multiview_dropout = 0.2

    def __init__(
        self,
        dim: int,
        num_views: int,
        outputs: int,
        hidden: int = 64,
        layers: int = 2,
        heads: int = MAX_ATTENTION_HEADS,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_sizes(dim, num_views, outputs, hidden)
        self.encoder = ClipEncoder("spotter", hidden, layers, heads, dropout)
        self.dim, self.num_views = dim, num_views
        self.embed = ClipEmbedding(dim, hidden)
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, outputs))

    def forward(self, x: Tensor, mask: Tensor, clip_mask: Tensor, clip_times: Tensor) -> Tensor:
        """``(B, V, K, N, D), (B, V), (B, V, K), (B, V, K, 2) -> (B, K, O + 2)``."""
        check_sequence_inputs(x, mask, clip_mask, clip_times, self.num_views, self.dim)
        holds = clip_mask & mask[:, :, None]  # (B, V, K)
        embedded, _ = self.embed(x, mask, holds, clip_times)  # (M, K, H)
        per_view = scatter_views(embedded, mask) * holds[..., None]  # (B, V, K, H)
        count = holds.sum(dim=1)  # (B, K)
        present = count > 0
        fused = per_view.sum(dim=1) / count.clamp(min=1)[..., None]  # (B, K, H)
        padding = ~present
        padding[:, 0] &= ~padding.all(dim=1)  # a take without clips: attend its zero clip
        values = self.out(self.encoder(fused, padding)) * present[..., None]  # (B, K, O)
        centre = clip_times.mean(dim=-1).masked_fill(~holds, 0.0).sum(dim=1)
        centre = centre / count.clamp(min=1)  # (B, K): the mean over the views holding it
        extras = torch.stack([centre, present.to(values.dtype)], dim=-1)
        return torch.cat([values, extras], dim=-1)
