"""The alliance as it is deployed: anvil as the chain, each brand's gateway a separate
`alliance gateway serve` process, a member using the `alliance member` CLI, and the settlement service
and the auditor using `alliance settle` and `alliance audit` against the served gateways over HTTP.
Nothing in-process.

One set-up for the module (``deployed``: deploy, admit two brands, serve their gateways, a member
exchanges at the grocery and redeems at the airline); each test then looks at it from one side."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from contracts.chain import ANVIL_FAUCET_KEY, connect, free_port

pytestmark = [pytest.mark.anvil, pytest.mark.slow]

ALLIANCE = [sys.executable, "-m", "scripts.cli"]
ROOT = Path(__file__).resolve().parents[1]
BRANDS = {"grocery": 100, "airline": 20}  # brand -> points per AP
EXCHANGED_AP = 25  # at the grocery
REDEEMED_AP = 10  # at the airline, of the grocery's AP


def run(*args: str, env: dict[str, str], ok: bool = True) -> str:
    result = subprocess.run([*ALLIANCE, *args], cwd=ROOT, env=os.environ | env, capture_output=True, text=True, timeout=120)
    if ok:
        assert result.returncode == 0, f"{args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def run_failing(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A command expected to fail on its configuration or arguments: exit status 2, no traceback."""
    result = subprocess.run([*ALLIANCE, *args], cwd=ROOT, env=os.environ | env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, f"{args}: exit {result.returncode}: {result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


@dataclass
class Deployed:
    anvil_url: str
    workdir: Path
    governor: LocalAccount
    base: dict[str, str]  # environment of the governance commands
    member: dict[str, str]  # environment of the member CLI
    wallet: str  # address 0 of the member's HD wallet (the one `member link` links)
    exchange_address: str = ""  # the fresh address `member exchange` minted to
    urls: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    operator_keys: dict[str, str] = field(default_factory=dict)
    envs: dict[str, dict[str, str]] = field(default_factory=dict)  # each brand's `alliance gateway` environment

    @property
    def manifest(self) -> Path:
        return self.workdir / "deployment.json"

    def alliance(self):
        from contracts.client import Alliance
        from contracts.manifest import Manifest

        return Alliance(connect(self.anvil_url), Manifest.load(self.manifest))

    def operator(self, brand: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator_keys[brand]}"}


PHONE = "+8613812345678"


def enrol_by_cli(d: Deployed, brand: str) -> dict:
    """`alliance member enrol`, then `verify` with the code the brand's (development) notifier sent."""
    started = json.loads(run("member", "enrol", "--brand", d.urls[brand], "--name", "Alice Zhang", "--phone", PHONE, env=d.member))
    assert started["sent_to"] == ["phone"]
    sent = [json.loads(line) for line in (d.workdir / "notifications" / f"{brand}.jsonl").read_text().splitlines()]
    code = [m["code"] for m in sent if m["to"] == PHONE and m["code"]][-1]
    return json.loads(run("member", "verify", "--brand", d.urls[brand], "--code", f"phone={code}", env=d.member))


@pytest.fixture(scope="module")
def deployed(anvil_url, tmp_path_factory):
    """anvil, `contracts deploy`, two served gateways, and a member who exchanged 25 AP at the grocery
    and redeemed 10 of them at the airline, all through the CLIs."""
    tmp_path = tmp_path_factory.mktemp("deployment")
    governor = Account.create()
    connect(anvil_url).fund(governor.address)
    base = {"ALLIANCE_CHAIN_URL": anvil_url, "ALLIANCE_GOVERNOR_KEY": governor.key.hex(), "ALLIANCE_FAUCET_KEY": ANVIL_FAUCET_KEY,
            "ALLIANCE_MANIFEST": str(tmp_path / "deployment.json")}
    member = {"ALLIANCE_MEMBER_HOME": str(tmp_path / "alice"), "ALLIANCE_WALLET_PASSPHRASE": "wallet-pass-2026",
              "ALLIANCE_MEMBER_PASSPHRASE": "member-pass-2026"}
    run("contracts", "deploy", "--manifest", str(tmp_path / "deployment.json"), "--min-epoch", "0", env=base)

    servers, pos_keys = [], {}
    d = Deployed(anvil_url, tmp_path, governor, base, member, wallet="")
    try:
        for brand, rate in BRANDS.items():
            env = base | {"GATEWAY_BRAND_ID": brand, "GATEWAY_BRAND_NAME": brand.title(), "GATEWAY_CHAIN_URL": anvil_url,
                          "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / brand}.sqlite", "GATEWAY_KEYS_DIR": str(tmp_path / f"{brand}-keys"),
                          "GATEWAY_MANIFEST": str(tmp_path / "deployment.json"),
                          "GATEWAY_NOTIFICATIONS_DIR": str(tmp_path / "notifications")}
            d.envs[brand] = env
            run("gateway", "keys", env=env)
            address = Account.from_key((tmp_path / f"{brand}-keys" / "chain.key").read_text().strip()).address
            d.addresses[brand] = address
            run("contracts", "admit", address, "--name", brand.title(), "--rate", str(rate), "--credit-limit", "1000000",
                "--fund-gas", "--mint-collateral", str(10**12), env=base)
            assert "deposited" in run("gateway", "deposit", str(10**12), env=env)
            pos_keys[brand] = run("gateway", "apikey", "issue", "pos", "--label", "till-1", env=env).strip()
            d.operator_keys[brand] = run("gateway", "apikey", "issue", "operator", "--label", "ops-1", env=env).strip()
            port = free_port()
            servers.append(subprocess.Popen([*ALLIANCE, "gateway", "serve", "--port", str(port)], cwd=ROOT, env=os.environ | env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            d.urls[brand] = f"http://127.0.0.1:{port}"
        for url in d.urls.values():
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"{url} did not start"
                time.sleep(0.3)

        urls = d.urls
        d.wallet = json.loads(run("member", "wallet", env=member))["address"]
        enrolled = enrol_by_cli(d, "grocery")
        r = httpx.post(urls["grocery"] + "/v1/purchases", headers={"Authorization": f"Bearer {pos_keys['grocery']}", "Idempotency-Key": "t1"},
                       json={"member_ref": enrolled["member_ref"], "amount_minor": 150_000, "occurred_at": datetime.now(UTC).isoformat()})
        assert r.status_code == 201, r.text
        # Without the alliance_exchange consent the exchange is refused, with a reason and no traceback.
        refused = subprocess.run([*ALLIANCE, "member", "exchange", "10", "--brand", urls["grocery"]], cwd=ROOT,
                                 env=os.environ | member, capture_output=True, text=True)
        assert refused.returncode == 1 and "consent_required" in refused.stdout and "Traceback" not in refused.stdout + refused.stderr
        run("member", "consent", "alliance_exchange", "--brand", urls["grocery"], env=member)
        assert json.loads(run("member", "link", "--brand", urls["grocery"], env=member))["wallet_address"] == d.wallet
        exchange = json.loads(run("member", "exchange", str(EXCHANGED_AP), "--brand", urls["grocery"], env=member))
        assert exchange["status"] == "confirmed" and exchange["brand_points"] == EXCHANGED_AP * BRANDS["grocery"]
        # Minted to a fresh address of the wallet, not the one linked before: the chain does not tie
        # this exchange to the member's other addresses.
        d.exchange_address = exchange["wallet_address"]
        assert d.exchange_address != d.wallet

        enrol_by_cli(d, "airline")
        run("member", "consent", "alliance_exchange", "--brand", urls["airline"], env=member)
        redeemed = json.loads(run("member", "redeem", str(REDEEMED_AP), "--at", urls["airline"], env=member))
        assert redeemed["status"] == "confirmed" and redeemed["reward_points"] == REDEEMED_AP * BRANDS["airline"]
        yield d
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)


def test_alliance_across_processes(deployed):
    """The cross-brand redemption as the chain and the member's brands see it."""
    alliance = deployed.alliance()
    assert alliance.points.balance_of(deployed.exchange_address) == EXCHANGED_AP - REDEEMED_AP  # redeemed from there
    assert alliance.points.balance_of(deployed.wallet) == 0
    # The airline's welcome points (100) and the redemption's reward.
    assert json.loads(run("member", "balance", "--brand", deployed.urls["airline"], env=deployed.member))["points"] == \
        100 + REDEEMED_AP * BRANDS["airline"]
    position = {b: alliance.settlement.open_position(a) for b, a in deployed.addresses.items()}
    assert (position["grocery"].issued, position["grocery"].redeemed) == (EXCHANGED_AP, 0)
    assert (position["airline"].issued, position["airline"].redeemed) == (0, REDEEMED_AP)


@pytest.fixture(scope="module")
def settlement_config(deployed) -> tuple[Path, dict[str, str]]:
    """The settlement service's configuration (`alliance settle --help`), with an auditor API key per
    brand issued through each served gateway's operator API; and the environment holding those keys.
    The grocery's receipt key is pinned from its keys directory; the airline's is read from its gateway."""
    env = dict(deployed.base)
    gateways = []
    for brand, url in deployed.urls.items():
        r = httpx.post(url + "/v1/admin/api-keys", json={"role": "auditor", "label": "alliance auditor"}, headers=deployed.operator(brand))
        assert r.status_code == 201, r.text
        env[f"{brand.upper()}_AUDITOR_KEY"] = r.json()["secret"]
        gateways.append({"brand_id": brand, "address": deployed.addresses[brand], "url": url,
                         "auditor_key_env": f"{brand.upper()}_AUDITOR_KEY",
                         "database_url": f"sqlite:///{deployed.workdir / brand}.sqlite"})
    gateways[0]["public_key_pem_file"] = str(deployed.workdir / "grocery-keys" / "signing.pub")
    config = deployed.workdir / "settlement.json"
    config.write_text(json.dumps({"chain_url": deployed.anvil_url, "manifest": str(deployed.manifest),
                                  "store": f"sqlite:///{deployed.workdir / 'settlement' / 'index.sqlite'}", "gateways": gateways}))
    return config, env


def test_settlement_and_audit_clis_over_http(deployed, settlement_config):
    """`alliance settle index | close | report | reconcile` and `alliance audit verify` as the operators
    run them: the epoch closes with each brand's net position as the member's exchange and redemption
    imply, the report files carry the same figures, the served ledgers reconcile with the chain, and
    the audit over the gateways' HTTP APIs passes every check."""
    config, env = settlement_config
    cfg = ["--config", str(config)]
    work = deployed.workdir
    urls, addresses = deployed.urls, deployed.addresses
    value = deployed.alliance().manifest.value_per_point
    grocery, airline = addresses["grocery"], addresses["airline"]
    # What the member did: 25 AP issued by the grocery, 10 of them redeemed at the airline. The pool
    # pays the airline for what it redeemed and takes from the grocery what it issued.
    expected_net = {grocery: -EXCHANGED_AP * value, airline: REDEEMED_AP * value}

    # Both logs of both brands anchored twice, a consent logged in between: every audit check then has
    # something to check (roots, consistency between consecutive anchors, proofs of sampled receipts).
    for round_ in (1, 2):
        for brand, url in urls.items():
            for kind in ("consent-log", "audit-log"):
                r = httpx.post(url + "/v1/admin/anchors", json={"kind": kind}, headers=deployed.operator(brand), timeout=30)
                assert r.status_code == 200 and r.json()["anchored"] and r.json()["period"] == round_, r.text
            if round_ == 1:
                run("member", "consent", "marketing", "--brand", url, env=deployed.member)

    indexed = json.loads(run("settle", "index", *cfg, env=env))
    assert indexed["events"] > 0 and indexed["to_block"] >= indexed["from_block"]
    again = json.loads(run("settle", "index", *cfg, env=env))
    assert again["from_block"] == indexed["to_block"] + 1  # resumed where it stopped

    # The policy first: 35 AP of volume is below a 1,000 AP threshold, so nothing is sent.
    settler = env | {"ALLIANCE_SETTLER_KEY": deployed.governor.key.hex()}
    not_due = json.loads(run("settle", "close", *cfg, "--max-volume", "1000", env=settler))
    assert not_due["closed"] is False and not_due["ok"] is True and not_due["epoch"] == 1, not_due
    closed = json.loads(run("settle", "close", *cfg, "--max-volume", str(EXCHANGED_AP + REDEEMED_AP),
                            "--out", str(work / "close.json"), env=settler))
    assert closed["closed"] is True and closed["ok"] is True and closed["epoch"] == 1 and closed["failed_checks"] == [], closed
    close = json.loads((work / "close.json").read_text())
    settled = {b["brand"]: b for b in close["settlement"]["brands"]}
    assert {b: s["net_value"] for b, s in settled.items()} == expected_net
    assert {b: s["reported"]["netValue"] for b, s in settled.items()} == expected_net  # the contract's BrandSettled events
    assert (settled[grocery]["issued"], settled[airline]["redeemed"]) == (EXCHANGED_AP, REDEEMED_AP)
    assert close["settlement"]["pool"] == close["settlement"]["supply"] * value == (EXCHANGED_AP - REDEEMED_AP) * value
    assert close["before"] and close["after"] and all(c["ok"] for c in close["before"] + close["after"])
    alliance = deployed.alliance()
    assert alliance.settlement.pool_balance() == (EXCHANGED_AP - REDEEMED_AP) * value
    assert alliance.settlement.contract.functions.currentEpoch().call() == 2

    written = json.loads(run("settle", "report", *cfg, "--out", str(work / "report"), env=env))
    for path in written["json"] + written["csv"] + written["charts"]:
        assert Path(path).is_file() and Path(path).stat().st_size > 0, path
    assert {Path(p).name for p in written["charts"]} >= {"epoch_1_positions.png", "epoch_1_positions.svg", "epoch_1_flows.png"}
    report = json.loads((work / "report" / "report.json").read_text())
    assert report["epochs"] == [1] and all(c["ok"] for c in report["checks"]), report["checks"]
    epoch = report["per_epoch"][0]
    rows = {r["name"]: r for r in epoch["brands"]}
    assert (rows["grocery"]["issued_ap"], rows["grocery"]["redeemed_ap"], rows["grocery"]["net_value"]) == (EXCHANGED_AP, 0, expected_net[grocery])
    assert (rows["airline"]["issued_ap"], rows["airline"]["redeemed_ap"], rows["airline"]["net_value"]) == (0, REDEEMED_AP, expected_net[airline])
    assert rows["grocery"]["outstanding_liability_ap"] == EXCHANGED_AP - REDEEMED_AP
    assert epoch["flows"]["issuers"] == ["grocery", "airline"] and epoch["flows"]["ap"] == [[0, REDEEMED_AP], [0, 0]]
    assert epoch["kpis"]["points_usage_rate"] == REDEEMED_AP / EXCHANGED_AP and epoch["kpis"]["cross_brand_redemption_share"] == 1.0
    # Each brand's points liability as its gateway states it, beside its AP: the grocery issued at least
    # the 2,500 points the member exchanged out, the airline received 10 AP's worth through the alliance.
    period = {r["name"]: r for r in report["period"]["brands"]}
    grocery_points, airline_points = period["grocery"]["brand_points"], period["airline"]["brand_points"]
    assert grocery_points["issued"] >= EXCHANGED_AP * BRANDS["grocery"]
    assert grocery_points["exchanged_out"] == EXCHANGED_AP * BRANDS["grocery"]
    assert airline_points["alliance_in"] == REDEEMED_AP * BRANDS["airline"]
    for points in (grocery_points, airline_points):
        assert points["outstanding"] == points["issued"] + points["alliance_in"] - sum(
            points[k] for k in ("spent", "exchanged_out", "expired", "clawed_back", "donated"))
    period_csv = {r["name"]: r for r in csv.DictReader((work / "report" / "brands.csv").open()) if r["epoch"] == "period"}
    assert int(period_csv["airline"]["brand_points_outstanding"]) == airline_points["outstanding"]
    brands_csv = [r for r in csv.DictReader((work / "report" / "brands.csv").open()) if r["epoch"] == "1"]
    assert {r["name"]: (int(r["issued_ap"]), int(r["redeemed_ap"]), int(r["net_value"])) for r in brands_csv} == {
        "grocery": (EXCHANGED_AP, 0, expected_net[grocery]), "airline": (0, REDEEMED_AP, expected_net[airline])}
    flows_csv = list(csv.DictReader((work / "report" / "flows.csv").open()))
    assert {"epoch": "1", "issuer": "grocery", "redeemer": "airline", "ap": str(REDEEMED_AP)} in flows_csv

    reconciled = json.loads(run("settle", "reconcile", *cfg, "--out", str(work / "reconcile.json"), env=env))
    assert reconciled["ok"] is True and {b["name"]: b["ok"] for b in reconciled["brands"]} == {"grocery": True, "airline": True}, reconciled

    audited = json.loads(run("audit", "verify", *cfg, "--out", str(work / "audit"), "--sample", "0", env=env))
    assert audited["ok"] is True and audited["failed"] == [], audited
    assert Path(audited["html"]).is_file() and "PASS" in Path(audited["html"]).read_text()
    audit = json.loads(Path(audited["json"]).read_text())
    assert audit["ok"] is True and [b["brand_id"] for b in audit["brands"]] == ["grocery", "airline"]
    for b in audit["brands"]:
        statuses = {c["name"]: c["status"] for c in b["checks"]}
        assert statuses == dict.fromkeys(["consent_log.hash_chain", "consent_log.anchored_roots", "consent_log.anchor_consistency",
                                          "consent_log.signatures", "consent_log.sampled_receipts", "processings.consent",
                                          "audit_log.hash_chain", "audit_log.anchored_roots", "audit_log.anchor_consistency"], "pass"), \
            (b["brand_id"], [c for c in b["checks"] if c["status"] != "pass"])
    signatures = {b["brand_id"]: next(c for c in b["checks"] if c["name"] == "consent_log.signatures")["evidence"] for b in audit["brands"]}
    assert signatures["grocery"]["key_source"].startswith("pinned") and signatures["airline"]["key_source"].startswith("read from")
    processings = {b["brand_id"]: next(c for c in b["checks"] if c["name"] == "processings.consent")["evidence"] for b in audit["brands"]}
    # The exchange at the grocery and the redemption at the airline, each on the alliance_exchange consent.
    assert processings["grocery"]["by_kind"] == {"exchange": 1} and processings["airline"]["by_kind"] == {"redemption": 1}
    for evidence in processings.values():
        assert all(p["consent_valid"] and p["purpose"] == "alliance_exchange" for p in evidence["processings"])


def test_bad_settlement_invocations_fail_cleanly(deployed, settlement_config, tmp_path):
    """A wrong configuration or argument stops the command with a message saying what is wrong: a
    non-zero exit, no traceback, and nothing sent."""
    config, env = settlement_config
    missing = run_failing("settle", "index", "--config", str(tmp_path / "nowhere.json"), env=env)
    assert "nowhere.json not found" in missing.stderr

    broken = tmp_path / "broken.json"
    broken.write_text('{"chain_url": ')
    assert "not valid JSON" in run_failing("settle", "report", "--config", str(broken), env=env).stderr

    good = json.loads(config.read_text())
    unknown = tmp_path / "unknown-brand.json"
    stranger = Account.create().address
    unknown.write_text(json.dumps(good | {"gateways": good["gateways"] + [{**good["gateways"][0], "brand_id": "bakery", "address": stranger}]}))
    result = run_failing("audit", "verify", "--config", str(unknown), "--out", str(tmp_path / "audit"), env=env)
    assert "bakery" in result.stderr and stranger in result.stderr and "not a brand" in result.stderr
    assert not (tmp_path / "audit").exists()

    epoch = deployed.alliance().settlement.contract.functions.currentEpoch().call()
    no_key = run_failing("settle", "close", "--config", str(config), "--force", env=env | {"ALLIANCE_SETTLER_KEY": ""})
    assert "ALLIANCE_SETTLER_KEY" in no_key.stderr
    assert deployed.alliance().settlement.contract.functions.currentEpoch().call() == epoch  # nothing was closed


def _release(release_dir: Path, brands: list[str]) -> tuple[Path, dict]:
    """A release as the operator's deployed ServerApp writes it (federation.releases.write_release)."""
    import numpy as np

    from federation import models
    from federation.features import FEATURE_NAMES
    from federation.releases import write_release

    params = {"w": np.linspace(-1, 1, len(FEATURE_NAMES)).astype(np.float32), "b": np.zeros(1, np.float32)}
    return write_release(release_dir, model_bytes=models.serialise_logreg(params, list(FEATURE_NAMES)), model_format="logreg.json",
                         fields={"task": "redeem", "model": "logreg", "strategy": "fedavg", "data_source": "gateway",
                                 "feature_names": list(FEATURE_NAMES), "run_id": 7, "num_rounds": 3, "rounds_completed": 3,
                                 "participating_brands": brands, "privacy": {"guarantee": "none"},
                                 "secure_aggregation": {"enabled": False}, "metrics_per_round": [], "final_metrics": {"auc_pooled": 0.71}})


def test_a_brand_records_a_deployed_release_with_its_own_key(deployed, tmp_path):
    """In a deployment the ServerApp holds no gateway: each brand records the release it took part in
    (`alliance gateway record-release`), anchored with its own key, and installs it for campaigns."""
    from federation.releases import RELEASE_ANCHOR_KIND, audit_summary, releases_root

    path, record = _release(tmp_path / "operator", ["airline", "grocery"])
    env = deployed.envs["grocery"] | {"GATEWAY_RELEASES_DIR": str(tmp_path / "grocery-releases")}
    first = json.loads(run("gateway", "record-release", str(path), env=env))
    digest = audit_summary(record)["record_digest"]
    assert first["already_recorded"] is False and first["period"] == 1 and first["root"] == releases_root([digest]).hex()
    period, anchor = deployed.alliance().anchor.latest(deployed.addresses["grocery"], RELEASE_ANCHOR_KIND)
    assert (period, anchor.size, anchor.root.hex()) == (1, 1, first["root"])
    assert (tmp_path / "grocery-releases" / path.name).read_bytes() == path.read_bytes()

    # Recorded twice: nothing new, on chain or in the log.
    again = json.loads(run("gateway", "record-release", str(path), env=env))
    assert again["already_recorded"] is True and again["audit_seq"] == first["audit_seq"] and again["tx_hash"] is None
    assert deployed.alliance().anchor.latest(deployed.addresses["grocery"], RELEASE_ANCHOR_KIND)[0] == 1
    r = httpx.get(deployed.urls["grocery"] + "/v1/audit/logs/audit-log", headers=deployed.operator("grocery"))
    assert r.status_code == 200, r.text
    actions = [e["payload"]["action"] for e in r.json()["entries"]]
    assert actions.count("model.released") == 1 and actions.count("model-releases.anchored") == 1

    # A release this brand took no part in, a model file that is not the recorded one, no release at all.
    other, _ = _release(tmp_path / "elsewhere", ["airline"])
    assert "did not take part" in run_failing("gateway", "record-release", str(other), env=env).stderr
    escaping = tmp_path / "operator" / "escaping.release.json"
    escaping.write_text(json.dumps(record | {"model_file": f"../grocery-releases/{record['model_file']}"}))
    assert "file name" in run_failing("gateway", "record-release", str(escaping), env=env).stderr
    (tmp_path / "operator" / record["model_file"]).write_bytes(b"{}")
    assert "does not match" in run_failing("gateway", "record-release", str(path), env=env).stderr
    run_failing("gateway", "record-release", str(tmp_path / "missing.release.json"), env=env)


def test_an_api_key_revoked_by_the_cli_is_refused_by_the_served_gateway_within_the_bound(deployed):
    """`alliance gateway apikey issue | list | revoke` against the database a running gateway serves:
    the gateway caches keys for GATEWAY_API_KEY_CACHE_S (5 s), so it refuses the revoked key within that."""
    env, url = deployed.envs["grocery"], deployed.urls["grocery"]
    secret = run("gateway", "apikey", "issue", "auditor", "--label", "temporary auditor", "--expires-in-days", "30", env=env).strip()
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(url + "/v1/audit/logs/audit-log/verification", headers=headers).status_code == 200
    listed = {k["label"]: k for k in json.loads(run("gateway", "apikey", "list", env=env))}
    key = listed["temporary auditor"]
    assert key["role"] == "auditor" and key["expires_at"] and key["revoked_at"] is None and key["last_used_at"]
    assert secret not in json.dumps(listed)
    assert "revoked" in run("gateway", "apikey", "revoke", str(key["id"]), env=env)
    revoked_at = time.monotonic()
    while httpx.get(url + "/v1/audit/logs/audit-log/verification", headers=headers).status_code == 200:
        assert time.monotonic() - revoked_at < 5.5, "the revoked key still works after the cache bound"
        time.sleep(0.2)
    r = httpx.get(url + "/v1/audit/logs/audit-log/verification", headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "unauthorised"
    assert "already revoked" in run("gateway", "apikey", "revoke", str(key["id"]), env=env)
    assert run_failing("gateway", "apikey", "revoke", "999999", env=env).stderr


def test_governance_clis_and_their_refusals(deployed):
    """`contracts set-payout` and `rotate` change what the contracts hold; a refused call (an unknown
    brand, a close before the epoch length by an account without the settler role) is one line naming
    the contracts' error, without a traceback. The member's wallet kept the nonce it signed."""
    def refusal(*args: str, env: dict[str, str]) -> str:
        result = subprocess.run([*ALLIANCE, *args], cwd=ROOT, env=os.environ | env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
        return " ".join(result.stdout.split())

    airline = deployed.addresses["airline"]
    treasury = Account.create().address
    run("contracts", "set-payout", airline, treasury, env=deployed.base)
    assert deployed.alliance().settlement.account(airline).payout == treasury
    stranger = Account.create().address
    refused = refusal("contracts", "rotate", stranger, Account.create().address, env=deployed.base)
    assert "refused by the contracts: UnknownBrand" in refused
    outsider = Account.create()
    connect(deployed.anvil_url).fund(outsider.address)
    early = refusal("contracts", "close-epoch", env=deployed.base | {"ALLIANCE_GOVERNOR_KEY": outsider.key.hex()})
    assert "refused by the contracts: EarlyCloseNotAllowed" in early
    signed = json.loads((deployed.workdir / "alice" / "signed-nonces.json").read_text())
    assert [nonces for key, nonces in signed.items() if airline.lower() in key] == [[0]]
