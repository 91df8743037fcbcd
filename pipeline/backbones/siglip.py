"""SigLIP vision tower (transformers ``SiglipVisionModel``; a full ``SiglipModel`` checkpoint,
``model_type`` ``siglip``, loads its ``vision_config`` and vision tower, as CLIP's does).

Each frame is encoded on its own, like CLIP (``clip.py``). SigLIP has no CLS token: its
``last_hidden_state`` is the frame's ``P`` patch tokens ((224 / 16)^2 = 196), after the final
``post_layernorm``, and its ``pooler_output`` is the output of SigLIP's attention-pooling head
(a learned probe attending over those patches, then an MLP): the image embedding SigLIP is
trained to match against text, and what stands in for CLIP's CLS here. ``T`` = frames:

- ``frame``: ``(B, T, D)``, each frame's ``pooler_output`` (the attention-pooled head output;
  not a plain mean of the patches).
- ``cls``: ``(B, 1, D)``, the mean over frames of ``pooler_output`` (as CLIP's ``cls``).
- ``patch``: ``(B, T*P, D)``, frame-major: frame ``t``'s patch ``p`` at ``t*P + p``, the
  post_layernorm ``last_hidden_state`` (no CLS in front).

``vision_use_head`` must be true (every released checkpoint), since ``frame`` and ``cls`` are
the head's output. The crop must equal the config's image_size (position embeddings are not
interpolated).
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

# Every nn.Linear of a SiglipVisionModel: the layers' attention projections and MLPs, and in
# the pooling head its MLP (fc1/fc2) and the nn.MultiheadAttention's out_proj. The head's
# fused input projection (in_proj_weight) is a parameter, not a Linear, and takes no LoRA.
SIGLIP_LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

# google/siglip-base-patch16-224's preprocessor_config.json (SiglipImageProcessor), scaled
# down: a fixed size, no centre crop, mean = std = 0.5.
_TINY_SIGLIP_PREPROCESSING: dict[str, Any] = {
    "image_processor_type": "SiglipImageProcessor",
    "do_resize": True,
    "size": {"height": 32, "width": 32},
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}


def _forward(model, pixels):
    """pixels (B, T, 3, H, W) -> the model output for the B*T frames, one forward."""
    return model(pixel_values=pixels.flatten(0, 1))


def _frame_tokens(model, pixels):
    batch, frames = pixels.shape[:2]
    pooled = _forward(model, pixels).pooler_output.float()  # (B*T, D)
    return pooled.reshape(batch, frames, -1)  # (B, T, D)


def _patch_tokens(model, pixels):
    batch = pixels.shape[0]
    hidden = _forward(model, pixels).last_hidden_state.float()  # (B*T, P, D)
    return hidden.reshape(batch, -1, hidden.shape[-1])  # (B, T*P, D)


def _full_siglip(vision):
    """The hub's layout: a full SiglipModel with a tiny text tower (only vision loads back)."""
    from transformers import SiglipConfig, SiglipModel

    text = {**TINY_TEXT_TOWER, "projection_size": vision.config.hidden_size}
    config = SiglipConfig(text_config=text, vision_config=vision.config.to_dict())
    full = SiglipModel(config)
    full.vision_model.load_state_dict(vision.state_dict())
    return full


SIGLIP = register_family(
    Family(
        name="siglip",
        model_class="SiglipVisionModel",
        config_class="SiglipVisionConfig",
        model_types=("siglip", "siglip_vision_model"),
        default_resample="bicubic",  # SiglipImageProcessor's
        token_modes=per_frame_token_modes(
            _frame_tokens, _patch_tokens, lambda frames, patches: frames * patches
        ),
        lora_targets=SIGLIP_LORA_TARGETS,
        required_config=(
            ("vision_use_head", True, "frame and cls are the attention-pooling head's output"),
        ),
        save_as=_full_siglip,
    )
)

register(
    BackboneSpec(
        "siglip-base-p16-224",
        "siglip",
        "google/siglip-base-patch16-224",
        description="SigLIP ViT-B/16 vision tower, 224 px, 196 patch tokens per frame, D=768",
        geometry=Geometry(dim=768, frames=None, crop=224, patch=16),
    )
)
register(
    BackboneSpec(
        "tiny-siglip",
        "siglip",
        None,
        tiny_config={
            "image_size": 32,
            "patch_size": 4,
            "num_channels": 3,
            "hidden_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 96,
        },
        tiny_preprocessing=_TINY_SIGLIP_PREPROCESSING,
        description="random tiny SigLIP vision tower for tests: 32 px, patch 4, D=48",
    )
)
