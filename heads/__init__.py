"""Fusion and classifier heads, trained on cached tokens.

Layout: ``registry`` (names -> head classes, found by ``@register_head``), ``interface``
(``TrainableHead``, what every head kind does), ``config`` (FitConfig, PredictConfig,
SweepConfig; torch-free), ``trainer`` (the neural training loop), ``lgbm`` (the LightGBM
kind), ``train`` (``fit``), ``run_folder`` (writing and reading a run), ``predict``,
``sweep``; one file per neural head (``mean``, ``concat``, ``late``, ``cvf``, ``temporal``).
Heads never see a backbone or a decoder: only what the store holds.
"""

from __future__ import annotations

from skill.heads.registry import HEADS, build_head, head_names, pools_tokens, register_head

__all__ = ["HEADS", "build_head", "head_names", "pools_tokens", "register_head"]
