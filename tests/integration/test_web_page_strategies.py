"""The page draws the issue-25 strategies' trees in a real headless Chromium against a real gateway: its strategy
menu comes from the server's registry, and each tree shows what the strategy streamed (step confidences, particles,
subtree heads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.servers import ServerProcess
from tests.integration.test_web_page import page  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

CASES = [
    ("particle_filter", "particle"),
    ("dvts", "kept by subtree"),
    ("deepconf_online", "confidence"),
    ("self_certainty_vote", "self-certainty"),
]


@pytest.mark.parametrize(("strategy", "annotation"), CASES, ids=[c[0] for c in CASES])
def test_page_draws_each_new_strategy_s_tree(
    gateway: ServerProcess,
    page: Any,  # noqa: F811
    tmp_path: Path,
    strategy: str,
    annotation: str,
) -> None:
    page.goto(gateway.url + "/")
    page.wait_for_function(
        "[...document.querySelectorAll('#strategy option')].some((o) => o.value === 'self_certainty_vote')"
    )
    registered = page.evaluate("[...document.querySelectorAll('#strategy option')].map((o) => o.value)")
    schema = httpx.get(gateway.url + "/openapi.json").json()
    assert "particle_filter" in registered and "deepconf" in registered
    assert strategy in str(schema)
    page.click("#use-example")
    page.wait_for_selector("#preview[src^='data:image/png']", state="attached")
    page.select_option("#mode", "slow")
    page.select_option("#strategy", strategy)
    page.fill("#candidates", "4")
    if strategy == "dvts":
        assert page.is_enabled("#beam-width")
        page.fill("#beam-width", "2")
    page.fill("#max-steps", "3")
    page.fill("#temperature", "1.6")
    page.fill("#seed", "3")
    page.click("#submit")
    page.wait_for_function("['done', 'error'].includes(document.body.dataset.status)", timeout=180_000)
    assert page.get_attribute("body", "data-status") == "done", page.text_content("#status")
    nodes = page.locator("#tree-svg .node")
    assert nodes.count() > 0
    titles = page.eval_on_selector_all("#tree-svg .node title", "(ts) => ts.map((t) => t.textContent)")
    assert any(annotation in title for title in titles), titles[:3]
    assert page.locator("#tree-svg .node.chosen").count() == page.locator("#steps li").count()
    page.screenshot(path=str(tmp_path / f"{strategy}.png"), full_page=True)
    assert page.errors == []
