"""SkillFormer's frame placement (`--sampling skillformer-windows`) where `skill adapt` shares
extract's sampling: its settings, the frames its frame store decodes, and a frame store of the
other placement refused on resume."""

from __future__ import annotations

import numpy as np
import pytest

from tests.extract_helpers import TINY, make_dataset
from tests.test_sampling import skillformer_indices


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("sf-sampling"), takes=2)


def adapt_config(manifest, out, **overrides):
    from skill.adapt.config import AdaptConfig

    settings = {"backbone": TINY, "frames": 3, "clips": 1, "device": "cpu", "workers": 0}
    return AdaptConfig(manifest=manifest, out=out, **{**settings, **overrides})


def test_adapt_passes_the_placement_to_extract_and_prints_it(tmp_path):
    cfg = adapt_config(tmp_path / "m.jsonl", tmp_path / "out", strategy="skillformer-windows")
    assert cfg.extract_config().sampling.strategy == "skillformer-windows"
    assert "--sampling skillformer-windows --stride 4" in cfg.extract_command()
    windows = adapt_config(tmp_path / "m.jsonl", tmp_path / "out", strategy="windows")
    assert windows.extract_config().sampling != cfg.extract_config().sampling


def test_the_adapt_frame_store_decodes_skillformers_frames(dataset, tmp_path):
    import zarr

    from skill.adapt.frames import FrameStoreSpec, build_frame_store
    from skill.pipeline.decode.geometry import FrameGeometry
    from skill.pipeline.decode.index import probe
    from skill.pipeline.manifest import read_takes

    sampling = adapt_config(dataset, tmp_path / "o", strategy="skillformer-windows")
    sampling = sampling.extract_config().sampling
    takes, views = read_takes(dataset).takes, ["ego", "exo1"]
    geometry = FrameGeometry(shortest_edge=32, crop_height=32, crop_width=32)
    spec = FrameStoreSpec(TINY, vars(geometry), sampling.to_dict(), codec="raw")
    path = tmp_path / "frames.zarr"
    build_frame_store(path, spec, views, takes, geometry=geometry, sampling=sampling, workers=0)
    index = zarr.open_group(str(path), mode="r")["frame_index"][:]  # (takes, views, K, T)
    for row, take in enumerate(takes):
        for v, view in enumerate(views):
            frames = probe(take.videos[view]).num_frames
            assert frames > 3 * 4, "the window fits these videos"
            got = index[row, v, 0]
            np.testing.assert_array_equal(got, skillformer_indices(3, 4, frames, got[0] + 12))
            assert set(np.diff(got).tolist()) != {4}  # not windows' fixed stride
    other = adapt_config(dataset, tmp_path / "o", strategy="windows").extract_config().sampling
    with pytest.raises(Exception, match="cannot resume"):
        build_frame_store(path, FrameStoreSpec(TINY, vars(geometry), other.to_dict(), "raw"),
                          views, takes, geometry=geometry, sampling=other, workers=0)  # fmt: skip
