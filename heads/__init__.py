"""Fusion and classifier heads, trained on cached tokens.

Every neural head is a plain ``nn.Module`` built as ``HEADS[name](dim=D, num_views=V,
num_classes=C, tokens=N, **options)`` whose ``forward(x, mask)`` maps tokens ``x`` of shape
``(B, V, N, D)`` (float32) and a view mask ``(B, V)`` (bool, True = view present) to class
logits ``(B, C)``. Heads never see a backbone or a decoder: only what the store holds.
A head whose first step is the mean over each view's tokens says so with the class attribute
``pools_tokens = True``; training then feeds it tokens pooled once, ``(B, V, 1, D)``.
"""

from __future__ import annotations

from collections.abc import Callable

HEADS: dict[str, Callable] = {}


def register_head(name: str) -> Callable:
    """Class decorator: make a head buildable by name."""

    def add(cls):
        if name in HEADS:
            raise ValueError(f"head {name!r} is registered twice")
        HEADS[name] = cls
        return cls

    return add


def head_names() -> list[str]:
    """All registered heads, including ``lightgbm`` (which is not an nn.Module)."""
    _import_all()
    return sorted([*HEADS, "lightgbm"])


def build_head(name: str, **kwargs):
    """Build a registered neural head; ``lightgbm`` is built by ``heads.lgbm`` instead."""
    _import_all()
    if name not in HEADS:
        raise KeyError(f"unknown head {name!r}; choose from {', '.join(head_names())}")
    return HEADS[name](**kwargs)


def pools_tokens(name: str) -> bool:
    """Whether head ``name`` starts with the mean over each view's N tokens (its class sets
    ``pools_tokens = True``): then training may feed it that mean, computed once."""
    _import_all()
    return bool(getattr(HEADS.get(name), "pools_tokens", False))


def _import_all() -> None:
    # Importing the modules runs their @register_head decorators.
    from skill.heads import concat, cvf, late, mean, temporal  # noqa: F401
