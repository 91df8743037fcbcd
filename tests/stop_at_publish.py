"""A fit that stops itself (SIGSTOP) the moment its staging folder is written, before it is
published: the kill tests of tests/test_run_recovery.py SIGKILL it there, or keep it alive.

Usage: ``python -m tests.stop_at_publish STORE OUT_DIR NAME`` (one fit), or
``python -m tests.stop_at_publish --sweep STORE OUT_DIR N``: the sweep of
:func:`sweep_config` stops at the publishing of its N-th run.
"""

from __future__ import annotations

import os
import signal
import sys

import skill.heads.run_folder as run_folder
from skill.heads.config import FitConfig
from skill.heads.lgbm import LightGBMSettings
from skill.heads.train import fit

SWEEP_QUICK = dict(epochs=2, batch_size=16, hidden=16, patience=0, plots=False,
                   lightgbm=LightGBMSettings(lgbm_rounds=20, lgbm_threads=1))  # fmt: skip


def sweep_config(store: str, out_dir: str):
    from skill.heads.config import SweepConfig

    base = FitConfig(store=store, out_dir=out_dir, **SWEEP_QUICK)
    return SweepConfig(fit=base, heads=["mean", "lightgbm"], view_sets=["ego", "all"])


def main_sweep(store: str, out_dir: str, stop_at: int) -> None:
    from skill.heads.sweep import sweep

    real_publish = run_folder.publish
    published = []

    def stop_at_nth(staging, out, run_name):
        published.append(run_name)
        if len(published) == stop_at:
            os.kill(os.getpid(), signal.SIGSTOP)
        return real_publish(staging, out, run_name)

    run_folder.publish = stop_at_nth
    sweep(sweep_config(store, out_dir))


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
    if sys.argv[1] == "--sweep":
        main_sweep(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main(*sys.argv[1:4])
