"""`skill adapt` under torchrun: the ranks' batches partition the global batch of one process,
and 2 gloo ranks on the CPU (stopped, then resumed) end with the adapter of one process at
the same global batch.

The torchrun test starts real processes and is marked slow."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.extract_helpers import REPO, TINY, cli_env, flat, make_dataset


def _plan(rank, world: int, per_rank: int, n_train: int, accum: int):
    """``FrameBatches.epoch_plan`` of a batch source with only what the plan reads."""
    from types import SimpleNamespace

    from skill.adapt.train import FrameBatches
    from skill.pipeline.distributed import Rank

    cfg = SimpleNamespace(fit=SimpleNamespace(batch_size=per_rank), grad_accum=accum)
    frames = SimpleNamespace(clips=3, views=["ego", "exo1"])
    sel = SimpleNamespace(view_names=["ego", "exo1"])
    source = FrameBatches(cfg, frames, sel, np.arange(n_train) * 10, Rank(rank=rank, world=world),
                          "cpu")  # fmt: skip
    return source.epoch_plan(np.random.default_rng(7))


@pytest.mark.parametrize("n_train, accum", [(7, 1), (8, 2), (5, 3)])
def test_rank_batches_partition_the_global_batches_of_one_process(n_train, accum):
    single = _plan(0, 1, 4, n_train, accum)
    ranks = [_plan(r, 2, 2, n_train, accum) for r in range(2)]
    assert all(len(plan) == len(single) for plan in ranks)
    for i, (rows, windows, step_takes) in enumerate(single):
        got = np.concatenate([ranks[r][i][0] for r in range(2)])
        np.testing.assert_array_equal(got, rows)  # rank 0 the first half, rank 1 the rest
        np.testing.assert_array_equal(np.concatenate([ranks[r][i][1] for r in range(2)]), windows)
        assert {ranks[r][i][2] for r in range(2)} == {step_takes}  # same weight per take
    # every take once per epoch; a step's takes count each take of its global batches once
    assert sorted(np.concatenate([p[0] for p in single]).tolist()) == list(
        range(0, 10 * n_train, 10)
    )
    assert sum(p[2] for i, p in enumerate(single) if i % accum == 0) == n_train


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Dropout off: a (2, ...) dropout mask drawn by one process is not the two (1, ...) masks the
# ranks draw, so with dropout the runs would differ by design, not by a bug.
COMMON = ["--backbone", TINY, "--frames", "4", "--clips", "2", "--epochs", "2", "--lr", "1e-2",
          "--dropout", "0", "--lora-dropout", "0", "--device", "cpu", "--workers", "0",
          "--threads", "1", "--no-plots"]  # fmt: skip


def _torchrun(manifest: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    torchrun = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "skill",
    ]  # fmt: skip
    args = ["adapt", str(manifest), "--out", str(out), *COMMON, "--batch-size", "1", *extra]
    done = subprocess.run(torchrun + args, cwd=REPO, env=cli_env(), capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_gloo_ranks_stopped_and_resumed_end_with_the_adapter_of_one_process(tmp_path):
    """Asserted: the 2-rank adapter and head equal the 1-rank ones (global batch 2 = 2 ranks x
    1 take) to float tolerance, not bit for bit: one process sums a batch of two takes inside
    each matmul, the ranks sum two batches of one in the all-reduce, so the roundings differ
    (about 1e-7 relative). AdamW divides each gradient element by its own magnitude, so a
    weight whose true gradient is zero (the key bias of an attention: softmax ignores it) or
    near zero follows the rounding noise by up to a fraction of the learning rate. Hence: of
    all weights of each file, at least 99 % within 1e-6, and every one within one learning
    rate (1e-2). A wrong share of the batch (a take missed or seen twice, as a race in the
    frame store build once did) moved most LoRA weights by 3e-4 to 2e-2 and fails both. The
    frame store the two ranks decoded between them is the one one process decodes, byte for
    byte; only rank 0 wrote the outputs and spoke."""
    from safetensors.numpy import load_file

    from skill.adapt.config import AdaptConfig
    from skill.adapt.frames import FrameStore
    from skill.adapt.train import run_adapt

    manifest = make_dataset(tmp_path / "data", takes=8)
    one = tmp_path / "one"
    settings = {"backbone": TINY, "frames": 4, "clips": 2, "epochs": 2, "lr": 1e-2,
                "dropout": 0.0, "lora_dropout": 0.0, "device": "cpu", "workers": 0,
                "threads": 1, "plots": False, "batch_size": 2}  # fmt: skip
    reference = run_adapt(AdaptConfig.from_settings(manifest, one, **settings))
    assert reference.finished

    two = tmp_path / "two"
    first = _torchrun(manifest, two, "--stop-after-epochs", "1")
    assert flat(first.stdout).count("stopped after epoch 1 of 2") == 1  # rank 0 only
    assert "on 2 ranks" in flat(first.stdout + first.stderr)
    assert (two / ".checkpoint" / "state.json").is_file() and not (two / "adapter").exists()
    second = _torchrun(manifest, two)
    assert flat(second.stdout).count("run folder:") == 1
    assert not (two / ".checkpoint").exists()

    a, b = FrameStore.open(one / "frames.zarr"), FrameStore.open(two / "frames.zarr")
    assert a.status().tolist() == b.status().tolist(), (a.view_errors(), b.view_errors())
    for row in range(len(a.takes)):
        np.testing.assert_array_equal(a.read_take(row), b.read_take(row))
    for name in ("adapter/adapter_model.safetensors", "run/model.safetensors"):
        want, got = load_file(str(one / name)), load_file(str(two / name))
        assert sorted(want) == sorted(got)
        diffs = np.concatenate([np.abs(got[k] - v).ravel() for k, v in want.items()])
        assert np.mean(diffs <= 1e-6) >= 0.99 and diffs.max() <= 1e-2, (name, diffs.max())
        changed = sum(int("lora_B" in k and np.abs(v).max() > 0) for k, v in want.items())
        assert changed or "run" in name  # the comparison is of trained weights


def test_a_checkpoint_of_another_rank_count_is_refused(tmp_path):
    """The global batch is batch_size x ranks: resuming on another count would change the
    run, so it is refused, naming the checkpoint and both counts."""
    import json

    from skill.adapt.config import AdaptConfig
    from skill.adapt.train import run_adapt
    from skill.errors import ConfigError

    manifest = make_dataset(tmp_path / "data", takes=6)
    settings = {"backbone": TINY, "frames": 4, "clips": 1, "epochs": 2, "device": "cpu",
                "workers": 0, "threads": 1, "plots": False, "stop_after_epochs": 1}  # fmt: skip
    out = tmp_path / "out"
    assert not run_adapt(AdaptConfig.from_settings(manifest, out, **settings)).finished
    state_file = out / ".checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["world"] == 1
    state_file.write_text(json.dumps({**state, "world": 2}))
    with pytest.raises(ConfigError, match=r"\.checkpoint: the checkpoint was made on 2 ranks"):
        run_adapt(AdaptConfig.from_settings(manifest, out, **settings))
