"""Headless Chromium for the browser tests (Debian's chromium through Playwright, never a downloaded
browser) and axe-core, the accessibility check every page of the web apps passes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components import unavailable

CHROMIUM = os.environ.get("ALLIANCE_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
AXE = Path(__file__).resolve().parents[1] / "gateway" / "web" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"


@contextmanager
def chromium(profile: Path, **context_options) -> Iterator:
    """A persistent Chromium context (its own profile folder), the pages' CSP in force."""
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        unavailable("chromium", f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set ALLIANCE_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("chromium", "playwright (Python package) not installed")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                       **context_options)
        try:
            yield context
        finally:
            context.close()


def axe_violations(page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core's violations of the page as it is now, of the given impacts (rule id, help, where)."""
    if not AXE.exists():
        unavailable("toolchain", f"{AXE} missing (make install runs npm install in gateway/web)")
    page.evaluate(AXE.read_text())  # through the debugging protocol: the page's CSP forbids inline scripts, rightly
    result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"], "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result if v["impact"] in impacts]


def screenshot(page, name: str) -> None:
    """A full-page screenshot under var/screenshots (not committed): what each screen looked like."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
