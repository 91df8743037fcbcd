"""The store's crc32c equals zarr's codec's, through the GIL-free library and the fallback."""

import google_crc32c
import numpy as np
import pytest

from skill.cache import checksum


@pytest.fixture(params=["library", "python binding"])
def path_taken(request, monkeypatch):
    if request.param == "python binding":
        monkeypatch.setattr(checksum, "_library", lambda: None)
    elif checksum._library() is None:
        pytest.skip("this google_crc32c wheel ships no loadable libcrc32c")
    return request.param


def test_crc32c_equals_zarrs_checksum(path_taken):
    data = np.random.default_rng(0).integers(0, 256, 3_000_001, dtype=np.uint8)
    expected = np.uint32(google_crc32c.value(data)).tobytes()
    assert checksum.crc32c(data) == expected
    assert checksum.crc32c(b"") == np.uint32(google_crc32c.value(b"")).tobytes()
    # extended piece by piece, as the token reader does, it is the checksum of the whole
    value = 0
    for start in range(0, len(data), 1 << 20):
        value = checksum.crc32c_extend(value, data[start : start + (1 << 20)])
    assert np.uint32(value).tobytes() == expected
    assert checksum.crc32c(data[:-1]) != expected


def test_every_float16_bit_pattern_is_classed_as_numpy_does():
    """The reader's integer test for NaN/Inf (cache.layout) against numpy, on all 65,536
    float16 values, one at a time and inside a block of finite values."""
    from skill.cache.layout import has_non_finite_float16

    patterns = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    expected = ~np.isfinite(patterns.view(np.float16).astype(np.float32))
    got = [has_non_finite_float16(memoryview(patterns[i : i + 1].tobytes())) for i in range(65536)]
    np.testing.assert_array_equal(got, expected)
    finite = np.full(1 << 20, 1.5, dtype=np.float16)
    for value in (np.inf, -np.inf, np.nan, -np.nan):
        block = finite.copy()
        block[(1 << 20) - 3] = value
        assert has_non_finite_float16(memoryview(block.tobytes()))
    assert not has_non_finite_float16(memoryview(np.float16([65504, -65504, 0, -0.0]).tobytes()))
