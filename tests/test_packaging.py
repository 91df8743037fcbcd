"""One installed name: the wheel holds `skill` alone, and a user's own `cache.py` or
`pipeline.py` in the working directory cannot shadow any part of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_SHIPPED = (".git", "*.zarr", "runs", "skill-demo", ".skill-work", "__pycache__", "build")


def clean_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH pointing into the repository."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_wheel_installs_one_top_level_name(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SHIPPED, "*.egg-info"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("skill-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"skill"}, sorted(top)
    for module in ("skill/cli.py", "skill/__main__.py", "skill/pipeline/extract.py",
                   "skill/cache/store.py", "skill/heads/cvf.py"):  # fmt: skip
        assert module in names
    assert not any(name.startswith(("skill/tests/", "skill/bench/")) for name in names)
    # every module of the source tree is shipped (a new subpackage must be listed in
    # pyproject.toml's packages, or it would be missing from the wheel)
    shipped = {
        f"skill/{path.relative_to(REPO).as_posix()}"
        for path in REPO.rglob("*.py")
        if path.relative_to(REPO).parts[0] not in ("tests", "bench", "build")
        and not path.relative_to(REPO).parts[0].startswith(".")
    }
    assert shipped - set(names) == set()


def test_generic_names_are_not_installed(tmp_path):
    code = (
        "import importlib.util\n"
        "found = [n for n in ('cache', 'pipeline', 'heads', 'cli') if importlib.util.find_spec(n)]\n"
        "assert not found, f'installed as top-level names: {found}'\n"
        "import skill.cli, skill.cache.store, skill.pipeline.extract, skill.heads.cvf\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=clean_env()
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_users_modules_named_like_skills_parts_do_not_shadow_them(tmp_path):
    for name in ("cache", "pipeline", "heads", "cli"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('the user module was imported')\n")
    for command in (["-m", "skill", "backbones"], ["-c", "import skill.cli, skill.heads.train"]):
        done = subprocess.run(
            [sys.executable, *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=clean_env(),
        )
        assert done.returncode == 0, (command, done.stderr[-2000:])
