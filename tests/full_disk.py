"""A real full disk for the write-error tests: a small tmpfs mounted in a private mount namespace
(``unshare -m``, as the read-only tests of tests/extract_helpers.py mount theirs), on which
`skill` commands run one after the other while the plan fills and frees the disk between them.

The test writes a plan and calls :func:`on_small_disk`; inside the namespace this module runs as
``python -m tests.full_disk PLAN`` and carries out its steps:

- ``{"fill": n}``: fill the disk with a filler file, then free ``n`` bytes of it;
- ``{"free": true}``: delete the filler (space comes back);
- ``{"skill": [args]}``: run ``skill <args>``; its exit code and output are recorded;
- ``{"list": true}``: record every file on the disk (but the filler): size, mode, sha256.

The results come back as a list, one entry per step; the disk's files at the end are copied to
``keep`` (the tmpfs goes with the namespace).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.extract_helpers import REPO, cli_command, cli_env

FILLER = ".filler"
PAGE = 4096  # tmpfs counts whole pages: a file of n bytes takes ceil(n / PAGE) of them


def small_disk_problem(folder: Path) -> str | None:
    """Why this machine cannot mount a tmpfs in a private namespace (None when it can)."""
    if shutil.which("unshare") is None:
        return "needs unshare(1) to mount a small tmpfs"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount -t tmpfs -o size=64k tmpfs "$0"', str(folder)],
        capture_output=True,
    )
    if probe.returncode != 0:
        return f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}"
    return None


def on_small_disk(
    mount: Path, steps: list[dict], keep: Path, size_mb: int = 128, timeout: float = 600
) -> list[dict]:
    """Run ``steps`` with a ``size_mb`` MiB tmpfs mounted on ``mount`` (an empty folder);
    returns one result per step and leaves the disk's last contents in ``keep``."""
    plan = keep.with_name(keep.name + ".plan.json")
    plan.write_text(json.dumps({"mount": str(mount), "steps": steps, "keep": str(keep)}))
    script = 'mount -t tmpfs -o size="$2"m tmpfs "$0" && exec "$3" -m tests.full_disk "$1"'
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, str(mount), str(plan), str(size_mb), sys.executable],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(plan.with_suffix(".out").read_text())


def pages(paths: list[Path]) -> int:
    """The tmpfs pages the files take (directories take none)."""
    return sum(-(-p.stat().st_size // PAGE) for p in paths if p.is_file())


def files_under(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.is_file()]


# ---- inside the namespace ------------------------------------------------------------------
def fill(mount: Path, leave: int) -> None:
    """Write zeros until the disk is full, then give back ``leave`` bytes."""
    filler = mount / FILLER
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, bytes(PAGE))
    except OSError:
        pass
    finally:
        os.close(fd)
    os.truncate(filler, max(0, filler.stat().st_size - leave))


def listing(mount: Path) -> dict:
    return {
        str(p.relative_to(mount)): {
            "size": p.stat().st_size,
            "mode": p.stat().st_mode & 0o777,
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        for p in sorted(files_under(mount))
        if p.name != FILLER
    }


def run_step(mount: Path, step: dict) -> dict:
    if "fill" in step:
        fill(mount, int(step["fill"]))
        return {}
    if "free" in step:
        (mount / FILLER).unlink(missing_ok=True)
        return {}
    if "list" in step:
        return {"files": listing(mount)}
    done = subprocess.run(cli_command(*step["skill"]), capture_output=True, text=True)
    return {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    mount = Path(plan["mount"])
    results = [run_step(mount, step) for step in plan["steps"]]
    (mount / FILLER).unlink(missing_ok=True)
    shutil.copytree(mount, plan["keep"], symlinks=True)
    Path(plan_path).with_suffix(".out").write_text(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
