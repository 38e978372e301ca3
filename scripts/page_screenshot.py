"""Screenshot of the web page after a finished search (the README's picture), from a running gateway.

    .venv/bin/atomthink serve &
    .venv/bin/python scripts/page_screenshot.py --out docs/web-page.png

Drives Debian's Chromium (``/usr/bin/chromium``) with Playwright; prints the answer and the node count.
"""

from __future__ import annotations

import argparse
import tempfile

from playwright.sync_api import sync_playwright

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", default="docs/web-page.png")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--question", default=None, help="instead of the example's question")
    parser.add_argument("--mode", default="slow")
    parser.add_argument("--strategy", default="beam")
    parser.add_argument("--candidates", default="3")
    parser.add_argument("--beam-width", default="2")
    parser.add_argument("--max-steps", default="6")
    parser.add_argument("--temperature", default="1.6")
    parser.add_argument("--seed", default="13")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=args.chromium, headless=True, args=FLAGS, viewport={"width": 1500, "height": 860}
        )
        page = context.new_page()
        page.goto(args.url + "/")
        page.click("#use-example")
        page.wait_for_selector("#preview[src^='data:image/png']", state="attached")
        if args.question:
            page.fill("#question", args.question)
        page.select_option("#mode", args.mode)
        page.select_option("#strategy", args.strategy)
        for field in ("candidates", "beam-width", "max-steps", "temperature", "seed"):
            page.fill(f"#{field}", getattr(args, field.replace("-", "_")))
        page.click("#submit")
        page.wait_for_function("['done', 'error'].includes(document.body.dataset.status)", timeout=300_000)
        page.screenshot(path=args.out, full_page=True)
        print(page.text_content("#status"), "answer:", page.text_content("#answer"), "->", args.out)
        context.close()


if __name__ == "__main__":
    main()
