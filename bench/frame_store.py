"""The frame store of ``skill adapt``: bytes per frame and read speed, raw uint8 vs zstd.

Decodes a few synthetic takes (``skill.synth``, rendered at ``--size`` px) once into a frame
store per codec (``adapt.frames.build_frame_store``, inline decoding), then reads every take
back ``--rounds`` times (warm page cache) and prints size on disk, bytes per stored frame and
read throughput of the decoded uint8 frames. Run from the repository root:
``python -m bench.frame_store``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # `python bench/frame_store.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(work: Path, manifest: Path, codec: str, size: int, clips: int, frames: int, rounds):
    from skill.adapt.frames import build_frame_store
    from skill.pipeline.decode.geometry import FrameGeometry
    from skill.pipeline.extract_config import ExtractConfig
    from skill.pipeline.manifest import read_takes
    from skill.tasks import task_record

    dataset = read_takes(manifest)
    geometry = FrameGeometry(shortest_edge=size, crop_height=size, crop_width=size)
    path = work / f"frames-{codec}.zarr"
    decoding = ExtractConfig(manifest=manifest, store=path, strategy="windows", frames=frames,
                             clips=clips, stride=1, workers=0)  # fmt: skip
    store, _ = build_frame_store(path, decoding, dataset.views, dataset.takes, backbone="bench",
                                 geometry=geometry, task=task_record(dataset.task, dataset.schema),
                                 codec=codec)  # fmt: skip
    n = len(dataset.takes)
    stored_frames = n * len(dataset.views) * clips * frames
    disk = folder_bytes(path / "frames")
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for row in range(n):
            store.read_take(row)
        best = min(best, time.perf_counter() - start)
    raw_bytes = stored_frames * size * size * 3
    return {"codec": codec, "disk": disk, "per_frame": disk / stored_frames,
            "ratio": raw_bytes / disk, "read_mb_s": raw_bytes / best / 1e6}  # fmt: skip


def make_manifest(work: Path, args) -> Path:
    import json

    if args.videos:
        args.takes = len(args.videos)
        manifest = work / "real.jsonl"
        records = [
            {"take": f"t{i}", "label": "Novice", "participant": f"p{i}",
             "videos": {v: str(Path(video).resolve()) for v in ("ego", "exo1", "exo2", "exo3")}}
            for i, video in enumerate(args.videos)
        ]  # fmt: skip
        manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
        return manifest
    from skill.synth import SynthConfig, synthesize

    synth = SynthConfig(takes=max(args.takes, 12), size=args.size, frames=32, exo_views=3)
    manifest = synthesize(synth, work / "data", workers=1)
    lines = manifest.read_text().splitlines(keepends=True)[: args.takes]
    manifest.write_text("".join(lines))
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=6)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--videos", nargs="*", default=None,
                        help="real videos instead of synthetic takes: one take per video, "
                        "the same video in 4 views")  # fmt: skip
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = make_manifest(work, args)
        kind = "real-video" if args.videos else "synthetic"
        print(f"{args.takes} {kind} takes x 4 views x {args.clips} clips x {args.frames} "
              f"frames at {args.size}x{args.size}x3 ({args.size * args.size * 3:,} B raw)")  # fmt: skip
        print(f"{'codec':<6} {'disk MB':>8} {'B/frame':>9} {'ratio':>6} {'read MB/s':>10}")
        for codec in ("raw", "zstd"):
            row = measure(work, manifest, codec, args.size, args.clips, args.frames, args.rounds)
            print(f"{row['codec']:<6} {row['disk'] / 1e6:>8.2f} {row['per_frame']:>9,.0f} "
                  f"{row['ratio']:>5.2f}x {row['read_mb_s']:>10,.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
