"""`skill extract` with ordered clip sequences (`--sampling sequence` and `stride`), end to end
on real videos with the tiny backbone: the clip times and clip mask it writes, the clips it
encodes (only those present, in batches of --batch-size), the views it refuses (one line each,
the run goes on), and a sequence store resumed after SIGKILL equal to one uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from skill.cache.info import store_summary, summary_lines
from skill.cache.store import STATUS_COMPLETE, TokenStore
from skill.pipeline.decode.index import probe_index
from skill.pipeline.extract import run_extract
from skill.pipeline.extract_loop import BackboneEncoder
from skill.synth.video import encode_video, pick_codec
from tests import kill_points
from tests.extract_helpers import (
    REPO,
    assert_same_stores,
    cli_env,
    extract_args,
    extract_config,
    invoke_cli,
    make_dataset,
)

# Videos of other lengths and rates than the dataset's (16 frames at 15 fps), written by
# `odd_videos`: {file name: (frames, fps)}.
LONGER, TOO_SHORT, SLOWER = "longer.mp4", "too_short.mp4", "slower.mp4"
ODD_VIDEOS = {LONGER: (32, 30), TOO_SHORT: (3, 15), SLOWER: (10, 10)}
STRIDE = {"strategy": "stride", "clip_every": 4, "stride": 1}  # 4-frame clips every 4 frames
RUN_TIMEOUT_S = 600.0  # guard against a hung run only


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Three synthetic takes (ego + exo1..3, 16 frames each at 15 fps)."""
    return make_dataset(tmp_path_factory.mktemp("data"), takes=3)


@pytest.fixture(scope="module")
def odd_videos(tmp_path_factory) -> Path:
    """The folder of ODD_VIDEOS: moving gradients, 32x32, encoded as the synthetic views are."""
    folder = tmp_path_factory.mktemp("odd_videos")
    for name, (count, fps) in ODD_VIDEOS.items():
        ramp = np.add.outer(np.arange(32), np.arange(32))  # (32, 32)
        frames = [(ramp * 4 + 8 * i) % 256 for i in range(count)]
        rgb = np.stack([np.stack([f, f[::-1], f.T], axis=-1) for f in frames]).astype(np.uint8)
        encode_video(folder / name, rgb, fps, pick_codec())
    return folder


def with_videos(dataset: Path, folder: Path, replaced: dict[tuple[int, str], Path]) -> Path:
    """The dataset's manifest with the videos of (take row, view) replaced."""
    folder.mkdir(exist_ok=True)
    records = [json.loads(line) for line in dataset.read_text().splitlines()]
    for record in records:
        record["videos"] = {v: str(dataset.parent / p) for v, p in record["videos"].items()}
    for (row, view), path in replaced.items():
        records[row]["videos"][view] = str(path)
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifest


def counted_batches(monkeypatch) -> list[int]:
    """The number of clips of each batch the backbone encodes (the real backbone runs)."""
    sizes: list[int] = []
    encode = BackboneEncoder.encode

    def counting(self, clips):
        sizes.append(len(clips))
        return encode(self, clips)

    monkeypatch.setattr(BackboneEncoder, "encode", counting)
    return sizes


def video_facts(store: TokenStore, manifest: Path) -> dict[tuple[int, int], tuple]:
    """(row, view) -> (frames, fps, first frame's time, end of the last frame) of each video,
    probed."""
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    ids = store.take_table().ids.tolist()
    out = {}
    for record in records:
        for v, view in enumerate(store.views):
            info, index = probe_index(manifest.parent / record["videos"][view], 1)
            first = float(index.times_s[0])
            out[ids.index(record["take"]), v] = (
                info.num_frames,
                info.fps,
                first,
                first + info.duration_s,
            )
    return out


