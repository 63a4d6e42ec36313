"""The brand operator console (/console), in headless Chromium and over plain HTTP: sign-in with an
operator API key only, a session that ends with the key, CSRF-protected forms, an earn rule changed
and a campaign launched that the next purchase earns by, a member frozen and reactivated; no page
with a serious or critical axe-core violation, at desktop and phone width."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from browser import axe_violations, chromium, screenshot
from harness import Server, enrol, purchase, start_local_brand

PAGES = ("/console/", "/console/programme", "/console/members", "/console/consents", "/console/keys", "/console/settlement")


@pytest.fixture
def brand(tmp_path, clock):
    b = start_local_brand(tmp_path, "console", member_token_days=1000, clock=clock)
    yield b
    b.close()


def _signed_in(client, key: str):
    r = client.post("/console/login", data={"api_key": key}, follow_redirects=False)
    return r


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_only_an_operator_key_signs_in_and_the_session_ends_with_the_key(brand):
    client = brand.client
    assert client.get("/console/", follow_redirects=False).headers["location"] == "/console/login"
    for role in ("pos", "auditor"):
        assert _signed_in(client, brand.keys[role]).status_code == 401
    assert _signed_in(client, "ak_not-a-key").status_code == 401
    ok = _signed_in(client, brand.keys["operator"])
    cookie = ok.headers["set-cookie"]
    assert ok.status_code == 303 and "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert brand.keys["operator"] not in cookie  # the key itself never becomes the cookie
    page = client.get("/console/")
    assert page.status_code == 200 and page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers["content-security-policy"]

    # A forged or tampered cookie is no session.
    token = client.cookies.get("console_session")
    client.cookies.set("console_session", token[:-1] + ("0" if token[-1] != "0" else "1"), path="/console")
    assert client.get("/console/", follow_redirects=False).status_code == 303
    client.cookies.set("console_session", token, path="/console")

    # Revoking the operator's API key ends the session at the next page.
    key_id = int(token.split(".")[0])
    assert brand.client.delete(f"/v1/admin/api-keys/{key_id}", headers=brand.as_("operator")).status_code == 200
    assert client.get("/console/keys", follow_redirects=False).status_code == 303


def test_forms_need_the_session_csrf_token_and_the_same_origin(brand):
    client = brand.client
    _signed_in(client, brand.keys["operator"])
    html = client.get("/console/programme").text
    form = {"version": "0", "code": "dbl", "name": "Double", "multiplier_pct": "200", "starts_at": "2026-03-01T00:00",
            "ends_at": "2026-04-01T00:00"}
    assert client.post("/console/programme/campaigns", data=form).status_code == 403  # no token
    assert client.post("/console/programme/campaigns", data=form | {"csrf": "0" * 32}).status_code == 403
    cross = client.post("/console/programme/campaigns", data=form | {"csrf": _csrf(html)}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403
    assert brand.client.get("/v1/admin/programme", headers=brand.as_("operator")).json()["version"] == 0  # nothing changed
    saved = client.post("/console/programme/campaigns", data=form | {"csrf": _csrf(html)})
    assert saved.status_code == 200 and "Saved as version 1" in saved.text
    stale = client.post("/console/programme/campaigns", data=form | {"csrf": _csrf(html), "code": "dbl2"})  # edited from version 0
    assert stale.status_code == 409 and "version 1" in stale.text
    bad = client.post("/console/programme/earn", data={"csrf": _csrf(html), "version": "1", "welcome_points": "lots"})
    assert bad.status_code == 400 and "Not saved" in bad.text


def test_an_operator_steers_the_programme_and_a_member_in_the_browser(brand, clock, tmp_path):
    member = enrol(brand, "+8613800000002")
    r = purchase(brand, member["member_ref"], 10_000, "first", clock.now)  # spends the first-order bonus
    assert r.status_code == 201
    with Server(brand.gw) as url, chromium(tmp_path / "profile") as browser:
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(url + "/console/")
        page.fill("#api_key", brand.keys["pos"])
        page.click("#signin")
        assert page.locator("#login-error").is_visible()
        assert not axe_violations(page)
        page.fill("#api_key", brand.keys["operator"])
        page.click("#signin")
        page.wait_for_selector("#outstanding")

        # An earn rule: 1 point per yuan becomes 2; a campaign: 150% online for a week.
        page.goto(url + "/console/programme")
        page.fill("#ppu-CNY", "2")
        page.fill("#earn-note", "spring rate")
        page.click("#save-earn")
        assert "Saved as version 1" in page.locator("#done").inner_text()
        page.fill("#c-code", "spring-online")
        page.fill("#c-name", "Spring online week")
        page.fill("#c-mult", "150")
        page.fill("#c-from", (clock.now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
        page.fill("#c-until", (clock.now + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M"))
        page.check("input[name='channel.online']")
        page.click("#launch-campaign")
        assert "Saved as version 2" in page.locator("#done").inner_text()
        assert "spring-online" in page.locator("#campaigns").inner_text()
        screenshot(page, "console-programme")

        # The next purchases earn by them (the till's API, the same database).
        clock.advance(minutes=5)
        store = purchase(brand, member["member_ref"], 10_000, "store", clock.now).json()
        clock.advance(minutes=5)
        online = purchase(brand, member["member_ref"], 10_000, "online", clock.now, channel="online").json()
        assert (store["points"], online["points"], online["campaign"]) == (200, 300, "spring-online")

        # A member found by phone, frozen (the till is refused), then reactivated.
        page.goto(url + "/console/members")
        page.fill("#q", "+8613800000002")
        page.click("button[type=submit] >> text=Find")
        page.click(f"text={member['member_ref']}")
        assert page.locator("#balance").inner_text() == f"{store['balance'] + online['points']:,}"
        page.fill("#reason", "card reported stolen")
        page.click("#freeze")
        assert page.locator("#status").inner_text() == "frozen"
        clock.advance(minutes=5)
        assert purchase(brand, member["member_ref"], 10_000, "while-frozen", clock.now).status_code == 409
        page.click("#reactivate")
        assert page.locator("#status").inner_text() == "active"
        screenshot(page, "console-member")

        # The books checked on request, the result kept in the audit log.
        page.goto(url + "/console/settlement")
        assert "Not checked recently" in page.locator("#checked-at").inner_text()
        page.click("#check-now")
        assert (page.locator("#books").inner_text(), page.locator("#chain").inner_text()) == ("PASS", "PASS")

        # Every page, at desktop and at phone width: no serious or critical accessibility problem.
        for width, height in ((1280, 900), (390, 844)):
            page.set_viewport_size({"width": width, "height": height})
            for path in PAGES + (f"/console/members/{member['member_ref']}",):
                page.goto(url + path)
                assert not axe_violations(page), (path, width, axe_violations(page))
                screenshot(page, f"console{path.replace('/', '-').rstrip('-')[:40]}-{width}")
                scroll = page.evaluate("document.documentElement.scrollWidth")
                assert scroll <= width + 1, f"{path} scrolls sideways at {width} px ({scroll} px wide)"
        page.click("#signout")
        page.goto(url + "/console/")
        assert page.url.endswith("/console/login")
