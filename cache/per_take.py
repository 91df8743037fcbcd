"""The per-take store: Zarr arrays with one row per take, each take written whole by one
writer with its completion record last, and resumed by the takes still to write.

The token store (`cache/store.py`) and `skill adapt`'s frame store (`adapt/frames.py`) are
two array layouts of it: each keeps its own arrays (float16 tokens with their placement
records; uint8 frames), and both create, write and resume by the rules here, so that a fix
to one of them is made once: a store is built aside and renamed into place
(`create_aside`); a take's `status` is withdrawn, its arrays written, then its `status`
written (`write_status_last`), so a take cut short at any point stays pending; a take with
fewer decodable views than asked for fails (`take_status`); a run writes the pending takes
and, when asked, the failed ones, never a complete one (`rows_to_write`); what killed
writers left is removed by `cache.recovery.remove_leftovers`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skill.cache import files

STATUS_PENDING, STATUS_COMPLETE, STATUS_FAILED = 0, 1, 2
"""A take's completion record (`status`): written last, so only a whole take is complete."""


def create_aside(path: Path, write: Callable[[Path], None]) -> None:
    """A new store at ``path``: ``write(staging)`` builds it in a staging folder beside it,
    which is then renamed into place, so that a create that fails or is killed never leaves
    something that looks like a store."""
    with files.staging_folder(path, create=False) as staging:
        write(staging)
        files.publish_folder(staging, path)


def write_status_last(
    array: Callable[[str], Any], rows, arrays: Iterable[tuple[str, Any]], status
) -> None:
    """Write takes ``rows`` (an index or a slice of the per-take arrays): their completion
    record withdrawn first, each ``(name, values)`` of ``arrays`` in order, then ``status``.
    Rewriting a take (a failed take retried) thus never shows the old record over a mix of
    old and new arrays; ``array(name)`` is the store's handle of an array."""
    array("status")[rows] = np.int8(STATUS_PENDING)
    for name, values in arrays:
        array(name)[rows] = values
    array("status")[rows] = status


def take_status(valid: np.ndarray, min_views: int) -> int:
    """The take rule: a take with fewer than ``min_views`` decodable views (``valid (V,)``)
    fails; otherwise it is complete, its failed views masked."""
    return STATUS_FAILED if int(np.asarray(valid).sum()) < min_views else STATUS_COMPLETE


def rows_to_write(status: np.ndarray, rows: Sequence[int], retry_failed: bool = False) -> list[int]:
    """The resume rule: the positions in ``rows`` (store rows) of the takes still to write,
    those pending and, with ``retry_failed``, those failed; a complete take is never written
    again. ``status`` is the store's completion record of every row."""
    todo = (STATUS_PENDING, STATUS_FAILED) if retry_failed else (STATUS_PENDING,)
    return [i for i, row in enumerate(rows) if int(status[row]) in todo]