# ---- what a sequence store holds ---------------------------------------------------------
def test_a_sequence_store_holds_every_clip_in_order_with_its_times(dataset, tmp_path):
    store_path = tmp_path / "seq.zarr"
    summary = run_extract(extract_config(dataset, store_path, strategy="sequence", clips=4))
    assert (summary.completed, summary.failed) == (3, 0)
    store = TokenStore.open(store_path)
    assert store.clip_axis == "sequence" == store.provenance["clip_axis"]
    frames = store.frame_records()
    assert store.clip_mask().all()
    # 4 clips x 4 frames over 16-frame videos: every frame once, clip k = frames 4k..4k+3
    np.testing.assert_array_equal(
        frames.frame_index, np.broadcast_to(np.arange(16).reshape(4, 4), frames.frame_index.shape)
    )
    times = frames.clip_time
    _, fps, first, end = video_facts(store, dataset)[0, 0]
    np.testing.assert_allclose(times[..., 1] - times[..., 0], 4 / fps, rtol=1e-5)
    np.testing.assert_allclose(times[..., 1:, 0], times[..., :-1, 1], rtol=1e-5)  # they touch
    assert (times[..., 0] >= first - 1e-6).all() and (times[..., 1] <= end + 1e-6).all()
    tokens = store.read_tokens(np.arange(3), np.arange(4)).astype(np.float32)
    assert not np.allclose(tokens[:, :, 0], tokens[:, :, -1]), "clips of other frames differ"
    lines = summary_lines(store_summary(store_path))
    assert (
        "clip axis: sequence (4 clips a view in order, of 0.267 s each; start and end times in clip_time)"
        in lines
    )


def test_a_samples_store_records_clip_times_too(dataset, tmp_path):
    store_path = tmp_path / "uniform.zarr"
    run_extract(extract_config(dataset, store_path, clips=2))
    store = TokenStore.open(store_path)
    frames = store.frame_records()
    assert store.clip_axis == "samples" and store.clip_mask().all()
    fps = video_facts(store, dataset)[0, 0][1]
    np.testing.assert_allclose(frames.clip_time[..., 0], frames.timestamp[..., 0])
    np.testing.assert_allclose(frames.clip_time[..., 1], frames.timestamp[..., -1] + 1 / fps)


def test_stride_pads_shorter_views_and_encodes_only_the_clips_present(
    dataset, odd_videos, tmp_path, monkeypatch
):
    manifest = with_videos(dataset, tmp_path / "m", {(1, "exo2"): odd_videos / LONGER})
    batches = counted_batches(monkeypatch)
    store_path = tmp_path / "stride.zarr"
    run_extract(extract_config(manifest, store_path, clips=8, batch_size=5, **STRIDE))
    store = TokenStore.open(store_path)
    mask, frames = store.clip_mask(), store.frame_records()
    facts = video_facts(store, manifest)
    for (row, v), (n_frames, _, first, end) in facts.items():
        present = (n_frames - 4) // 4 + 1  # 4-frame clips every 4 frames
        assert mask[row, v].tolist() == [True] * present + [False] * (8 - present)
        starts = frames.clip_time[row, v, :present, 0]
        np.testing.assert_allclose(starts, frames.timestamp[row, v, :present, 0])
        np.testing.assert_array_equal(
            frames.frame_index[row, v, :present, 0], 4 * np.arange(present)
        )
        assert (frames.frame_index[row, v, present:] == -1).all()
        assert np.isnan(frames.clip_time[row, v, present:]).all()
        inside = frames.clip_time[row, v, :present]
        assert (inside[:, 0] >= first - 1e-6).all() and (inside[:, 1] <= end + 1e-6).all()
        assert (np.diff(inside[:, 0]) > 0).all()
    assert mask.sum(axis=2).tolist()[1] == [4, 4, 8, 4]
    tokens = store.read_tokens(np.arange(3), np.arange(4)).astype(np.float32)
    assert not tokens[~mask].any() and np.abs(tokens[mask]).sum(axis=(-1, -2)).all()
    # only the present clips went through the backbone, in full batches of --batch-size
    assert sum(batches) == int(mask.sum()) == 3 * 4 * 4 + 4
    assert all(size == 5 for size in batches[:-1]) and 0 < batches[-1] <= 5
    assert store.status().tolist() == [STATUS_COMPLETE] * 3


