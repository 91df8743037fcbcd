"""The EgoExo4D layout, shared by the ``egoexo4d`` and ``skillformer`` formats: the five views,
camera names, ``takes/<take>/frame_aligned_videos/`` folders and their downscaled copies.

The rules (views, camera-to-view mapping, downscaled copies, take names, the root, the split)
are listed in docs/manifests.md ("EgoExo4D-style rules").
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from skill.pipeline.manifest.common import Where, portable, resolve
from skill.pipeline.takes import Take

EGOEXO_VIEWS: tuple[str, ...] = ("ego", "exo1", "exo2", "exo3", "exo4")
# Aria RGB stream only; the SLAM (1201-*) and eye-tracking (211-1) streams are not the ego view.
ARIA_RGB = re.compile(r"aria\d*(?:_214-1)?", re.IGNORECASE)
ARIA_ANY = re.compile(r"aria\d*_[\w-]+", re.IGNORECASE)
EXO_CAMERA = re.compile(r"(cam|gp)(\d+)", re.IGNORECASE)


def prefer_downscaled(path: str) -> str:
    """The downscaled/448 copy of an EgoExo4D video when it exists, else `path` itself."""
    folder, name = os.path.split(path)
    if folder.endswith(f"{os.sep}downscaled{os.sep}448"):
        return path
    small = os.path.join(folder, "downscaled", "448", name)
    return small if os.path.isfile(small) else path


def resolved_videos(view_paths: dict[str, str | None], root: Path) -> dict[str, str | None]:
    return {
        view: None if path is None else prefer_downscaled(resolve(root, path))
        for view, path in view_paths.items()
    }


def exo_order(camera: str) -> tuple[int, int]:
    match = EXO_CAMERA.fullmatch(camera)
    assert match is not None
    return (0 if match.group(1).lower() == "cam" else 1, int(match.group(2)))


def is_camera(name: str) -> bool:
    return bool(ARIA_RGB.fullmatch(name) or ARIA_ANY.fullmatch(name) or EXO_CAMERA.fullmatch(name))


def views_from_cameras(
    cameras: dict[str, str | None], where: Where
) -> tuple[dict[str, str | None], list[str]]:
    """Map camera names to views with the rule in the module docstring."""
    names = [name for name, path in cameras.items() if path is not None]
    unknown = [name for name in names if not is_camera(name)]
    if unknown:
        raise where.error(
            f"unknown camera name(s) in 'video_paths': {', '.join(unknown)}; expected view names "
            "(ego, exo1..exo4) or camera names (aria<N>_214-1, cam<N>, gp<N>)"
        )
    ego = sorted(name for name in names if ARIA_RGB.fullmatch(name))
    exo = sorted((name for name in names if EXO_CAMERA.fullmatch(name)), key=exo_order)
    views: dict[str, str | None] = dict.fromkeys(EGOEXO_VIEWS)
    if ego:
        views["ego"] = cameras[ego[0]]
    for view, camera in zip(EGOEXO_VIEWS[1:], exo, strict=False):
        views[view] = cameras[camera]
    other_aria = [name for name in names if ARIA_ANY.fullmatch(name) and name not in ego]
    return views, ego[1:] + exo[len(EGOEXO_VIEWS) - 1 :] + other_aria


def take_folder(path: str) -> str | None:
    """The <name> of the last takes/<name>/ folder in `path` (never the file name itself)."""
    parts = os.path.normpath(path).split(os.sep)
    for index in range(len(parts) - 3, -1, -1):
        if parts[index] == "takes":
            return parts[index + 1]
    return None


def take_names_in_paths(view_paths: dict[str, str | None], where: Where) -> str | None:
    names = {take_folder(path) for path in view_paths.values() if path is not None} - {None}
    if len(names) > 1:
        raise where.error(f"video paths point into different takes: {', '.join(sorted(names))}")
    return names.pop() if names else None


def writable_paths(take: Take, base: Path, fmt: str) -> dict[str, str | None]:
    """The take's video paths as an EgoExo4D-style manifest writes them (view -> path relative
    to `base` or absolute, None when missing); ValueError when reading them back would give
    another take (other views, a take folder of another name, a downscaled copy preferred)."""
    if set(take.videos) != set(EGOEXO_VIEWS):
        raise ValueError(
            f"write_manifest: take {take.take_id} has views {sorted(take.videos)}; the {fmt} "
            f"format names the views {', '.join(EGOEXO_VIEWS)} (None for a missing one)"
        )
    for view in EGOEXO_VIEWS:
        video = take.videos[view]
        if video is not None and prefer_downscaled(os.path.abspath(video)) != os.path.abspath(
            video
        ):
            raise ValueError(
                f"write_manifest: take {take.take_id} view {view}: {video} has a downscaled/448 "
                "copy, which reading prefers; give the copy's path"
            )
    paths = {view: portable(take.videos[view], base) for view in EGOEXO_VIEWS}
    folders = {take_folder(path) for path in paths.values() if path is not None} - {None}
    if folders and folders != {take.take_id}:
        raise ValueError(
            f"write_manifest: take {take.take_id} has videos in takes/{', takes/'.join(sorted(folders))}/; "
            f"the {fmt} format names a take by its folder under takes/"
        )
    return paths
