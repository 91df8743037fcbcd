"""The one base of the errors a user can fix: `skill` prints them as one line and exits 2.

Everything else that escapes a command is a bug and shows its traceback. Each kind of
expected error subclasses `SkillError` where it is raised (`ManifestError`, `StoreError`,
`BackboneError`, ...); `ConfigError` is for settings that are wrong or conflict.
"""

from __future__ import annotations


class SkillError(Exception):
    """An expected error: its message names the file, line, take or setting and the fix."""


class ConfigError(SkillError, ValueError):
    """A setting that is out of range or conflicts with another (refused before any work).
    Also a ValueError, which is what such a setting is to Python callers."""
