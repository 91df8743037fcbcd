"""One device rule for every stage (skill.devices.resolve_device)."""

from __future__ import annotations

import pytest
import torch

from skill.devices import resolve_device
from skill.errors import ConfigError, SkillError


def test_cpu_and_auto():
    assert resolve_device("cpu") == resolve_device(" CPU ") == "cpu"
    want = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == want


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_config_error(device):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device(device)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_devices_are_refused_with_the_choices(device):
    with pytest.raises(SkillError, match="use cpu, cuda, cuda:N or auto"):
        resolve_device(device)


@pytest.mark.gpu
def test_cuda_means_this_ranks_gpu():
    count = torch.cuda.device_count()
    assert resolve_device("cuda", local_rank=count + 1) == f"cuda:{(count + 1) % count}"
    assert resolve_device("cuda:0") == "cuda:0"
