"""Small building blocks shared by the neural heads: masking, pooling, checks.

Shapes: ``B`` samples, ``V`` views, ``N`` tokens per view, ``D`` token width, ``C`` classes.
A view mask is ``(B, V)`` bool with True = view present; every sample has at least one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from skill.errors import ConfigError


def check_sizes(
    dim: int, num_views: int, outputs: int, hidden: int, tokens: int | None = None
) -> None:
    """Reject head sizes that cannot build a working head, naming the bad option (``tokens``:
    only for a head that takes it)."""
    sizes = {"dim": dim, "num_views": num_views, **({} if tokens is None else {"tokens": tokens})}
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"head option {name} must be a positive int, got {value!r}")
    if not isinstance(outputs, int) or outputs < 1:
        raise ValueError(f"head option outputs must be a positive int, got {outputs!r}")
    if not isinstance(hidden, int) or hidden < 0:
        raise ConfigError(f"head option hidden must be an int >= 0, got {hidden!r}")


def check_inputs(x: Tensor, mask: Tensor, num_views: int, dim: int) -> None:
    """Check ``x (B, V, N, D)`` float and ``mask (B, V)`` bool against the head's sizes.

    Raises ValueError when a sample has no valid view: attention over no keys is NaN and a
    mean over no views is undefined, so such a sample must be dropped by the data loader.
    """
    if x.dim() != 4 or x.shape[1] != num_views or x.shape[3] != dim:
        raise ValueError(
            f"tokens must have shape (B, V={num_views}, N, D={dim}), got {tuple(x.shape)}"
        )
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"mask must be bool of shape {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
        )
    if not bool(mask.any(dim=1).all()):
        raise ValueError("every sample needs at least one valid view (mask row all False)")


def zero_missing(values: Tensor, mask: Tensor) -> Tensor:
    """Replace the entries of missing views by zeros: ``(B, V, *F), (B, V) -> (B, V, *F)``.

    Done before any arithmetic so that whatever a missing view holds (zeros, stale data, NaN
    fill values) cannot reach the output or the gradients; the heads still exclude missing
    views explicitly (masked means, key padding masks), this only makes them inert.
    """
    view_mask = mask.reshape(*mask.shape, *([1] * (values.dim() - 2)))  # (B, V, 1, ...)
    return torch.where(view_mask, values, torch.zeros((), dtype=values.dtype, device=values.device))


def pool_tokens(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over each view's tokens, missing views zeroed: ``(B, V, N, D), (B, V) -> (B, V, D)``."""
    return zero_missing(x, mask).mean(dim=2)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid views only: ``(B, V, *F), (B, V) -> (B, *F)``."""
    summed = zero_missing(values, mask).sum(dim=1)  # (B, *F)
    count = mask.sum(dim=1).clamp(min=1).to(values.dtype)  # (B,)
    return summed / count.reshape(-1, *([1] * (summed.dim() - 1)))


def attention_heads(width: int, max_heads: int) -> int:
    """Largest number of attention heads ``<= max_heads`` that divides ``width``.

    nn.MultiheadAttention needs ``width % heads == 0``; e.g. width 768 -> 16, 40 -> 10, 24 -> 12.
    """
    return max(h for h in range(1, max_heads + 1) if width % h == 0)


def classifier_mlp(in_features: int, hidden: int, outputs: int, dropout: float) -> nn.Module:
    """``(..., in_features) -> (..., outputs)``.

    ``hidden > 0``: LayerNorm, Linear(in->hidden), GELU, Dropout, Linear(hidden->C).
    ``hidden == 0``: a linear probe, LayerNorm, Dropout, Linear(in->C).
    """
    if hidden == 0:
        return nn.Sequential(
            nn.LayerNorm(in_features), nn.Dropout(dropout), nn.Linear(in_features, outputs)
        )
    return nn.Sequential(
        nn.LayerNorm(in_features),
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, outputs),
    )


# ---- sequence heads: shapes K clips, and H the head's width ----------------------------------
def check_sequence_inputs(
    x: Tensor, mask: Tensor, clip_mask: Tensor, clip_times: Tensor, num_views: int, dim: int
) -> None:
    """Check a sequence head's inputs against its sizes: tokens ``x (B, V, K, N, D)`` float,
    view mask ``(B, V)`` bool (>= 1 True per sample), clip mask ``(B, V, K)`` bool and clip
    times ``(B, V, K, 2)`` float."""
    if x.dim() != 5 or x.shape[1] != num_views or x.shape[4] != dim:
        raise ValueError(
            f"tokens must have shape (B, V={num_views}, K, N, D={dim}), got {tuple(x.shape)}"
        )
    check_inputs(x[:, :, 0], mask, num_views, dim)
    if clip_mask.dtype != torch.bool or tuple(clip_mask.shape) != tuple(x.shape[:3]):
        raise ValueError(
            f"clip mask must be bool of shape {tuple(x.shape[:3])}, got {clip_mask.dtype} "
            f"{tuple(clip_mask.shape)}"
        )
    if tuple(clip_times.shape) != (*x.shape[:3], 2) or not clip_times.is_floating_point():
        raise ValueError(
            f"clip times must be float of shape {(*x.shape[:3], 2)}, got {clip_times.dtype} "
            f"{tuple(clip_times.shape)}"
        )


class ClipEmbedding(nn.Module):
    """Each clip of each present view as one vector with its time: ``(B, V, K, N, D)`` tokens,
    ``(B, V)`` view mask, ``(B, V, K)`` clip mask, ``(B, V, K, 2)`` times -> ``(M, K, H)``
    for the M present views (in ``mask``'s row-major order) and their key padding mask
    ``(M, K)`` (True = absent clip).

    A clip's N tokens are averaged, projected D -> H and layer-normed; the sinusoidal
    encoding of the clip's centre time in seconds (:func:`time_encoding`) is added, so that
    takes of other lengths or clip strides stay comparable. Tokens of absent clips and
    missing views are zeroed first (never reaching the output or the gradients); a present
    view without any valid clip keeps its first (zero) clip as a key, so attention over it
    is defined.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.project = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(
        self, x: Tensor, mask: Tensor, clip_mask: Tensor, clip_times: Tensor
    ) -> tuple[Tensor, Tensor]:
        rows = mask.flatten().nonzero().squeeze(1)  # (M,) the present views, row-major
        padding = ~clip_mask.flatten(0, 1)[rows]  # (M, K), True = absent clip
        present = x.flatten(0, 1).index_select(0, rows)  # (M, K, N, D): a copy of its own
        tokens = present[:, :, 0] if present.shape[2] == 1 else present.mean(dim=2)  # (M, K, D)
        tokens = tokens.masked_fill_(padding[:, :, None], 0.0)  # in place: never the caller's
        centre = clip_times.flatten(0, 1)[rows].mean(dim=-1).masked_fill(padding, 0.0)  # (M, K)
        embedded = self.norm(self.project(tokens)) + time_encoding(centre, self.hidden)
        padding[:, 0] &= ~padding.all(dim=1)  # a view without clips: attend its zero clip
        return embedded, padding


# Periods of the time encoding, in seconds: from a fraction of a clip to far beyond a take.
TIME_PERIODS = (0.5, 10_000.0)


def time_encoding(seconds: Tensor, width: int) -> Tensor:
    """Sinusoidal encoding of times in seconds: ``(...) -> (..., width)``; ``width // 2`` sine
    and cosine pairs with periods spaced geometrically over :data:`TIME_PERIODS` (a zero
    column when ``width`` is odd)."""
    pairs = width // 2
    periods = torch.logspace(
        math.log10(TIME_PERIODS[0]), math.log10(TIME_PERIODS[1]), max(pairs, 1),
        device=seconds.device, dtype=torch.float32,
    )[:pairs]  # fmt: skip
    angles = (2 * math.pi) * seconds.float()[..., None] / periods  # (..., pairs)
    encoded = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if width % 2:
        encoded = torch.cat([encoded, encoded.new_zeros(*encoded.shape[:-1], 1)], dim=-1)
    return encoded.to(seconds.dtype)


def scatter_views(values: Tensor, mask: Tensor) -> Tensor:
    """The rows of the present views back in place, zeros for missing ones:
    ``(M, *F), (B, V) -> (B, V, *F)``."""
    out = values.new_zeros(*mask.shape, *values.shape[1:])
    return out.index_put((mask,), values)


def masked_attention_pool(values: Tensor, scores: Tensor, padding: Tensor) -> Tensor:
    """Softmax of ``scores (M, K)`` over the clips not in ``padding (M, K)``, then the weighted
    sum of ``values (M, K, H)`` -> ``(M, H)``."""
    weights = scores.masked_fill(padding, float("-inf")).softmax(dim=1)  # (M, K)
    return torch.einsum("mk,mkh->mh", weights, values)


class Attention(nn.Module):
    """Multi-head attention of queries over keys: ``queries (M, Q, H)``, ``keys (M, K, H)``
    (also the values) and their padding ``(M, K)`` (True = not a key; each row needs one
    key) -> ``(M, Q, H)``. Projections of queries, keys and values, ``heads`` heads by
    ``scaled_dot_product_attention`` (no attention dropout), the output projection."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"attention width {hidden} is not divisible by {heads} heads")
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key_value = nn.Linear(hidden, 2 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, queries: Tensor, keys: Tensor, padding: Tensor) -> Tensor:
        (rows, count, hidden), heads = queries.shape, self.heads
        # (M, Q, H) -> (M, heads, Q, e); (M, K, 2H) -> (2, M, heads, K, e)
        query = self.query(queries).view(rows, count, heads, -1).transpose(1, 2)
        key, value = (
            self.key_value(keys).view(rows, keys.shape[1], 2, heads, -1).permute(2, 0, 3, 1, 4)
        )
        attended = F.scaled_dot_product_attention(
            query, key, value, attn_mask=~padding[:, None, None, :]
        )  # (M, heads, Q, e)
        return self.out(attended.transpose(1, 2).reshape(rows, count, hidden))


class EncoderLayer(nn.Module):
    """A pre-norm transformer encoder layer over clips: ``(M, K, H)`` and the key padding mask
    ``(M, K)`` -> ``(M, K, H)``. Self-attention, then a GELU feed-forward of width 2H, each
    as a residual branch with dropout ``dropout`` on its output."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden)
        self.attention = Attention(hidden, heads)
        self.feed_forward = FeedForward(hidden)
        self.dropout = dropout

    def forward(self, x: Tensor, padding: Tensor) -> Tensor:
        normed = self.attention_norm(x)
        x = x + F.dropout(self.attention(normed, normed, padding), self.dropout, self.training)
        return x + F.dropout(self.feed_forward(x), self.dropout, self.training)


class ClipEncoder(nn.Module):
    """``layers`` :class:`EncoderLayer` over clips, then LayerNorm: ``(M, K, H)`` and the key
    padding mask ``(M, K)`` -> ``(M, K, H)``; attention heads: the largest divisor of H that is
    at most ``heads``. ``head`` names the head whose options are refused (ConfigError)."""

    def __init__(self, head: str, hidden: int, layers: int, heads: int, dropout: float):
        super().__init__()
        if hidden < 2 or layers < 0 or heads < 1:
            raise ConfigError(
                f"{head} head needs hidden >= 2, layers >= 0 and heads >= 1, got "
                f"hidden={hidden}, layers={layers}, heads={heads}"
            )
        used = attention_heads(hidden, heads)
        self.layers = nn.ModuleList(EncoderLayer(hidden, used, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: Tensor, padding: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, padding)
        return self.norm(x)


class DecoderLayer(nn.Module):
    """A pre-norm transformer decoder layer: queries ``(M, Q, H)`` read clips ``(M, K, H)``
    with their key padding mask ``(M, K)`` -> ``(M, Q, H)``. Self-attention over the
    queries, cross-attention over the clips, a GELU feed-forward of width 2H, each a residual
    branch with dropout ``dropout`` on its output."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.self_norm = nn.LayerNorm(hidden)
        self.self_attention = Attention(hidden, heads)
        self.cross_norm = nn.LayerNorm(hidden)
        self.cross_attention = Attention(hidden, heads)
        self.feed_forward = FeedForward(hidden)
        self.dropout = dropout

    def forward(self, queries: Tensor, clips: Tensor, padding: Tensor) -> Tensor:
        no_padding = padding.new_zeros(queries.shape[:2])  # every query is a key
        normed = self.self_norm(queries)
        x = queries + self._drop(self.self_attention(normed, normed, no_padding))
        x = x + self._drop(self.cross_attention(self.cross_norm(x), clips, padding))
        return x + self._drop(self.feed_forward(x))

    def _drop(self, branch: Tensor) -> Tensor:
        return F.dropout(branch, self.dropout, self.training)


class FeedForward(nn.Module):
    """Pre-norm GELU feed-forward of width 2H: ``(..., H) -> (..., H)``."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(hidden),
            nn.Linear(hidden, 2 * hidden),
            nn.GELU(),
            nn.Linear(2 * hidden, hidden),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
