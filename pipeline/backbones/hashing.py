"""Hashing: the identity of what was loaded (weights files, tiny presets' tensors, adapters)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from skill.pipeline.backbones.checkpoint import ResolvedBackbone, checkpoint_folder


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_sha256(paths: list[Path]) -> str:
    """sha256 of one file; of several, sha256 of their ``sha256sum``-style listing (by name)."""
    if len(paths) == 1:
        return _file_sha256(paths[0])
    listing = "".join(f"{_file_sha256(p)}  {p.name}\n" for p in sorted(paths, key=lambda p: p.name))
    return hashlib.sha256(listing.encode()).hexdigest()


def state_dict_sha256(model) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, in name order."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_identity(resolved: ResolvedBackbone, model) -> dict[str, Any]:
    """revision (hub snapshot commit) and weights_sha256 of what was loaded."""
    if resolved.is_tiny:
        return {"revision": None, "weights_sha256": state_dict_sha256(model)}
    folder = checkpoint_folder(resolved)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    # Hub files live in .../snapshots/<commit>/; a plain folder has no revision.
    revision = folder.name if folder.parent.name == "snapshots" else None
    return {
        "revision": revision,
        "weights_sha256": files_sha256(files) if files else None,
    }
