#!/usr/bin/env bash
# Lint, type-check and run every test. Starts a throwaway Redis when none answers at ATOMTHINK_TEST_REDIS_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -m ruff check .
$PY -m ruff format --check .
$PY -m mypy
.venv/bin/lint-imports --no-cache  # the floors between packages: pyproject.toml [tool.importlinter]
$PY -m mypy deploy/grafana/dashboards.py  # dashboards as code (not a package)
REDIS_PORT=${ATOMTHINK_TEST_REDIS_PORT:-6379}
if ! $PY -c "import redis,sys; redis.Redis(port=$REDIS_PORT, socket_timeout=1).ping()" 2>/dev/null; then
  echo "no Redis on port $REDIS_PORT: starting one"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
  for _ in $(seq 50); do $PY -c "import redis; redis.Redis(port=$REDIS_PORT).ping()" 2>/dev/null && break; sleep 0.1; done
fi
set +e
$PY -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
