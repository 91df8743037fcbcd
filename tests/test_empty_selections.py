"""Empty selections say why, in one line through the CLI (exit 2): which views failed in how
many completed takes, which split is empty and how big each split is."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from skill.heads.data import SelectionError, load_selection
from tests.extract_helpers import invoke_cli
from tests.token_store import build_token_store, recommit_take_table

QUICK = ["--head", "mean", "--epochs", "1", "--batch-size", "16", "--hidden", "16",
         "--patience", "0", "--no-plots"]  # fmt: skip


def _set_splits(path, old: str, new: str) -> None:
    split = zarr.open_array(str(path), path="split", mode="r+", zarr_format=3)
    values = np.asarray(split[:]).astype(object)
    values[values == old] = new
    split[:] = values
    recommit_take_table(path)  # an edit on purpose, not damage


@pytest.fixture(scope="module")
def no_ego(tmp_path_factory):
    """A store whose ego view failed in every take (exo3 too)."""
    return build_token_store(
        tmp_path_factory.mktemp("no-ego") / "s.zarr", n_participants=8, failed_views=("ego", "exo3")
    )


def completed(info) -> int:
    return len(info.take_ids) - len(info.pending) - len(info.failed) - len(info.all_views_invalid)


def test_fit_on_a_view_that_failed_everywhere(no_ego, tmp_path):
    n = completed(no_ego)
    code, output = invoke_cli("fit", str(no_ego.path), "--views", "ego", *QUICK,
                              "--out", str(tmp_path))  # fmt: skip
    assert code == 2, output
    assert "Traceback" not in output
    assert output.endswith(
        f"{no_ego.path}: no completed take has a valid ego view (ego failed in {n} of {n} "
        "completed takes; views with data: exo1, exo2)"
    )
    code, output = invoke_cli("fit", str(no_ego.path), "--views", "ego,exo3", *QUICK,
                              "--out", str(tmp_path))  # fmt: skip
    assert code == 2, output
    assert (
        f"no completed take has a valid view among ego, exo3 (ego failed in {n} of {n} "
        f"completed takes; exo3 failed in {n} of {n} completed takes; views with data: "
        "exo1, exo2)" in output
    )


def test_no_completed_take_at_all(tmp_path):
    info = build_token_store(
        tmp_path / "s.zarr", n_participants=4, failed_views=("ego", "exo1", "exo2", "exo3")
    )
    with pytest.raises(SelectionError, match=r"no completed take to read \(20 takes in the store"):
        load_selection(info.path, "all")
    code, output = invoke_cli("fit", str(info.path), *QUICK, "--out", str(tmp_path))
    assert code == 2 and "Traceback" not in output
    assert "all pending or failed); run skill extract to finish them" in output


def test_empty_train_split_names_the_split_and_the_sizes(tmp_path):
    info = build_token_store(tmp_path / "s.zarr", n_participants=10)
    _set_splits(info.path, "train", "test")
    code, output = invoke_cli("fit", str(info.path), *QUICK, "--out", str(tmp_path))
    assert code == 2, output
    assert "Traceback" not in output
    assert (
        f"{info.path}: the train split is empty: the store's split column leaves train 0, "
        "val " in output
    )
    assert "add train takes to the store's split column" in output


def test_empty_val_split_names_the_split_and_the_sizes(tmp_path):
    # one participant and no split column: the grouped split cannot carve a val set
    info = build_token_store(tmp_path / "s.zarr", n_participants=1, takes_per_participant=9,
                             with_splits=False)  # fmt: skip
    code, output = invoke_cli("fit", str(info.path), *QUICK, "--out", str(tmp_path))
    assert code == 2, output
    assert "Traceback" not in output
    assert (
        "the val split is empty: the grouped split (val_frac=0.2, 1 participant) leaves "
        "train " in output
    )
    assert ", val 0, test 0 labelled takes" in output


def test_predict_on_a_store_without_the_runs_views(tmp_path):
    good = build_token_store(tmp_path / "good.zarr", n_participants=8)
    code, output = invoke_cli("fit", str(good.path), "--views", "ego", *QUICK,
                              "--out", str(tmp_path / "runs"))  # fmt: skip
    assert code == 0, output
    run = tmp_path / "runs" / "mean-ego-s0"
    bad = build_token_store(tmp_path / "bad.zarr", n_participants=8, failed_views=("ego",))
    code, output = invoke_cli(
        "predict", str(bad.path), "--run", str(run), "--out", str(tmp_path / "p.csv")
    )
    assert code == 2, output
    assert "Traceback" not in output
    n = completed(bad)
    assert (
        f"{bad.path}: no completed take has a valid ego view (ego failed in {n} of {n} "
        "completed takes; views with data: exo1, exo2, exo3)" in output
    )
