"""CLIP vision tower (transformers ``CLIPVisionModel``; a full ``CLIPModel`` checkpoint loads
its vision tower).

Each frame is encoded on its own. All tokens are taken after CLIP's final ``post_layernorm``
(the representation CLIP's image projection reads), so the frame token is ``pooler_output``
(= post_layernorm of the frame's CLS), not the raw ``last_hidden_state[:, 0]``.
``P`` = patches per frame, ``T`` = frames:

- ``frame``: ``(B, T, D)``, each frame's ``pooler_output``.
- ``cls``: ``(B, 1, D)``, the mean over frames of ``pooler_output``.
- ``patch``: ``(B, T*(1 + P), D)``, frame-major: frame ``t``'s CLS at ``t*(1 + P)``, its
  patch ``p`` at ``t*(1 + P) + 1 + p``; every token passed through ``post_layernorm``, so
  ``patch[:, t*(1 + P)] == frame[:, t]``.
"""

from __future__ import annotations

from typing import Any

from skill.pipeline.backbones.per_frame import TINY_TEXT_TOWER, per_frame_token_modes
from skill.pipeline.backbones.registry import (
    BackboneSpec,
    Family,
    Geometry,
    register,
    register_family,
)

# Every nn.Linear of a CLIPVisionModel layer: attention projections and the MLP.
CLIP_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

_TINY_CLIP_PREPROCESSING: dict[str, Any] = {
    "image_processor_type": "CLIPImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 32},
    "do_center_crop": True,
    "crop_size": {"height": 32, "width": 32},
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
}


def _post_layernorm(model):
    # transformers 5 flattened CLIPVisionModel; 4.x keeps the layers under .vision_model.
    inner = getattr(model, "vision_model", model)
    return inner.post_layernorm


def _per_frame(model, pixels):
    """pixels (B, T, 3, H, W) -> pooler_output per frame (B, T, D) float32."""
    batch, frames = pixels.shape[:2]
    output = model(pixel_values=pixels.flatten(0, 1))
    return output.pooler_output.float().reshape(batch, frames, -1)


def _patch_tokens(model, pixels):
    batch = pixels.shape[0]
    output = model(pixel_values=pixels.flatten(0, 1))
    tokens = _post_layernorm(model)(output.last_hidden_state).float()  # (B*T, 1+P, D)
    return tokens.reshape(batch, -1, tokens.shape[-1])  # (B, T*(1+P), D)


def _full_clip(vision):
    """The hub's layout: a full CLIPModel with a tiny text tower (only vision loads back)."""
    from transformers import CLIPConfig, CLIPModel

    text = dict(TINY_TEXT_TOWER)
    vision_config = vision.config.to_dict()
    config = CLIPConfig(
        text_config=text, vision_config=vision_config, projection_dim=vision.config.projection_dim
    )
    full = CLIPModel(config)
    # transformers 5: both sides are CLIPVisionModel; 4.x: both are CLIPVisionTransformer.
    full.vision_model.load_state_dict(getattr(vision, "vision_model", vision).state_dict())
    return full


CLIP = register_family(
    Family(
        name="clip",
        model_class="CLIPVisionModel",
        config_class="CLIPVisionConfig",
        model_types=("clip", "clip_vision_model"),
        default_resample="bicubic",  # CLIPImageProcessor's
        token_modes=per_frame_token_modes(
            _per_frame, _patch_tokens, lambda frames, patches: frames * (1 + patches)
        ),
        lora_targets=CLIP_LORA_TARGETS,
        save_as=_full_clip,
    )
)

register(
    BackboneSpec(
        "clip-vit-b16",
        "clip",
        "openai/clip-vit-base-patch16",
        description="CLIP ViT-B/16 vision tower, 224 px, 197 tokens per frame, D=768",
        geometry=Geometry(dim=768, frames=None, crop=224, patch=16),
    )
)
register(
    BackboneSpec(
        "clip-vit-b32",
        "clip",
        "openai/clip-vit-base-patch32",
        description="CLIP ViT-B/32 vision tower, 224 px, 50 tokens per frame, D=768",
        geometry=Geometry(dim=768, frames=None, crop=224, patch=32),
    )
)
register(
    BackboneSpec(
        "tiny-clip",
        "clip",
        None,
        tiny_config={
            "image_size": 32,
            "patch_size": 4,
            "num_channels": 3,
            "hidden_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 96,
            "projection_dim": 16,
        },
        tiny_preprocessing=_TINY_CLIP_PREPROCESSING,
        description="random tiny CLIP vision tower for tests: 32 px, patch 4, D=48",
    )
)
