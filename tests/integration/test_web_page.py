"""The page at ``/`` in a real headless Chromium (Debian's, driven by Playwright) against a real gateway."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.servers import ServerProcess

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SEARCH = {"mode": "slow", "strategy": "beam", "candidates": "3", "beam-width": "2", "max-steps": "6",
          "temperature": "1.6", "seed": "13"}  # fmt: skip


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile and page; console errors and page errors are collected on ``page.errors``."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/install.sh installs it with apt)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1500, "height": 900},
        )  # fmt: skip
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.errors = errors
        try:
            yield page
        finally:
            context.close()


def test_page_draws_the_live_search_and_the_answer(gateway: ServerProcess, page: Any, tmp_path: Path) -> None:
    page.goto(gateway.url + "/")
    assert page.title().startswith("AtomThink Serve")
    page.click("#use-example")
    page.wait_for_selector("#preview[src^='data:image/png']", state="attached")
    question = page.input_value("#question")
    page.select_option("#mode", SEARCH["mode"])
    page.select_option("#strategy", SEARCH["strategy"])
    for field in ("candidates", "beam-width", "max-steps", "temperature", "seed"):
        page.fill(f"#{field}", SEARCH[field])
    # record the node count each time the tree is redrawn, with the page's status at that moment
    page.evaluate("""() => {
        window.samples = [];
        new MutationObserver(() => window.samples.push(
            [document.body.dataset.status, document.querySelectorAll('#tree-svg .node').length]
        )).observe(document.getElementById('tree-svg'), {childList: true});
    }""")
    page.click("#submit")
    page.wait_for_function("['done', 'error'].includes(document.body.dataset.status)", timeout=120_000)
    assert page.get_attribute("body", "data-status") == "done", page.text_content("#status")
    samples: list[list[Any]] = page.evaluate("window.samples")
    running = [count for status, count in samples if status == "running"]
    assert len(set(running)) >= 3 and running == sorted(running), f"the tree grows while searching: {running}"
    final_count = page.locator("#tree-svg .node").count()
    assert 0 < max(running) <= final_count

    example = httpx.get(gateway.url + "/static/example.png").content
    expected = httpx.post(f"{gateway.url}/solve", timeout=120, json={
        "question": question, "image": "data:image/png;base64," + base64.b64encode(example).decode(),
        "mode": "slow", "strategy": "beam", "candidates": 3, "beam_width": 2, "max_steps": 6, "temperature": 1.6,
        "seed": 13,
    }).json()  # fmt: skip
    assert page.text_content("#answer") == (expected["answer"] or "(none)")
    assert final_count == expected["stats"]["expanded_nodes"]
    assert page.locator("#steps li").count() == len(expected["steps"])
    assert page.locator("#tree-svg .node.chosen").count() == len(expected["steps"])
    assert page.locator("#timings tr").count() >= 4
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert page.errors == []


def test_page_shows_a_typed_error(gateway: ServerProcess, page: Any) -> None:
    page.goto(gateway.url + "/")
    page.fill("#question", "")
    page.evaluate("document.getElementById('question').removeAttribute('required')")
    page.click("#submit")
    page.wait_for_function("document.body.dataset.status === 'error'", timeout=30_000)
    assert "question" in (page.text_content("#status") or "")
    assert all("422" in error for error in page.errors), "only the refused request is logged"


def test_static_files_are_served_and_nothing_else(gateway: ServerProcess) -> None:
    for name in ("app.js", "style.css", "example.png"):
        assert httpx.get(f"{gateway.url}/static/{name}").status_code == 200
    assert httpx.get(f"{gateway.url}/static/..%2Fapp.py").status_code == 404
    assert httpx.get(f"{gateway.url}/static/__init__.py").status_code == 404
    for path in ("/", "/static/app.js", "/static/style.css"):  # nothing is loaded from the internet
        text = httpx.get(gateway.url + path).text.replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
