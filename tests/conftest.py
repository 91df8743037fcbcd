"""Fixtures shared by the test files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.token_store import SyntheticStore, shared_token_store

BUSY_LOOP = "while True: pass"


@pytest.fixture(scope="session", autouse=True)
def saturated_cores():
    """SKILL_TEST_BUSY_CORES=N runs the session beside N busy loops in other processes, as
    on a CI machine that other jobs load: no test may depend on how fast the machine is
    (`SKILL_TEST_BUSY_CORES=2 bash .ci/run` checks that)."""
    count = int(os.environ.get("SKILL_TEST_BUSY_CORES") or 0)
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]
    yield
    for loop in loops:
        loop.kill()
        loop.wait()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests train tiny heads: one thread is as fast, and two thrash on a busy 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> SyntheticStore:
    """The shared synthetic token store (built once per session, read-only)."""
    return shared_token_store(tmp_path_factory)
