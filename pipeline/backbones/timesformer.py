"""TimeSformer (transformers ``TimesformerModel``, divided space-time attention).

``last_hidden_state`` is ``(B, 1 + P*T, D)`` (``P`` patches per frame, ``T`` frames): the
clip's CLS first, then patch-major, frame-minor, i.e. the token of patch ``p`` in frame ``t``
is at ``1 + p*T + t`` (checked against ``TimesformerEmbeddings``/``TimesformerLayer`` of
transformers 5.23 and by a test).

- ``frame``: ``(B, T, D)``, token ``t`` = mean over the ``P`` patch tokens of frame ``t``.
- ``cls``: ``(B, 1, D)``, the CLS token.
- ``patch``: ``(B, 1 + P*T, D)``, ``last_hidden_state`` unchanged.
- ``mean_all``: ``(B, 1, D)``, the mean of ``last_hidden_state`` over all ``1 + P*T`` tokens,
  CLS included: SkillFormer's per-view feature (this family only).

``config.num_frames`` is set to the requested ``T`` after loading: the layers reshape with
it, and a wrong value does not fail, it silently mixes patches and frames. The time
embeddings stay those of the checkpoint and transformers interpolates them ("nearest") when
``T`` differs from the checkpoint's frame count; with ``--time-embedding linear`` they are
replaced once at load by SkillFormer's linear interpolation (:func:`linear_time_embeddings`).
"""

from __future__ import annotations

from typing import Any

from skill.pipeline.backbones.registry import (
    BackboneSpec,
    Family,
    Geometry,
    TokenMode,
    register,
    register_family,
)

# LoRA targets of SkillFormer (module-name suffixes in transformers' TimesformerModel). Together
# they wrap every nn.Linear of every layer; "output.dense" also matches the two attention
# output projections, which the explicit entries name again (harmless: a module is wrapped once).
SKILLFORMER_LORA_TARGETS: tuple[str, ...] = (
    "attention.attention.qkv",
    "attention.output.dense",
    "temporal_attention.attention.qkv",
    "temporal_attention.output.dense",
    "intermediate.dense",
    "output.dense",
    "temporal_dense",
)

# The preprocessor_config.json of the hub's TimeSformer-base k400/k600 checkpoints; the tiny
# preset keeps it but for the size, and the benchmarks write it beside random-weight models.
TIMESFORMER_BASE_PREPROCESSING: dict[str, Any] = {
    "image_processor_type": "VideoMAEImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "resample": 2,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.45, 0.45, 0.45],
    "image_std": [0.225, 0.225, 0.225],
}


def _hidden(model, pixels):
    """pixels (B, T, 3, H, W) -> last_hidden_state (B, 1 + P*T, D) float32."""
    return model(pixel_values=pixels).last_hidden_state.float()


def _frame_tokens(model, pixels):
    hidden = _hidden(model, pixels)
    batch, frames = pixels.shape[:2]
    # Patch-major, frame-minor: (B, P*T, D) -> (B, P, T, D), averaged over patches.
    return hidden[:, 1:].reshape(batch, -1, frames, hidden.shape[-1]).mean(dim=1)


def _cls_tokens(model, pixels):
    return _hidden(model, pixels)[:, :1]  # (B, 1, D)


def _mean_all_tokens(model, pixels):
    return _hidden(model, pixels).mean(dim=1, keepdim=True)  # (B, 1, D)


def linear_time_embeddings(old, frames: int):
    """SkillFormer's interpolation of ``(1, F, D)`` time embeddings to ``(1, T, D)``: for t in
    0..T-1, ``s = min(t * F / T, F - 1)``, ``f = floor(s)``, ``c = min(f + 1, F - 1)``,
    ``w = s - f``, ``new[t] = (1 - w) * old[f] + w * old[c]``."""
    import math

    import torch

    count = old.shape[1]
    rows = []
    for t in range(frames):
        s = min(t * count / frames, count - 1)
        f = math.floor(s)
        c, w = min(f + 1, count - 1), s - f
        rows.append((1 - w) * old[0, f] + w * old[0, c])
    return torch.stack(rows)[None]  # (1, T, D)


def _set_linear_time_embeddings(model, frames: int) -> None:
    """Replace ``embeddings.time_embeddings`` by :func:`linear_time_embeddings` at ``frames``
    (nothing when the checkpoint already has that many: the formula is the identity)."""
    import torch

    old = model.embeddings.time_embeddings.data
    if old.shape[1] == frames:
        return
    new = linear_time_embeddings(old.float(), frames).to(old.dtype)
    model.embeddings.time_embeddings = torch.nn.Parameter(new, requires_grad=False)


def _classifier(encoder):
    """The hub's k400/k600 layout: a classifier whose ``timesformer.`` prefix loading strips."""
    from transformers import TimesformerForVideoClassification

    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.num_labels = 4
    classifier = TimesformerForVideoClassification(config)
    classifier.timesformer.load_state_dict(encoder.state_dict())
    return classifier


TIMESFORMER = register_family(
    Family(
        name="timesformer",
        model_class="TimesformerModel",
        config_class="TimesformerConfig",
        model_types=("timesformer",),
        default_resample="bilinear",  # VideoMAEImageProcessor's
        token_modes={
            "frame": TokenMode(count=lambda frames, patches: frames, tokens=_frame_tokens),
            "cls": TokenMode(count=lambda frames, patches: 1, tokens=_cls_tokens),
            "patch": TokenMode(count=lambda frames, patches: 1 + patches * frames, tokens=_hidden),
            "mean_all": TokenMode(count=lambda frames, patches: 1, tokens=_mean_all_tokens),
        },
        linear_time_embedding=_set_linear_time_embeddings,
        lora_targets=SKILLFORMER_LORA_TARGETS,
        frames_key="num_frames",
        required_config=(
            ("attention_type", "divided_space_time", "other types have another token layout"),
        ),
        save_as=_classifier,
    )
)

_BASE = Geometry(dim=768, frames=8, crop=224, patch=16)
register(
    BackboneSpec(
        "timesformer-base-k600",
        "timesformer",
        "facebook/timesformer-base-finetuned-k600",
        description="TimeSformer-base, Kinetics-600, 8x224, D=768 (SkillFormer's backbone)",
        geometry=_BASE,
    )
)
register(
    BackboneSpec(
        "timesformer-base-k400",
        "timesformer",
        "facebook/timesformer-base-finetuned-k400",
        description="TimeSformer-base, Kinetics-400, 8x224, D=768",
        geometry=_BASE,
    )
)
register(
    BackboneSpec(
        "tiny-timesformer",
        "timesformer",
        None,
        tiny_config={
            "image_size": 32,
            "patch_size": 8,
            "num_channels": 3,
            "num_frames": 4,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 64,
        },
        tiny_preprocessing={
            **TIMESFORMER_BASE_PREPROCESSING,
            "size": {"shortest_edge": 32},
            "crop_size": {"height": 32, "width": 32},
        },
        description="random tiny TimeSformer for tests: 4 frames, 32 px, patch 8, D=32",
    )
)
