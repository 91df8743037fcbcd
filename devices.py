"""The one rule that turns a `--device` setting into a torch device, for every stage."""

from __future__ import annotations

from skill.errors import ConfigError

DEVICE_CHOICES = "cpu, cuda, cuda:N or auto"


def resolve_device(requested: str, local_rank: int = 0) -> str:
    """`auto` -> this process's GPU when torch sees one, else `cpu`; `cuda` -> this process's
    GPU (under torchrun, GPU `local_rank` modulo the GPUs present); `cuda:N` as given. A
    CUDA request without CUDA, or an unknown name, is a ConfigError. Imports torch only when
    the answer depends on it."""
    text = str(requested).strip().lower()
    if text == "cpu":
        return "cpu"
    if text not in ("auto", "cuda") and not _is_indexed_cuda(text):
        raise ConfigError(f"unknown device {requested!r}; use {DEVICE_CHOICES}")
    import torch

    if not torch.cuda.is_available():
        if text == "auto":
            return "cpu"
        raise ConfigError(
            f"device {requested!r} requested but CUDA is not available to torch "
            f"{torch.__version__} (no GPU, or a CPU build); use device cpu or auto"
        )
    if text in ("auto", "cuda"):
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return text


def _is_indexed_cuda(text: str) -> bool:
    prefix, _, index = text.partition(":")
    return prefix == "cuda" and index.isdigit()
