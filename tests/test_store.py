"""The token store: round trip, take table, completion records, refusals, the writer lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from skill.cache.store import (
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_PENDING,
    StoreBusy,
    StoreError,
    TakeResult,
    TakeRow,
    TokenStore,
    diff_provenance,
)
from skill.tasks import task_record
from tests.extract_helpers import read_only_mount_problem, run_in_read_only_mount

VIEWS = ["ego", "exo1", "exo2"]
LABELS = ["Novice", "Early Expert", "Intermediate Expert", "Late Expert"]
K, N, D, T = 2, 4, 8, 4


def make_store(path, provenance=None):
    return TokenStore.create(
        path,
        provenance=provenance or {"backbone": {"name": "tiny"}, "tokens": "frame"},
        views=VIEWS,
        task=task_record("classification", {"labels": list(LABELS)}),
        clips=K,
        tokens=N,
        dim=D,
        frames=T,
    )


def result_for(seed: int, valid=(True, True, True), status=STATUS_COMPLETE) -> TakeResult:
    rng = np.random.default_rng(seed)
    valid = np.asarray(valid)
    return TakeResult(
        tokens=rng.standard_normal((3, K, N, D)).astype(np.float16),
        valid=valid,
        frame_index=rng.integers(0, 100, (3, K, T)),
        timestamp=rng.random((3, K, T)),
        padded=np.array([0, 2, 0]),
        view_error=["" if ok else "corrupt bitstream" for ok in valid],
        status=status,
    )


def test_round_trip(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    rows = store.add_takes(
        [TakeRow("a", "Novice", "dance", "p1", "train"), TakeRow("b", None, "cook", "p2", "")]
    )
    assert rows == [0, 1]
    written = result_for(1, valid=(True, False, True))
    store.write_take(0, written)

    reread = TokenStore.open(tmp_path / "s.zarr")
    assert reread.views == VIEWS and reread.task["schema"]["labels"] == LABELS
    assert (reread.clips, reread.tokens, reread.dim, reread.frames) == (K, N, D, T)
    table = reread.take_table()
    assert list(table.ids) == ["a", "b"]
    assert list(table.target) == [0, -1]
    assert list(table.scenario) == ["dance", "cook"]
    assert list(reread.status()) == [STATUS_COMPLETE, STATUS_PENDING]
    assert reread.valid()[0].tolist() == [True, False, True]
    tokens = reread.read_tokens([0, 1], [0, 1, 2])
    assert tokens.shape == (2, 3, K, N, D) and tokens.dtype == np.float16
    np.testing.assert_array_equal(tokens[0, 0], written.tokens[0])
    np.testing.assert_array_equal(tokens[0, 2], written.tokens[2])
    assert not tokens[0, 1].any() and not tokens[1].any()  # invalid view / pending take
    assert reread.failures() == [("a", "exo1", "corrupt bitstream")]
    np.testing.assert_array_equal(reread.frame_index()[0], written.frame_index)
    assert reread.padded_frames()[0].tolist() == [0, 2, 0]


def test_fast_token_read_matches_zarr(tmp_path):
    import zarr

    store = make_store(tmp_path / "s.zarr")
    store.add_takes([TakeRow(f"t{i}", "Novice") for i in range(5)])
    for i in range(5):
        store.write_take(i, result_for(i, valid=(True, i % 2 == 0, True)))
    fast = store.read_tokens([4, 0, 3], [2, 1])
    array = zarr.open_array(str(tmp_path / "s.zarr" / "tokens"), mode="r")
    slow = array.get_orthogonal_selection((np.array([4, 0, 3]), np.array([2, 1])))
    np.testing.assert_array_equal(fast, slow)


def test_dimension_names_are_written(tmp_path):
    make_store(tmp_path / "s.zarr")
    meta = json.loads((tmp_path / "s.zarr" / "tokens" / "zarr.json").read_text())
    assert meta["dimension_names"] == ["take", "view", "clip", "token", "dim"]


def test_existing_takes_keep_their_rows_and_conflicts_are_refused(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    store.add_takes([TakeRow("a", "Novice", "dance", "p1", "train")])
    assert store.add_takes(
        [TakeRow("b", "Late Expert"), TakeRow("a", "Novice", "dance", "p1", "train")]
    ) == [1, 0]
    with pytest.raises(StoreError, match="take a is already in the store as label='Novice'"):
        store.add_takes([TakeRow("a", "Late Expert", "dance", "p1", "train")])
    assert TokenStore.open(tmp_path / "s.zarr").n_takes == 2


def test_uncommitted_rows_are_invisible(tmp_path):
    """A coordinator killed after resizing but before committing n_takes leaves no visible row."""
    store = make_store(tmp_path / "s.zarr")
    store.add_takes([TakeRow("a", "Novice")])
    store._group["status"].resize((5,))  # what a killed append leaves behind
    reread = TokenStore.open(tmp_path / "s.zarr", mode="a")
    assert reread.n_takes == 1 and reread.status().shape == (1,)
    assert reread.add_takes([TakeRow("b", "Novice")]) == [1]
    assert reread.status().shape == (2,)


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "no such store"),
        (lambda p: p.write_text("x"), "not a skill store"),
        (lambda p: p.mkdir(), "not a skill store"),
    ],
)
def test_not_a_store(tmp_path, setup, message):
    path = tmp_path / "s.zarr"
    setup(path)
    with pytest.raises(StoreError, match=message):
        TokenStore.open(path)


def test_plain_zarr_group_is_not_a_store(tmp_path):
    import zarr

    zarr.open_group(str(tmp_path / "g.zarr"), mode="w", zarr_format=3)
    with pytest.raises(StoreError, match="not a skill store"):
        TokenStore.open(tmp_path / "g.zarr")


def test_newer_format_version_is_refused(tmp_path):
    import zarr

    make_store(tmp_path / "s.zarr")
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    group.attrs["skill"] = {"format_version": 99}
    with pytest.raises(StoreError, match="format version 99 is newer"):
        TokenStore.open(tmp_path / "s.zarr")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_store_of_an_earlier_format_is_refused_by_every_command(tmp_path, version):
    import zarr

    from tests.extract_helpers import invoke_cli

    make_store(tmp_path / "s.zarr")
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    group.attrs["skill"] = {"format_version": version, "package_version": "0.1.0"}
    said = f"store format {version} was written by an older skill and records no placement"
    for args in (["info"], ["fit", "--epochs", "1"], ["export", str(tmp_path / "e.h5")]):
        code, output = invoke_cli(args[0], str(tmp_path / "s.zarr"), *args[1:])
        assert code == 2 and output.startswith("error: ") and said in output, output
    code, output = invoke_cli("verify", str(tmp_path / "s.zarr"))
    assert code == 1 and said in output, output


def test_create_refuses_existing_and_read_only_locations(tmp_path):
    make_store(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="already exists"):
        make_store(tmp_path / "s.zarr")
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if not os.access(locked, os.W_OK):
            with pytest.raises(StoreError, match="read-only"):
                make_store(locked / "s.zarr")
            return
    finally:
        locked.chmod(0o755)
    # Root writes through chmod (as CI runs): a read-only mount is a location nobody writes.
    problem = read_only_mount_problem(tmp_path)
    if problem:
        pytest.skip(problem)
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from skill.cache.store import StoreError
        from tests.test_store import make_store
        try:
            make_store(Path({str(locked / "s.zarr")!r}))
        except StoreError as err:
            print(err)
        """
    )
    done = run_in_read_only_mount(locked, locked, [sys.executable, "-c", code])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "read-only" in done.stdout, done.stdout
    assert list(locked.iterdir()) == []