# ---- bad input: the view fails with its reason, the run goes on ---------------------------
BAD_INPUTS = {
    "more-clips-than-k": (
        {"clips": 6, **STRIDE}, LONGER,
        "stride sampling needs 8 clips (--clip-every 4 frames over 32 frames), more than "
        "--clips 6",
    ),
    "stride-clip-longer-than-video": (
        {"clips": 6, **STRIDE}, TOO_SHORT,
        "a clip of --frames 4 at --stride 1 spans 4 frames, longer than the video (3 frames)",
    ),
    "sequence-clip-longer-than-video": (
        {"clips": 4, "strategy": "sequence"}, TOO_SHORT,
        "a clip of --frames 4 is longer than the video (3 frames)",
    ),
    "stride-gives-no-clip": (
        {"clips": 12, "strategy": "stride", "clip_every": 0.08, "clip_every_unit": "seconds",
         "stride": 1},
        SLOWER,
        "--clip-every 0.08 seconds is less than one frame at the video's 10 fps: it gives no "
        "clip of its own (use a longer --clip-every)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_view_the_sampling_cannot_cover_fails_with_one_line(dataset, odd_videos, tmp_path, case):
    overrides, video, reason = BAD_INPUTS[case]
    manifest = with_videos(dataset, tmp_path / "m", {(0, "exo1"): odd_videos / video})
    store_path = tmp_path / "s.zarr"
    summary = run_extract(extract_config(manifest, store_path, **overrides))
    store = TokenStore.open(store_path)
    take = store.take_table().ids[0]
    assert summary.failed_views == 1  # 0.08 s: more than one frame at the others' 15 fps
    assert summary.completed == 3 and (take, "exo1", f"{video}: {reason}") in summary.failures
    assert not store.valid()[0, 1] and store.valid()[0, [0, 2, 3]].all()
    assert not store.clip_mask()[0, 1].any() and np.isnan(store.clip_times()[0, 1]).all()


def test_the_command_prints_a_refused_view_on_one_line_from_a_decode_worker(
    dataset, odd_videos, tmp_path
):
    manifest = with_videos(dataset, tmp_path / "m", {(2, "ego"): odd_videos / LONGER})
    store_path = tmp_path / "s.zarr"
    args = extract_args(manifest, store_path, "--workers", "1", "--sampling", "stride",
                        "--clips", "6", "--clip-every", "4", "--stride", "1")  # fmt: skip
    code, output = invoke_cli(*args)
    take = TokenStore.open(store_path).take_table().ids[2]
    assert code == 0, output
    assert (
        f"failed: take {take} view ego: {LONGER}: stride sampling needs 8 clips "
        "(--clip-every 4 frames over 32 frames), more than --clips 6"
    ) in output


# ---- resuming a sequence store after SIGKILL ---------------------------------------------
@pytest.mark.slow
def test_a_sequence_store_killed_mid_run_resumes_to_the_store_of_one_run(
    dataset, odd_videos, tmp_path
):
    manifest = with_videos(dataset, tmp_path / "m", {(1, "exo2"): odd_videos / LONGER})
    settings = {"clips": 8, **STRIDE}
    reference = tmp_path / "reference.zarr"
    run_extract(extract_config(manifest, reference, **settings))
    store = tmp_path / "store.zarr"
    args = extract_args(manifest, store, "--workers", "0", "--sampling", "stride",
                        "--clips", "8", "--clip-every", "4", "--stride", "1")  # fmt: skip
    # killed after the first take's completion record, then inside the next take's write
    for stop_at in ("take:1", "chunk:2"):
        events = tmp_path / f"{stop_at.replace(':', '-')}.events"
        log = tmp_path / f"{stop_at.replace(':', '-')}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                kill_points.command(events, stop_at, *args), cwd=REPO, env=cli_env(),
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        assert kill_points.stopped_or_exited(proc, RUN_TIMEOUT_S), log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        opened = TokenStore.open(store)
        assert opened.clip_axis == "sequence" and store_summary(store)["state"] == "interrupted"
    summary = run_extract(extract_config(manifest, store, **settings))
    assert summary.skipped >= 1 and summary.failed == 0
    assert_same_stores(store, reference)
