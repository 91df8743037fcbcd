"""The store's two chunk layouts (cache/layout.py): packing, unpacking, killed relayouts,
and readers that must never see a chunk vanish."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from skill.cache import layout
from skill.cache.checksum import crc32c
from skill.cache.store import StoreError, TakeResult, TakeRow, TokenStore
from tests.token_store import build_token_store

VIEW_SUBSETS = [[0, 1, 2, 3], [1, 2, 3], [0], [3, 0], [2]]
TAKE_BYTES = 4 * 2 * 4 * 32 * 2  # V x K x N x D float16 tokens of the test store


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A store in the write layout with masked views, failed, pending and unlabelled takes."""
    path = tmp_path_factory.mktemp("layout") / "source.zarr"
    build_token_store(path, n_participants=12, takes_per_participant=4)
    return path


def contents(path: Path) -> dict[str, np.ndarray]:
    """Everything the store holds per take, read through the public API."""
    store = TokenStore.open(path)
    rows, views = np.arange(store.n_takes), list(range(len(store.views)))
    return {
        "tokens": store.read_tokens(rows, views),
        "status": store.status(),
        "valid": store.valid(),
        "view_error": store.view_errors(),
        "frame_index": store.frame_index(),
        "padded_frames": store.padded_frames(),
        "ids": store.take_table().ids,
    }


def assert_same(got: dict, want: dict) -> None:
    for name, expected in want.items():
        np.testing.assert_array_equal(got[name], expected, err_msg=name)


def copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "store.zarr"
    shutil.copytree(source, target)
    return target


def chunk_files(path: Path, name: str) -> tuple[bool, int]:
    """(write-layout chunk folder present, number of packed chunk files) of one array."""
    folder = path / name
    return (folder / "c").is_dir(), len(list(folder.glob("c.*")))


