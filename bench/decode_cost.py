"""Benchmark 6: decode cost per view in CPU-seconds, per decoder and sampling mode.

The figure that divides by the core count: process CPU time (all threads) of decoding one
view, measured with ``time.process_time`` around the call in the process that decodes, with
one decoder thread (decode workers run one per core). Videos are EgoExo4D-like and made here
once (cached under the bench data folder): 448x448 H.264, 30 fps, 3 and 10 minutes, x264
with its default keyframe interval (250 frames). Each view samples either 16 uniform frames
or one window of 16 frames at stride 4 (SkillFormer's), and is decoded, side by side in one
run, by:

- ``today``: ``pipeline/decode.py`` as of ``--baseline`` (a git revision, default the last
  commit before the exact path was made faster), loaded from git as a separate module;
- ``exact``: the current exact path (``SamplingConfig.snap="exact"``);
- ``keyframe``: the current keyframe mode (``snap="keyframe"``; PyAV, ``pipeline.decode``'s
  ``keyframes.py``); the decord row reads the same snapped positions with decord's
  ``get_batch`` for comparison only (decord cannot verify keyframes; skill never uses it
  for this mode).

Also measured: the decoders' rates on the whole video (every frame; reference frames only,
``skip_frame="NONREF"``; keyframes only, ``skip_frame="NONKEY"``), from which the floor of
each path follows: the frames it must decode times the rate of such frames. The projection
for a full EgoExo4D extraction (2,370 takes x 5 views on 16 cores + one GPU) is printed
with its assumptions.

A second part samples an ordered clip sequence, 48 clips of 8 frames spread evenly over the
whole video (``sequence`` sampling: 384 positions evenly spaced, clip k = positions
[8k, 8k + 8)), and measures, side by side in one run: (a) ``today``, the PyAV reader as of
``--seek-baseline`` (it seeks to every keyframe interval holding wanted frames), loaded from
git; (b) ``planned``, the current reader following its read plan (``pipeline/decode/plan.py``);
(c) ``sequential``, one plain decode of every frame, the sampled ones converted; (d) ``floor``,
only the packets the samples need (the reference pictures from each interval's keyframe up to
its last wanted frame, and the wanted ones) decoded from memory, the sampled ones converted.
(a) and (b) include the packet index, (c) and (d) do not. The same view remuxed into MPEG-TS,
whose seeks land late, is read once by (a) and (b). The projection for a full EgoExo4D
sequence extraction is printed with its assumptions.

Run from the repository root: ``python -m bench.decode_cost`` (``--quick``: the 3-minute
video only, fewer repeats; ``--part 16`` or ``--part sequence``: one part only).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):  # `python bench/decode_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import skill.pipeline.decode.decord_reader as decord_reader  # noqa: E402
import skill.pipeline.decode.keyframes as keyframes  # noqa: E402
import skill.pipeline.decode.pyav_reader as pyav_reader  # noqa: E402
from bench.common import (  # noqa: E402
    REPO_ROOT,
    VideoSpec,
    base_parser,
    build_once,
    data_dir,
    describe_build,
    fmt,
    machine_info,
    print_machine,
    synthetic_video,
)
from skill.pipeline.decode.errors import DecodeError  # noqa: E402
from skill.pipeline.decode.geometry import FrameGeometry  # noqa: E402
from skill.pipeline.decode.index import probe, probe_index  # noqa: E402
from skill.pipeline.decode.view import decode_view  # noqa: E402
from skill.pipeline.sampling import (  # noqa: E402
    STRATEGIES,
    SamplingConfig,
    sample_indices,
    snap_to_keyframes,
)

BASELINE_REV = "b98a0c8"
"""The last commit with the exact path before skipping of non-reference frames."""
CURRENT = (pyav_reader, keyframes)
"""The modules holding today's PyAV frame generators, which ``counting_frames`` wraps."""
GEOMETRY = FrameGeometry(224, 224, 224)  # TimeSformer-base's input
SAMPLINGS = {
    "16 uniform": SamplingConfig("uniform", frames=16),
    "16x4 window": SamplingConfig("windows", frames=16, stride=4),
}
EGOEXO_VIEWS = 2370 * 5
"""Views of a full EgoExo4D demonstrator-proficiency extraction (takes x views)."""
CORES = 16
GPU_CLIPS_PER_S = 505.0
"""TimeSformer-base clips/s at 40 % of an H100/H200's bf16 peak (BENCHMARKS.md section 4:
arithmetic on the counted 784 GFLOP per clip, not a GPU measurement)."""
SEQUENCE_CLIPS, SEQUENCE_FRAMES = 48, 8
SEEK_BASELINE_REV = "dd0df8c"
"""The last commit whose PyAV reader seeks to every keyframe interval it reads (before the
read plan)."""


