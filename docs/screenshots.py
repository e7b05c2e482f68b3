"""Screenshots for the README: the keypad after pressing 7, and a finished training run. Starts its own server.

  python docs/screenshots.py        (writes docs/keypad.png and docs/training.png)
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import Server  # noqa: E402
from web.conftest import ARGS, CHROMIUM  # noqa: E402


def main() -> None:
    server = Server(Path(tempfile.mkdtemp(prefix="seq2seq-shots-"))).start()
    server.wait_ready()
    url = server.url
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(url + "/")
            page.get_by_test_id("digit-7").click()
            page.get_by_test_id("suggestion").first.click()
            page.get_by_test_id("attention").wait_for()
            page.locator("#keypad-card").screenshot(path=str(ROOT / "docs" / "keypad.png"))
            form = page.get_by_test_id("train-form")
            page.locator("#load-corpus").click()
            expect(form.locator("textarea[name=sequences]")).not_to_be_empty()
            form.locator("input[name=steps]").fill("1500")
            form.locator("input[name=name]").fill("default corpus, 1500 steps")
            form.locator("button[type=submit]").click()
            expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=120_000)
            page.screenshot(path=str(ROOT / "docs" / "training.png"), full_page=True)
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
