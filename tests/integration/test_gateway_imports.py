"""The gateway on the Redis queue loads no model library: in a fresh interpreter, the app is built, its lifespan run
over a real Redis, a solve sent through it (it fails: no worker answers), and neither ``torch`` nor
``transformers`` is in ``sys.modules`` afterwards."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from harness.servers import REPO_ROOT
from tests.conftest import TEST_REDIS_URL

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys

    import httpx

    from atomthink.settings import Settings
    from service.app import create_app
    from service.runtime import gateway_runtime


    async def main() -> None:
        settings = Settings(queue="redis", redis_url=sys.argv[1], key_prefix=sys.argv[2], job_timeout_s=0.3)
        app = create_app(gateway_runtime, settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                ready = await client.get("/readyz")
                solve = await client.post("/solve", json={"question": "1 + 1 = ?", "mode": "direct"})
        loaded = sorted(name for name in ("torch", "transformers") if name in sys.modules)
        print(json.dumps({"readyz": ready.json(), "solve": solve.json(), "loaded": loaded}))


    asyncio.run(main())
    """
)


def test_gateway_on_redis_imports_neither_torch_nor_transformers(redis_prefix: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, TEST_REDIS_URL, redis_prefix],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["readyz"]["queue"] == "redis" and result["readyz"]["workers"] == {"policy": 0, "prm": 0}
    assert result["solve"]["error"]["code"] == "job_timeout"  # the search ran over Redis; no worker answered
    assert result["loaded"] == []
