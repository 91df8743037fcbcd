"""`skill info` for people: plain lines in words, each sampling setting shown only where its
strategy uses it, and no Python reprs (dicts, None) of the provenance."""

from __future__ import annotations

import json
import re

import pytest

from skill.cache.info import provenance_lines, sampling_line
from skill.pipeline.extract_config import ExtractConfig
from tests.extract_helpers import extract_config, invoke_cli, make_dataset

REPR = re.compile(r"None|\{|\}|'\w+':|\(\)")  # what a printed dict, None or empty tuple shows


@pytest.fixture(scope="module")
def uniform_store(tmp_path_factory):
    from skill.pipeline.extract import run_extract

    folder = tmp_path_factory.mktemp("info")
    manifest = make_dataset(folder / "data", takes=3)
    store = folder / "uniform.zarr"
    run_extract(extract_config(manifest, store))  # tiny preset, uniform sampling
    return store


def test_info_prints_words_not_python_reprs(uniform_store):
    code, text = invoke_cli("info", str(uniform_store))
    assert code == 0, text
    assert not REPR.search(text), text
    assert "completed: 3" in text and "takes by split:" in text
    assert "tiny-timesformer (timesformer, a tiny randomly initialised preset" in text
    assert "adapter: none" in text
    assert "sampling: uniform, 4 frames a clip, 1 clip a view, fixed positions" in text


def test_uniform_sampling_shows_no_stride_though_the_record_keeps_it(uniform_store):
    code, text = invoke_cli("info", str(uniform_store))
    assert code == 0 and "stride" not in text
    code, as_json = invoke_cli("info", str(uniform_store), "--json")
    # The record is what stores and runs are compared by: it stays whole.
    assert json.loads(as_json)["provenance"]["sampling"]["stride"] == 4


def _sampling(**settings) -> dict:
    """A sampling record as `skill extract` writes it for these command-line settings."""
    cfg = ExtractConfig(manifest="m.jsonl", store="s.zarr", **settings)
    return cfg.sampling.to_dict()


def test_each_strategy_shows_the_settings_it_uses():
    windows = sampling_line(_sampling(strategy="windows", frames=16, stride=5, clips=4))
    assert windows == "windows, 16 frames a clip at stride 5, 4 clips a view, fixed positions, " \
                      "exact frames"  # fmt: skip
    segments = sampling_line(_sampling(strategy="segments", frames=16, segments=4, stride=2))
    assert segments.startswith("segments, 16 frames a clip in 4 segments of 4 at stride 2, ")
    jittered = sampling_line(_sampling(strategy="skillformer-windows", jitter=True, seed=7))
    assert "at stride 4" in jittered and "random positions (seed 7)" in jittered
    assert "seed" not in sampling_line(_sampling(strategy="uniform", seed=7))
    snapped = sampling_line(_sampling(strategy="uniform", snap="keyframe"))
    assert snapped.endswith("frames moved to the nearest keyframe")


def test_a_checkpoint_and_an_adapter_are_named_without_reprs():
    provenance = {
        "backbone": {
            "name": "timesformer-base-k600", "family": "timesformer",
            "source": "facebook/timesformer-base-finetuned-k600", "revision": None,
            "weights_sha256": "ab" * 32, "adapter": {"path": "/a/adapter", "sha256": "cd" * 32},
            "time_embedding": "linear",
        },
        "sampling": _sampling(strategy="windows"),
        "tokens": "mean_all",
    }  # fmt: skip
    lines = provenance_lines(provenance)
    assert lines[0] == (
        "backbone: timesformer-base-k600 (timesformer, from "
        "facebook/timesformer-base-finetuned-k600; weights sha256 abababababab...)"
    )
    assert lines[1] == f"adapter: sha256 {'cd' * 32} (from /a/adapter)"
    assert "time embedding: linear" in lines and "tokens: mean_all" in lines
    assert not any(REPR.search(line) for line in lines)
