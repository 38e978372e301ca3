"""The gateway on the Redis queue loads no model library: in a fresh interpreter, the app is built, its lifespan run
over a real Redis, a solve sent through it (it fails: no worker answers), and neither ``torch`` nor
``transformers`` is in ``sys.modules`` afterwards. With the first-prompt context check on (``atomthink gateway``'s
runtime, counting with the shipped checkpoints' tokenizer files), an over-long question is refused by the count."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from harness.servers import REPO_ROOT
from tests.conftest import TEST_REDIS_URL

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys

    import httpx

    from atomthink.settings import Settings
    from atomthink_serve.cli import gateway_factory
    from service.app import create_app
    from service.runtime import gateway_runtime


    async def main() -> None:
        settings = Settings(queue="redis", redis_url=sys.argv[1], key_prefix=sys.argv[2], job_timeout_s=0.3)
        app = create_app(gateway_factory() if sys.argv[3] == "on" else gateway_runtime, settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                ready = await client.get("/readyz")
                solve = await client.post("/solve", json={"question": "1 + 1 = ?", "mode": "direct"})
                long = await client.post("/solve", json={"question": "x + 1 = 2? " * 360, "mode": "direct"})
        loaded = sorted(name for name in ("torch", "transformers") if name in sys.modules)
        answers = {"readyz": ready.json(), "solve": solve.json(), "long": [long.status_code, long.json()]}
        print(json.dumps({**answers, "loaded": loaded}))


    asyncio.run(main())
    """
)


@pytest.mark.parametrize("context_check", ["off", "on"])
def test_gateway_on_redis_imports_neither_torch_nor_transformers(redis_prefix: str, context_check: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, TEST_REDIS_URL, redis_prefix, context_check],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["readyz"]["queue"] == "redis" and result["readyz"]["workers"] == {"policy": 0, "prm": 0}
    assert result["solve"]["error"]["code"] == "job_timeout"  # the search ran over Redis; no worker answered
    status, long = result["long"]
    if context_check == "on":  # counted at the gateway: a 400 naming the policy's window, before any job
        assert status == 400 and long["error"]["code"] == "context_length_exceeded", long
        assert "policy's context window of 1024 positions" in long["error"]["message"]
    else:  # only the workers would count: the job is queued and times out
        assert long["error"]["code"] == "job_timeout", long
    assert result["loaded"] == []
