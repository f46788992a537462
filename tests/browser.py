"""Headless Chromium for the HTML-report tests: one offline page that records what went wrong.

Owns how the report tests open a page: Debian's chromium through playwright, with every
background network feature off, and lists of console errors/warnings, page errors and
requested URLs for the test to assert on (a report page must load nothing from the network).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@contextmanager
def offline_page(width: int = 1280, height: int = 720, *,
                 console: bool = True) -> Iterator[tuple[Any, list[str], list[str]]]:
    """``(page, problems, requests)``: problems collects page errors (and console errors and
    warnings when ``console``), requests every URL the page asked for."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            if console:
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            yield page, problems, requests
        finally:
            browser.close()


def num(text: str) -> float:
    """A number as the reports print it ("1,234", "0.25%")."""
    return float(text.replace(",", "").replace("%", "").strip())