# Small packed chunks give several chunks and a partial last one (the default run); the default
# chunk size gives one (-m slow).
@pytest.mark.parametrize("chunk_takes", [7, pytest.param(None, marks=pytest.mark.slow)])
def test_pack_and_unpack_keep_every_array_and_every_read(
    source, tmp_path, monkeypatch, chunk_takes
):
    if chunk_takes:
        monkeypatch.setattr(layout, "PACKED_CHUNK_BYTES", chunk_takes * TAKE_BYTES)
    path = copy(source, tmp_path)
    want = contents(path)
    n = len(want["status"])

    packed = TokenStore.open(path, "a").pack()
    assert sorted(packed) == sorted(TokenStore.open(path).relayout_arrays)
    store = TokenStore.open(path)
    assert store.is_packed() and set(store.layout().values()) == {"packed"}
    expected_chunks = -(-n // chunk_takes) if chunk_takes else 1
    assert chunk_files(path, "tokens") == (False, expected_chunks)
    assert_same(contents(path), want)
    rows = np.arange(n)
    for views in VIEW_SUBSETS:
        for subset in (rows[::3], rows[5:17], rows[[n - 1, 0, 9]], rows[[4, 2, 4]]):
            got = store.read_tokens(subset, views)
            np.testing.assert_array_equal(got, want["tokens"][subset][:, views])

    assert sorted(TokenStore.open(path, "a").unpack()) == sorted(
        TokenStore.open(path).relayout_arrays
    )
    assert set(TokenStore.open(path).layout().values()) == {"write"}
    assert chunk_files(path, "tokens") == (True, 0)
    assert_same(contents(path), want)
    assert not (path / layout.STAGING).exists()


def test_packing_twice_changes_nothing_and_big_takes_stay_unpacked(source, tmp_path, monkeypatch):
    path = copy(source, tmp_path)
    TokenStore.open(path, "a").pack()
    assert TokenStore.open(path, "a").pack() == []
    # A take's tokens bigger than half a packed chunk: packing them would gain nothing.
    monkeypatch.setattr(layout, "PACKED_CHUNK_BYTES", 3000)
    other = copy(source, tmp_path / "big")
    assert "tokens" not in TokenStore.open(other, "a").pack()
    assert TokenStore.open(other).layout()["tokens"] == "write"
    assert_same(contents(other), contents(source))


def test_a_packed_store_refuses_take_writes_that_are_not_whole_chunks(source, tmp_path):
    path = copy(source, tmp_path)
    store = TokenStore.open(path, "a")
    store.pack()
    result = TakeResult(
        tokens=np.zeros((4, 2, 4, 32)),
        valid=np.ones(4, dtype=bool),
        frame_index=np.zeros((4, 2, 4)),
        timestamp=np.zeros((4, 2, 4)),
        padded=np.zeros(4),
    )
    with pytest.raises(StoreError, match=r"the store is packed \(48 takes a chunk\); rows 0..0 are "
                       "not whole chunks: unpack it to write takes"):  # fmt: skip
        store.write_take(0, result)


class Killed(Exception):
    """Stands in for a SIGKILL at one step of a relayout."""


def _kill_at(monkeypatch, target: str, after_calls: int = 0) -> None:
    real = getattr(layout, target) if hasattr(layout, target) else getattr(layout.os, target)
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise Killed(target)
        return real(*args, **kwargs)

    if hasattr(layout, target):
        monkeypatch.setattr(layout, target, dying)
    else:
        monkeypatch.setattr(layout.os, target, dying)


# The default run kills a relayout on each side of the swap; -m slow also before it.
@pytest.mark.parametrize(
    ("step", "after_calls", "active"),
    [
        # while writing the new chunks to staging
        pytest.param("_copy_raw_tokens", 0, "write", marks=pytest.mark.slow),
        # before any new chunk file is in place
        pytest.param("_move_chunk_files", 0, "write", marks=pytest.mark.slow),
        ("replace", 0, "write"),  # new chunks in place, metadata not yet swapped
        ("_remove_chunk_files", 1, "packed"),  # swapped, old chunks not yet deleted
    ],
)
def test_a_relayout_killed_at_any_step_leaves_a_store_that_reads_the_same(
    source, tmp_path, monkeypatch, step, after_calls, active
):
    path = copy(source, tmp_path)
    want = contents(path)
    with monkeypatch.context() as patch:
        _kill_at(patch, step, after_calls)
        with pytest.raises(Killed):
            TokenStore.open(path, "a").pack()
    assert TokenStore.open(path).layout()["tokens"] == active
    assert_same(contents(path), want)
    assert layout.remove_stale_chunks(path, TokenStore.open(path).relayout_arrays) >= 1
    assert not (path / layout.STAGING).exists()
    write_folder, packed_files = chunk_files(path, "tokens")
    assert (write_folder, packed_files > 0) == (
        (True, False) if active == "write" else (False, True)
    )
    assert_same(contents(path), want)
    TokenStore.open(path, "a").pack()  # and the next pack completes
    assert set(TokenStore.open(path).layout().values()) == {"packed"}
    assert_same(contents(path), want)


def test_a_relayout_waits_for_readers_before_deleting_chunks(source, tmp_path, monkeypatch):
    path = copy(source, tmp_path)
    want = contents(path)
    reader = TokenStore.open(path)
    at_swap = threading.Event()  # the packer staged its new chunks and asks for the swap
    layout_lock = layout.layout_lock

    def observed_lock(store_path, exclusive):
        if exclusive:
            at_swap.set()
        return layout_lock(store_path, exclusive)

    monkeypatch.setattr(layout, "layout_lock", observed_lock)
    packer = threading.Thread(target=lambda: TokenStore.open(path, "a").pack())
    with reader.reading():
        packer.start()
        assert at_swap.wait(timeout=120), "the packer never reached the swap"
        # The reader's layout is still in place and complete.
        assert TokenStore.open(path).layout()["tokens"] == "write"
        rows = np.arange(reader.n_takes)
        np.testing.assert_array_equal(reader.read_tokens(rows, [0, 1, 2, 3]), want["tokens"])
        assert packer.is_alive()
    packer.join(timeout=30)
    assert not packer.is_alive()
    assert TokenStore.open(path).is_packed()
    assert_same(contents(path), want)


@pytest.mark.parametrize("chunk_takes", [7, None])  # several chunks read by threads, or one
def test_missing_and_short_packed_chunks_are_errors_naming_takes_and_files(
    source, tmp_path, monkeypatch, chunk_takes
):
    """A chunk file of complete takes that is gone is an error naming the takes and the file
    (never zarr's fill value, zeros); a short one names the file. Other chunks still read."""
    if chunk_takes:
        monkeypatch.setattr(layout, "PACKED_CHUNK_BYTES", chunk_takes * TAKE_BYTES)
    path = copy(source, tmp_path)
    want = contents(path)["tokens"]
    TokenStore.open(path, "a").pack()
    victim = 2 if chunk_takes else 0
    chunk = path / "tokens" / f"c.{victim}.0.0.0.0"
    chunk.unlink()
    store = TokenStore.open(path)
    rows = np.arange(store.n_takes)
    lost = rows[rows // (chunk_takes or store.n_takes) == victim]
    first_lost = store.take_table().ids[lost[0]]
    with pytest.raises(StoreError, match=rf"missing \(take {first_lost} view ego.*c\.{victim}\."):
        store.read_tokens(rows, [0, 1, 2, 3])
    others = np.setdiff1d(rows, lost)
    if len(others):
        np.testing.assert_array_equal(store.read_tokens(others, [0, 1, 2, 3]), want[others])
    chunk.write_bytes(b"\0" * 100)
    with pytest.raises(StoreError, match=rf"tokens/c\.{victim}\.0\.0\.0\.0: token chunk short"):
        store.read_tokens(rows, [0, 1, 2, 3])


def test_a_missing_chunk_of_a_take_asked_for_twice_is_named_once(source, tmp_path):
    path = copy(source, tmp_path)
    store = TokenStore.open(path)
    row = int(np.flatnonzero((store.status() == 1) & store.valid()[:, 0])[0])
    chunk = path / "tokens" / layout.token_chunk_file(layout.array_metadata(path, "tokens"), row, 0)
    chunk.unlink()
    with pytest.raises(StoreError) as raised:
        store.read_tokens([row, row], [0])
    assert str(raised.value).count(str(chunk)) == 1, raised.value


def test_repacking_after_takes_were_added_keeps_every_take(source, tmp_path, monkeypatch):
    monkeypatch.setattr(layout, "PACKED_CHUNK_BYTES", 7 * TAKE_BYTES)  # 7 takes
    path = copy(source, tmp_path)
    want = contents(path)
    store = TokenStore.open(path, "a")
    store.pack()
    # Three more takes through the API: the packed chunks were sized for fewer takes.
    table = store.take_table()
    rows = [TakeRow(f"new{i}", None, "", "", "") for i in range(3)]
    monkeypatch.setattr(layout, "PACKED_CHUNK_BYTES", 5 * TAKE_BYTES)  # 5 takes
    assert TokenStore.open(path, "a").add_takes(rows) == [len(table.ids) + i for i in range(3)]
    assert "tokens" in TokenStore.open(path, "a").pack()
    got = contents(path)
    n = len(want["status"])
    for name, expected in want.items():
        np.testing.assert_array_equal(got[name][:n], expected, err_msg=name)
    assert (got["status"][n:] == 0).all() and list(got["ids"][n:]) == ["new0", "new1", "new2"]
    assert chunk_files(path, "tokens") == (False, -(-(n + 3) // 5))


def test_a_relayout_never_reuses_the_file_names_in_use(source, tmp_path):
    path = copy(source, tmp_path)
    TokenStore.open(path, "a").pack()
    with pytest.raises(ValueError, match="needs the other key separator"):
        layout.relayout_array(path, "status", (3,), layout.PACKED_SEPARATOR)


# The default run reads NaN packed and -Inf in the write layout; -m slow: every pair.
@pytest.mark.parametrize(
    ("packed", "bits"),
    [
        (True, 0x7E00),  # NaN
        pytest.param(True, 0x7C00, marks=pytest.mark.slow),  # +Inf
        pytest.param(True, 0xFC00, marks=pytest.mark.slow),  # -Inf
        pytest.param(False, 0x7E00, marks=pytest.mark.slow),
        pytest.param(False, 0x7C00, marks=pytest.mark.slow),
        (False, 0xFC00),
    ],
)
def test_non_finite_tokens_on_disk_are_an_error_naming_the_file(source, tmp_path, packed, bits):
    path = copy(source, tmp_path)
    if packed:
        TokenStore.open(path, "a").pack()
    store = TokenStore.open(path)
    rows = np.flatnonzero(store.status() == 1)
    chunk = (
        path / "tokens" / "c.0.0.0.0.0"
        if packed
        else next(p for p in sorted((path / "tokens" / "c").rglob("*")) if p.is_file())
    )
    data = bytearray(chunk.read_bytes()[:-4])  # without its checksum
    data[10:12] = np.uint16(bits).tobytes()
    # a writer that stored NaN (with a valid checksum): the values themselves are refused
    chunk.write_bytes(bytes(data) + crc32c(bytes(data)))
    with pytest.raises(StoreError, match=rf"{chunk.name}: token chunk holds NaN or Inf values"):
        store.read_tokens(np.arange(store.n_takes), [0, 1, 2, 3])
    assert store.read_tokens(rows[:0], [0]).shape[0] == 0


@pytest.mark.parametrize("packed", [False, True])
def test_a_changed_byte_in_a_token_chunk_fails_its_checksum(source, tmp_path, packed):
    path = copy(source, tmp_path)
    if packed:
        TokenStore.open(path, "a").pack()
    store = TokenStore.open(path)
    chunk = (
        path / "tokens" / "c.0.0.0.0.0"
        if packed
        else next(p for p in sorted((path / "tokens" / "c").rglob("*")) if p.is_file())
    )
    data = bytearray(chunk.read_bytes())
    data[7] ^= 0x01  # one bit: still a finite float16, only the checksum can tell
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=rf"{chunk.name}: token chunk fails its checksum"):
        store.read_tokens(np.arange(store.n_takes), [0, 1, 2, 3])
    # a read of one view of one take verifies the whole chunk it lies in
    row = 0 if packed else int(chunk.relative_to(path / "tokens" / "c").parts[0])
    view = 0 if packed else int(chunk.relative_to(path / "tokens" / "c").parts[1])
    with pytest.raises(StoreError, match="fails its checksum"):
        store.read_tokens([row], [view])
    if packed:  # ... also where the changed byte lies in a view that was not asked for
        with pytest.raises(StoreError, match="fails its checksum"):
            store.read_tokens([row], [view + 1])


def test_a_changed_byte_past_the_last_take_of_an_edge_chunk_fails_its_checksum(
    source, tmp_path, monkeypatch
):
    """An edge chunk is written full size; the bytes past its last take are never returned,
    and are still checked."""
    monkeypatch.setattr(layout, "PACKED_CHUNK_BYTES", 5 * TAKE_BYTES)
    path = copy(source, tmp_path)
    TokenStore.open(path, "a").pack()
    store = TokenStore.open(path)
    n = store.n_takes
    assert n % 5, "the test store must leave a partial last chunk"
    chunk = path / "tokens" / f"c.{n // 5}.0.0.0.0"
    data = bytearray(chunk.read_bytes())
    data[(n % 5) * TAKE_BYTES + 3] ^= 0x01  # in the first row past the last take
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=rf"{chunk.name}: token chunk fails its checksum"):
        store.read_tokens(np.arange(n), [0, 1, 2, 3])


def test_a_pack_records_its_chunks_and_reads_of_finite_ones_skip_the_scan(
    source, tmp_path, monkeypatch
):
    """Each chunk a pack writes is recorded with its checksum and this store's id
    (PACKED_RECORD); reading a chunk recorded finite whose checksum is the recorded one needs
    no NaN/Inf scan. A chunk rewritten since (valid checksum, not the recorded one) is
    refused, naming its takes, and a relayout drops the record."""
    monkeypatch.setattr(layout, "PACKED_CHUNK_BYTES", 7 * TAKE_BYTES)
    path = copy(source, tmp_path)
    want = contents(path)["tokens"]
    TokenStore.open(path, "a").pack()
    record = layout.array_metadata(path, "tokens")["attributes"][layout.PACKED_RECORD]
    assert record["store_id"] == TokenStore.open(path).store_id
    assert sorted(record["crc32c"]) == sorted(p.name for p in (path / "tokens").glob("c.*"))
    assert sorted(record["finite"]) == sorted(record["crc32c"])
    for name, value in record["crc32c"].items():
        assert (path / "tokens" / name).read_bytes()[-4:] == np.uint32(value).tobytes()

    scans = []
    real_scan = layout._scan
    monkeypatch.setattr(
        layout,
        "_scan",
        lambda data, checksum, crc=0: scans.append(1) or real_scan(data, checksum, crc),
    )
    store = TokenStore.open(path)
    rows, views = np.arange(store.n_takes), [0, 1, 2, 3]
    np.testing.assert_array_equal(store.read_tokens(rows, views), want)
    assert scans == []

    chunk = path / "tokens" / "c.1.0.0.0.0"
    data = bytearray(chunk.read_bytes()[:-4])
    data[0:2] = np.float16(0.5).tobytes()  # another writer's finite value
    chunk.write_bytes(bytes(data) + crc32c(bytes(data)))
    ids = store.take_table().ids
    with pytest.raises(
        StoreError, match=rf"takes {ids[7]}\.\.{ids[13]}: .*not the one written here"
    ):
        store.read_tokens(rows, views)
    assert scans  # a chunk that is not the recorded one is scanned

    with pytest.raises(StoreError, match="not the one written here"):
        TokenStore.open(path, "a").unpack()  # a relayout moves no chunk a read would refuse

    fresh = copy(source, tmp_path / "fresh")
    TokenStore.open(fresh, "a").pack()
    TokenStore.open(fresh, "a").unpack()
    assert layout.PACKED_RECORD not in layout.array_metadata(fresh, "tokens")["attributes"]
    np.testing.assert_array_equal(TokenStore.open(fresh).read_tokens(rows, views), want)