def parse_args(argv: list[str] | None = None):
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3-minute video only, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5, help="timed decodes per cell")
    parser.add_argument("--baseline", default=BASELINE_REV, help="git revision of 'today'")
    parser.add_argument("--width", type=int, default=448, help="video width (exo views: 796)")
    parser.add_argument(
        "--seek-baseline", default=SEEK_BASELINE_REV, help="git revision of 'today' (sequence)"
    )
    parser.add_argument(
        "--part", choices=("all", "16", "sequence"), default="all", help="which part to run"
    )
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- decoders


def load_baseline(rev: str) -> ModuleType | None:
    """``pipeline/decode.py`` at ``rev`` as its own module (None when git cannot give it)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:pipeline/decode.py"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"no baseline: git show {rev}:pipeline/decode.py failed ({error})")
        return None
    with tempfile.TemporaryDirectory(prefix="skill-decode-baseline-") as folder:
        path = Path(folder) / "decode_baseline.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location("skill_decode_baseline", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)  # compiled now: the file is not needed afterwards
    return module


def decord_keyframes(path: Path, sampling: SamplingConfig) -> None:
    """decord's get_batch on the keyframe-snapped positions, converted like decode_view's
    frames (comparison only: decord cannot tell a true keyframe from a mislabelled one)."""
    info, index = probe_index(str(path))
    indices = snap_to_keyframes(sample_indices(info.num_frames, sampling, "k").indices,
                                index.key_positions)  # fmt: skip
    decord_reader._read_decord(str(path), info, index, np.unique(indices), GEOMETRY, 1)


@dataclass
class Cell:
    decoder: str
    mode: str
    cpu_s: float
    """Best (least disturbed) CPU-seconds per view over the repeats."""
    median_cpu_s: float
    wall_s: float
    decoded: int | None
    """Frames the decoder output for the view (PyAV paths; None where not counted)."""


def interleaved_cpu_seconds(runs: list, repeats: int) -> list[tuple[float, float, float]]:
    """(best CPU-s, median CPU-s, best wall s) of each of ``runs``, after one untimed warm-up
    each; the repeats go round the runs in turn, so that every run sees the same share of
    whatever else the machine is doing (it is shared)."""
    for run in runs:
        run()
    cpu = [[] for _ in runs]
    wall = [[] for _ in runs]
    for _ in range(repeats):
        for i, run in enumerate(runs):
            c, w = time.process_time(), time.perf_counter()
            run()
            cpu[i].append(time.process_time() - c)
            wall[i].append(time.perf_counter() - w)
    return [
        (float(np.min(c)), float(np.median(c)), float(np.min(w)))
        for c, w in zip(cpu, wall, strict=True)
    ]


@contextlib.contextmanager
def counting_frames(modules: tuple[ModuleType, ...], counts: list[int]):
    """Count the frames out of the PyAV frame generators (``_decoded_frames``,
    ``_decode_one_packet``) of the decode modules that hold them."""
    names = ("_decoded_frames", "_decode_one_packet")
    originals = {(m, n): getattr(m, n) for m in modules for n in names if hasattr(m, n)}

    def generator(original):
        def counted(*args, **kwargs):
            for frame in original(*args, **kwargs):
                counts[0] += 1
                yield frame

        return counted

    def one(original):
        def counted(*args, **kwargs):
            counts[0] += 1
            return original(*args, **kwargs)

        return counted

    for (module, name), fn in originals.items():
        setattr(module, name, generator(fn) if name == "_decoded_frames" else one(fn))
    try:
        yield
    finally:
        for (module, name), fn in originals.items():
            setattr(module, name, fn)


def measure_cells(path: Path, sampling: SamplingConfig, baseline, repeats: int) -> list[Cell]:
    keyframe = SamplingConfig(**{**sampling.to_dict(), "snap": "keyframe"})
    plans = []
    if baseline is not None:
        for backend in ("decord", "pyav"):
            plans.append(
                (backend, "today", (baseline,), baseline.decode_view, sampling, backend, 1)
            )
    for backend in ("decord", "pyav"):
        plans.append((backend, "exact", CURRENT, decode_view, sampling, backend, 1))
    for backend in ("decord", "pyav"):  # decoder threads cost CPU time, not save it
        plans.append((backend, "exact, 2 threads", CURRENT, decode_view, sampling, backend, 2))
    plans.append(("pyav", "keyframe", CURRENT, decode_view, keyframe, "auto", 1))
    runs = [
        lambda decode=decode, config=config, backend=backend, threads=threads: decode(
            path, config, "k", GEOMETRY, backend=backend, threads=threads
        )
        for _, _, _, decode, config, backend, threads in plans
    ]
    runs.append(lambda: decord_keyframes(path, sampling))
    timings = interleaved_cpu_seconds(runs, repeats)
    cells = []
    for (decoder, mode, modules, *_), run, (best, median, wall) in zip(
        plans, runs, timings, strict=False
    ):
        counts = [0]
        with counting_frames(modules, counts):
            run()
        decoded = counts[0] if decoder == "pyav" else None
        cells.append(Cell(decoder, mode, best, median, wall, decoded))
    best, median, wall = timings[-1]
    cells.append(Cell("decord", "keyframe (get_batch, unverified)", best, median, wall, None))
    return cells


# ----------------------------------------------------------------------------- rates


@dataclass
class Rates:
    """CPU-seconds per frame of sequential PyAV decoding (one thread), by frames decoded."""

    every: float
    reference: float
    keyframe: float
    probe_s: float
    frames: int
    reference_frames: int
    keyframes: int


def whole_video_rate(path: Path, skip: str) -> tuple[float, int]:
    """(CPU-s per frame out, frames out) decoding the whole video with ``skip_frame``."""
    import av

    start = time.process_time()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        stream.thread_type = "SLICE"
        stream.codec_context.skip_frame = skip
        count = sum(1 for _ in container.decode(stream))
    return (time.process_time() - start) / count, count


def measure_rates(path: Path) -> Rates:
    every, frames = whole_video_rate(path, "DEFAULT")
    reference, reference_frames = whole_video_rate(path, "NONREF")
    keyframe, keyframes = whole_video_rate(path, "NONKEY")
    probe_s = min(_cpu(lambda: probe(path)) for _ in range(3))
    return Rates(every, reference, keyframe, probe_s, frames, reference_frames, keyframes)


def _cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


# ----------------------------------------------------------------------------- report


def floor_of(cell: Cell, rates: Rates) -> float | None:
    """Frames the path must decode x the rate of such frames (None where not counted)."""
    if cell.decoded is None:
        return None
    if cell.mode == "keyframe":
        return cell.decoded * rates.keyframe
    if cell.mode.startswith("exact"):
        return cell.decoded * rates.reference  # reference frames, plus the wanted ones
    return cell.decoded * rates.every


def markdown_table(rows: list[list]) -> str:
    header = ["video", "sampling", "decoder", "mode", "CPU-s/view", "median", "wall s",
              "frames decoded", "floor CPU-s", "vs today (same decoder)"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(results: list[tuple[str, str, list[Cell], Rates]]) -> list[list]:
    rows = []
    for video, sampling, cells, rates in results:
        today = {c.decoder: c.cpu_s for c in cells if c.mode == "today"}
        for c in cells:
            ratio = c.cpu_s / today[c.decoder] if c.decoder in today else None
            rows.append([video, sampling, c.decoder, c.mode, c.cpu_s, c.median_cpu_s, c.wall_s,
                         c.decoded, floor_of(c, rates), ratio])  # fmt: skip
    print()
    print(markdown_table(rows))
    print()
    for video, _, _, rates in results[:: len(SAMPLINGS)]:
        print(
            f"{video}: PyAV one thread, {rates.frames:,} frames: "
            f"{1e3 * rates.every:.3f} ms per frame decoding every frame, "
            f"{1e3 * rates.reference:.3f} ms per reference frame ({rates.reference_frames:,} "
            f"of them, skip_frame NONREF), {1e3 * rates.keyframe:.2f} ms per keyframe "
            f"({rates.keyframes} of them, NONKEY); probe (packet index) {rates.probe_s:.3f} CPU-s"
        )
    return rows


def projection(results) -> None:
    """Full EgoExo4D on 16 cores + one GPU from the measured CPU-s per view."""
    print(
        f"\nprojection: {EGOEXO_VIEWS:,} views (2,370 takes x 5), 16 uniform frames per view, "
        f"decoded by {CORES} worker processes on {CORES} cores like this machine's; GPU "
        f"{GPU_CLIPS_PER_S:g} clips/s (BENCHMARKS.md section 4, arithmetic, not measured); "
        "decode and GPU overlap, so the slower sets the time"
    )
    gpu_s = EGOEXO_VIEWS / GPU_CLIPS_PER_S
    for video, sampling, cells, _ in results:
        if sampling != "16 uniform":
            continue
        for c in cells:
            if "threads" in c.mode or (c.decoder == "decord" and c.mode.startswith("keyframe")):
                continue
            decode_s = EGOEXO_VIEWS * c.cpu_s / CORES
            print(
                f"  {video} views, {c.decoder} {c.mode}: decode {decode_s / 60:.1f} min, "
                f"GPU {gpu_s / 60:.1f} min -> {max(decode_s, gpu_s) / 60:.1f} min "
                f"({'decode' if decode_s > gpu_s else 'GPU'}-bound, "
                f"GPU busy {100 * min(1.0, gpu_s / decode_s):.0f} %)"
            )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = data_dir(args.data_dir)
    print_machine(machine_info())
    repeats = 2 if args.quick else args.repeats
    minutes = (3,) if args.quick else (3, 10)
    videos = {}
    for length in minutes:
        spec = VideoSpec(seconds=60.0 * length, width=args.width, fps=30)
        path, built = synthetic_video(folder, spec)
        print(f"video {path.name}: {describe_build(built)}, {path.stat().st_size / 1e6:.1f} MB")
        videos[f"{length} min"] = path
    if args.part in ("all", "16"):
        sixteen_frames(videos, load_baseline(args.baseline), repeats)
    if args.part in ("all", "sequence"):
        sequence_part(videos, load_seek_baseline(args.seek_baseline), repeats, folder)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def sixteen_frames(videos: dict[str, Path], baseline: ModuleType | None, repeats: int) -> None:
    """The first part: 16 frames per view, every decoder and mode."""
    results = []
    for video, path in videos.items():
        rates = measure_rates(path)
        for name, sampling in SAMPLINGS.items():
            cells = measure_cells(path, sampling, baseline, repeats)
            results.append((video, name, cells, rates))
    rows = report(results)
    projection(results)
    key = [r for r in rows if r[:2] == ["3 min", "16 uniform"]]
    pick = {(r[2], r[3]): r[4] for r in key}
    today = min(v for (d, m), v in pick.items() if m == "today") if baseline else float("nan")
    print(
        f"KEY decode_cost: 3-min video, 16 uniform frames, CPU-s per view: cheapest today "
        f"{today:.3f}, exact now {pick[('pyav', 'exact')]:.3f} (PyAV), "
        f"keyframe {pick[('pyav', 'keyframe')]:.3f}"
    )


# ----------------------------------------------------------------------------- sequence


def load_seek_baseline(rev: str) -> ModuleType | None:
    """``pipeline/decode/pyav_reader.py`` at ``rev`` as its own module, without registering
    it as a decoder (None when git cannot give it)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:pipeline/decode/pyav_reader.py"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"no seek baseline: git show {rev}:pipeline/decode/pyav_reader.py failed ({error})")
        return None
    registration = 'register(Backend(name="pyav"'
    if registration not in source:
        print(f"no seek baseline: {rev}'s pyav_reader.py does not register 'pyav' as expected")
        return None
    module = ModuleType("skill_pyav_seek_baseline")
    code = compile(source.replace(registration, '(Backend(name="pyav"'), module.__name__, "exec")
    exec(code, module.__dict__)  # git's own file of this repository, not user input
    return module


