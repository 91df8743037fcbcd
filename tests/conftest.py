"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest

from tests.token_store import SyntheticStore, shared_token_store


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
