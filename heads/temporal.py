"""``temporal`` head: a learned query attends over every token of every valid view."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from skill.errors import ConfigError
from skill.heads._ops import attention_heads, check_inputs, check_sizes, zero_missing
from skill.heads.registry import register_head

MAX_ATTENTION_HEADS = 8


@register_head("temporal")
class TemporalAttentionHead(nn.Module):
    """Attention pooling over all per-frame tokens of all views, with view and time embeddings.

    ``forward``: ``(B, V, N, D) float32, (B, V) bool -> (B, O)`` logits, N == ``tokens``.

    Each token is layer-normed and projected D -> ``hidden``; a learned view embedding (V, H)
    and a learned time (token position) embedding (N, H) are added, so the pooled feature
    knows which view and which moment a token came from. ``encoder_layers`` pre-norm
    TransformerEncoderLayers (0 by default) let tokens talk to each other first. A learned
    query then attends over the (B, V*N, H) sequence, with the tokens of missing views
    excluded by the key padding mask; LayerNorm + Linear(H->C) give the logits.
    Attention heads: the largest divisor of ``hidden`` that is <= 8.
    """

    def __init__(
        self,
        dim: int,
        num_views: int,
        outputs: int,
        tokens: int,
        hidden: int = 256,
        dropout: float = 0.1,
        encoder_layers: int = 0,
    ):
        super().__init__()
        check_sizes(dim, num_views, outputs, hidden, tokens)
        if hidden < 1 or encoder_layers < 0:
            raise ConfigError(
                f"temporal head needs hidden >= 1 and encoder_layers >= 0, "
                f"got hidden={hidden}, encoder_layers={encoder_layers}"
            )
        self.dim, self.num_views, self.tokens = dim, num_views, tokens
        heads = attention_heads(hidden, MAX_ATTENTION_HEADS)
        self.project = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden))
        self.view_embedding = nn.Parameter(torch.randn(num_views, hidden) * 0.02)  # (V, H)
        self.time_embedding = nn.Parameter(torch.randn(tokens, hidden) * 0.02)  # (N, H)
        self.encoder = nn.ModuleList(
            nn.TransformerEncoderLayer(
                hidden, heads, 2 * hidden, dropout, batch_first=True, norm_first=True
            )
            for _ in range(encoder_layers)
        )
        self.query = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)  # (1, 1, H)
        self.pool = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.classifier = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, outputs))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, V, N, D), (B, V) -> (B, O)``."""
        check_inputs(x, mask, self.num_views, self.dim)
        if x.shape[2] != self.tokens:
            raise ValueError(
                f"temporal head was built for {self.tokens} tokens per view, got {x.shape[2]}"
            )
        batch, views, tokens, _ = x.shape
        sequence = self.embed(x, mask).reshape(batch, views * tokens, -1)  # (B, V*N, H)
        padding = (~mask)[:, :, None].expand(batch, views, tokens)  # (B, V, N)
        padding = padding.reshape(batch, views * tokens)  # (B, V*N), True = ignore
        for layer in self.encoder:
            sequence = layer(sequence, src_key_padding_mask=padding)  # (B, V*N, H)
        query = self.query.expand(batch, -1, -1)  # (B, 1, H)
        pooled, _ = self.pool(
            query, sequence, sequence, key_padding_mask=padding, need_weights=False
        )  # (B, 1, H)
        return self.classifier(pooled[:, 0])  # (B, O)

    def embed(self, x: Tensor, mask: Tensor) -> Tensor:
        """Project tokens and add view and time embeddings: ``(B, V, N, D) -> (B, V, N, H)``."""
        projected = self.project(zero_missing(x, mask))  # (B, V, N, H)
        return projected + self.view_embedding[None, :, None] + self.time_embedding[None, None]
