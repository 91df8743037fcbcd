"""Cheap checks of a command's arguments, made before the command loads torch or zarr.

A mistyped store path, view or manifest would otherwise be answered only after seconds of
imports. Each check reads no more than a file's existence or a store's root attributes
(zarr.json, read as JSON) and raises the error the full check would raise later, with the
same message; whatever it cannot judge cheaply it leaves to that full check. Head names are
checked by the configs themselves, from the registry's declared names (no torch either),
except a sweep's, checked here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skill.cache.errors import StoreError


def store_views(path: str | Path) -> list[str] | None:
    """The views of the store at ``path``, read from its zarr.json; StoreError when there is
    no store there; None when its attributes cannot be read cheaply (the full open of the
    store then says what is wrong)."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    if not path.is_dir() or not (path / "zarr.json").is_file():
        raise StoreError(f"{path}: not a skill store (no zarr.json in a folder)")
    try:
        views = json.loads((path / "zarr.json").read_text())["attributes"]["views"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(views, list) or not all(isinstance(v, str) for v in views):
        return None
    return views


def check_views(store: str | Path, spec: str, option: str, label: str = "") -> None:
    """Refuse a views spec (all, ego, exo, ego,exo2) naming a view the store lacks."""
    from skill.heads.data import SelectionError, resolve_views

    views = store_views(store)
    if views is None:
        return
    try:
        resolve_views(spec, views)
    except SelectionError as err:
        where = f"{store}: " if label else ""
        raise SelectionError(f"{option}: {where}{label}{err}") from None


def check_fit(values: dict[str, Any]) -> None:
    """skill fit: the store, and the views it is asked for."""
    store_views(values["store"])
    check_views(values["store"], values["views"], "--views")


def check_sweep(values: dict[str, Any]) -> None:
    """skill sweep: the heads (the sweep's own config checks them only after its fit settings,
    which resolve the device), every store, and every view set on every store."""
    from skill.heads.config import _check_head

    for head in _items(values.get("heads"), ","):
        _check_head(head, "--heads")
    stores = [values["fit.store"], *_items(values.get("stores"), ",")]
    for store in stores:
        store_views(store)
    for store in stores:
        for spec in _items(values.get("view_sets"), ";"):
            check_views(store, spec, "--view-sets", f"view set {spec!r}: ")


def check_predict(values: dict[str, Any]) -> None:
    """skill predict: the store, and the views it is asked for."""
    store_views(values["store"])
    if values.get("views") is not None:
        check_views(values["store"], values["views"], "--views")


def check_manifest(values: dict[str, Any]) -> None:
    """skill extract and skill adapt: the manifest exists."""
    from skill.pipeline.takes import ManifestError

    path = Path(values["manifest"])
    if path.is_dir():
        raise ManifestError(str(path), None, "is a directory, not a manifest file")
    if not path.exists():
        raise ManifestError(str(path), None, "manifest not found")


def check_adapt(values: dict[str, Any]) -> None:
    """skill adapt: the manifest exists (named by its decoding settings, ``extract``)."""
    check_manifest({"manifest": values["extract.manifest"]})


def _items(value: str | list | None, separator: str) -> list[str]:
    """A list option's items, whether still the typed text or already a list."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(separator)
    return [str(item).strip() for item in value if str(item).strip()]
