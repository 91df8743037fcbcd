"""install.sh: which pip commands it runs for each machine (GPU or not, torch installed or not,
a torch index that answers, does not answer, or is set empty).

install.sh runs under a PATH whose `nvidia-smi` says whether there is a GPU, with PYTHON set
to a wrapper that records `-m pip` commands instead of running them and runs everything else
(install.sh's own checks) with this interpreter, whose `torch` is a stub of a chosen version.
The torch index is a local HTTP server that counts the requests it gets, or a closed port.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIN = "2.13.0"
INSTALL_SKILL = "install -e .[dev]"

FAKE_PYTHON = """#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  shift 2
  echo "$*" >> "$PIP_LOG"
  exit 0
fi
exec {python} "$@"
"""

# The torch a stub stands for: None (not installed), or (version, CUDA version or None).
TORCH_STUBS = {
    "absent": None,
    "pinned-cpu": (f"{PIN}+cpu", None),
    "pinned-cuda": (f"{PIN}+cu130", "13.0"),
    "older-cpu": ("2.6.0+cpu", None),
}


class _CountingIndex(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def index():
    """(URL of a local index that answers, list of the paths it was asked for)."""
    _CountingIndex.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingIndex)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/whl/cpu", _CountingIndex.requests
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/whl/cpu"


def run_install(tmp_path: Path, *, gpu: bool, torch: str, **env: str):
    """(completed install.sh, pip commands it ran)."""
    bin_dir, stub_dir = tmp_path / "bin", tmp_path / "stub" / "torch"
    bin_dir.mkdir()
    stub_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\nexit {0 if gpu else 1}\n")
    for tool in (python, bin_dir / "nvidia-smi"):
        tool.chmod(0o755)
    stub = TORCH_STUBS[torch]
    (stub_dir / "__init__.py").write_text(
        "raise ImportError('no torch')\n"
        if stub is None
        else f"__version__ = {stub[0]!r}\nclass version:\n    cuda = {stub[1]!r}\n"
    )
    pip_log = tmp_path / "pip.log"
    pip_log.write_text("")
    environ = {
        "PATH": f"{bin_dir}{os.pathsep}{Path(shutil.which('sh')).parent}{os.pathsep}/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHON": str(python),
        "PYTHONPATH": str(stub_dir.parent),
        "PIP_LOG": str(pip_log),
        **env,
    }
    result = subprocess.run(
        ["bash", str(REPO / "install.sh")], env=environ, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result, pip_log.read_text().splitlines()


def test_cpu_machine_installs_the_cpu_build_from_the_index_that_answers(tmp_path, index):
    url, asked = index
    result, pip = run_install(tmp_path, gpu=False, torch="absent", TORCH_INDEX_URL=url)
    assert pip == [f"install torch=={PIN} --index-url {url}", INSTALL_SKILL]
    assert asked == ["/whl/cpu/"]  # the one probe


def test_an_index_that_does_not_answer_is_asked_once_then_the_configured_one_is_used(tmp_path):
    url = closed_port_url()
    result, pip = run_install(tmp_path, gpu=False, torch="older-cpu", TORCH_INDEX_URL=url)
    assert pip == [f"install torch=={PIN}", INSTALL_SKILL]  # pip never sees the dead index
    said = [line for line in result.stdout.splitlines() if url in line]
    assert len(said) == 1 and "did not answer" in said[0] and "configured" in said[0]


@pytest.mark.parametrize("gpu, torch", [(False, "pinned-cpu"), (True, "pinned-cuda")])
def test_a_pinned_torch_already_installed_is_kept_without_asking_the_index(
    tmp_path, index, gpu, torch
):
    url, asked = index
    result, pip = run_install(tmp_path, gpu=gpu, torch=torch, TORCH_INDEX_URL=url)
    assert pip == [INSTALL_SKILL]
    assert asked == []
    assert "already installed" in result.stdout


def test_an_empty_torch_index_means_the_configured_package_index(tmp_path):
    result, pip = run_install(tmp_path, gpu=False, torch="absent", TORCH_INDEX_URL="")
    assert pip == [f"install torch=={PIN}", INSTALL_SKILL]


def test_a_gpu_machine_without_torch_installs_the_cuda_build(tmp_path, index):
    url, asked = index
    result, pip = run_install(tmp_path, gpu=True, torch="absent", TORCH_INDEX_URL=url)
    assert pip == [f"install torch=={PIN}", INSTALL_SKILL]
    assert asked == []


def test_the_pin_can_be_changed(tmp_path, index):
    url, _ = index
    result, pip = run_install(
        tmp_path, gpu=False, torch="older-cpu", TORCH_INDEX_URL=url, TORCH_VERSION="2.6.0"
    )
    assert pip == [INSTALL_SKILL]
