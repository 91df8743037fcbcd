"""A full disk or a read-only folder during `skill fit`, `skill sweep` and `skill adapt` (its
frame store, its epoch checkpoints): one line naming the path, exit 2, nothing half-written,
and the same command goes on once there is space.

The disk is a real one: a small tmpfs in a private mount namespace, filled and freed between
commands (tests/full_disk.py); the read-only folder a read-only bind mount."""

from __future__ import annotations

import csv
import errno
import resource
import signal
from pathlib import Path

import pytest

from skill.cache.files import parse_staging, write_bytes_atomically
from skill.cache.recovery import WriteError, as_os_error, write_errors
from tests.extract_helpers import (
    TINY,
    cli_command,
    flat,
    invoke_cli,
    make_dataset,
    read_only_mount_problem,
    run_in_read_only_mount,
)
from tests.full_disk import PAGE, files_under, on_small_disk, pages, small_disk_problem
from tests.token_store import shared_token_store

FIT_ARGS = ["--epochs", "2", "--batch-size", "16", "--hidden", "16", "--patience", "0",
            "--no-plots"]  # fmt: skip
ADAPT_ARGS = ["--backbone", TINY, "--frames", "4", "--clips", "2", "--epochs", "2",
              "--batch-size", "2", "--lr", "0.01", "--device", "cpu", "--workers", "0",
              "--no-plots", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return shared_token_store(tmp_path_factory)


@pytest.fixture
def disk(tmp_path) -> Path:
    """An empty folder that the plan mounts a small tmpfs on."""
    problem = small_disk_problem(tmp_path)
    if problem:
        pytest.skip(problem)
    folder = tmp_path / "disk"
    folder.mkdir()
    return folder


def one_error_line(result: dict) -> str:
    """The command's error: one line, the last it printed (after its progress lines), and no
    traceback."""
    assert result["code"] == 2, result["stderr"]
    assert "Traceback" not in result["stderr"]
    lines = result["stderr"].strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], result["stderr"]
    return errors[0]


def hidden(files: dict) -> list[str]:
    """Files of a listing under a hidden name (staging folders, temporaries), locks aside."""
    return [
        name
        for name in files
        if any(part.startswith(".") for part in Path(name).parts) and not name.endswith(".lock")
    ]


def staging_files(files: dict) -> list[str]:
    """Files of a listing inside or under a staging name (cache.files), at any depth."""
    return [n for n in files if any(parse_staging(part) for part in Path(n).parts)]


# ---- fit -------------------------------------------------------------------------------------
# A fit on a small mounted disk; the default run meets a full disk under an extract
# (test_extract, ENOSPC raised by a patch) and a read-only mount under adapt (below).
@pytest.mark.slow
def test_fit_on_a_full_disk_writes_nothing_and_the_same_command_works_with_space(store, disk):
    runs = disk / "runs"
    args = ["fit", str(store.path), "--out", str(runs), "--name", "r", "--head", "mean",
            *FIT_ARGS]  # fmt: skip
    steps = [{"fill": 0}, {"skill": args}, {"list": True}, {"free": True}, {"skill": args},
             {"list": True}]  # fmt: skip
    _, full, after_full, _, again, after = on_small_disk(disk, steps, disk.parent / "kept")
    line = one_error_line(full)
    assert f"{runs / 'r'}: could not write the run folder: the disk is full" in line
    assert "run the same command" in line
    assert after_full["files"] == {}  # no staging folder, no temporary, no run folder
    assert again["code"] == 0, again["stderr"]
    written = {n for n in after["files"] if n.startswith("runs/r/")}
    assert written == {f"runs/r/{n}" for n in
                       ("config.json", "model.safetensors", "metrics.json", "predictions.csv")}  # fmt: skip
    assert hidden(after["files"]) == []


