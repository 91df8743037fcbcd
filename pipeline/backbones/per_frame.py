"""Token modes shared by the per-frame image encoders (CLIP, DINOv2, SigLIP): the B clips x T
frames of a batch go through one forward of B*T images, `frame` is one token per frame, `cls`
the mean of those over the clip's frames, `patch` every token of every frame."""

from __future__ import annotations

from collections.abc import Callable

from skill.pipeline.backbones.registry import TokenMode


def per_frame_token_modes(
    frame_tokens: Callable, patch_tokens: Callable, patch_count: Callable[[int, int], int]
) -> dict[str, TokenMode]:
    """`frame_tokens(model, pixels) -> (B, T, D)` and `patch_tokens(model, pixels) -> (B, n, D)`
    with n = `patch_count(frames, patches)`; `cls` follows from `frame_tokens`."""

    def cls_tokens(model, pixels):
        return frame_tokens(model, pixels).mean(dim=1, keepdim=True)  # (B, 1, D)

    return {
        "frame": TokenMode(count=lambda frames, patches: frames, tokens=frame_tokens),
        "cls": TokenMode(count=lambda frames, patches: 1, tokens=cls_tokens),
        "patch": TokenMode(count=patch_count, tokens=patch_tokens),
    }


# The text tower a tiny preset's full checkpoint carries (the hub's CLIP and SigLIP checkpoints
# hold both towers; only the vision tower loads back).
TINY_TEXT_TOWER: dict[str, int] = {
    "vocab_size": 99,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 16,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
