"""Decoding: one video in, the sampled clips out, each frame the one at its recorded position,
upright and cropped to the backbone's input, or a one-line reason why the video cannot be
decoded. One module per job: ``view.py`` drives a view (``decode_view``), ``index.py`` probes a
file and builds the packet index every decoder is checked against, one file per decoder
registers it (``pyav_reader.py``, ``decord_reader.py``, ``torchcodec_reader.py``, in
``registry.py``), ``plan.py`` is the read plan PyAV follows (the keyframe intervals to decode,
seeking or reading on between them), ``keyframes.py`` is keyframe mode, ``frames.py`` and
``geometry.py`` turn a decoded frame into a clip frame, ``log_capture.py`` keeps the decoders'
printing off the terminal and ``pool.py`` runs views in worker processes. To add a decoder, write
``<name>_reader.py`` ending in ``register(Backend(name=..., read=..., available=...))`` and
import it below; the tests over the registry cover it unedited. What every decoder must
guarantee, and why, is in docs/decoding.md.
"""

from __future__ import annotations

# One line per decoder: importing its file registers it (in this order, which is the order
# worker processes preload them in).
# isort: off
from skill.pipeline.decode import pyav_reader  # noqa: F401
from skill.pipeline.decode import decord_reader  # noqa: F401
from skill.pipeline.decode import torchcodec_reader  # noqa: F401
# isort: on
