"""A fit that stops itself (SIGSTOP) the moment its staging folder is written, before it is
published: the kill tests of tests/test_run_recovery.py SIGKILL it there, or keep it alive.

Usage: ``python -m tests.stop_at_publish STORE OUT_DIR NAME``.
"""

from __future__ import annotations

import os
import signal
import sys

import skill.heads.run_folder as run_folder
from skill.heads.config import FitConfig
from skill.heads.train import fit


def main(store: str, out_dir: str, name: str) -> None:
    real_publish = run_folder.publish

    def stop_then_publish(staging, out, run_name):
        os.kill(os.getpid(), signal.SIGSTOP)  # the test sees "stopped" and acts
        return real_publish(staging, out, run_name)

    run_folder.publish = stop_then_publish
    cfg = FitConfig(
        store=store, out_dir=out_dir, name=name, head="mean", views="all", epochs=1,
        batch_size=16, hidden=16, patience=0, plots=False,
    )  # fmt: skip
    fit(cfg)


if __name__ == "__main__":
    main(*sys.argv[1:4])
