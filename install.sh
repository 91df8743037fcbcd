#!/usr/bin/env bash
# One command to install skill and its test tools: `bash install.sh`.
# Picks the PyTorch build for this machine: CUDA where an NVIDIA GPU answers, CPU otherwise
# (the CPU index keeps pip from pulling several GB of CUDA packages on a machine without a GPU).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "install.sh: NVIDIA GPU found, installing the CUDA build of torch ${TORCH_VERSION}"
  "$PY" -m pip install "torch==${TORCH_VERSION}"
else
  echo "install.sh: no NVIDIA GPU, installing the CPU build of torch ${TORCH_VERSION}"
  "$PY" -m pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
fi
"$PY" -m pip install -e ".[dev]"
