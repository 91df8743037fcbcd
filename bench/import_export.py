"""`skill import features` against `skill export` on the same store, as commands.

A small synthetic store (``--takes`` takes of ``--views`` views, ``--tokens`` tokens of width
``--dim``; by default 48 tiny takes) is exported (HDF5, or ``--npy``) and the export imported
into a new store, both as the `skill` command a user runs (a fresh process each: start-up
included). ``--baseline DIR`` also imports with another version of skill (DIR holds it as
``skill/``, e.g. ``git archive`` of an older commit), so that a change is measured under the
same load. The commands are timed in interleaved rounds, so that a burst of load from other
jobs hits all alike; the table gives the best and median round of each and the ratio of
import to export (the goal: an import within 2x of the export it reads). ``--scratch`` puts
the export and the imports elsewhere (e.g. a tmpfs, to leave out the disk).

Run from the repository root: ``python -m bench.import_export [--rounds 5]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import (
    StoreSpec,
    base_parser,
    best_and_median,
    data_dir,
    describe_build,
    print_machine,
    print_table,
    synthetic_store,
    timed,
)


def run_skill(*args: str, tree: Path | None = None) -> None:
    """`skill ARGS` in a fresh process (as `python -m skill`; from ``tree`` when given)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "skill", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"skill {' '.join(args)} failed:\n{result.stderr}")


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def one_round(store: Path, scratch: Path, npy: bool, baseline: Path | None) -> dict[str, float]:
    """Seconds of one export and of the import(s) of what it wrote, by command."""
    export, imported = scratch / ("export" if npy else "export.h5"), scratch / "imported.zarr"
    remove(export)
    seconds = {}
    _, seconds["skill export"] = timed(
        run_skill, "export", str(store), str(export), *(["--format", "npy"] * npy)
    )
    trees = {"skill import features": None}
    if baseline is not None:
        trees["skill import features (baseline)"] = baseline
    for name, tree in trees.items():
        remove(imported)
        args = ("import", "features", str(export), "--store", str(imported))
        _, seconds[name] = timed(run_skill, *args, tree=tree)
    return seconds


def main() -> None:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--takes", type=int, default=48)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--npy", action="store_true", help="export as .npy files, not HDF5")
    parser.add_argument("--baseline", type=Path, default=None, help="another skill tree's parent")
    parser.add_argument("--scratch", default=None, help="folder for the export and the imports")
    args = parser.parse_args()
    print_machine()
    spec = StoreSpec(takes=args.takes, views=args.views, tokens=args.tokens, dim=args.dim)
    store, built = synthetic_store(data_dir(args.data_dir), spec)
    print(f"store: {store} ({describe_build(built)})")
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="skill-import-export-", dir=args.scratch) as scratch:
        one_round(store, Path(scratch), args.npy, args.baseline)  # untimed: caches warm
        for _ in range(args.rounds):
            rounds.append(one_round(store, Path(scratch), args.npy, args.baseline))
            print("  round: " + ", ".join(f"{k} {v:.2f} s" for k, v in rounds[-1].items()))
    export_best, export_median = best_and_median([r["skill export"] for r in rounds])
    rows = []
    for name in rounds[0]:
        best, median = best_and_median([r[name] for r in rounds])
        ratio = "" if name == "skill export" else f"{best / export_best:.2f} / "
        ratio += "" if name == "skill export" else f"{median / export_median:.2f}"
        rows.append([name, best, median, ratio])
    kind = "npy" if args.npy else "hdf5"
    print_table(
        f"{args.takes} takes x {args.views} views x {args.tokens} tokens x {args.dim}, {kind}, "
        f"{args.rounds} rounds (seconds, as commands)",
        ["command", "best", "median", "/ export (best / median)"],
        rows,
    )


if __name__ == "__main__":
    main()
