"""The direct reader of small arrays (cache/small_arrays.py) gives exactly what zarr gives,
and steps aside (None) wherever it is not sure."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from skill.cache import small_arrays
from skill.cache.store import TokenStore
from tests.token_store import build_token_store


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """The same store in the write layout and packed."""
    folder = tmp_path_factory.mktemp("small")
    write = folder / "write.zarr"
    build_token_store(write, n_participants=8, takes_per_participant=3)
    packed = folder / "packed.zarr"
    shutil.copytree(write, packed)
    TokenStore.open(packed, "a").pack()
    return {"write": write, "packed": packed}


def per_take_arrays(path: Path) -> list[str]:
    store = TokenStore.open(path)
    return [*store.table_arrays, "status", "valid", "view_error", "padded_frames"]


def zarrs_rows(path: Path, name: str, rows: int) -> np.ndarray:
    return zarr.open_array(str(path), path=name, mode="r")[:rows]


@pytest.mark.parametrize("layout", ["write", "packed"])
def test_every_array_it_reads_equals_zarrs_read(stores, layout):
    path = stores[layout]
    n = TokenStore.open(path).n_takes
    read = 0
    for name in per_take_arrays(path):
        for rows in (n, n - 5, 0):
            got = small_arrays.read_whole(path, name, rows)
            if got is None:
                continue
            read += 1
            want = zarrs_rows(path, name, rows)
            assert got.dtype == want.dtype and got.shape == want.shape, name
            np.testing.assert_array_equal(got, want, err_msg=name)
            as_unicode = small_arrays.read_whole(path, name, rows, unicode=True)
            if want.dtype.kind == "T":  # the same strings, fixed-width unicode
                assert as_unicode.dtype.kind == "U" and as_unicode.shape == want.shape, name
                assert as_unicode.tolist() == want.tolist(), name
            else:
                np.testing.assert_array_equal(as_unicode, want, err_msg=name)
    if layout == "packed":  # everything a load reads first is one chunk there
        assert read == 3 * len(per_take_arrays(path))


def test_the_write_layouts_per_take_chunks_are_read_too(stores):
    # one chunk per take while takes are written: every chunk read directly, as zarr reads it
    path = stores["write"]
    n = TokenStore.open(path).n_takes
    for name in ("status", "valid", "token_crc", "row_digest", "view_error", "padded_frames"):
        got = small_arrays.read_whole(path, name, n)
        assert got is not None, name
        np.testing.assert_array_equal(got, zarrs_rows(path, name, n), err_msg=name)


def test_a_missing_chunk_reads_as_the_fill_value_as_in_zarr(stores, tmp_path):
    path = tmp_path / "store.zarr"
    shutil.copytree(stores["packed"], path)
    n = TokenStore.open(path).n_takes
    for name in ("label", "participant", "valid"):
        chunk = next(p for p in (path / name).iterdir() if p.name.startswith("c"))
        chunk.unlink()
        got = small_arrays.read_whole(path, name, n)
        want = zarrs_rows(path, name, n)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        assert len(np.unique(got)) == 1  # nothing but the fill value


def test_damage_or_another_format_is_left_to_zarr(stores, tmp_path):
    path = tmp_path / "store.zarr"
    shutil.copytree(stores["packed"], path)
    n = TokenStore.open(path).n_takes
    chunk = next(p for p in (path / "status").iterdir() if p.name.startswith("c"))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    assert small_arrays.read_whole(path, "status", n) is None  # fails its checksum
    assert small_arrays.read_whole(path, "no_such_array", n) is None
    assert small_arrays.read_whole(path, "participant", n + 1) is None  # past its rows
    # arrays written by another tool: no checksum, another compressor
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3)
    values = np.arange(10, dtype=np.int8)
    for name, compressors in (("plain", None), ("gzip", [zarr.codecs.GzipCodec()])):
        other.create_array(name, data=values, chunks=(10,), compressors=compressors)
        assert small_arrays.read_whole(tmp_path / "other.zarr", name, 10) is None
    checked = [zarr.codecs.ZstdCodec(), zarr.codecs.Crc32cCodec()]
    other.create_array("checked", data=values, chunks=(10,), compressors=checked)
    np.testing.assert_array_equal(
        small_arrays.read_whole(tmp_path / "other.zarr", "checked", 10), values
    )
    other.create_array("chunked", data=values, chunks=(4,), compressors=checked)
    np.testing.assert_array_equal(
        small_arrays.read_whole(tmp_path / "other.zarr", "chunked", 10), values
    )
    grid = np.arange(12, dtype=np.int8).reshape(3, 4)
    other.create_array("across", data=grid, chunks=(3, 2), compressors=checked)
    assert small_arrays.read_whole(tmp_path / "other.zarr", "across", 3) is None
