"""Benchmark 2: loading a whole token selection into memory, store vs. other layouts.

The same tokens (an EgoExo4D-sized store: 2,370 takes x 5 views x 16 tokens x 768, float16,
291 MB) read completely into memory from:

* the Zarr store as `skill extract` leaves it when a run finishes (packed: large chunks),
  through the project's reader: ``heads.data.load_selection`` (what `skill fit` does: take
  table, status, view mask and tokens) and ``TokenStore.read_tokens`` (tokens only), and
  through plain zarr (``zarr.open_array(...)[:]``), for context;
* the same store in the write layout (one chunk per take and view, as while extracting, or
  after ``--no-pack``), through ``load_selection``;
* one contiguous ``.npy`` (``np.load``): the limit;
* one ``.npy`` per take and view (the per-video layout of common extractors such as
  video_features), read with ``np.load`` into a preallocated array;
* HDF5 (h5py), one contiguous dataset, ``dataset[()]``.

Also timed: `skill verify`'s check of the whole store (every chunk and checksum, each
chunk file read once).

Warm page cache by default: every layout is read once untimed, then the layouts are timed in
interleaved rounds (so a burst of load from other jobs hits all of them alike) and the best
and median rounds are reported. ``--cold`` drops each layout's files from the page cache
(``posix_fadvise(DONTNEED)`` after ``sync``) before every timed read.

The goal (load_selection >= 0.8 of np.load) is then measured on its own: the two reads
back to back, alternating which goes first, for ``--pair-rounds`` rounds: in the table, the
read that follows a slow layout or a pause is slowed for reasons outside the reader, whichever
reader it is (BENCHMARKS.md, benchmark 2).

Run from the repository root: ``python -m bench.read_cache``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python bench/read_cache.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    StoreSpec,
    base_parser,
    best_and_median,
    build_once,
    data_dir,
    describe_build,
    machine_info,
    print_machine,
    print_table,
    synthetic_store,
    timed,
)

LOAD_SELECTION = "zarr store: heads.data.load_selection"
RAW = "contiguous .npy (np.load): the limit"
PER_FILE = "one .npy per take and view"
WRITE_LAYOUT = "zarr store, write layout: load_selection"


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=2370, help="takes in the store")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per layout")
    parser.add_argument(
        "--pair-rounds", type=int, default=21, help="rounds of the back-to-back goal pair"
    )
    parser.add_argument("--cold", action="store_true", help="drop files from the page cache")
    args = parser.parse_args(argv)
    if args.pair_rounds < 1 or args.rounds < 1:
        parser.error("--rounds and --pair-rounds must be at least 1")
    return args


# ----------------------------------------------------------------------------- layouts


@dataclass
class Layout:
    """One way of holding the tokens: how to read all of them, and which files it reads."""

    name: str
    read: Callable[[], np.ndarray]  # -> (takes, views, clips, tokens, dim) float16
    files: Callable[[], Iterator[Path]]


def all_rows(store: Path) -> tuple[np.ndarray, list[int]]:
    from skill.cache.store import TokenStore

    opened = TokenStore.open(store)
    return np.arange(opened.n_takes), list(range(len(opened.views)))


def project_layouts(store: Path, write_store: Path) -> list[Layout]:
    """The packed store through the project's two readers and through plain zarr, and the
    write-layout store through load_selection."""
    from skill.cache.store import TokenStore
    from skill.heads.data import load_selection

    takes, views = all_rows(store)

    def read_tokens() -> np.ndarray:
        return TokenStore.open(store).read_tokens(takes, views)

    def plain_zarr() -> np.ndarray:
        import zarr

        return zarr.open_array(str(store / "tokens"), mode="r")[:]

    def files() -> Iterator[Path]:
        return (p for p in store.rglob("*") if p.is_file())

    def write_files() -> Iterator[Path]:
        return (p for p in write_store.rglob("*") if p.is_file())

    return [
        Layout(LOAD_SELECTION, lambda: load_selection(store, "all").x, files),
        Layout("zarr store: TokenStore.read_tokens", read_tokens, files),
        Layout("zarr store: plain zarr array[:]", plain_zarr, files),
        Layout(WRITE_LAYOUT, lambda: load_selection(write_store, "all").x, write_files),
    ]


def other_layouts(folder: Path, store: Path) -> list[Layout]:
    """Contiguous .npy, per-(take, view) .npy files and HDF5, written once from the store."""
    raw, per_file, hdf5 = (folder / f"{store.stem}.{ext}" for ext in ("npy", "files", "h5"))
    missing = [path for path in (raw, per_file, hdf5) if not path.exists()]
    tokens = _store_tokens(store) if missing else None
    for path, write in ((raw, _write_raw), (per_file, _write_per_file), (hdf5, _write_hdf5)):
        build_once(path, functools.partial(write, tokens=tokens))  # skipped when present
    del tokens
    return [
        Layout(RAW, lambda: np.load(raw), lambda: iter([raw])),
        Layout(PER_FILE, lambda: _read_per_file(per_file), lambda: per_file.iterdir()),  # fmt: skip
        Layout("HDF5, one dataset (h5py)", lambda: _read_hdf5(hdf5), lambda: iter([hdf5])),
    ]


def _store_tokens(store: Path) -> np.ndarray:
    from skill.cache.store import TokenStore

    takes, views = all_rows(store)
    return TokenStore.open(store).read_tokens(takes, views)


def _write_raw(path: Path, tokens: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, tokens)


def _write_per_file(path: Path, tokens: np.ndarray) -> None:
    path.mkdir()
    (path / "shape.txt").write_text(" ".join(map(str, tokens.shape)))
    for take in range(tokens.shape[0]):
        for view in range(tokens.shape[1]):
            np.save(path / f"take{take:05d}_view{view}.npy", tokens[take, view])


def _read_per_file(path: Path) -> np.ndarray:
    """Every per-(take, view) file into one array, as a loader of such a layout must."""
    shape = tuple(int(x) for x in (path / "shape.txt").read_text().split())
    out = np.empty(shape, dtype=np.float16)
    for take in range(shape[0]):
        for view in range(shape[1]):
            out[take, view] = np.load(path / f"take{take:05d}_view{view}.npy")
    return out


def _write_hdf5(path: Path, tokens: np.ndarray) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=tokens)  # contiguous: h5py's fastest full read


def _read_hdf5(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return f["tokens"][()]


# ----------------------------------------------------------------------------- timing


def drop_from_page_cache(files: Iterator[Path]) -> None:
    """Ask the kernel to forget the files' cached pages (clean pages only, hence sync)."""
    os.sync()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def check_same(layouts: list[Layout]) -> np.ndarray:
    """Read each layout once (this warms the page cache) and check they hold the same tokens."""
    reference = None
    for layout in layouts:
        tokens = layout.read()
        if reference is None:
            reference = tokens
        elif tokens.shape != reference.shape or not np.array_equal(tokens, reference):
            raise SystemExit(f"{layout.name}: tokens differ from {layouts[0].name}")
    return reference