def sequence_indices(num_frames: int) -> np.ndarray:
    """(48, 8) positions of the ``sequence`` sampling: pipeline/sampling.py's where it has the
    strategy, else 384 bin centres spread evenly over the video, cut into clips in order."""
    if "sequence" in STRATEGIES:
        config = SamplingConfig("sequence", frames=SEQUENCE_FRAMES, clips=SEQUENCE_CLIPS)
        return sample_indices(num_frames, config, "k").indices
    count = SEQUENCE_CLIPS * SEQUENCE_FRAMES
    positions = np.floor((np.arange(count) + 0.5) * num_frames / count).astype(np.int64)
    return np.minimum(positions, num_frames - 1).reshape(SEQUENCE_CLIPS, SEQUENCE_FRAMES)


def stacked(frames_at: dict[int, np.ndarray], indices: np.ndarray) -> np.ndarray:
    """(K, T, H, W, 3) clips from frames by position, as decode_view stacks them."""
    flat = [frames_at[int(i)] for i in indices.reshape(-1)]
    return np.stack(flat).reshape(*indices.shape, *flat[0].shape)


def exact_view(path: Path, read, indices_of) -> np.ndarray:
    """Probe, sample, read the unique positions with ``read`` (read_pyav's signature), stack."""
    info, index = probe_index(str(path))
    indices = indices_of(info.num_frames)
    return stacked(read(str(path), info, index, np.unique(indices), GEOMETRY, 1), indices)


