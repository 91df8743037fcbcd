"""The loaded backbone: ``encode`` turns uint8 clips into float32 tokens; ``load_backbone``.

The extract stage decodes, samples and crops frames in worker processes (uint8, geometry from
``Backbone.geometry``), then hands batches of clips to ``Backbone.encode``, which rescales,
normalises and runs the model; the family's token mode turns the model output into tokens.
Everything a token depends on is in ``Backbone.provenance()``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skill.devices import resolve_device
from skill.pipeline.backbones.adapter import apply_adapter, check_training_record
from skill.pipeline.backbones.checkpoint import (
    ResolvedBackbone,
    check_model_input,
    load_preprocessing,
    load_pretrained,
    resolve_backbone,
)
from skill.pipeline.backbones.hashing import weights_identity
from skill.pipeline.backbones.preprocessing import Preprocessing
from skill.pipeline.backbones.registry import TIME_EMBEDDINGS, BackboneError
from skill.pipeline.backbones.tiny import build_tiny_model

if TYPE_CHECKING:
    import torch


class Backbone:
    """A loaded, frozen encoder: ``encode(uint8 clips) -> float32 tokens``."""

    def __init__(
        self,
        *,
        resolved: ResolvedBackbone,
        model,
        preprocessing: Preprocessing,
        token_mode: str,
        num_frames: int,
        device: str,
        batch_size: int,
        weights: dict[str, Any],
        adapter: dict[str, Any] | None,
        checkpoint_num_frames: int | None,
        time_embedding: str = "nearest",
    ):
        import torch

        self.name, self.family, self.source = resolved.name, resolved.family.name, resolved.source
        self._mode = resolved.family.token_modes[token_mode]
        self.model = model
        self.preprocessing = preprocessing
        self.token_mode = token_mode
        self.num_frames = num_frames
        self.device = device
        self.batch_size = batch_size
        self.weights = weights
        self.adapter = adapter
        self.checkpoint_num_frames = checkpoint_num_frames
        self.time_embedding = time_embedding
        self._mean = torch.tensor(preprocessing.image_mean, device=device).view(3, 1, 1)
        self._std = torch.tensor(preprocessing.image_std, device=device).view(3, 1, 1)

    @property
    def dim(self) -> int:
        """Token width D (the model's hidden size)."""
        return int(self.model.config.hidden_size)

    @property
    def patches_per_frame(self) -> int:
        """P: patch tokens per frame at the crop size."""
        patch = int(self.model.config.patch_size)
        return (self.preprocessing.crop_height // patch) * (self.preprocessing.crop_width // patch)

    @property
    def geometry(self):
        """The ``FrameGeometry`` (resize + centre crop) decode workers apply to every frame."""
        # Imported here: the decode package registers its decoders when first imported.
        from skill.pipeline.decode.geometry import FrameGeometry

        prep = self.preprocessing
        return FrameGeometry(
            shortest_edge=prep.shortest_edge,
            crop_height=prep.crop_height,
            crop_width=prep.crop_width,
            resample=prep.resample,
        )

    def tokens_per_clip(self, num_frames: int | None = None) -> int:
        """Tokens per clip of ``num_frames`` frames (default: the loaded T) in this token mode."""
        frames = self.num_frames if num_frames is None else num_frames
        return self._mode.count(frames, self.patches_per_frame)

    def encode(self, clips: torch.Tensor) -> torch.Tensor:
        """Clips ``(N, T, H, W, 3)`` uint8 RGB, already cropped -> tokens ``(N, n_tokens, D)``.

        ``T`` must be the loaded ``num_frames`` and ``H, W`` the crop. Runs in chunks of
        ``batch_size`` clips, one forward per chunk, under bf16 autocast on CUDA (fp16 where
        bf16 is unsupported) and in float32 on CPU. Returns float32 on the CPU.

        ``batch_size`` counts clips for every family: a video family's forward takes
        ``batch_size`` clips, a per-frame image family's (CLIP, DINOv2, SigLIP) flattens them
        into one batch of ``batch_size * T`` images. The extract loop fills each chunk with
        clips of any views and takes, so image families see all frames of several takes in
        one forward. A clip's tokens do not depend on the clips beside it.
        """
        import torch

        self._check_clips(clips)
        if clips.shape[0] == 0:
            return torch.zeros((0, self.tokens_per_clip(), self.dim), dtype=torch.float32)
        chunks = [
            self._encode_batch(clips[start : start + self.batch_size])
            for start in range(0, clips.shape[0], self.batch_size)
        ]
        return torch.cat(chunks)

    def _check_clips(self, clips) -> None:
        import torch

        if not isinstance(clips, torch.Tensor) or clips.dtype != torch.uint8:
            raise BackboneError(f"{self.name}: encode takes a uint8 torch.Tensor")
        expected = (self.num_frames, self.preprocessing.crop_height, self.preprocessing.crop_width)
        if clips.ndim != 5 or clips.shape[4] != 3 or tuple(clips.shape[1:4]) != expected:
            raise BackboneError(
                f"{self.name}: clips must be (N, {expected[0]}, {expected[1]}, {expected[2]}, 3) "
                f"uint8, got {tuple(clips.shape)}"
            )

    def _pixels(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, T, H, W, 3)`` -> normalised float32 ``(B, T, 3, H, W)`` on the device."""
        frames = clips.to(self.device, non_blocking=True).permute(0, 1, 4, 2, 3).float()
        return (frames * self.preprocessing.rescale_factor - self._mean) / self._std

    def pixels(self, clips: torch.Tensor) -> torch.Tensor:
        """What ``encode`` feeds the model: uint8 ``(B, T, H, W, 3)`` -> normalised float32
        ``(B, T, 3, H, W)`` on the device (for training around the backbone, `skill adapt`)."""
        return self._pixels(clips)

    def tokens_of(self, model, pixels: torch.Tensor) -> torch.Tensor:
        """This backbone's token mode applied to ``model`` (its own, or one wrapped around it,
        e.g. with LoRA for training): ``(B, T, 3, H, W) -> (B, N, D)`` float32, differentiable
        (no inference mode, no autocast: the caller's)."""
        return self._mode.tokens(model, pixels)

    def _autocast(self):
        import torch

        if not str(self.device).startswith("cuda"):
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def _encode_batch(self, clips: torch.Tensor) -> torch.Tensor:
        import torch

        pixels = self._pixels(clips)
        with torch.inference_mode(), self._autocast():
            tokens = self._mode.tokens(self.model, pixels)  # (B, N, D)
        return tokens.float().cpu()

    def provenance(self) -> dict[str, Any]:
        """Everything the tokens depend on, JSON-serialisable (stored with the tokens)."""
        out = {
            "name": self.name,
            "family": self.family,
            "source": self.source,
            "revision": self.weights.get("revision"),
            "weights_sha256": self.weights.get("weights_sha256"),
            "adapter": dict(self.adapter) if self.adapter else None,
            "preprocessing": self.preprocessing.to_dict(),
            "token_mode": self.token_mode,
            "num_frames": self.num_frames,
            "checkpoint_num_frames": self.checkpoint_num_frames,
            "dim": self.dim,
            "tokens_per_clip": self.tokens_per_clip(),
        }
        if self.time_embedding != "nearest":
            # Only when not the default, so that earlier stores keep their provenance.
            out["time_embedding"] = self.time_embedding
        return out


def _check_load_options(
    family, token_mode: str, time_embedding: str, num_frames: int, batch_size: int
) -> None:
    if token_mode not in family.token_modes:
        raise BackboneError(
            f"token_mode {token_mode!r} is not one of {family.name}'s: "
            + ", ".join(family.token_modes)
        )
    if time_embedding not in TIME_EMBEDDINGS:
        raise BackboneError(f"time_embedding {time_embedding!r} not in {TIME_EMBEDDINGS}")
    if time_embedding != "nearest" and family.linear_time_embedding is None:
        raise BackboneError(
            f"--time-embedding {time_embedding} is for families with time embeddings "
            f"(timesformer), not {family.name}"
        )
    if not isinstance(num_frames, int) or num_frames < 1:
        raise BackboneError(f"num_frames must be a positive int, got {num_frames!r}")
    if batch_size < 1:
        raise BackboneError(f"batch_size must be >= 1, got {batch_size}")


def load_backbone(
    name_or_path: str,
    *,
    adapter: str | Path | None = None,
    device: str = "cpu",
    token_mode: str = "frame",
    num_frames: int,
    batch_size: int = 16,
    time_embedding: str = "nearest",
) -> Backbone:
    """Load a registered backbone, a local checkpoint folder or a hub id, frozen and in eval mode.

    ``num_frames`` is the T of every clip passed to ``encode``; ``batch_size`` the clips per
    forward pass; ``device`` ``cpu``, ``cuda[:i]`` or ``auto``; ``time_embedding``
    ``nearest`` (transformers' interpolation when T differs from the checkpoint) or ``linear``
    (SkillFormer's, applied once before the adapter; timesformer only).
    """
    resolved = resolve_backbone(name_or_path)  # the one look-up, with its family
    family = resolved.family
    _check_load_options(family, token_mode, time_embedding, num_frames, batch_size)
    where = resolved.source or resolved.name
    if num_frames % family.frames_multiple:
        raise BackboneError(
            f"{where}: num_frames {num_frames} is not a multiple of {family.frames_multiple}: "
            f"{family.name} encodes tubelets of {family.frames_multiple} frames "
            "(config tubelet_size); any other T would drop its last frames"
        )
    preprocessing = load_preprocessing(resolved)
    model = build_tiny_model(resolved.spec) if resolved.is_tiny else load_pretrained(resolved)
    check_model_input(model, preprocessing, family, where)
    weights = weights_identity(resolved, model)
    checkpoint_frames = None
    if family.frames_key is not None:
        checkpoint_frames = int(getattr(model.config, family.frames_key))
        # The layers reshape with it: left at the checkpoint's value, patches and frames mix.
        setattr(model.config, family.frames_key, num_frames)
        if family.set_frames is not None:
            family.set_frames(model, num_frames)
    if time_embedding == "linear":
        family.linear_time_embedding(model, num_frames)
    adapter_info = None
    if adapter is not None:
        check_training_record(adapter, backbone=resolved.name,
                              weights_sha256=weights.get("weights_sha256"),
                              time_embedding=time_embedding)  # fmt: skip
        model, adapter_info = apply_adapter(model, adapter)
    device = resolve_device(device)
    model = model.eval().requires_grad_(False).to(device)
    return Backbone(
        resolved=resolved,
        model=model,
        preprocessing=preprocessing,
        token_mode=token_mode,
        num_frames=num_frames,
        device=device,
        batch_size=batch_size,
        weights=weights,
        adapter=adapter_info,
        checkpoint_num_frames=checkpoint_frames,
        time_embedding=time_embedding,
    )