def time_rounds(layouts: list[Layout], rounds: int, cold: bool) -> dict[str, list[float]]:
    """Seconds of each full read, layouts interleaved within every round."""
    return _timed_reads([layouts] * rounds, cold)


def time_pair(first: Layout, second: Layout, rounds: int, cold: bool) -> dict[str, list[float]]:
    """Seconds of reads of two layouts back to back, the first of each round alternating,
    after one untimed read of each (see the module docstring)."""
    for layout in (first, second):
        layout.read()  # untimed; the result is dropped at once
    orders = [[first, second] if r % 2 == 0 else [second, first] for r in range(rounds)]
    return _timed_reads(orders, cold)


def _timed_reads(orders: list[list[Layout]], cold: bool) -> dict[str, list[float]]:
    """Seconds of each read, round by round, each round reading its layouts in order."""
    seconds: dict[str, list[float]] = {layout.name: [] for layout in orders[0]}
    for order in orders:
        for layout in order:
            if cold:
                drop_from_page_cache(layout.files())
            tokens, elapsed = timed(layout.read)
            del tokens
            seconds[layout.name].append(elapsed)
    return seconds


def time_metadata(store: Path, rounds: int) -> float:
    """Median seconds of what load_selection reads besides tokens: open, take table, status,
    view validity."""
    from skill.cache.store import TokenStore

    def read() -> None:
        TokenStore.open(store).take_records()  # as load_selection reads them

    return best_and_median([timed(read)[1] for _ in range(rounds)])[1]


