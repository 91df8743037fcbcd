"""Synthetic multi-view skill dataset: real encoded videos plus a manifest.

Every take is one 3-D performance (reach for a red ball, carry it onto a yellow target disc,
withdraw the hand) filmed by a head-mounted ego camera and up to four fixed exo cameras.
Proficiency shows through cues (posture, tremor, placement error, speed) that the cameras see
differently, each separating a different pair of levels, so that no single view tells all four
levels apart (docs/synth.md). The order kind (``SynthConfig.kind``) films a procedure of
distinct steps instead, whose order alone tells a Novice from a Late Expert (procedure.py).
The moments kind films a long take of short slots, a few of them marked moments (a good or a
faulty execution), written as the EgoExo4D demonstration benchmark's files (moments.py).
Everything is a pure function of the seed: the same seed gives byte-identical videos and
manifest whatever the number of worker processes. One responsibility per file: config.py,
world.py, plan.py, motion.py, procedure.py, camera.py, sprites.py, render.py, video.py,
dataset.py (`synthesize`).
"""

from __future__ import annotations

import importlib

from skill.synth.config import INFO_NAME, MANIFEST_NAME, SPLITS, SynthConfig

# Rendering and encoding (numpy, PyAV) load on first use, so that the CLI can read
# SynthConfig for `skill --help` without them.
_LAZY = {
    "read_manifest": "skill.synth.dataset",
    "synthesize": "skill.synth.dataset",
    "decode_luma": "skill.synth.video",
    "decode_video": "skill.synth.video",
    "SCENARIOS": "skill.synth.world",
}

__all__ = ["INFO_NAME", "MANIFEST_NAME", "SPLITS", "SynthConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