# The default run meets read-only folders with adapt (below) and extract (test_extract).
@pytest.mark.slow
def test_fit_into_a_read_only_folder_is_one_line(store, tmp_path):
    problem = read_only_mount_problem(tmp_path)
    if problem:
        pytest.skip(problem)
    source, mount = tmp_path / "source", tmp_path / "mount"
    (source / "runs").mkdir(parents=True)
    mount.mkdir()
    args = ["fit", str(store.path), "--out", str(mount / "runs"), "--head", "mean", *FIT_ARGS]
    done = run_in_read_only_mount(source, mount, cli_command(*args))
    line = one_error_line({"code": done.returncode, "stderr": done.stderr})
    assert f"{mount / 'runs'}/" in line and "the location is read-only" in line
    assert list((source / "runs").iterdir()) == []


# ---- sweep -----------------------------------------------------------------------------------
def sweep_rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "sweep.csv", newline="") as f:
        return [
            {k: v for k, v in row.items() if not k.startswith("fit_seconds")}
            for row in csv.DictReader(f)
        ]


# A sweep to a full disk and back; the default run fills the disk under one fit.
@pytest.mark.slow
def test_a_sweep_that_fills_the_disk_keeps_its_runs_and_resumes(store, disk, tmp_path):
    def args(out: Path) -> list[str]:
        return ["sweep", str(store.path), "--heads", "mean", "--view-sets", "ego", "--seeds",
                "0,1", "--out", str(out), *FIT_ARGS]  # fmt: skip

    code, output = invoke_cli(*args(tmp_path / "ref"))
    assert code == 0, output
    reference = tmp_path / "ref" / "sweep"
    # Room for the lock, sweep.json and the first run, and 2 pages more: the second run's four
    # files (a page each at least) do not fit.
    first = [reference / "sweep.json", *files_under(reference / "mean-ego-s0")]
    leave = (1 + pages(first) + 2) * PAGE
    out = disk / "out"
    steps = [{"fill": leave}, {"skill": args(out)}, {"list": True}, {"free": True},
             {"skill": args(out)}]  # fmt: skip
    _, full, after_full, _, again = on_small_disk(disk, steps, tmp_path / "kept")
    line = one_error_line(full)
    assert f"{out / 'sweep' / 'mean-ego-s1'}: could not write the run folder: the disk is full" in (
        line
    )
    files = after_full["files"]
    assert "out/sweep/sweep.json" in files and "out/sweep/mean-ego-s0/config.json" in files
    assert not any(n.startswith("out/sweep/mean-ego-s1") for n in files)
    assert "out/sweep/sweep.csv" not in files and hidden(files) == []
    assert again["code"] == 0, again["stderr"]
    assert "resumed: 1 of 2 runs" in flat(again["stdout"])
    kept = tmp_path / "kept" / "out" / "sweep"
    assert sorted(p.name for p in kept.iterdir()) == sorted(
        p.name for p in reference.iterdir()
    )  # no "-2" folder
    assert sweep_rows(kept) == sweep_rows(reference)


# ---- adapt -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("adapt-data"), takes=8)


@pytest.fixture(scope="module")
def adapted(dataset, tmp_path_factory) -> Path:
    """An uninterrupted `skill adapt` with ADAPT_ARGS: the reference --out folder."""
    out = tmp_path_factory.mktemp("adapted") / "out"
    code, output = invoke_cli("adapt", str(dataset), "--out", str(out), *ADAPT_ARGS)
    assert code == 0, output
    return out


def same_adapter(kept: Path, reference: Path) -> bool:
    names = ("adapter_config.json", "adapter_model.safetensors", "skill_adapter.json")
    return all(
        (kept / "adapter" / n).read_bytes() == (reference / "adapter" / n).read_bytes()
        for n in names
    )


