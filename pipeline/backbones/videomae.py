"""VideoMAE (transformers ``VideoMAEModel``; a ``VideoMAEForVideoClassification`` checkpoint
such as the Kinetics fine-tune loads its encoder).

A clip of ``T`` frames is cut into tubelets of 2 frames x 16x16 pixels by one Conv3d, so there
are ``T/2`` tubelets of ``P`` patches each and no CLS token. ``last_hidden_state`` is
``(B, (T/2)*P, D)``, tubelet-major: the token of patch ``p`` (row-major over the patch grid)
in tubelet ``k`` (frames ``2k, 2k+1``) is at ``k*P + p`` (the Conv3d output flattened over
time, height, width; checked against ``VideoMAEPatchEmbeddings`` of transformers 5.24 and by a
test).

- ``frame``: ``(B, T/2, D)``, one token per tubelet: the mean over its ``P`` patch tokens.
- ``cls``: ``(B, 1, D)``, the mean over all ``(T/2)*P`` tokens, which is how VideoMAE's own
  classifier pools (``VideoMAEForVideoClassification``; its ``fc_norm`` after the mean is a
  classifier weight and is not applied).
- ``patch``: ``(B, (T/2)*P, D)``, ``last_hidden_state`` unchanged.

Other clip lengths: the position embeddings are a fixed sinusoid table over the flattened
token index, computed at construction from ``config.num_frames`` (not a weight, never saved),
so transformers builds the right table for any ``T`` only when the model is constructed with
that ``num_frames``. After loading, ``num_frames`` is set to ``T`` and the table is rebuilt
with transformers' own ``get_sinusoid_encoding_table`` for ``(T/2)*P`` tokens: the same model
``from_pretrained(..., num_frames=T)`` gives (a test checks it). ``T`` must be even (tubelets
of 2); an odd ``T`` is refused before anything is loaded.
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

# Every nn.Linear of a VideoMAEModel layer (module-name suffixes, as SkillFormer names
# TimeSformer's): query/key/value, the attention output, the MLP. "output.dense" also matches
# the attention output projection, named again explicitly (a module is wrapped once).
VIDEOMAE_LORA_TARGETS: tuple[str, ...] = (
    "attention.attention.query",
    "attention.attention.key",
    "attention.attention.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)

# A VideoMAEImageProcessor config in the current format (the tiny preset's, at 32 px).
_TINY_VIDEOMAE_PREPROCESSING: dict[str, Any] = {
    "image_processor_type": "VideoMAEImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 32},
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
    """pixels (B, T, 3, H, W) -> last_hidden_state (B, (T/2)*P, D) float32."""
    return model(pixel_values=pixels).last_hidden_state.float()


def _set_frames(model, frames: int) -> None:
    """Rebuild the fixed sinusoid position table for ``frames`` (``config.num_frames`` is set)."""
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    embeddings = model.embeddings
    patches = embeddings.patch_embeddings
    grid = (patches.image_size[0] // patches.patch_size[0]) * (
        patches.image_size[1] // patches.patch_size[1]
    )
    count = (frames // patches.tubelet_size) * grid
    patches.num_patches = embeddings.num_patches = count
    embeddings.position_embeddings = get_sinusoid_encoding_table(count, model.config.hidden_size)


def _classifier(encoder):
    """The hub's Kinetics layout: a classifier whose ``videomae.`` prefix loading strips."""
    from transformers import VideoMAEForVideoClassification

    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.num_labels = 4
    classifier = VideoMAEForVideoClassification(config)
    classifier.videomae.load_state_dict(encoder.state_dict())
    return classifier


VIDEOMAE = register_family(
    Family(
        name="videomae",
        model_class="VideoMAEModel",
        config_class="VideoMAEConfig",
        model_types=("videomae",),
        default_resample="bilinear",  # VideoMAEImageProcessor's
        token_modes=tubelet_token_modes(_hidden),
        lora_targets=VIDEOMAE_LORA_TARGETS,
        frames_key="num_frames",
        required_config=(("tubelet_size", TUBELET, "the token layouts assume tubelets of 2"),),
        save_as=_classifier,
        frames_multiple=TUBELET,
        set_frames=_set_frames,
        # MCG-NJU's configs come from the old VideoMAEFeatureExtractor ("size": 224, no
        # crop_size); VideoMAEImageProcessor then centre-crops to its default, 224.
        default_crop_size=224,
    )
)

register(
    BackboneSpec(
        "videomae-base-k400",
        "videomae",
        "MCG-NJU/videomae-base-finetuned-kinetics",
        description="VideoMAE-base, Kinetics-400, 16x224, tubelets of 2, D=768",
        geometry=Geometry(dim=768, frames=16, crop=224, patch=16),
    )
)
register(
    BackboneSpec(
        "tiny-videomae",
        "videomae",
        None,
        tiny_config={
            "image_size": 32,
            "patch_size": 8,
            "num_channels": 3,
            "num_frames": 4,
            "tubelet_size": TUBELET,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "use_mean_pooling": True,
            "decoder_hidden_size": 16,
            "decoder_num_hidden_layers": 1,
            "decoder_num_attention_heads": 2,
            "decoder_intermediate_size": 32,
        },
        tiny_preprocessing=_TINY_VIDEOMAE_PREPROCESSING,
        description="random tiny VideoMAE for tests: 4 frames, 32 px, patch 8, tubelets of 2, D=32",
    )
)
