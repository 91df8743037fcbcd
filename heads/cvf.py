"""``cvf`` head: SkillFormer's CrossViewFusion (arXiv 2505.08665, repo EdoWhite/SkillFormer)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from heads import register_head
from heads._ops import attention_heads, check_inputs, check_sizes, masked_mean, pool_tokens

# SkillFormer's initial values of the self-calibration scalars (its "video_std" / "video_mean").
CALIBRATION_SCALE_INIT = 0.1168
CALIBRATION_SHIFT_INIT = 0.0007
MAX_ATTENTION_HEADS = 16


@register_head("cvf")
class CrossViewFusionHead(nn.Module):
    """SkillFormer's CrossViewFusion on cached tokens, then its Linear classifier.

    ``forward``: ``(B, V, N, D) float32, (B, V) bool -> (B, C)`` logits.

    Steps (as in SkillFormer's ``AttentiveProjector`` + ``classifier``):
    1. per view, mean over all tokens -> (B, V, D)
    2. LayerNorm(D)
    3. multi-head self-attention across views (no residual, no view embedding); missing
       views are excluded as keys (key padding mask)
    4. mean over the valid views -> (B, D)
    5. Linear(D->H), GELU, LayerNorm(H), Dropout
    6. gate: h = h * sigmoid(Linear(H->H)(h))
    7. Linear(H->D), LayerNorm(D)
    8. self-calibration: standardise each sample over its D features (mean 0, unbiased std 1,
       eps 1e-6 added to the std), times a learned scalar (init 0.1168), plus a learned
       scalar (init 0.0007)
    9. Linear(D->C)

    Differences from SkillFormer, both only visible with missing views: it averages over all
    views in step 4 and has no key padding mask (it never has missing views).
    Attention heads: 16 as in SkillFormer when 16 divides D, otherwise the largest divisor of
    D below 16 (nn.MultiheadAttention needs D % heads == 0; e.g. D=40 -> 10, D=24 -> 12).
    The attention has dropout ``dropout`` as in SkillFormer's code (0.1).
    ``tokens`` is accepted for a uniform signature and unused.
    """

    def __init__(
        self,
        dim: int,
        num_views: int,
        num_classes: int,
        tokens: int,
        hidden: int = 1536,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_sizes(dim, num_views, num_classes, tokens, hidden)
        if hidden < 1:
            raise ValueError(f"head option hidden must be >= 1 for cvf, got {hidden}")
        self.dim, self.num_views = dim, num_views
        self.view_norm = nn.LayerNorm(dim)
        self.view_attention = nn.MultiheadAttention(
            dim, attention_heads(dim, MAX_ATTENTION_HEADS), dropout=dropout, batch_first=True
        )
        self.up = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Dropout(dropout)
        )
        self.gate = nn.Linear(hidden, hidden)
        self.down = nn.Sequential(nn.Linear(hidden, dim), nn.LayerNorm(dim))
        self.calibration_scale = nn.Parameter(torch.tensor(CALIBRATION_SCALE_INIT))
        self.calibration_shift = nn.Parameter(torch.tensor(CALIBRATION_SHIFT_INIT))
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, V, N, D), (B, V) -> (B, C)``."""
        check_inputs(x, mask, self.num_views, self.dim)
        return self.classifier(self.fuse(x, mask))  # (B, C)

    def fuse(self, x: Tensor, mask: Tensor) -> Tensor:
        """Steps 1-8: ``(B, V, N, D), (B, V) -> (B, D)`` calibrated fused feature."""
        views = self.view_norm(pool_tokens(x, mask))  # (B, V, D)
        attended, _ = self.view_attention(
            views, views, views, key_padding_mask=~mask, need_weights=False
        )  # (B, V, D); rows of missing views are dropped by the masked mean below
        fused = masked_mean(attended, mask)  # (B, D)
        hidden = self.up(fused)  # (B, H)
        hidden = hidden * torch.sigmoid(self.gate(hidden))  # (B, H)
        return self.calibrate(self.down(hidden))  # (B, D)

    def calibrate(self, features: Tensor) -> Tensor:
        """Step 8, SkillFormer's ``normalize_to_text_stats``: ``(B, D) -> (B, D)``."""
        centred = features - features.mean(dim=-1, keepdim=True)
        standardised = centred / (centred.std(dim=-1, keepdim=True) + 1e-6)
        return standardised * self.calibration_scale + self.calibration_shift
