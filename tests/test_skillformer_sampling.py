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
    return AdaptConfig.from_settings(manifest, out, **{**settings, **overrides})


def test_adapt_passes_the_placement_to_extract_and_prints_it(tmp_path):
    cfg = adapt_config(tmp_path / "m.jsonl", tmp_path / "out", strategy="skillformer-windows")
    assert cfg.extract_config().sampling.strategy == "skillformer-windows"
    assert "--sampling skillformer-windows --stride 4" in cfg.extract_command()
    windows = adapt_config(tmp_path / "m.jsonl", tmp_path / "out", strategy="windows")
    assert windows.extract_config().sampling != cfg.extract_config().sampling


def test_the_adapt_frame_store_decodes_skillformers_frames(dataset, tmp_path):
    import zarr

    from skill.adapt.frames import build_frame_store
    from skill.pipeline.decode.geometry import FrameGeometry
    from skill.pipeline.decode.index import probe
    from skill.pipeline.manifest import read_takes
    from skill.tasks import task_record

    decoding = adapt_config(dataset, tmp_path / "o", strategy="skillformer-windows").extract
    data = read_takes(dataset)
    takes, views = data.takes, ["ego", "exo1"]
    geometry = FrameGeometry(shortest_edge=32, crop_height=32, crop_width=32)
    task = task_record(data.task, data.schema)
    path = tmp_path / "frames.zarr"
    build_frame_store(path, decoding, views, takes, backbone=TINY, geometry=geometry, task=task,
                      codec="raw")  # fmt: skip
    index = zarr.open_group(str(path), mode="r")["frame_index"][:]  # (takes, views, K, T)
    for row, take in enumerate(takes):
        for v, view in enumerate(views):
            frames = probe(take.videos[view]).num_frames
            assert frames > 3 * 4, "the window fits these videos"
            got = index[row, v, 0]
            np.testing.assert_array_equal(got, skillformer_indices(3, 4, frames, got[0] + 12))
            assert set(np.diff(got).tolist()) != {4}  # not windows' fixed stride
    other = adapt_config(dataset, tmp_path / "o", strategy="windows").extract
    with pytest.raises(Exception, match="cannot resume"):
        build_frame_store(path, other, views, takes, backbone=TINY, geometry=geometry, task=task,
                          codec="raw")  # fmt: skip
