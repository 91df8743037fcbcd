"""A store that is still being written or was interrupted is not quietly used: fit, sweep and
predict say its state and counts and refuse (exit 2, nothing written) unless the user passes
--allow-unfinished, which then uses the completed takes only."""

from __future__ import annotations

import pytest

from skill.cache.store import TokenStore
from tests.extract_helpers import invoke_cli
from tests.token_store import build_token_store


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A store with one take never written, as a killed extract leaves it."""
    return build_token_store(
        tmp_path_factory.mktemp("unfinished") / "s.zarr", n_participants=12, pending=True
    )


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run fitted on a finished store of the same provenance."""
    finished = build_token_store(
        tmp_path_factory.mktemp("finished") / "s.zarr", n_participants=12, pending=False
    )
    out = tmp_path_factory.mktemp("runs")
    code, output = invoke_cli("fit", str(finished.path), "--head", "mean", "--epochs", "1",
                              "--out", str(out), "--name", "run", "--no-plots")  # fmt: skip
    assert code == 0, output
    return out / "run"


def fit_args(store, out):
    return ["fit", str(store), "--head", "mean", "--epochs", "1", "--out", str(out),
            "--no-plots"]  # fmt: skip


def refusal(store, state: str) -> str:
    total = len(store.take_ids)
    complete = total - len(store.pending) - len(store.failed) - len(store.all_views_invalid)
    return (
        f"the store is {state}: {complete} of {total} takes complete, {len(store.pending)} "
        f"pending, {len(store.failed) + len(store.all_views_invalid)} failed"
    )


def test_fit_refuses_an_interrupted_store_naming_its_state_and_counts(interrupted, tmp_path):
    code, output = invoke_cli(*fit_args(interrupted.path, tmp_path / "runs"))
    assert code == 2 and output.startswith("error: "), output
    assert refusal(interrupted, "interrupted") in output and "--allow-unfinished" in output
    assert not (tmp_path / "runs").exists()


def test_fit_allow_unfinished_uses_the_completed_takes(interrupted, tmp_path):
    code, output = invoke_cli(*fit_args(interrupted.path, tmp_path / "runs"), "--allow-unfinished")
    assert code == 0, output
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "config.json").is_file()


def test_a_store_being_written_is_named_with_its_writer(interrupted, tmp_path):
    store = TokenStore.open(interrupted.path, mode="a")
    with store.writer_lock():
        code, output = invoke_cli(*fit_args(interrupted.path, tmp_path / "runs"))
    assert code == 2, output
    assert "the store is in progress by pid " in output


def test_sweep_refuses_an_interrupted_store(interrupted, tmp_path):
    code, output = invoke_cli("sweep", str(interrupted.path), "--heads", "mean", "--view-sets",
                              "all", "--epochs", "1", "--out", str(tmp_path / "runs"),
                              "--no-plots")  # fmt: skip
    assert code == 2 and refusal(interrupted, "interrupted") in output, output
    assert not list((tmp_path / "runs").rglob("config.json"))


def test_predict_refuses_an_interrupted_store_unless_allowed(interrupted, run_folder, tmp_path):
    out = tmp_path / "pred.csv"
    args = ["predict", str(interrupted.path), "--run", str(run_folder), "--out", str(out)]
    code, output = invoke_cli(*args)
    assert code == 2 and refusal(interrupted, "interrupted") in output, output
    assert not out.exists()
    code, output = invoke_cli(*args, "--allow-unfinished")
    assert code == 0, output
    predicted = {line.split(",")[0] for line in out.read_text().splitlines()[1:]}
    assert predicted and not predicted & set(interrupted.pending)
