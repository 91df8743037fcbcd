"""The store's clip axis: clip times (`clip_time`), the clip mask of sequence stores, their
checks (frames_crc, verify), packing, `skill info`, the xarray view, export and import, and
the refusal of format-4 stores."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from skill.cache import layout
from skill.cache.info import store_summary, summary_lines
from skill.cache.store import (
    FRAMES_PROBLEM,
    STATUS_COMPLETE,
    StoreError,
    TokenStore,
)
from skill.cache.verify import verify_store
from tests.extract_helpers import invoke_cli
from tests.token_store import CLIP_EVERY_S, FPS, FRAMES, build_token_store

SMALL = {"n_participants": 8, "takes_per_participant": 2}


@pytest.fixture(scope="module", params=["samples", "sequence"])
def built(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"clips-{request.param}")
    return build_token_store(folder / "s.zarr", clip_axis=request.param, **SMALL)


def test_the_clip_mask_marks_the_clips_that_hold_tokens(built):
    store = TokenStore.open(built.path)
    records = store.take_records()
    mask, times = store.clip_mask(), store.clip_times()
    assert store.clip_axis == built.clip_axis
    assert mask.shape == (store.n_takes, len(store.views), store.clips)
    assert times.shape == (*mask.shape, 2) and times.dtype == np.float32
    tokens = store.read_tokens(np.arange(store.n_takes), np.arange(len(store.views)))
    held = np.abs(tokens.astype(np.float32)).sum(axis=(-1, -2)) > 0
    np.testing.assert_array_equal(held, mask)
    np.testing.assert_array_equal(np.isfinite(times).all(axis=-1), mask)
    assert not mask[~records.valid].any()
    if built.clip_axis == "samples":
        np.testing.assert_array_equal(mask, np.repeat(records.valid[..., None], 2, axis=2))
    else:
        ids = records.table.ids.tolist()
        for take, counts in built.clip_counts.items():
            assert mask[ids.index(take)].sum(axis=1).tolist() == counts
        assert (mask.sum(axis=2)[records.valid] < store.clips).any(), "some clips padded"


def test_clip_times_are_the_first_frame_to_one_frame_after_the_last(built):
    store = TokenStore.open(built.path)
    frames = store.frame_records()
    mask = store.clip_mask()
    start, end = frames.clip_time[..., 0][mask], frames.clip_time[..., 1][mask]
    np.testing.assert_allclose(start, frames.timestamp[..., 0][mask])
    np.testing.assert_allclose(end - start, FRAMES / FPS, rtol=1e-5)
    if built.clip_axis == "sequence":  # in order, one every CLIP_EVERY_S seconds
        starts = np.where(mask, frames.clip_time[..., 0], np.nan)
        steps = np.diff(starts, axis=-1)
        np.testing.assert_allclose(steps[np.isfinite(steps)], CLIP_EVERY_S, rtol=1e-5)


def test_packing_and_unpacking_keep_the_clip_times(built, tmp_path):
    import shutil

    path = shutil.copytree(built.path, tmp_path / "s.zarr")
    before = TokenStore.open(path).clip_times()
    store = TokenStore.open(path, "a")
    with store.writer_lock():
        store.pack()
    assert TokenStore.open(path).layout()["clip_time"] == "packed"
    np.testing.assert_array_equal(TokenStore.open(path).clip_times(), before)
    with store.writer_lock():
        TokenStore.open(path, "a").unpack()
    assert TokenStore.open(path).layout()["clip_time"] == "write"
    np.testing.assert_array_equal(TokenStore.open(path).clip_times(), before)
    assert verify_store(path).ok


def test_a_changed_clip_time_chunk_is_damage_that_verify_names(built, tmp_path):
    import shutil

    import zarr

    path = shutil.copytree(built.path, tmp_path / "s.zarr")
    store = TokenStore.open(path)
    row = int(np.flatnonzero(store.status() == STATUS_COMPLETE)[0])
    take = str(store.take_table().ids[row])
    array = zarr.open_array(str(path), path="clip_time", mode="r+", zarr_format=3)
    times = np.asarray(array[row])
    times[np.isfinite(times)] += 0.5  # the clips moved by half a second
    array[row] = times
    with pytest.raises(StoreError, match=f"take {take}: its frame records"):
        TokenStore.open(path).clip_times()
    report = verify_store(path)
    assert [(d.take, d.view) for d in report.damage] == [(take, "*")]
    assert FRAMES_PROBLEM in report.damage[0].problem


def test_info_names_the_clip_axis_with_its_counts_and_durations(built):
    summary = store_summary(built.path)
    lines = summary_lines(summary)
    (line,) = [line for line in lines if line.startswith("clip axis: ")]
    if built.clip_axis == "samples":
        assert summary["clip_axis"] == {"axis": "samples"}
        assert line == "clip axis: samples (2 interchangeable clips of a take)"
    else:
        axis = summary["clip_axis"]
        assert (axis["axis"], axis["clips_min"], axis["clips_max"]) == ("sequence", 3, 6)
        assert axis["duration_s_min"] == pytest.approx(FRAMES / FPS)
        assert line == (
            "clip axis: sequence (3 to 6 clips a view in order, of 0.133 s each; start and end "
            "times in clip_time)"
        )
    code, output = invoke_cli("info", str(built.path))
    assert code == 0 and line in output


def test_plain_xarray_reads_clip_times_with_their_dimensions(built):
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(built.path, consolidated=False)
    assert ds.clip_time.dims == ("take", "view", "clip", "edge")
    assert ds.tokens.dims[:3] == ds.clip_time.dims[:3]
    np.testing.assert_array_equal(
        ds.clip_time.values, TokenStore.open(built.path).clip_times(), strict=False
    )


@pytest.mark.parametrize("fmt", ["hdf5", "npy"])
def test_export_and_import_carry_the_clip_times_and_the_clip_axis(built, tmp_path, fmt):
    from skill.interop.export import ExportConfig, export_store
    from skill.interop.import_features import ImportFeaturesConfig, import_features

    out = tmp_path / ("e.h5" if fmt == "hdf5" else "e")
    export_store(ExportConfig(str(built.path), str(out), fmt))
    import_features(ImportFeaturesConfig(str(out), str(tmp_path / "back.zarr")))
    source, back = TokenStore.open(built.path), TokenStore.open(tmp_path / "back.zarr")
    assert back.clip_axis == source.clip_axis
    done = source.status() == STATUS_COMPLETE
    np.testing.assert_array_equal(back.clip_times(), source.clip_times()[done])
    np.testing.assert_array_equal(back.clip_mask(), source.clip_mask()[done])


def test_an_export_of_a_sequence_without_clip_times_is_refused(tmp_path):
    import h5py

    from skill.interop.export import ExportConfig, export_store
    from skill.interop.import_features import (
        FeatureImportError,
        ImportFeaturesConfig,
        import_features,
    )

    built = build_token_store(tmp_path / "s.zarr", clip_axis="sequence", **SMALL)
    out = tmp_path / "e.h5"
    export_store(ExportConfig(str(built.path), str(out), "hdf5"))
    with h5py.File(out, "r+") as f:
        del f["clip_time"]  # as an export made before clip times would be
    with pytest.raises(FeatureImportError) as refused:
        import_features(ImportFeaturesConfig(str(out), str(tmp_path / "back.zarr")))
    assert str(refused.value) == (
        f"{out}: the export's provenance says its clip axis is a sequence, but it has no "
        "clip_time: its padded clips cannot be told from the others"
    )
    assert not (tmp_path / "back.zarr").exists()


def test_a_sequence_take_with_a_clip_after_an_absent_one_is_refused(tmp_path):
    built = build_token_store(tmp_path / "s.zarr", clip_axis="sequence", **SMALL)
    store = TokenStore.open(built.path, "a")
    result = store.empty_take()
    result.valid[0] = True
    result.tokens[0] = 1
    result.clip_time[0] = np.arange(store.clips * 2).reshape(-1, 2)
    result.clip_time[0, 1] = np.nan  # clip 1 absent, clip 2 present
    with pytest.raises(StoreError, match="view ego: a sequence store's valid view needs its "):
        store.write_take(0, result)


def test_a_format_4_store_is_refused_in_one_line_by_every_command(tmp_path):
    import zarr

    build_token_store(tmp_path / "s.zarr", **SMALL)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    group.attrs["skill"] = {"format_version": 4, "package_version": "0.4.0"}
    said = (
        f"{tmp_path / 's.zarr'}: store format 4 was written by an older skill and records no "
        "clip times (format 5 does); extract into a new store"
    )
    with pytest.raises(StoreError) as refused:
        TokenStore.open(tmp_path / "s.zarr")
    assert str(refused.value) == said
    for args in (["info"], ["fit", "--epochs", "1"], ["export", str(tmp_path / "e.h5")]):
        code, output = invoke_cli(args[0], str(tmp_path / "s.zarr"), *args[1:])
        assert code == 2 and output == f"error: {said}", output


def test_a_clip_axis_the_store_does_not_know_is_refused(tmp_path):
    import zarr

    build_token_store(tmp_path / "s.zarr", **SMALL)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")
    group.attrs["provenance"] = {**group.attrs["provenance"], "clip_axis": "shuffled"}
    with pytest.raises(StoreError, match='clip_axis is "shuffled", not one of samples, seq'):
        TokenStore.open(tmp_path / "s.zarr")


def test_the_array_metadata_name_the_edge_dimension(built):
    meta = layout.array_metadata(built.path, "clip_time")
    assert meta["dimension_names"] == ["take", "view", "clip", "edge"]
    assert meta["shape"][1:] == [4, TokenStore.open(built.path).clips, 2]
    assert (
        json.loads((built.path / "zarr.json").read_text())["attributes"]["skill"]["format_version"]
        == 5
    )
