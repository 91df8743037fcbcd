"""Parameters of a test over a registry: one case in the fast suite, the rest marked slow.

The fast suite (the README's test command) keeps each behaviour covered by one registered thing;
`pytest -m slow`, which CI also runs, covers every other one.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest


def one_fast(values: Iterable, fast=None) -> list:
    """``values`` as pytest params: ``fast`` (default: the first) unmarked, the others slow."""
    values = list(values)
    keep = values[0] if fast is None or fast not in values else fast
    return [value if value == keep else pytest.param(value, marks=pytest.mark.slow)
            for value in values]  # fmt: skip
