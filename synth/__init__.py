"""Synthetic multi-view skill dataset: real encoded videos plus a manifest.

Every take is one 3-D performance (reach for a red ball, carry it onto a yellow target disc,
withdraw the hand) filmed by a head-mounted ego camera (a close-up on the target that sways
with the head) and up to four fixed exo cameras. Proficiency shows in the motion through cues
that the cameras see differently, and each cue separates a different pair of levels:

* posture (Novice vs the rest): novices hold the elbow high, a bent arm the exo cameras see;
  the elbow moves along the ego camera's line of sight, so the ego forearm looks the same;
* tremor (Novice vs the rest, temporal): the hand shakes along the ego line of sight, large
  sideways jitter and motion blur in the exo views, only a slight size change in ego;
* placement error (Early vs Intermediate Expert): the ball lands beside the target, which
  uncovers a large yellow area in the ego close-up and a thin sliver in the low exo views;
* speed (Late Expert vs the rest): experts finish sooner, visible everywhere but blurred by
  per-take and per-person speed variation.

So the ego view cannot tell Novice from Early Expert, the exo views cannot tell Early from
Intermediate Expert, and fusing views beats every single view. Cues are large and change the
colour make-up of the frames (how much yellow disc, blue sleeve), not only positions, because
the intended consumers are tiny randomly initialised backbones whose per-frame token is a mean
over patch tokens; see the comment above SCENARIOS for the colour choices.

Everything is a pure function of the seed: the same seed gives byte-identical videos and
manifest whatever the number of worker processes (the encoder runs single-threaded).

Files, one responsibility each: config.py (parameters), world.py (cue tables, scenarios,
camera rigs), plan.py (participants and takes from the seed), motion.py (the 3-D performance),
camera.py, sprites.py and render.py (drawing one view), video.py (encoding and decoding),
dataset.py (`synthesize`: workers, the manifest, synth_info.json).
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
