"""Benchmark 7: every neural head at the default training budget on the demo's store.

The store is the one `skill demo` fits on (200 synthetic takes, tiny-timesformer tokens; 120
training takes, so 4 optimisation steps an epoch at batch 32), built once under --data-dir;
``--takes``, ``--participants`` and ``--data-seed`` build another synthetic dataset the same
way (e.g. 320 takes of 32 participants: 8 test participants instead of 4).
Each (head, view set, seed) is one `skill fit` with default settings but the seed; the table
gives test top-1 (40 takes of 4 participants) as the mean and minimum over the seeds, and the
budget the fits used (FitConfig.budget).

Run from the repository root: ``python -m bench.demo_heads``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python bench/demo_heads.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import base_parser, data_dir, print_machine, print_table, timed  # noqa: E402


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--heads", default="mean,concat,late,cvf,temporal", help="heads")
    parser.add_argument("--view-sets", default="ego;exo;all", help="view sets, ;-separated")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds")
    parser.add_argument("--lr", type=float, default=None, help="peak lr (default: the head's)")
    parser.add_argument("--takes", type=int, default=200, help="synthetic takes")
    parser.add_argument("--participants", type=int, default=20, help="synthetic participants")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data")
    return parser.parse_args(argv)


def demo_store(folder: Path, takes: int = 200, participants: int = 20, seed: int = 0) -> Path:
    """A store built as `skill demo` builds its own (on first use); the defaults are the
    demo's dataset."""
    from skill.demo import DemoConfig, _extract
    from skill.synth import SynthConfig, synthesize

    name = "demo" if (takes, participants, seed) == (200, 20, 0) else (
        f"demo-t{takes}-p{participants}-s{seed}")  # fmt: skip
    out = folder / name
    if (out / "built").is_file():  # before DemoConfig, which refuses a non-demo folder
        return out / "store.zarr"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cfg = DemoConfig(out=out, takes=takes, seed=seed)
    out.mkdir(parents=True)
    synth = SynthConfig(takes=takes, seed=seed, size=cfg.size, participants=participants)
    manifest = synthesize(synth, out / "data")
    _extract(cfg, manifest, say=print)
    (out / "built").write_text("ok\n")
    return out / "store.zarr"


def main(argv: list[str] | None = None) -> None:
    from skill.heads.config import FitConfig
    from skill.heads.data import load_selection
    from skill.heads.train import fit

    args = parse_args(argv)
    print_machine()
    folder = data_dir(args.data_dir)
    store = demo_store(folder, args.takes, args.participants, args.data_seed)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, budget = [], None
    for views in args.view_sets.split(";"):
        selection = load_selection(store, views)
        for head in args.heads.split(","):
            tests, seconds = [], 0.0
            for seed in seeds:
                cfg = FitConfig(store=str(store), head=head, views=views, seed=seed, lr=args.lr,
                                out_dir=str(folder / "demo-heads-runs"), plots=False)  # fmt: skip
                result, took = timed(fit, cfg, selection)
                tests.append(result.metrics["test"]["top1"])
                seconds += took
                budget = budget or cfg.budget(result.metrics["train"]["n"])
            rows.append([head, views, sum(tests) / len(tests), min(tests),
                         " ".join(f"{t:.3f}" for t in tests), seconds / len(seeds)])  # fmt: skip
            print(f"{head} {views}: test top-1 {tests}", flush=True)
    print(f"\nbudget: {budget}")
    print_table(f"test top-1 at the default budget, seeds {args.seeds}",
                ["head", "views", "mean", "min", "per seed", "s/fit"], rows)  # fmt: skip
    cvf = {r[1]: r[2] for r in rows if r[0] == "cvf"}
    if {"ego", "exo", "all"} <= set(cvf):
        print(f"KEY demo_heads: cvf all {cvf['all']:.3f} vs best single view set "
              f"{max(cvf['ego'], cvf['exo']):.3f} (mean test top-1)")  # fmt: skip


if __name__ == "__main__":
    main()