def time_verify(store: Path, rounds: int) -> tuple[float, float]:
    """(best, median) seconds of `skill verify`'s check of the whole store."""
    from skill.cache.verify import verify_store

    seconds = []
    for _ in range(rounds):
        report, elapsed = timed(verify_store, store)
        if not report.ok:
            raise SystemExit(f"{store}: skill verify finds damage: {report.damage[:1]}")
        seconds.append(elapsed)
    return best_and_median(seconds)


def paired_ratio(reference: list[float], measured: list[float]) -> float:
    """Median over rounds of reference seconds / measured seconds (the same round's reads)."""
    return float(np.median(np.asarray(reference) / np.asarray(measured)))


def report(layouts: list[Layout], seconds: dict[str, list[float]], nbytes: int) -> None:
    """Print the table: seconds, throughput and throughput relative to the contiguous .npy."""
    limit_best, limit_median = best_and_median(seconds[RAW])
    rows = []
    for layout in layouts:
        best, median = best_and_median(seconds[layout.name])
        rows.append([layout.name, best, median, nbytes / best / 1e6, limit_best / best,
                     limit_median / median])  # fmt: skip
    header = ["layout", "best s", "median s", "best MB/s", "vs raw (best)", "vs raw (median)"]
    print_table(f"full read of {nbytes / 1e6:.0f} MB of tokens", header, rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = data_dir(args.data_dir)
    print_machine(machine_info())
    spec = StoreSpec(takes=args.takes)
    store, built = synthetic_store(folder, spec)
    write_store, write_built = synthetic_store(folder, spec, packed=False)
    print(f"store: {store} ({describe_build(built)})")
    print(f"write-layout copy: {write_store} ({describe_build(write_built)})")
    layouts = project_layouts(store, write_store) + other_layouts(folder, store)
    tokens = check_same(layouts)
    nbytes = tokens.nbytes
    del tokens
    cache = "cold (posix_fadvise DONTNEED before each read)" if args.cold else "warm page cache"
    print(f"{cache}; {args.rounds} interleaved rounds; all layouts hold identical tokens")
    seconds = time_rounds(layouts, args.rounds, args.cold)
    report(layouts, seconds, nbytes)
    metadata = time_metadata(store, args.rounds)
    print(f"of which metadata (open, take table, status, valid; median): {metadata * 1e3:.1f} ms")
    verify_best, verify_median = time_verify(store, args.rounds)
    print(f"skill verify of the store (every check; best, median): {verify_best:.2f} s, "
          f"{verify_median:.2f} s")  # fmt: skip
    per_file = best_and_median(seconds[PER_FILE])[1]
    ahead = per_file / best_and_median(seconds[LOAD_SELECTION])[1]
    print(
        f"\none .npy per take and view / load_selection, median time = {ahead:.2f} "
        f"(goal > 1, store ahead of the per-file layout: {'met' if ahead > 1 else 'missed'})"
    )
    by_name = {layout.name: layout for layout in layouts}
    pair = time_pair(by_name[RAW], by_name[LOAD_SELECTION], args.pair_rounds, args.cold)
    raw_best, raw_median = best_and_median(pair[RAW])
    store_best, store_median = best_and_median(pair[LOAD_SELECTION])
    ratio = raw_median / store_median
    print(
        f"goal pair, {args.pair_rounds} rounds back to back: np.load {raw_best:.4f} s best, "
        f"{raw_median:.4f} s median; load_selection {store_best:.4f} s best, "
        f"{store_median:.4f} s median"
    )
    print(f"goal: >= 0.8 of raw: {'met' if ratio >= 0.8 else f'missed ({ratio:.2f})'}")
    # The median of the per-round ratios cancels the drift of a noisy machine that the ratio
    # of medians keeps.
    paired = paired_ratio(pair[RAW], pair[LOAD_SELECTION])
    print(f"paired: median over rounds of np.load time / load_selection time = {paired:.2f}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"KEY read_cache: load_selection throughput / contiguous .npy (median) = {ratio:.2f}")


if __name__ == "__main__":
    main()
