"""Screenshots for the README: the keypad after pressing 7, a finished training run, and the aliases with
production's history open. Starts its own server.

  python docs/screenshots.py        (writes docs/keypad.png, docs/training.png and docs/aliases.png)
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
    # management open: the shots need no key dialog (the server listens on loopback only, for the run)
    server = Server(Path(tempfile.mkdtemp(prefix="seq2seq-shots-")), SEQ2SEQ_AUTH="disabled").start()
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
            with server.client() as client:
                client.put("/aliases/staff", json={"model": "default", "reason": "what the staff try first"})
            page.reload()
            production = page.get_by_test_id("aliases-table").locator('[data-alias="production"]')
            production.get_by_test_id("alias-history-toggle").click()
            page.locator("#alias-history-production").get_by_test_id("alias-move").first.wait_for()
            page.locator("#aliases-title").locator("..").screenshot(path=str(ROOT / "docs" / "aliases.png"))
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
