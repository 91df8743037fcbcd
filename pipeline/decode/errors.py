"""The two ways a decoder can refuse a video: the file itself cannot be decoded
(``DecodeError``, final), or this decoder cannot be trusted with it (``BackendUnsuitable``,
and the next decoder of the order reads it). Kept apart from the decoders so that every module
of the package, and the worker processes that send these errors back, share one definition."""

from __future__ import annotations

import os
from typing import Any


class DecodeError(Exception):
    """A video that cannot be decoded; ``reason`` is short and readable."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Two-argument constructor: tell pickle how to rebuild it in another process.
        return (DecodeError, (self.path, self.reason))


class BackendUnsuitable(Exception):
    """A backend cannot be trusted with this file; the next one of the order should read it."""
