"""Errors of the store that a user can fix (see `skill.errors`)."""

from __future__ import annotations

from skill.errors import SkillError


class StoreError(SkillError, RuntimeError):
    """A store that cannot be used as asked; the message says which store and why."""


class StoreBusy(StoreError):
    """Another process holds the store's writer lock."""
