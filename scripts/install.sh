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

# The vLLM CPU engine in a venv of its own (.venv-vllm), for the real-engine tests and benchmarks; the core .venv
# never gets vLLM (its pins and CUDA extras break the transformers multimodal path). ATOMTHINK_SKIP_VLLM=1 skips it.
./scripts/install-vllm.sh

# Prometheus and promtool (Debian package) for the dashboard tests: tests/unit/deploy/test_deploy_compose.py parses every
# panel's PromQL with promtool, tests/integration/test_dashboards_prometheus.py runs a private server on a free port.
# Only when missing and apt-get exists; the package's own service is never started (policy-rc.d) nor left on :9090.
install_prometheus() {
  local sudo="" blocker=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo -n true 2>/dev/null || { echo "prometheus missing and no root: dashboard tests will skip" >&2; return 0; }
    sudo="sudo -n"
  fi
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null && $sudo chmod 755 /usr/sbin/policy-rc.d
    blocker=1
  fi
  local apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0"
  $apt install -y --no-install-recommends prometheus >/dev/null 2>&1 \
    || { $apt update >/dev/null 2>&1 && $apt install -y --no-install-recommends prometheus >/dev/null 2>&1; } \
    || echo "apt-get install prometheus failed: dashboard tests will skip" >&2
  [ -z "$blocker" ] || $sudo rm -f /usr/sbin/policy-rc.d
  if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled --quiet prometheus 2>/dev/null; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif command -v service >/dev/null 2>&1; then
    $sudo service prometheus stop >/dev/null 2>&1 || true
  fi
}
if ! command -v prometheus >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  install_prometheus
fi

# Chromium (Debian package) for the web page tests: tests/integration/test_web_page.py drives it with Playwright
# (the Python package, a dev dependency) through executable_path=/usr/bin/chromium; `playwright install` is not used.
install_chromium() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo -n true 2>/dev/null || { echo "chromium missing and no root: web page tests will skip" >&2; return 0; }
    sudo="sudo -n"
  fi
  local apt="$sudo env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0"
  $apt install -y --no-install-recommends chromium >/dev/null 2>&1 \
    || { $apt update >/dev/null 2>&1 && $apt install -y --no-install-recommends chromium >/dev/null 2>&1; } \
    || echo "apt-get install chromium failed: web page tests will skip" >&2
}
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  install_chromium
fi
