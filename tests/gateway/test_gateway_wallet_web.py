"""The member web wallet (/wallet) in headless Chromium, at two brands of one alliance: the wallet is
made in the browser, the member signs up at both brands (codes checked), earns, links the wallet,
exchanges at one brand and redeems at the other (EIP-712 signed in the browser), downloads a consent
receipt that verifies, and erases their data at a brand. Every request the page sends is recorded:
no key material, recovery phrase or wallet passphrase is among them. The keystore moves to the CLI
and back. Every screen passes axe-core, in three languages, and fits a phone. The committed bundle
is what its sources build to."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from browser import axe_violations, chromium, screenshot
from components import unavailable
from eth_account import Account
from harness import Server, last_code, new_world, purchase, start_world_brand

from contracts.chain import free_port
from gateway.member import HD_PATH, MemberHome
from gateway.web import STATIC
from privacy.receipts import load_receipt, verify_receipt

WEB = STATIC.parent
WALLET_PASS = "wallet passphrase 2026"
ACCOUNT_PASS = "account passphrase 2026"
PHONE = "+8613900000123"


def test_the_committed_bundle_is_what_its_sources_build_to(tmp_path):
    esbuild = WEB / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        unavailable("toolchain", f"{esbuild} missing (make install runs npm ci in gateway/web)")
    script = json.loads((WEB / "package.json").read_text())["scripts"]["build"].replace("static/wallet.js", str(tmp_path / "wallet.js"))
    subprocess.run(script.replace("esbuild", str(esbuild), 1), shell=True, cwd=WEB, check=True, capture_output=True)
    assert (tmp_path / "wallet.js").read_bytes() == (STATIC / "wallet.js").read_bytes(), "rebuild: cd gateway/web && npm run build"


@pytest.fixture
def alliance(tmp_path, clock):
    world = new_world(tmp_path)
    ports = {"grocery": free_port(), "airline": free_port()}
    origin = {b: f"http://127.0.0.1:{p}" for b, p in ports.items()}
    brands = {b: start_world_brand(world, b, rate, clock=clock, alliance_peers=[o for x, o in origin.items() if x != b])
              for b, rate in (("grocery", 100), ("airline", 20))}
    servers = {b: Server(brands[b].gw, ports[b]) for b in brands}
    for s in servers.values():
        s.__enter__()
    yield world, brands, origin
    for b in brands:
        servers[b].__exit__(None, None, None)
        brands[b].close()


def _wait(page, route: str) -> None:
    page.wait_for_selector(f"main[data-ready={json.dumps(route)}]", state="attached")  # (the CSP forbids wait_for_function's eval)


def _flash(page, text: str) -> str:
    """The message the last action showed, once it says `text` (or what the page says instead)."""
    try:
        page.wait_for_selector(f"#flash:has-text({json.dumps(text, ensure_ascii=False)})", timeout=30_000)
    except Exception:
        raise AssertionError(f"no message {text!r}; the page says: {page.inner_text('main')[:600]}") from None
    return page.locator("#flash").inner_text()


def _show(page, route: str) -> None:
    """Go to a screen of the open wallet (a new hash renders it afresh; the key stays unlocked)."""
    via = "#/wallet" if route == "#/brands" else "#/brands"
    for hop in (via, route):
        page.evaluate("hop => { location.hash = hop; }", hop)
        _wait(page, hop.removeprefix("#"))


def _sign_up(page, brand, url: str, name: str) -> None:
    _show(page, "#/brands")
    page.fill("#url", url)
    page.fill("#phone", PHONE)
    page.fill("#name", name)
    page.fill("#accountpass", ACCOUNT_PASS)
    page.click("#signup")
    _wait(page, "/verify")
    assert not axe_violations(page)
    screenshot(page, f"wallet-verify-{brand.gw.settings.brand_id}")
    page.fill("#code-phone", last_code(brand, "phone", PHONE))
    page.click("#verify")
    page.wait_for_selector("#points")


def test_a_member_uses_the_wallet_across_two_brands(alliance, clock, tmp_path):
    world, brands, origin = alliance
    grocery, airline = brands["grocery"], brands["airline"]
    sent: list[str] = []
    with chromium(tmp_path / "profile") as browser:
        page = browser.new_page()
        page.set_default_timeout(60_000)
        page.on("request", lambda r: sent.append(f"{r.method} {r.url}\n{r.post_data or ''}"))
        page.on("dialog", lambda d: d.accept())
        page.goto(origin["grocery"] + "/wallet?lang=en")
        _wait(page, "/wallet")
        assert not axe_violations(page)
        page.fill("#pass", WALLET_PASS)
        page.fill("#again", WALLET_PASS)
        page.click("#create")
        page.wait_for_selector("#address:has-text('0x')")
        address = page.locator("#address").inner_text()
        screenshot(page, "wallet-created")

        # Sign up at the grocery (this gateway) and at the airline (another origin of the alliance).
        _sign_up(page, grocery, origin["grocery"], "Alice Zhang")
        assert not axe_violations(page)
        member = json.loads(page.evaluate("localStorage.getItem('alliance.brands.v1')"))[0]
        clock.advance(minutes=1)
        assert purchase(grocery, member["member_ref"], 200_000, "till-1", clock.now).status_code == 201
        coupon = {"kind": "coupon", "name": "Ten off", "points_price": 50, "coupon_value_minor": 1_000, "available_from": clock.now.isoformat()}
        assert grocery.client.put("/v1/admin/rewards/ten-off", json=coupon, headers=grocery.as_("operator")).status_code == 200
        _show(page, "#/brand/0")
        assert page.locator("#points").inner_text() == f"{100 + 2_000 * 2:,} points"  # welcome, then 1 per yuan, first order x2
        page.click("#rewards button")  # the coupon, ordered with points: its code is in the wallet
        assert _flash(page, "Status:") == "Status: issued"
        assert "coupon" in page.locator("#orders").inner_text() and page.locator("#points").inner_text() == f"{4_100 - 50:,} points"
        page.click("#link")
        assert "has not consented to alliance_exchange" in _flash(page, "Refused")  # linking needs the consent first
        page.click("button[data-purpose=alliance_exchange]")
        page.wait_for_selector("button[data-purpose=alliance_exchange]:has-text('Withdraw')")
        page.click("#link")
        _flash(page, address)
        page.fill("#ap", "5")
        page.click("#exchange")
        assert _flash(page, "Status:") == "Status: confirmed"
        assert world.alliance.points.balance_of(address) == 5

        # A reload locks the wallet: the key is in memory only while unlocked.
        page.reload()
        _wait(page, "/brand/0")
        assert page.locator("#unlock").count() == 1 and not axe_violations(page)
        screenshot(page, "wallet-unlock")
        page.fill("#pass", "not the passphrase")
        page.click("#unlock")
        assert "Wrong passphrase" in _flash(page, "Wrong")
        page.fill("#pass", WALLET_PASS)
        page.click("#unlock")
        _wait(page, "/brands")

        _sign_up(page, airline, origin["airline"], "Alice Zhang")
        page.click("button[data-purpose=alliance_exchange]")
        page.wait_for_selector("button[data-purpose=alliance_exchange]:has-text('Withdraw')")
        _show(page, "#/brand/0")
        page.select_option("#at", "1")
        page.fill("#redeemap", "5")
        page.click("#redeem")
        assert _flash(page, "Status:") == "Status: confirmed"
        assert world.alliance.points.balance_of(address) == 0
        _show(page, "#/brand/1")
        assert page.locator("#points").inner_text() == f"{airline.gw.settings.earn.welcome_points + 5 * 20:,} points"
        _show(page, "#/brands")  # the balances at every brand, side by side
        assert [c.inner_text() for c in page.locator("#brands td.num").all()][::2] == ["3,550 points", "200 points"]  # 4,050 less 5 AP at 100
        _show(page, "#/brand/1")
        screenshot(page, "wallet-airline")

        # The receipts verify in the page and out of it.
        page.click("#receipts summary")
        assert page.locator("#receipts .bad").count() == 0 and page.locator("#receipts .ok").count() >= 2
        with page.expect_download() as download:
            page.click("#receipts button >> nth=0")
        receipt = json.loads(Path(download.value.path()).read_text())
        verify_receipt(load_receipt(receipt), airline.gw.signing_key.public_key)
        assert not axe_violations(page)

        # Three languages, and a phone's width: every screen readable, nothing scrolls sideways.
        for lang, word in (("zh-Hant", "點"), ("zh-Hans", "积分"), ("en", "points")):
            page.select_option("#lang", lang)
            page.wait_for_selector(f"#points:has-text({json.dumps(word, ensure_ascii=False)})")
            assert page.evaluate("document.documentElement.lang") == lang
            assert not axe_violations(page), lang
            screenshot(page, f"wallet-brand-{lang}")
        page.set_viewport_size({"width": 390, "height": 844})
        for route in ("#/brand/0", "#/brands", "#/wallet"):
            _show(page, route)
            assert page.evaluate("document.documentElement.scrollWidth") <= 391, route
            assert not axe_violations(page), route
            screenshot(page, "wallet-phone-" + route.strip("#/").replace("/", "-"))

        # The keystore, exported, opens in the CLI; the CLI's wallet opens here.
        _show(page, "#/wallet")
        with page.expect_download() as download:
            page.click("#export")
        keystore = tmp_path / "exported-wallet.json"
        download.value.save_as(keystore)
        home = MemberHome(tmp_path / "cli")
        assert home.import_wallet(keystore, WALLET_PASS) == address
        entropy = bytes(Account.decrypt(json.loads(keystore.read_text()), WALLET_PASS))

        # Erasure at the airline, from the wallet.
        at_airline = json.loads(page.evaluate("localStorage.getItem('alliance.brands.v1')"))[1]["member_ref"]
        _show(page, "#/brand/1")
        page.click("#erase")
        assert "is erased" in _flash(page, "erased")
        assert airline.client.get(f"/v1/members/{at_airline}", headers=airline.as_("operator")).json()["status"] == "erased"
        assert [b["brand_id"] for b in json.loads(page.evaluate("localStorage.getItem('alliance.brands.v1')"))] == ["grocery"]

    # Nothing that opens the wallet ever left the browser.
    Account.enable_unaudited_hdwallet_features()
    from eth_account.hdaccount.mnemonic import Mnemonic
    from eth_account.types import Language

    phrase = Mnemonic(Language.ENGLISH).to_mnemonic(entropy)
    key0 = Account.from_mnemonic(phrase, account_path=HD_PATH.format(0)).key.hex()
    stored = json.loads(keystore.read_text())["crypto"]
    wire = "\n".join(sent).lower()
    for secret in (entropy.hex(), key0.removeprefix("0x"), " ".join(phrase.split()[:4]), WALLET_PASS.lower(), stored["ciphertext"], stored["mac"]):
        assert secret.lower() not in wire
    assert any("/v1/me/redemptions" in s for s in sent) and any("/v1/me/wallet" in s for s in sent)


def test_a_cli_wallet_opens_in_the_browser(alliance, tmp_path):
    _, _, origin = alliance
    home = MemberHome(tmp_path / "cli")
    address = home.create_wallet(WALLET_PASS)
    with chromium(tmp_path / "profile") as browser:
        page = browser.new_page()
        page.set_default_timeout(120_000)  # the CLI's keystore is scrypt (N = 2^18): seconds in a browser
        page.goto(origin["grocery"] + "/wallet?lang=zh-Hant")
        _wait(page, "/wallet")
        page.set_input_files("#file", str(home.keystore))
        page.fill("#importpass", WALLET_PASS)
        page.click("#import")
        page.wait_for_selector("#address:has-text('0x')")
        assert page.locator("#address").inner_text() == address
        assert "已匯入錢包" in page.locator("#flash").inner_text()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)
