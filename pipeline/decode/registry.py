"""The decoders ``decode_view`` can read a video with, and the order it tries them in. Each
decoder's own file registers it with ``register(Backend(...))`` and the package's
``__init__.py`` imports that file, as the backbone families do; ``--decoders`` names one of
them, an order of them, or ``auto``. A decoder either returns the frames or says it cannot be
trusted with the file (``BackendUnsuitable``), and then the next one of the order reads it; a
``DecodeError`` (the file itself is bad) is final (docs/decoding.md, "Decoders and their
order")."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from skill.pipeline.decode.errors import BackendUnsuitable, DecodeError
from skill.pipeline.decode.geometry import FrameGeometry
from skill.pipeline.decode.index import StreamIndex, VideoInfo

# The order of backend "auto", from benchmark 3 (BENCHMARKS.md, part C): with one decoder
# thread per worker PyAV was the fastest on 448p and 1080p H.264, and as it reads every file it
# can open, nothing after it would ever be tried: decord and torchcodec are for --decoders. An
# optional backend listed here would be passed over where it is not installed.
DEFAULT_ORDER: tuple[str, ...] = ("pyav",)

Reader = Callable[
    [str, VideoInfo, StreamIndex, np.ndarray, FrameGeometry, int, str], dict[int, np.ndarray]
]
"""(path, info, index, wanted, geometry, threads, device) -> {position: clip frame} for the
sorted unique positions ``wanted``; raises BackendUnsuitable to pass the file on."""


@dataclass(frozen=True)
class Backend:
    """One decoder ``decode_view`` can read frames with."""

    name: str
    """What ``--decoders`` calls it."""
    read: Reader
    """Reads the wanted frames as clip frames, checked against the packet index."""
    available: Callable[[], str]
    """"" when its library can be used in this environment, else why not (one line)."""
    preload: Callable[[], None] | None = None
    """Run once in each decode worker before its first video (its imports), or None."""


BACKENDS: dict[str, Backend] = {}
"""Registered decoders, in registration order."""


def register(backend: Backend) -> Backend:
    """Add a decoder; a name can be registered once, and ``auto`` is the default order's."""
    if backend.name == "auto":
        raise ValueError("decoder name 'auto' stands for the default order")
    if backend.name in BACKENDS:
        raise ValueError(f"decoder {backend.name!r} is registered twice")
    BACKENDS[backend.name] = backend
    return backend


def backend_names() -> tuple[str, ...]:
    """What ``--decoders`` accepts: ``auto`` and the registered decoders, sorted."""
    return ("auto", *sorted(BACKENDS))


def backend_order(backend: str | Sequence[str]) -> tuple[str, ...]:
    """The backends to try, in order, for ``decode_view``'s ``backend``: one name, a sequence
    of names, or ``auto`` (``DEFAULT_ORDER``)."""
    names = [backend] if isinstance(backend, str) else list(backend)
    unknown = [name for name in names if name not in backend_names()]
    if unknown or not names:
        raise ValueError(
            f"decoders must be names from {', '.join(backend_names())}, not {unknown or 'none'}"
        )
    if names == ["auto"]:
        return DEFAULT_ORDER
    if "auto" in names:
        raise ValueError("decoders auto is an order by itself; list names or auto alone")
    return tuple(dict.fromkeys(names))


def read_with_backend(
    path: str,
    info: VideoInfo,
    index: StreamIndex,
    wanted: np.ndarray,
    geometry: FrameGeometry,
    order: tuple[str, ...],
    threads: int,
    device: str,
) -> tuple[dict[int, np.ndarray], str, str]:
    """Each backend of ``order`` in turn until one is suitable; (frames, backend, why the
    ones before it were not). None suitable is a DecodeError listing every reason."""
    reasons: list[str] = []
    for name in order:
        try:
            frames = BACKENDS[name].read(path, info, index, wanted, geometry, threads, device)
        except BackendUnsuitable as why:
            reasons.append(f"{name}: {why}")
            continue
        return frames, name, "; ".join(reasons)
    raise DecodeError(path, "; ".join(reasons))


def preload_decoders() -> None:
    """Decode-worker initializer: each registered decoder's imports, so that the first video
    does not spend its timeout on them."""
    for backend in BACKENDS.values():
        if backend.preload is not None:
            backend.preload()