def test_create_failure_leaves_nothing(tmp_path, monkeypatch):
    import skill.cache.store as store_module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "_write_empty_store", full_disk)
    with pytest.raises(StoreError, match="No space left on device"):
        make_store(tmp_path / "s.zarr")
    assert list(tmp_path.iterdir()) == []


def test_status_is_written_last(tmp_path, monkeypatch):
    """A write that dies part way (a full disk) leaves the take pending, never complete."""
    store = make_store(tmp_path / "s.zarr")
    store.add_takes([TakeRow("a", "Novice")])

    class DiskFullsAtTimestamps:
        def __init__(self, group):
            self.group = group

        def __getitem__(self, name):
            if name == "timestamp":
                raise OSError(28, "No space left on device")
            return self.group[name]

    store._group = DiskFullsAtTimestamps(store._group)
    with pytest.raises(OSError):
        store.write_take(0, result_for(0))
    assert TokenStore.open(tmp_path / "s.zarr").status().tolist() == [STATUS_PENDING]


def test_failed_take_is_reported(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    store.add_takes([TakeRow("a", "Novice")])
    store.write_take(0, result_for(0, valid=(False, False, False), status=STATUS_FAILED))
    failures = TokenStore.open(tmp_path / "s.zarr").failures()
    assert [(t, v) for t, v, _ in failures] == [("a", "ego"), ("a", "exo1"), ("a", "exo2")]


def test_diff_provenance_names_nested_fields():
    stored = {"backbone": {"name": "x", "weights_sha256": "aaa"}, "tokens": "frame"}
    wanted = {"backbone": {"name": "x", "weights_sha256": "bbb"}, "tokens": "cls"}
    assert diff_provenance(stored, wanted) == [
        'backbone.weights_sha256: store "aaa" vs requested "bbb"',
        'tokens: store "frame" vs requested "cls"',
    ]
    assert diff_provenance({"a": (1, 2)}, {"a": [1, 2]}) == []


def test_second_writer_is_refused_while_first_holds_the_lock(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    holder = textwrap.dedent(
        f"""
        import sys, time
        from skill.cache.store import TokenStore
        with TokenStore.open({str(tmp_path / "s.zarr")!r}, "a").writer_lock():
            print("locked", flush=True)
            sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StoreBusy, match=f"pid {proc.pid}"), store.writer_lock():
            pass
    finally:
        proc.kill()
        proc.wait()
    with store.writer_lock():  # released by the kernel when the holder died
        pass
