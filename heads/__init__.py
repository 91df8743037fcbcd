"""Fusion and classifier heads, trained on cached tokens.

Layout: ``registry`` (names -> head classes, each registered by ``@register_head`` in its own
file), ``interface`` (``TrainableHead``, what every head kind does), ``config`` (FitConfig,
PredictConfig, SweepConfig; torch-free), ``trainer`` (the neural training loop), ``lgbm``
(the LightGBM kind and its settings), ``train`` (``fit``), ``run_folder`` (writing and reading
a run), ``predict``, ``sweep``; one file per neural head (``mean``, ``concat``, ``late``,
``cvf``, ``temporal``; ``seqformer`` and ``viewselect`` read ordered clip
sequences; ``spotter`` finds moments in them, per clip). Heads
never see a backbone or a decoder: only what the store holds.
"""

from __future__ import annotations

from skill.heads.registry import (
    HEADS,
    HeadSpec,
    build_head,
    head_names,
    register_head,
    resolve_head,
)

# One line per head: the name its file registers with @register_head, and that file. The
# registry imports the files (torch) on its first look-up, in this order, which is the order
# of every default head list (skill sweep, skill demo); the names alone let a command check a
# head name without importing torch.
HEAD_FILES: dict[str, str] = {
    "mean": "mean",
    "concat": "concat",
    "late": "late",
    "cvf": "cvf",
    "temporal": "temporal",
    "lightgbm": "lgbm",
    "seqformer": "seqformer",
    "viewselect": "viewselect",
    "spotter": "spotter",
}

__all__ = ["HEADS", "HEAD_FILES", "HeadSpec", "build_head", "head_names", "register_head",
           "resolve_head"]  # fmt: skip
