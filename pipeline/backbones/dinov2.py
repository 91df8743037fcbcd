"""DINOv2 (transformers ``Dinov2Model``) and DINOv2 with registers
(``Dinov2WithRegistersModel``, family ``dinov2_with_registers``).

Each frame is encoded on its own, like CLIP (``clip.py``). Every token is taken from
``last_hidden_state``, which DINOv2 already passes through its final ``layernorm``; its
``pooler_output`` is that sequence's token 0, the frame's CLS. A frame is
``[CLS, patch 0 .. patch P-1]`` (``P`` = (crop / 14)^2 = 256 at 224 px); the registers variant
puts its ``R`` register tokens (4 in the released checkpoints) between the CLS and the patches,
and they are dropped from every mode. ``T`` = frames:

- ``frame``: ``(B, T, D)``, each frame's CLS (= ``pooler_output``), as CLIP's ``frame``.
- ``cls``: ``(B, 1, D)``, the mean over frames of those CLS tokens, as CLIP's ``cls``.
- ``patch``: ``(B, T*(1 + P), D)``, frame-major: frame ``t``'s CLS at ``t*(1 + P)``, its
  patch ``p`` at ``t*(1 + P) + 1 + p`` (registers excluded), so
  ``patch[:, t*(1 + P)] == frame[:, t]``.

The checkpoints' config says ``image_size`` 518 (the position-embedding grid of pretraining)
while their processor resizes the short side to 256 and centre-crops 224: DINOv2 always
interpolates its position embeddings to the input, so the family takes any crop that is a
multiple of the patch (``any_crop``).
"""

from __future__ import annotations

from typing import Any

from skill.pipeline.backbones.per_frame import per_frame_token_modes
from skill.pipeline.backbones.registry import (
    BackboneSpec,
    Family,
    Geometry,
    register,
    register_family,
)

# Every nn.Linear of a DINOv2 layer in transformers 5: attention projections and the MLP
# (fc1/fc2; the SwiGLU MLP of the giant checkpoints has gate/up/down_proj instead).
DINOV2_LORA_TARGETS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "fc1",
    "fc2",
    "gate_proj",
    "up_proj",
    "down_proj",
)

# The preprocessor_config.json of facebook/dinov2-{small,base} (BitImageProcessor), the tiny
# presets' scaled down: short side resized, then a centre crop smaller than it.
_TINY_DINOV2_PREPROCESSING: dict[str, Any] = {
    "image_processor_type": "BitImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 36},
    "do_center_crop": True,
    "crop_size": {"height": 32, "width": 32},
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}

_TINY_DINOV2_CONFIG: dict[str, Any] = {
    "image_size": 32,
    "patch_size": 4,
    "num_channels": 3,
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "mlp_ratio": 2,
}


def _frames(model, pixels):
    """pixels (B, T, 3, H, W) -> per-frame [CLS, patches] (B, T, 1 + P, D) float32."""
    batch, frames = pixels.shape[:2]
    hidden = model(pixel_values=pixels.flatten(0, 1)).last_hidden_state.float()
    registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
    if registers:
        hidden = hidden[:, [0, *range(1 + registers, hidden.shape[1])]]
    return hidden.reshape(batch, frames, *hidden.shape[1:])


def _frame_tokens(model, pixels):
    return _frames(model, pixels)[:, :, 0]  # (B, T, D)


def _patch_tokens(model, pixels):
    return _frames(model, pixels).flatten(1, 2)  # (B, T*(1+P), D)


_TOKEN_MODES = per_frame_token_modes(
    _frame_tokens, _patch_tokens, lambda frames, patches: frames * (1 + patches)
)

DINOV2 = register_family(
    Family(
        name="dinov2",
        model_class="Dinov2Model",
        config_class="Dinov2Config",
        model_types=("dinov2",),
        default_resample="bicubic",  # BitImageProcessor's
        token_modes=_TOKEN_MODES,
        lora_targets=DINOV2_LORA_TARGETS,
        any_crop=True,
    )
)
DINOV2_WITH_REGISTERS = register_family(
    Family(
        name="dinov2_with_registers",
        model_class="Dinov2WithRegistersModel",
        config_class="Dinov2WithRegistersConfig",
        model_types=("dinov2_with_registers",),
        default_resample="bicubic",
        token_modes=_TOKEN_MODES,
        lora_targets=DINOV2_LORA_TARGETS,
        any_crop=True,
    )
)

register(
    BackboneSpec(
        "dinov2-small",
        "dinov2",
        "facebook/dinov2-small",
        description="DINOv2 ViT-S/14, 224 px crop, 257 tokens per frame, D=384",
        geometry=Geometry(dim=384, frames=None, crop=224, patch=14),
    )
)
register(
    BackboneSpec(
        "dinov2-base",
        "dinov2",
        "facebook/dinov2-base",
        description="DINOv2 ViT-B/14, 224 px crop, 257 tokens per frame, D=768",
        geometry=Geometry(dim=768, frames=None, crop=224, patch=14),
    )
)
register(
    BackboneSpec(
        "dinov2-reg-base",
        "dinov2_with_registers",
        "facebook/dinov2-with-registers-base",
        description="DINOv2 ViT-B/14 with 4 registers (dropped), 224 px, 257 tokens per frame, "
        "D=768",
        geometry=Geometry(dim=768, frames=None, crop=224, patch=14),
    )
)
register(
    BackboneSpec(
        "tiny-dinov2",
        "dinov2",
        None,
        tiny_config=_TINY_DINOV2_CONFIG,
        tiny_preprocessing=_TINY_DINOV2_PREPROCESSING,
        description="random tiny DINOv2 for tests: 32 px crop of 36, patch 4, D=48",
    )
)
register(
    BackboneSpec(
        "tiny-dinov2-reg",
        "dinov2_with_registers",
        None,
        tiny_config={**_TINY_DINOV2_CONFIG, "num_register_tokens": 2},
        tiny_preprocessing=_TINY_DINOV2_PREPROCESSING,
        description="random tiny DINOv2 with 2 registers for tests: 32 px, patch 4, D=48",
    )
)
