"""V-JEPA 2 (transformers ``VJEPA2Model``): the encoder's output, never the predictor's.

A clip of ``T`` frames is cut into tubelets of 2 frames x 16x16 pixels by one Conv3d, so there
are ``T/2`` tubelets of ``P`` patches each and no CLS token. Tokens are the encoder's
``last_hidden_state`` (after its final LayerNorm; the model runs with ``skip_predictor=True``),
``(B, (T/2)*P, D)``, tubelet-major: the token of patch ``p`` (row-major over the patch grid)
in tubelet ``k`` (frames ``2k, 2k+1``) is at ``k*P + p`` (the Conv3d output flattened over
time, height, width, which is also how the 3-D RoPE reads positions: ``k = index // P``;
checked against ``VJEPA2Embeddings``/``VJEPA2RopeAttention`` of transformers 5.24).

- ``frame``: ``(B, T/2, D)``, one token per tubelet: the mean over its ``P`` patch tokens.
- ``cls``: ``(B, 1, D)``, the mean over all ``(T/2)*P`` tokens (V-JEPA 2 has no CLS; its
  classifier pools with an attentive pooler that is not part of ``VJEPA2Model``).
- ``patch``: ``(B, (T/2)*P, D)``, the encoder's ``last_hidden_state`` unchanged.

Other clip lengths work as they are: positions are rotary, computed from the token index at
every forward (``frames_per_clip`` only sizes the predictor, which is not run). ``T`` must be
even (tubelets of 2); an odd ``T`` is refused before anything is loaded.

Preprocessing: the checkpoint's ``video_preprocessor_config.json`` (``preprocessor_config.json``
when there is none, as ``VJEPA2VideoProcessor.from_pretrained`` looks them up). That processor
derives the resize from the crop: short side ``int(crop * 256 / 224)`` (292 for the 256 px
crop), whatever ``size`` says; the same rule is applied here.
"""

from __future__ import annotations

from typing import Any

from skill.pipeline.backbones.registry import (
    BackboneSpec,
    Family,
    Geometry,
    register,
    register_family,
)
from skill.pipeline.backbones.tubelets import TUBELET, tubelet_token_modes

# Every nn.Linear of VJEPA2Model (module-name suffixes): the encoder layers' query/key/value,
# attention output "proj" and MLP fc1/fc2. VJEPA2Model also holds the predictor, whose layers
# share those suffixes, plus "predictor_embeddings" and "predictor.proj"; they are listed so
# that the targets cover every Linear of the loaded class, as for the other families. The
# predictor never runs in ``encode`` (skip_predictor=True), so LoRA weights on it receive no
# gradient in training and change no token.
VJEPA2_LORA_TARGETS: tuple[str, ...] = (
    "attention.query",
    "attention.key",
    "attention.value",
    "attention.proj",
    "mlp.fc1",
    "mlp.fc2",
    "predictor_embeddings",
    "predictor.proj",
)

# VJEPA2VideoProcessor's resize rule: short side int(crop * 256 / 224).
RESIZE_FROM_CROP = 256 / 224

# A VJEPA2VideoProcessor config as transformers saves it (the tiny preset's, at 32 px).
_TINY_VJEPA2_PREPROCESSING: dict[str, Any] = {
    "video_processor_type": "VJEPA2VideoProcessor",
    "do_resize": True,
    "size": {"shortest_edge": int(32 * RESIZE_FROM_CROP)},
    "do_center_crop": True,
    "crop_size": {"height": 32, "width": 32},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
}


def _hidden(model, pixels):
    """pixels (B, T, 3, H, W) -> the encoder's last_hidden_state (B, (T/2)*P, D) float32."""
    output = model(pixel_values_videos=pixels, skip_predictor=True)
    return output.last_hidden_state.float()


VJEPA2 = register_family(
    Family(
        name="vjepa2",
        model_class="VJEPA2Model",
        config_class="VJEPA2Config",
        model_types=("vjepa2",),
        default_resample="bilinear",  # VJEPA2VideoProcessor's
        token_modes=tubelet_token_modes(_hidden),
        lora_targets=VJEPA2_LORA_TARGETS,
        frames_key="frames_per_clip",
        required_config=(("tubelet_size", TUBELET, "the token layouts assume tubelets of 2"),),
        image_size_key="crop_size",
        frames_multiple=TUBELET,
        preprocessor_files=("video_preprocessor_config.json", "preprocessor_config.json"),
        resize_from_crop=RESIZE_FROM_CROP,
    )
)

register(
    BackboneSpec(
        "vjepa2-vitl-256",
        "vjepa2",
        "facebook/vjepa2-vitl-fpc64-256",
        description="V-JEPA 2 ViT-L encoder, 64x256, tubelets of 2, D=1024",
        geometry=Geometry(dim=1024, frames=64, crop=256, patch=16),
    )
)
register(
    BackboneSpec(
        "tiny-vjepa2",
        "vjepa2",
        None,
        tiny_config={
            "crop_size": 32,
            "patch_size": 8,
            "in_chans": 3,
            "frames_per_clip": 8,
            "tubelet_size": TUBELET,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "mlp_ratio": 2.0,
            "pred_hidden_size": 16,
            "pred_num_hidden_layers": 1,
            "pred_num_attention_heads": 2,
            "pred_num_mask_tokens": 2,
            "pred_mlp_ratio": 2.0,
        },
        tiny_preprocessing=_TINY_VJEPA2_PREPROCESSING,
        description="random tiny V-JEPA 2 for tests: 8 frames, 32 px, patch 8, tubelets of 2, D=32",
    )
)
