"""Small building blocks shared by the neural heads: masking, pooling, checks.

Shapes: ``B`` samples, ``V`` views, ``N`` tokens per view, ``D`` token width, ``C`` classes.
A view mask is ``(B, V)`` bool with True = view present; every sample has at least one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

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