# Adapt runs to a full disk and back; the default run refuses a read-only adapt folder.
@pytest.mark.slow
def test_adapt_checkpoint_on_a_full_disk_keeps_the_last_one_and_resumes(
    dataset, adapted, disk, tmp_path
):
    out = disk / "out"
    args = ["adapt", str(dataset), "--out", str(out), *ADAPT_ARGS]
    steps = [{"skill": [*args, "--stop-after-epochs", "1"]}, {"fill": 0}, {"skill": args},
             {"list": True}, {"free": True}, {"skill": args}, {"list": True}]  # fmt: skip
    first, _, full, after_full, _, again, after = on_small_disk(disk, steps, tmp_path / "kept")
    assert first["code"] == 0, first["stderr"]
    line = one_error_line(full)
    assert (
        f"{out / '.checkpoint'}: could not write the checkpoint of epoch 2: the disk is full"
        in (line)
    )
    assert "The checkpoint of epoch 1 is kept" in line
    files = after_full["files"]
    assert "out/.checkpoint/state.json" in files
    assert not [n for n in files if n.startswith(("out/adapter", "out/run"))]
    assert not staging_files(files) and not [n for n in files if n.endswith(".partial")]
    assert again["code"] == 0, again["stderr"]
    assert not [n for n in after["files"] if n.startswith("out/.checkpoint")]
    assert same_adapter(tmp_path / "kept" / "out", adapted)


# Adapt runs to a full disk and back; the default run refuses a read-only adapt folder.
@pytest.mark.slow
def test_adapt_frame_store_on_a_full_disk_keeps_written_takes_and_resumes(
    dataset, adapted, disk, tmp_path
):
    from skill.adapt.frames import FrameStore
    from skill.cache.store import STATUS_COMPLETE, STATUS_PENDING

    reference = adapted / "frames.zarr"
    metadata = [p for p in files_under(reference) if p.name == "zarr.json"]
    take0 = [p for p in files_under(reference) if p.relative_to(reference).parts[1:3] == ("c", "0")]
    # The lock, the new store's metadata (and the temporary of its rewritten root), the first
    # take, and 2 pages: the second take does not fit.
    leave = (1 + pages(metadata) + 1 + pages(take0) + 2) * PAGE
    out = disk / "out"
    args = ["adapt", str(dataset), "--out", str(out), *ADAPT_ARGS]
    steps = [{"fill": leave}, {"skill": args}, {"list": True}, {"free": True}, {"skill": args}]
    _, full, after_full, _, again = on_small_disk(disk, steps, tmp_path / "kept")
    line = one_error_line(full)
    assert f"{out / 'frames.zarr'}: could not write take " in line
    assert "(row 1): the disk is full" in line
    files = after_full["files"]
    assert not staging_files(files) and not [n for n in files if n.endswith(".partial")]
    assert again["code"] == 0, again["stderr"]
    assert "1 already there" in flat(again["stderr"])  # the first take was not decoded again
    assert same_adapter(tmp_path / "kept" / "out", adapted)
    status = FrameStore.open(tmp_path / "kept" / "out" / "frames.zarr").status()
    assert STATUS_PENDING not in status and (status == STATUS_COMPLETE).all()


def test_adapt_into_a_read_only_folder_is_one_line(dataset, tmp_path):
    problem = read_only_mount_problem(tmp_path)
    if problem:
        pytest.skip(problem)
    source, mount = tmp_path / "source", tmp_path / "mount"
    source.mkdir()
    mount.mkdir()
    args = ["adapt", str(dataset), "--out", str(mount / "out"), *ADAPT_ARGS]
    done = run_in_read_only_mount(source, mount, cli_command(*args))
    line = one_error_line({"code": done.returncode, "stderr": done.stderr})
    assert f"{mount / 'out'}: could not write the --out folder: the location is read-only" in line
    assert list(source.iterdir()) == []


# ---- the helpers -------------------------------------------------------------------------------
def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (4, limit[1]))  # files past 4 bytes fail
    try:
        too_large = r"f\.bin: could not write it: the file is too large"
        with pytest.raises(WriteError, match=too_large), write_errors(target, "it"):
            write_bytes_atomically(target, b"0123456789")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, ignored)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_safetensors_errors_carry_their_os_error(tmp_path):
    from safetensors import SafetensorError

    err = SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )
    assert as_os_error(err).errno == errno.ENOSPC
    assert as_os_error(ValueError("(os error 28)")) is None  # only a library's I/O error
