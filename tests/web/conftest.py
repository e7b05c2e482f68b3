"""A real headless Chromium (Debian's, at /usr/bin/chromium) driven by Playwright for Python."""
from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("SEQ2SEQ_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(f"no Chromium at {CHROMIUM}: `make install` installs Debian's chromium, or set SEQ2SEQ_CHROMIUM")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def open_page(browser):
    """A fresh page that records console errors and uncaught exceptions; the test asserts there are none."""
    pages = []

    def open_(url: str, width: int = 1200):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        page.errors = []
        page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto(url)
        pages.append(context)
        return page

    yield open_
    for context in pages:
        context.close()
