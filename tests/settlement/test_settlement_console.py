"""The auditor console: login required, read-only; and driven in headless Chromium (Debian's chromium
through Playwright, never a downloaded browser): sign in as the auditor, open an epoch and see its
chart, open a receipt and its proof."""

from __future__ import annotations

import threading
import time

import pytest
from browser import axe_violations, chromium
from fastapi.testclient import TestClient

from contracts.chain import free_port
from settlement.console import ConsoleConfig, check_password, create_console, hash_password

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def console_app(gateway_world):
    cfg = ConsoleConfig(gateway_world.local.alliance, gateway_world.store, gateway_world.accesses(), "auditor",
                        hash_password(PASSWORD, iterations=1_000), sample=3, k=2)
    return create_console(cfg)


def test_password_hashing():
    stored = hash_password("s3cret", iterations=1_000)
    assert check_password("s3cret", stored) and not check_password("s3cret!", stored) and not check_password("x", "garbage")


def test_pages_need_the_auditor_login_and_nothing_writes(console_app):
    client = TestClient(console_app, follow_redirects=False)
    for path in ("/", "/epochs/1", "/audit", "/receipts/grocery/0", "/consent"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get("/api/audit").status_code == 401
    bad = client.post("/login", content="username=auditor&password=wrong&next=/", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "error=1" in bad.headers["location"]
    forged = client.get("/", cookies={"auditor_session": "YXVkaXRvcnw5OTk5OTk5OTk5fGJhZA=="})
    assert forged.status_code == 303
    ok = client.post("/login", content=f"username=auditor&password={PASSWORD.replace(' ', '+')}&next=/consent",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert ok.status_code == 303 and ok.headers["location"] == "/consent"
    page = client.get("/consent")
    assert page.status_code == 200 and "&lt;2" in page.text  # a count below k is suppressed
    # No route changes anything: every route but the login form answers GET only.
    for route in console_app.routes:
        methods = getattr(route, "methods", set()) or set()
        assert methods <= {"GET", "HEAD"} or route.path == "/login"


def test_the_console_refuses_huge_and_deep_bodies_before_reading_them(console_app):
    """The same request guard as the gateways': a body over 64 KiB gets 413, JSON nested too deep 422."""
    client = TestClient(console_app, follow_redirects=False)
    huge = client.post("/login", content="username=auditor&password=" + "x" * 200_000,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413 and huge.json()["code"] == "body_too_large"
    deep = client.post("/login", content="[" * 20_000 + "]" * 20_000, headers={"Content-Type": "application/json"})
    assert deep.status_code == 422 and deep.json()["code"] == "invalid_request"
    assert client.get("/healthz").status_code == 200


@pytest.fixture(scope="module")
def served(console_app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(console_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


def test_auditor_walks_through_the_console(browser, served):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    page.goto(served + "/")
    assert "/login" in page.url
    page.fill("#username", "auditor")
    page.fill("#password", "not the password")
    page.click("#signin")
    assert page.locator("#login-error").is_visible()
    page.fill("#username", "auditor")
    page.fill("#password", PASSWORD)
    page.click("#signin")
    page.wait_for_selector("#epochs")
    assert page.locator("#user").inner_text() == "auditor"
    assert page.locator("#state-status").inner_text() == "yes"
    page.click("a.epoch-link >> nth=0")
    page.wait_for_selector("#epoch-title")
    assert page.locator("#epoch-title").inner_text() == "Epoch 1"
    chart = page.locator("#positions-chart svg")
    assert chart.count() == 1 and chart.is_visible()
    box = chart.bounding_box()
    assert box and box["width"] > 200 and box["height"] > 100
    assert "Harbour" in page.locator("#brands").inner_text() or "grocery" in page.locator("#brands").inner_text()
    page.goto(served + "/receipts")
    page.click("a.receipt-link >> nth=0")
    page.wait_for_selector("#receipt-status")
    assert page.locator("#receipt-status").inner_text() == "VERIFIED"
    assert page.locator("#signature-status").inner_text() == "valid"
    assert page.locator("#inclusion-status").inner_text() == "yes"
    assert page.locator("#proof li").count() >= 1
    page.goto(served + "/audit")
    assert page.locator("#audit-status").inner_text() == "PASS"
    page.goto(served + "/reconciliation")
    assert page.locator("#recon-status").inner_text() == "CLEAN"
    # The alliance's one design system: no serious or critical accessibility problem on any page.
    for path in ("/", "/epochs/1", "/period", "/reconciliation", "/consent", "/audit", "/receipts"):
        page.goto(served + path)
        assert not axe_violations(page), (path, axe_violations(page))
    page.close()
