"""The registry of manifest formats: a format file ends in
``register_format(ManifestFormat(...))``, and the package imports every format file
(``manifest/__init__.py``), so every format is known once ``skill.pipeline.manifest`` is
imported."""

from __future__ import annotations

from skill.pipeline.manifest.format import ManifestFormat

_FORMATS: dict[str, ManifestFormat] = {}


def register_format(fmt: ManifestFormat) -> ManifestFormat:
    """Add a format to the registry (its name must be new); returns it."""
    if fmt.name in _FORMATS or fmt.name == "auto":
        raise ValueError(f"register_format: a manifest format named {fmt.name!r} exists")
    _FORMATS[fmt.name] = fmt
    return fmt


def format_names() -> tuple[str, ...]:
    """Names of the registered formats, in registration order (``auto`` is not one)."""
    return tuple(_FORMATS)


def registered_formats() -> tuple[ManifestFormat, ...]:
    """The registered formats, in registration order."""
    return tuple(_FORMATS.values())


def get_format(name: str) -> ManifestFormat:
    """The registered format called `name`; KeyError naming the registered ones."""
    if name not in _FORMATS:
        raise KeyError(f"unknown manifest format {name!r}; registered: {', '.join(_FORMATS)}")
    return _FORMATS[name]
