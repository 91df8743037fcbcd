"""A hub backbone on a node without the hub: what is cached loads without a network call, what
is not fails at once (no retry loop), naming the checkpoint and how to fetch it.

The command-line cases run in a fresh process (huggingface_hub reads HF_HOME, HF_HUB_OFFLINE
and HF_ENDPOINT at import) under a small recorder that logs every socket connection it
attempts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from skill.pipeline.backbones import BACKBONES

REPO = Path(__file__).resolve().parents[1]
NAME = "timesformer-base-k600"
HUB_ID = BACKBONES[NAME].source
COMMIT = "0123456789abcdef0123456789abcdef01234567"

# Logs the address of every socket connect() to argv[1], then runs `skill ARGS` (argv[2:]) or,
# after "-c", a line of Python.
RECORDER = """
import runpy, socket, sys
log = open(sys.argv[1], "a")
connect = socket.socket.connect
def recorded(self, address):
    log.write(repr(address) + "\\n")
    log.flush()
    return connect(self, address)
socket.socket.connect = recorded
if sys.argv[2] == "-c":
    exec(sys.argv[3])
else:
    sys.argv = ["skill", *sys.argv[2:]]
    runpy.run_module("skill", run_name="__main__")
"""


def run_recorded(tmp_path: Path, args: list[str], **env: str):
    """(completed process, connections attempted) of `args` with a Hugging Face home of its own."""
    log = tmp_path / "connections.log"
    log.write_text("")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    environ.pop("TRANSFORMERS_OFFLINE", None)
    environ.update(HF_HOME=str(tmp_path / "hf"), **env)
    result = subprocess.run(
        [sys.executable, "-c", RECORDER, str(log), *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, log.read_text().splitlines()


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_manifest(folder: Path) -> Path:
    """One take whose video exists (extract checks the files before loading the backbone and
    decodes them only after)."""
    (folder / "ego.mp4").write_bytes(b"\x00")
    manifest = folder / "manifest.jsonl"
    manifest.write_text(json.dumps({"take": "t1", "videos": {"ego": "ego.mp4"}, "label": None}))
    return manifest


def assert_names_checkpoint_and_remedy(stderr: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    message = lines[0]
    assert message.startswith(f"error: backbone {NAME}: checkpoint {HUB_ID} is not in"), message
    assert f"hf download {HUB_ID}" in message and "HF_HOME" in message, message
    assert "--backbone" in message and "not a registered name" not in message, message


def test_uncached_registered_backbone_fails_offline_without_a_connection(tmp_path):
    manifest = tiny_manifest(tmp_path)
    args = ["extract", str(manifest), "--store", "hub.zarr", "--backbone", NAME]
    result, connections = run_recorded(tmp_path, args, HF_HUB_OFFLINE="1")
    assert result.returncode == 2, result.stderr
    assert_names_checkpoint_and_remedy(result.stderr)
    assert "HF_HUB_OFFLINE is set" in result.stderr
    assert connections == []
    assert not (tmp_path / "hub.zarr").exists()


def test_uncached_registered_backbone_fails_after_one_try_when_the_hub_is_unreachable(tmp_path):
    manifest, port = tiny_manifest(tmp_path), closed_port()
    endpoint = f"http://127.0.0.1:{port}"
    args = ["extract", str(manifest), "--store", "hub.zarr"]  # the default backbone
    result, connections = run_recorded(tmp_path, args, HF_ENDPOINT=endpoint)
    assert result.returncode == 2, result.stderr
    assert_names_checkpoint_and_remedy(result.stderr)
    assert f"{endpoint} did not answer" in result.stderr
    # One reachability check, no retry loop.
    assert connections == [repr(("127.0.0.1", port))]
    assert not (tmp_path / "hub.zarr").exists()


# A checkpoint loaded in a fresh process each; the default run meets the offline and the
# unreachable hub with the uncached tests above.
@pytest.mark.slow
@pytest.mark.parametrize("offline", [True, False], ids=["offline", "hub-unreachable"])
def test_cached_registered_backbone_loads_without_a_connection(tmp_path, offline):
    # A tiny TimeSformer saved where huggingface_hub's cache keeps the registered checkpoint.
    from skill.pipeline.backbones import save_tiny_checkpoint

    repo = tmp_path / "hf" / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    save_tiny_checkpoint("tiny-timesformer", repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    code = (
        "import json; from skill.pipeline.backbones import load_backbone; "
        f"print(json.dumps(load_backbone({NAME!r}, num_frames=2).provenance()))"
    )
    env = (
        {"HF_HUB_OFFLINE": "1"} if offline else {"HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    )
    result, connections = run_recorded(tmp_path, ["-c", code], **env)
    assert result.returncode == 0, result.stderr
    provenance = json.loads(result.stdout.strip().splitlines()[-1])
    assert (provenance["name"], provenance["source"]) == (NAME, HUB_ID)
    assert (provenance["family"], provenance["revision"]) == ("timesformer", COMMIT)
    assert connections == []


def test_an_optional_preprocessor_file_the_cached_snapshot_lacks_is_not_asked_for(
    tmp_path, monkeypatch
):
    # V-JEPA 2 reads video_preprocessor_config.json, else preprocessor_config.json: a snapshot
    # with only the second loads offline (in this process: the cache and offline mode are
    # read from huggingface_hub.constants when used).
    from huggingface_hub import constants

    from skill.pipeline.backbones import load_backbone, save_tiny_checkpoint

    name = "vjepa2-vitl-256"
    repo = tmp_path / ("models--" + BACKBONES[name].source.replace("/", "--"))
    snapshot = save_tiny_checkpoint("tiny-vjepa2", repo / "snapshots" / COMMIT)
    (snapshot / "video_preprocessor_config.json").rename(snapshot / "preprocessor_config.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_network(self, address):
        raise AssertionError(f"a connection to {address} was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    backbone = load_backbone(name, num_frames=2)
    assert backbone.provenance()["revision"] == COMMIT