def sequential_view(path: Path, info, indices: np.ndarray) -> np.ndarray:
    """Every frame decoded in order, one thread, no skipping; the k-th frame out is position k
    (true of these videos); the sampled ones converted."""
    import av

    reader = pyav_reader.PyAVFrameReader(str(path), info, GEOMETRY, 1)
    wanted, out = {int(i) for i in np.unique(indices)}, {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        stream.thread_type = "SLICE"
        for position, frame in enumerate(container.decode(stream)):
            if position in wanted:
                out[position] = reader.clip_frame(frame, position)
    return stacked(out, indices)


@dataclass
class FloorPackets:
    """The packets a view's samples need, per keyframe interval, in decode order."""

    spans: list[list]
    wanted: set[int]
    info: object
    index: object

    @property
    def count(self) -> int:
        return sum(len(span) for span in self.spans)


def floor_packets(path: Path, indices: np.ndarray) -> FloorPackets:
    """From each keyframe interval holding wanted frames: the packets from its keyframe up to
    the last of its wanted frames in decode order that are reference pictures (those a
    skip_frame NONREF decode outputs) or wanted ones, kept in memory."""
    import av

    from skill.pipeline.decode.plan import plan_spans

    info, index = probe_index(str(path))
    wanted = np.unique(indices)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        reference_pts = {frame.pts for frame in container.decode(stream)}
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    order = {int(p.pts): n for n, p in enumerate(packets)}  # pts -> decode order
    spans = []
    for span in plan_spans(wanted, index.key_positions):
        first = order[int(index.pts[span.keyframe])]
        last = max(order[int(index.pts[i])] for i in span.wanted)
        needed = reference_pts | {int(index.pts[i]) for i in span.wanted}
        spans.append([p for p in packets[first : last + 1] if p.pts in needed])
    return FloorPackets(spans, {int(i) for i in wanted}, info, index)


def floor_view(path: Path, floor: FloorPackets, indices: np.ndarray) -> np.ndarray:
    """The needed packets of ``floor`` decoded from memory, the decoder drained after each
    interval and flushed before the next; the sampled frames converted."""
    import av

    reader = pyav_reader.PyAVFrameReader(str(path), floor.info, GEOMETRY, 1)
    out = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        context.thread_count = 1
        stream.thread_type = "SLICE"
        for span in floor.spans:
            context.flush_buffers()
            for packet in [*span, None]:  # None drains the decoder
                for frame in context.decode(packet):
                    position = int(np.searchsorted(floor.index.pts, frame.pts))
                    if position in floor.wanted:
                        out[position] = reader.clip_frame(frame, position)
    return stacked(out, indices)


def measure_sequence(
    path: Path, baseline: ModuleType | None, repeats: int
) -> tuple[list[Cell], float]:
    """Cells (a)-(d) of one video, and its packet index's CPU-s."""
    info = probe(path)
    indices = sequence_indices(info.num_frames)
    floor = floor_packets(path, indices)
    plans = []
    if baseline is not None:
        today = lambda: exact_view(path, baseline.read_pyav, sequence_indices)  # noqa: E731
        plans.append(("(a) today: seek to every keyframe interval", (baseline,), today))
    plans += [
        ("(b) planned", CURRENT, lambda: exact_view(path, pyav_reader.read_pyav, sequence_indices)),
        ("(c) sequential, every frame", (), lambda: sequential_view(path, info, indices)),
        ("(d) floor, needed packets only", (), lambda: floor_view(path, floor, indices)),
    ]
    runs = [run for _, _, run in plans]
    reference = runs[-1]()
    for (mode, _, _), run in zip(plans, runs, strict=True):
        if not np.array_equal(run(), reference):
            raise SystemExit(f"{path.name}: {mode} returned other frames than the floor")
    timings = interleaved_cpu_seconds(runs, repeats)
    cells = []
    for (mode, modules, run), (best, median, wall) in zip(plans, timings, strict=True):
        counts = [0]
        with counting_frames(modules, counts):
            run()
        decoded = {"(c)": info.num_frames, "(d)": floor.count}.get(mode[:3], counts[0])
        cells.append(Cell("pyav", mode, best, median, wall, decoded))
    probe_s = min(_cpu(lambda: probe_index(str(path))) for _ in range(3))
    return cells, probe_s


def mpegts_copy(folder: Path, source: Path) -> Path:
    """``source``'s video stream remuxed into MPEG-TS (made once, beside it)."""
    import av

    def remux(staging: Path) -> None:
        with av.open(str(source)) as inp, av.open(str(staging), "w", format="mpegts") as out:
            stream_in = inp.streams.video[0]
            stream_out = out.add_stream_from_template(stream_in)
            for packet in inp.demux(stream_in):
                if packet.size:
                    packet.stream = stream_out
                    out.mux(packet)

    target = folder / "videos" / f"{source.stem}.ts"
    build_once(target, remux)
    return target


def mpegts_cells(path: Path, baseline: ModuleType | None) -> list[list]:
    """(a) and (b) once each on the MPEG-TS copy, for 16 uniform frames and the sequence:
    [sampling, mode, CPU-s or None, what happened]."""
    uniform = SAMPLINGS["16 uniform"]
    samplings = {
        "16 uniform": lambda n: sample_indices(n, uniform, "k").indices,
        f"{SEQUENCE_CLIPS}x{SEQUENCE_FRAMES} sequence": sequence_indices,
    }
    readers = [("(b) planned", pyav_reader.read_pyav)]
    if baseline is not None:
        readers.insert(0, ("(a) today", baseline.read_pyav))
    rows = []
    for sampling, indices_of in samplings.items():
        for mode, read in readers:
            start = time.process_time()
            try:
                exact_view(path, read, indices_of)
            except DecodeError as error:
                rows.append([sampling, mode, None, f"fails: {error.reason[:70]}"])
                continue
            rows.append([sampling, mode, time.process_time() - start, "ok"])
    return rows


def sequence_part(
    videos: dict[str, Path], baseline: ModuleType | None, repeats: int, folder: Path
) -> None:
    """The second part: 48 clips of 8 frames per view, (a)-(d), and the projection."""
    source = "pipeline/sampling.py" if "sequence" in STRATEGIES else "bin centres"
    print(f"\nsequence: {SEQUENCE_CLIPS} x {SEQUENCE_FRAMES} frames over each video ({source})")
    results = {}
    for video, path in videos.items():
        results[video] = measure_sequence(path, baseline, repeats)
    header = ["video", "path", "CPU-s/view", "median", "wall s", "frames decoded", "vs floor (d)",
              "vs sequential (c)"]  # fmt: skip
    rows = []
    for video, (cells, _) in results.items():
        by = {c.mode[:3]: c.cpu_s for c in cells}
        for c in cells:
            rows.append([video, c.mode, c.cpu_s, c.median_cpu_s, c.wall_s, c.decoded,
                         c.cpu_s / by["(d)"], c.cpu_s / by["(c)"]])  # fmt: skip
    print()
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    print("\n".join("| " + " | ".join(fmt(x) for x in row) + " |" for row in rows))
    for video, (_, probe_s) in results.items():
        print(f"{video}: packet index (probe) {probe_s:.3f} CPU-s, included in (a) and (b)")
    ts_path = mpegts_copy(folder, videos["3 min"])
    print(f"\nMPEG-TS copy of the 3-min video ({ts_path.name}), one read each:")
    for sampling, mode, cpu_s, what in mpegts_cells(ts_path, baseline):
        print(f"  {sampling:>18}  {mode:<12} {fmt(cpu_s):>8} CPU-s  {what}")
    sequence_projection(results)
    cells = {c.mode[:3]: c.cpu_s for c in results["3 min"][0]}
    print(
        f"KEY decode_cost sequence: 3-min video, {SEQUENCE_CLIPS}x{SEQUENCE_FRAMES} frames, "
        f"CPU-s per view: today {cells.get('(a)', float('nan')):.3f}, planned {cells['(b)']:.3f}, "
        f"sequential {cells['(c)']:.3f}, floor {cells['(d)']:.3f}; planned / floor "
        f"{cells['(b)'] / cells['(d)']:.2f}, planned / sequential {cells['(b)'] / cells['(c)']:.2f}"
    )


def sequence_projection(results: dict[str, tuple[list[Cell], float]]) -> None:
    """Full EgoExo4D sequence extraction on 16 cores + one GPU from the measured CPU-s."""
    clips = EGOEXO_VIEWS * SEQUENCE_CLIPS
    gpu_s = clips / GPU_CLIPS_PER_S
    print(
        f"\nprojection: {EGOEXO_VIEWS:,} views (2,370 takes x 5) of {SEQUENCE_CLIPS} clips x "
        f"{SEQUENCE_FRAMES} frames ({clips:,} clips), decoded by {CORES} worker processes on "
        f"{CORES} cores like this machine's; GPU {GPU_CLIPS_PER_S:g} clips/s (BENCHMARKS.md "
        "section 4, arithmetic, not measured); decode and GPU overlap, so the slower sets the time"
    )
    for video, (cells, _) in results.items():
        for c in cells:
            decode_s = EGOEXO_VIEWS * c.cpu_s / CORES
            print(
                f"  {video} views, {c.mode}: decode {decode_s / 60:.1f} min, GPU "
                f"{gpu_s / 60:.1f} min -> {max(decode_s, gpu_s) / 60:.1f} min "
                f"({'decode' if decode_s > gpu_s else 'GPU'}-bound, "
                f"GPU busy {100 * min(1.0, gpu_s / decode_s):.0f} %)"
            )


if __name__ == "__main__":
    main()
