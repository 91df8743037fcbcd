#!/usr/bin/env bash
# One command to install skill and its test tools: `bash install.sh`.
# Picks the PyTorch build for this machine: CUDA where an NVIDIA GPU answers, CPU otherwise
# (the CPU index keeps pip from pulling several GB of CUDA packages on a machine without a GPU).
# A torch of the pinned version already installed (with CUDA where there is a GPU) is kept.
# TORCH_INDEX_URL: where the CPU build comes from (default PyTorch's CPU index; empty: the
# package index pip is configured with). An index that does not answer is asked once, then
# the configured one is used.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_INDEX_URL=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
PROBE_TIMEOUT_S=5

# Exit 0 when the installed torch is TORCH_VERSION (any local tag: +cpu, +cu130), built with
# CUDA if $1 is "cuda".
torch_is_installed() {
  "$PY" -c '
import sys
try:
    import torch
except Exception:
    sys.exit(1)
version, build = sys.argv[1], sys.argv[2]
ok = torch.__version__.split("+")[0] == version and (build != "cuda" or torch.version.cuda)
sys.exit(0 if ok else 1)' "$TORCH_VERSION" "$1" >/dev/null 2>&1
}

# Exit 0 when the index answers within PROBE_TIMEOUT_S (one request, no retries).
index_answers() {
  "$PY" -c '
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/", timeout=float(sys.argv[2])).close()
except Exception:
    sys.exit(1)' "$1" "$PROBE_TIMEOUT_S" >/dev/null 2>&1
}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  build=cuda
else
  build=cpu
fi
if torch_is_installed "$build"; then
  echo "install.sh: torch ${TORCH_VERSION} (${build}) is already installed; keeping it"
elif [ "$build" = cuda ]; then
  echo "install.sh: NVIDIA GPU found, installing the CUDA build of torch ${TORCH_VERSION}"
  "$PY" -m pip install "torch==${TORCH_VERSION}"
elif [ -z "$TORCH_INDEX_URL" ]; then
  echo "install.sh: no NVIDIA GPU, installing torch ${TORCH_VERSION} from the configured package index (TORCH_INDEX_URL is empty)"
  "$PY" -m pip install "torch==${TORCH_VERSION}"
elif index_answers "$TORCH_INDEX_URL"; then
  echo "install.sh: no NVIDIA GPU, installing the CPU build of torch ${TORCH_VERSION} from ${TORCH_INDEX_URL}"
  "$PY" -m pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"
else
  echo "install.sh: ${TORCH_INDEX_URL} did not answer; installing torch ${TORCH_VERSION} from the configured package index instead (on Linux x86 PyPI's is the CUDA build; set TORCH_INDEX_URL to a CPU index to avoid it)"
  "$PY" -m pip install "torch==${TORCH_VERSION}"
fi
"$PY" -m pip install -e ".[dev]"
