"""The read plan of one view: which stretches of the stream PyAV decodes for the sampled frames,
and how it gets from one to the next. The wanted positions are split into spans, one per
keyframe interval that holds any of them: a span is decoded from its keyframe up to its last
wanted frame, since every reference picture in between may be referred to. Between two spans
the reader either seeks to the next keyframe or reads on, dropping the packets in between
without decoding them and restarting the decoder at the keyframe, exactly as a seek does: a
seek is used only across a gap long enough for demuxing it to cost more, so dense samples
(48 clips of 8 frames over a take) are read in one forward pass, and sparse ones seek to each
interval they need (docs/decoding.md, "Reading only what is sampled")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Frames between two spans from which a seek replaces reading on: a dropped packet costs
# about 1/200 of a decoded frame to demux, and a seek can land late (docs/decoding.md).
SEEK_GAP = 256


@dataclass(frozen=True)
class Span:
    """Wanted frames of one keyframe interval, decoded from ``keyframe`` on."""

    keyframe: int
    """Position decoding starts from: the last keyframe at or before ``wanted[0]`` (0 when
    the index knows none)."""
    wanted: np.ndarray
    """Sorted unique wanted positions of the span, int64."""
    seek: bool
    """Reached by a seek to ``keyframe``; otherwise by reading on from the previous span (or
    from the start of the stream), dropping the packets before ``keyframe``."""


def keyframe_before(position: int, key_positions: np.ndarray) -> int:
    """Position of the last keyframe at or before ``position`` (0 when none is known)."""
    at = int(np.searchsorted(key_positions, position, side="right")) - 1
    return int(key_positions[at]) if at >= 0 else 0


def plan_spans(
    wanted: np.ndarray, key_positions: np.ndarray, seek_gap: int | None = None
) -> list[Span]:
    """The spans of the sorted unique positions ``wanted``, in stream order.

    A new span starts where a keyframe lies after one wanted frame and at or before the next
    (decoding can restart there, skipping the frames in between). A span is reached by a seek
    when at least ``seek_gap`` frames (default ``SEEK_GAP``) lie between the previous span's
    last wanted frame, or the start of the stream, and its keyframe; ``seek_gap=0`` seeks to
    every span's keyframe after the first frame of the stream.
    """
    gap_limit = SEEK_GAP if seek_gap is None else seek_gap
    spans: list[Span] = []
    start = 0
    for end in range(1, len(wanted) + 1):
        if end < len(wanted) and keyframe_before(int(wanted[end]), key_positions) <= int(
            wanted[end - 1]
        ):
            continue
        group = np.asarray(wanted[start:end], dtype=np.int64)
        keyframe = keyframe_before(int(group[0]), key_positions)
        if spans:
            seek = keyframe - int(spans[-1].wanted[-1]) - 1 >= gap_limit
        else:
            seek = keyframe > 0 and keyframe >= gap_limit
        spans.append(Span(keyframe, group, seek))
        start = end
    return spans


def one_pass(wanted: np.ndarray) -> list[Span]:
    """The plan that trusts no keyframe flag: one span decoded from the start of the stream."""
    return [Span(0, np.asarray(wanted, dtype=np.int64), seek=False)]


def runs_of(spans: list[Span]) -> list[list[Span]]:
    """The spans grouped into runs: each run starts with a span reached by a seek (or the
    first span) and holds the spans read on after it."""
    runs: list[list[Span]] = []
    for span in spans:
        if span.seek or not runs:
            runs.append([span])
        else:
            runs[-1].append(span)
    return runs
