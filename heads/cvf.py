"""``cvf`` head: SkillFormer's CrossViewFusion (arXiv 2505.08665, repo EdoWhite/SkillFormer)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from skill.errors import ConfigError
from skill.heads._ops import attention_heads, check_inputs, check_sizes, pool_tokens
from skill.heads.registry import register_head

# SkillFormer's initial values of the self-calibration scalars (its "video_std" / "video_mean").
CALIBRATION_SCALE_INIT = 0.1168
CALIBRATION_SHIFT_INIT = 0.0007
MAX_ATTENTION_HEADS = 16


@register_head("cvf")
class CrossViewFusionHead(nn.Module):
    """SkillFormer's CrossViewFusion on cached tokens, then its Linear classifier.

    ``forward``: ``(B, V, N, D) float32, (B, V) bool -> (B, O)`` logits.

    Steps (as in SkillFormer's ``AttentiveProjector`` + ``classifier``):
    1. per view, mean over all tokens -> (B, V, D)
    2. LayerNorm(D)
    3. multi-head self-attention across views (no residual, no view embedding); missing
       views are excluded as keys (key padding mask)
    4. mean over the valid views (the attention's queries) -> (B, D)
    5. Linear(D->H), GELU, LayerNorm(H), Dropout
    6. gate: h = h * sigmoid(Linear(H->H)(h))
    7. Linear(H->D), LayerNorm(D)
    8. self-calibration: standardise each sample over its D features (mean 0, unbiased std 1,
       eps 1e-6 added to the std), times a learned scalar (init 0.1168), plus a learned
       scalar (init 0.0007)
    9. Linear(D->C)

    Steps 3-4 are one ``ViewAttentionPool`` (``self.view_attention``): the function and the
    parameters of ``nn.MultiheadAttention`` followed by the masked mean, computed with the mean
    over queries moved in front of the value projection and out_proj (both linear), so those
    two run once per sample instead of once per view: 12 D^2 instead of 20 D^2 multiply-adds
    per sample at 5 views. State dicts of nn.MultiheadAttention load into it.

    Differences from SkillFormer, both only visible with missing views: it averages over all
    views in step 4 and has no key padding mask (it never has missing views).
    Attention heads: 16 as in SkillFormer when 16 divides D, otherwise the largest divisor of
    D below 16 (nn.MultiheadAttention needs D % heads == 0; e.g. D=40 -> 10, D=24 -> 12).
    The attention has dropout ``dropout`` as in SkillFormer's code (0.1).
    """

    pools_tokens = True  # its first step is the mean over each view's tokens
    # Training-side default (FitConfig.view_dropout None, more than one view): the fusion is
    # SkillFormer's as it is; dropping views in training keeps it from leaning on one view
    # (demo store, all views, at the earlier lr 1e-3: test top-1 0.558 over seeds 0-2 against
    # 0.483; benchmark 7).
    multiview_dropout = 0.2
    # Training-side default (FitConfig.lr None), measured on four synthetic stores (benchmark 7):
    # with 3e-3 cvf on all views beats itself at 1e-3 and its best single view set on each of
    # them, in the mean over seeds 0-2 (demo store: 0.658 against 0.558 at 1e-3). It is the
    # step size, not the decoupled weight decay that lr scales: 1e-3 with 3x the decay scores 0.517, 3e-3 with a third 0.683.
    default_lr = 3e-3

    def __init__(
        self,
        dim: int,
        num_views: int,
        outputs: int,
        hidden: int = 1536,
        dropout: float = 0.1,
    ):
        super().__init__()
        check_sizes(dim, num_views, outputs, hidden)
        if hidden < 1:
            raise ConfigError(f"head option hidden must be >= 1 for cvf, got {hidden}")
        self.dim, self.num_views = dim, num_views
        self.view_norm = nn.LayerNorm(dim)
        self.view_attention = ViewAttentionPool(
            dim, attention_heads(dim, MAX_ATTENTION_HEADS), dropout=dropout
        )
        self.up = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Dropout(dropout)
        )
        self.gate = nn.Linear(hidden, hidden)
        self.down = nn.Sequential(nn.Linear(hidden, dim), nn.LayerNorm(dim))
        self.calibration_scale = nn.Parameter(torch.tensor(CALIBRATION_SCALE_INIT))
        self.calibration_shift = nn.Parameter(torch.tensor(CALIBRATION_SHIFT_INIT))
        self.classifier = nn.Linear(dim, outputs)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(B, V, N, D), (B, V) -> (B, O)``."""
        check_inputs(x, mask, self.num_views, self.dim)
        return self.classifier(self.fuse(x, mask))  # (B, O)

    def fuse(self, x: Tensor, mask: Tensor) -> Tensor:
        """Steps 1-8: ``(B, V, N, D), (B, V) -> (B, D)`` calibrated fused feature."""
        views = self.view_norm(pool_tokens(x, mask))  # (B, V, D)
        fused = self.view_attention(views, mask)  # (B, D)
        hidden = self.up(fused)  # (B, H)
        hidden = hidden * torch.sigmoid(self.gate(hidden))  # (B, H)
        return self.calibrate(self.down(hidden))  # (B, D)

    def calibrate(self, features: Tensor) -> Tensor:
        """Step 8, SkillFormer's ``normalize_to_text_stats``: ``(B, D) -> (B, D)``."""
        centred = features - features.mean(dim=-1, keepdim=True)
        standardised = centred / (centred.std(dim=-1, keepdim=True) + 1e-6)
        return standardised * self.calibration_scale + self.calibration_shift


class ViewAttentionPool(nn.Module):
    """Self-attention across views, then the mean over the valid views: ``(B, V, D), (B, V) ->
    (B, D)``.

    Equals ``masked_mean(nn.MultiheadAttention(D, heads, dropout, batch_first=True)(x, x, x,
    key_padding_mask=~mask)[0], mask)`` with the same parameters: missing views are masked out
    as keys (-inf before the softmax) and left out of the mean over queries; in training mode
    dropout ``dropout`` is applied to the attention probabilities (scaled by 1/(1-p)), as there.

    Why it is not written that way: the value projection, the probability-weighted sum over
    keys, out_proj and the mean over queries are all linear, so the mean can go first. With
    ``w[h, k]`` = mean over valid queries q of head h's probabilities ``p[h, q, k]``,

        mean_q out_proj(sum_k p[., q, k] (W_v x_k + b_v))
            = out_proj(concat_h(W_v^h (sum_k w[h, k] x_k) + b_v^h sum_k w[h, k])).

    Only queries and keys need a projection per view (2 V D^2 multiply-adds per sample); values
    and out_proj run once per sample (2 D^2) instead of once per view (2 V D^2): 12 D^2 instead
    of 20 D^2 at V=5. ``sum_k w[h, k]`` is 1 without dropout but not with it, hence kept.

    Parameter names, shapes, order and init are nn.MultiheadAttention's (``in_proj_weight``
    (3D, D) = [W_q; W_k; W_v], ``in_proj_bias`` (3D,), ``out_proj`` Linear(D, D)), so state
    dicts saved with nn.MultiheadAttention load, and a seed gives the same initial weights.
    Rows of missing views must be finite (the head zeroes them before its LayerNorm): a NaN
    query or key would reach the output as 0 * NaN.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.embed_dim, self.num_heads, self.dropout = dim, num_heads, dropout
        self.head_dim = dim // num_heads
        # Created in nn.MultiheadAttention's order, so the random numbers drawn are the same.
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x (B, V, D)`` views, ``mask (B, V)`` bool (>= 1 True per row) -> ``(B, D)``."""
        dim, heads, head_dim = self.embed_dim, self.num_heads, self.head_dim
        # (3D, D) -> (3, H, e, D), e = head_dim -> [W_q; W_k] (2, H, e, D) and W_v (1, H, e, D).
        # split and squeeze, not slicing or indexing: their backward assembles in_proj's
        # gradient with one cat, where each slice would add a zero-filled (3D, D) gradient.
        query_key_weight, value_weight = self.in_proj_weight.view(3, heads, head_dim, dim).split(
            [2, 1]
        )
        query_key_bias, value_bias = self.in_proj_bias.view(3, heads, head_dim).split([2, 1])
        probabilities = self.attention_probabilities(
            x, mask, query_key_weight.reshape(2 * dim, dim), query_key_bias.reshape(2 * dim)
        )  # (B, H, Vq, Vk)
        query_weights = mask.to(x.dtype) / mask.sum(dim=1, keepdim=True).to(x.dtype)  # (B, Vq)
        # (B, H, Vq, Vk) . (B, Vq) -> (B, H, Vk): mean over the valid queries.
        key_weights = torch.einsum("bhqk,bq->bhk", probabilities, query_weights)
        values = self.head_values(x, key_weights, value_weight.squeeze(0), value_bias.squeeze(0))
        return self.out_proj(values)  # (B, D)

    def head_values(
        self, x: Tensor, key_weights: Tensor, value_weight: Tensor, value_bias: Tensor
    ) -> Tensor:
        """Per head h: ``W_v^h (sum_k w[h, k] x_k) + b_v^h sum_k w[h, k]``, heads concatenated.

        ``x (B, V, D)``, ``key_weights (B, H, V)``, ``value_weight (H, e, D)``,
        ``value_bias (H, e)`` -> ``(B, H * e) = (B, D)``.
        """
        mixed = torch.bmm(key_weights, x)  # (B, H, V) @ (B, V, D) -> (B, H, D)
        if mixed.requires_grad:
            # Its gradient comes back (H, D, B)-ordered from the bmm below; bmm's backward for
            # the line above would copy each sample's (H, D) slice: one contiguous copy of the
            # whole gradient replaces those per-sample copies.
            mixed.register_hook(Tensor.contiguous)
        weight_sums = key_weights.sum(dim=2).T[:, None, :]  # (B, H) -> (H, 1, B)
        bias_term = value_bias[:, :, None] * weight_sums  # (H, e, 1) * (H, 1, B) -> (H, e, B)
        # Head h's own value rows only: (H, e, D) @ (H, D, B) -> (H, e, B). In this order the
        # weight's gradient comes back in the weight's own layout (no transposing copy).
        values = torch.baddbmm(bias_term, value_weight, mixed.permute(1, 2, 0))
        return values.permute(2, 0, 1).reshape(x.shape[0], -1)  # (B, H, e) -> (B, H * e)

    def attention_probabilities(
        self, x: Tensor, mask: Tensor, query_key_weight: Tensor, query_key_bias: Tensor
    ) -> Tensor:
        """``(B, V, D), (B, V) -> (B, H, Vq, Vk)`` softmax over valid keys, then dropout.

        ``query_key_weight (2D, D)`` and ``query_key_bias (2D,)`` are [W_q; W_k] and [b_q; b_k].
        """
        (batch, views, _), heads, head_dim = x.shape, self.num_heads, self.head_dim
        if views == 1:
            # A softmax over one key is 1 and passes no gradient to queries or keys.
            probabilities = x.new_ones(batch, heads, 1, 1)
        else:
            queries_keys = F.linear(x, query_key_weight, query_key_bias)  # (B, V, 2D)
            # (B, V, 2D) -> (B, V, 2, H, e) -> (2, B, H, V, e)
            queries_keys = queries_keys.view(batch, views, 2, heads, head_dim)
            queries, keys = queries_keys.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, V, e) each
            queries = queries / math.sqrt(head_dim)
            scores = queries @ keys.transpose(-1, -2)  # (B, H, Vq, e) @ (B, H, e, Vk)
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))  # (B, 1, 1, Vk)
            probabilities = scores.softmax(dim=-1)  # (B, H, Vq, Vk)
        # Contiguous (B, H, Vq, Vk) like nn.MultiheadAttention's (B*H, Vq, Vk): same dropout draw.
        return F.dropout(probabilities, self.dropout, self.training)
