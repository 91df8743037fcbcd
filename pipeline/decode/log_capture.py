"""What the decoders print while a view is decoded never reaches the terminal. FFmpeg (PyAV's
and decord's own copy) and decord's C++ code write to file descriptor 2 directly, whatever
Python's logging says, so descriptor 2 goes to a temporary file for the duration: when the view
fails, its last line is quoted in the reason, otherwise the lines are only counted
(docs/decoding.md, "The decoder log")."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

# decord's C++ log prefixes: "[03:51:15] /path/video_reader.cc:270: " and "[/the/file] ".
DECORD_LOG_PREFIX = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: |\[/[^\]]*\] ")
# FFmpeg's log prefix: "[h264 @ 0x55d07b029b00] ".
_FFMPEG_LOG_PREFIX = re.compile(r"\[(\w+) @ 0x[0-9a-f]+\] ")
# Characters of decoder log a failure reason quotes (its last line).
LOG_TAIL_CHARS = 100
# One capture of file descriptor 2 at a time (decode_view called from several threads).
_CAPTURE_LOCK = threading.Lock()


@contextlib.contextmanager
def decoder_log_captured(lines: list[str]) -> Iterator[None]:
    """File descriptor 2 goes to a temporary file inside the block; its non-empty lines are
    appended to ``lines`` at the end. One capture at a time: another thread's block runs
    uncaptured."""
    if not _CAPTURE_LOCK.acquire(blocking=False):
        yield  # another thread is capturing already
        return
    try:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to keep off the terminal
            yield
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                text = capture.read().decode("utf-8", errors="replace")
                lines.extend(line.strip() for line in text.splitlines() if line.strip())
    finally:
        _CAPTURE_LOCK.release()


def with_log_tail(reason: str, log: list[str]) -> str:
    """A failure reason with the decoders' last log line (one line, short)."""
    if not log:
        return reason
    last = _FFMPEG_LOG_PREFIX.sub(r"\1: ", DECORD_LOG_PREFIX.sub("", log[-1])).strip()
    if len(last) > LOG_TAIL_CHARS:
        last = last[: LOG_TAIL_CHARS - 3] + "..."
    count = f"{len(log)} line{'s' if len(log) > 1 else ''}"
    return f"{reason} (decoder log, {count}, last: {last})"
