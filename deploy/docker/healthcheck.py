"""Container healthcheck: the gateway's ``/healthz``, else a worker's ``/healthz`` (on its metrics port); exit 0 when
either answers 200."""

import os
import sys
import urllib.request


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return bool(response.status == 200)
    except OSError:
        return False


PORTS = (os.environ.get("ATOMTHINK_PORT", "8000"), os.environ.get("ATOMTHINK_METRICS_PORT", "9400"))
URLS = (f"http://127.0.0.1:{PORTS[0]}/healthz", f"http://127.0.0.1:{PORTS[1]}/healthz")
sys.exit(0 if any(answers(url) for url in URLS) else 1)
