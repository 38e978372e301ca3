#!/usr/bin/env bash
# Create .venv and install AtomThink Serve with its test tools. Torch comes first, pinned to the CPU build
# that pip finds locally on the project machines; a newer torch (CUDA) is fine on GPU nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
