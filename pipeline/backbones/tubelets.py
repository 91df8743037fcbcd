"""Token modes shared by the families that cut a clip into tubelets of 2 frames and have no
CLS token (VideoMAE, V-JEPA 2): their encoder output is tubelet-major, patch p of tubelet k
at index k*P + p."""

from __future__ import annotations

from collections.abc import Callable

from skill.pipeline.backbones.registry import TokenMode

TUBELET = 2
"""Frames per tubelet: T must be a multiple of it."""


def tubelet_token_modes(hidden: Callable) -> dict[str, TokenMode]:
    """`frame`, `cls` and `patch` for a family whose `hidden(model, pixels)` returns the
    encoder's last_hidden_state (B, (T/2)*P, D): one token per tubelet (the mean of its P
    patches), one per clip (the mean of all tokens), and every token."""

    def frame_tokens(model, pixels):
        tokens = hidden(model, pixels)
        batch, frames = pixels.shape[:2]
        # (B, (T/2)*P, D) -> (B, T/2, P, D), averaged over patches
        return tokens.reshape(batch, frames // TUBELET, -1, tokens.shape[-1]).mean(dim=2)

    def cls_tokens(model, pixels):
        return hidden(model, pixels).mean(dim=1, keepdim=True)  # (B, 1, D)

    return {
        "frame": TokenMode(count=lambda frames, patches: frames // TUBELET, tokens=frame_tokens),
        "cls": TokenMode(count=lambda frames, patches: 1, tokens=cls_tokens),
        "patch": TokenMode(
            count=lambda frames, patches: (frames // TUBELET) * patches, tokens=hidden
        ),
    }
