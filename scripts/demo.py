"""The main job: a whole local alliance on embedded defaults, end to end.

Three brands run their gateways (SQLite each) on the in-process chain. Members make wallets on their
own devices, enrol, consent, earn at the till, exchange brand points into alliance points (AP) at one
brand and redeem them at another; a member withdraws consent and another has their data erased; the
brands anchor their consent logs; the operator closes the settlement epoch. Everything a person would
check is printed: balances on both ledgers and on chain, net positions, the pool invariant, each
gateway's reconciliation, and an auditor's check of a consent receipt against the anchored root.
Then the brands train a churn model by federated learning (Flower simulation, DP-SGD) on their own
databases, filled with simulated history, and the release is written to their audit logs and anchored;
the compliance audit that closes the demo covers those training reads too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer
from eth_account import Account
from rich.console import Console
from rich.table import Table

from contracts.deploy import BrandTerms
from gateway.local import LocalAlliance
from gateway.services import overlap
from privacy.keys import PublicKey
from privacy.merkle import verify_inclusion
from privacy.receipts import load_receipt, verify_receipt
from settlement.audit import GatewayAccess, verify
from settlement.epochs import close_epoch
from settlement.reports import build_report, write_report
from settlement.store import Store

BRANDS = {
    "grocery": BrandTerms("Harbour Grocery", rate=100, credit_limit=1_000_000, collateral=50_000_000_000),
    "airline": BrandTerms("Skyway Airlines", rate=20, credit_limit=1_000_000, collateral=50_000_000_000),
    "cafe": BrandTerms("Bean Cafe", rate=50, credit_limit=1_000_000, collateral=50_000_000_000),
}
CAFE_URL = "http://bean-cafe.demo"  # the cafe gateway as the grocery knows it (in the demo, its in-process client)


def federated_training(console: Console, workdir: Path, brands: dict) -> None:
    """A short federated training over the brands' own gateway databases, its release published.

    Three live members teach a model nothing, so the brands' databases first get the simulated
    population's 18 months of history (a small size; see federation.population). That history is
    not on chain, which is why this comes after each gateway's reconciliation against the chain.
    """
    import logging

    from federation import population
    from federation.simulation import simulate

    console.rule("[bold]Federated learning")
    gateways = {bid: b.gateway for bid, b in brands.items()}
    pop = population.populate(workdir / "population", seed=7, size="small", brands=list(brands), gateways=gateways)
    console.print(f"{pop['total_members']} simulated members with 18 months of purchases, tiers, consents and exchanges added "
                  "to the brands' databases (history for training only, not on chain)")
    for name in ("flwr", "absl"):  # round-by-round logs and accountant notes; the figures are printed below
        logging.getLogger(name).setLevel(logging.ERROR)
    rec = simulate({"data-source": "gateway", "gateway-map": str(workdir / "population" / "population.json"), "task": "churn",
                    "num-rounds": 5, "local-epochs": 3, "dp-epsilon": 4.0, "personal-dp-epsilon": 6.0, "dp-delta": 1e-5},
                   len(brands), release_dir=workdir / "releases", gateways=gateways)
    last = rec["metrics_per_round"][-1]
    table = Table(title=f"Churn (no purchase in 90 days): {rec['rounds_completed']} FedAvg rounds, each brand on its own database")
    for column in ("brand", "held-out AUC (from noisy histograms)", "its own model (kept at the brand)"):
        table.add_column(column, justify="left" if column == "brand" else "right")
    for bid in brands:
        table.add_row(BRANDS[bid].name, f"{last['per_brand'][bid]['auc']:.3f}", rec["personalisation"]["brands"][bid]["uses"])
    console.print(table)
    privacy = rec["privacy"]
    console.print(f"pooled held-out AUC {rec['final_metrics']['auc_pooled']:.3f}; record-level DP-SGD inside each brand: "
                  f"epsilon {privacy['record_level']['epsilon']:g} at delta {privacy['delta']:g} (each brand calibrates its noise "
                  f"on its own count, which never leaves it), {privacy['personalisation']['epsilon']:g} for a brand's own model "
                  f"with its adaptation; evaluation histograms: epsilon {privacy['evaluation']['epsilon']:g}")
    txs = ", ".join(f"{BRANDS[bid].name} {p['tx_hash'][:12]}..." for bid, p in sorted(rec["_published"].items()))
    console.print(f"release {rec['model_version']} (model sha256 {rec['model_sha256'][:16]}...) recorded in every brand's "
                  f"audit log and anchored on chain: {txs}")
    for b in brands.values():  # anchor the logs again: they now hold the simulated consents and the release
        for kind in ("consent-log", "audit-log"):
            b.http.post("/v1/admin/anchors", json={"kind": kind}, headers=b.headers("operator"))


def spending_points(console: Console, brands: dict, sessions: dict, wallets: dict, now: datetime) -> None:
    """Rewards bought with a brand's own points, points paying part of a purchase, a coupon used at the
    till, and AP earned at the grocery spent on a reward at the cafe in one step."""
    console.rule("[bold]Spending points")
    grocery, cafe = brands["grocery"], brands["cafe"]
    since = (now - timedelta(days=1)).isoformat()
    for brand, code, spec in ((grocery, "tote-bag", {"kind": "good", "name": "Canvas tote bag", "points_price": 800, "stock": 100}),
                              (cafe, "ceramic-mug", {"kind": "good", "name": "Ceramic mug", "points_price": 500, "stock": 20}),
                              (cafe, "latte", {"kind": "coupon", "name": "Latte coupon", "points_price": 300, "coupon_value_minor": 1_800,
                                               "coupon_min_spend_minor": 2_000})):
        r = brand.http.put(f"/v1/admin/rewards/{code}", json=spec | {"available_from": since}, headers=brand.headers("operator"))
        r.raise_for_status()
    tote = sessions["alice", "grocery"].order("tote-bag")
    console.print(f"alice orders a {tote['reward']} at Harbour Grocery for {tote['points']} of her points ({tote['status']}); "
                  f"balance {tote['balance']}")
    bob_ref = sessions["bob", "grocery"].balance()["member_ref"]
    paid = grocery.http.post("/v1/purchases", headers=grocery.headers("pos", **{"Idempotency-Key": "till-7:pay"}),
                             json={"member_ref": bob_ref, "amount_minor": 6_000, "occurred_at": (now + timedelta(seconds=9)).isoformat(),
                                   "points_burned": 500}).json()
    console.print(f"bob pays 5.00 of a 60.00 grocery purchase with {paid['points_burned']} points (100 points = 1.00): "
                  f"earns {paid['points']} on the {paid['paid_minor'] / 100:.2f} paid otherwise, balance {paid['balance']}")
    client = sessions["alice", "cafe"]
    client.consent("alliance_exchange")
    if client.linked_wallet() != wallets["alice"].address:
        client.link_wallet(wallets["alice"])  # the cafe credits only the wallet's owner
    mug = client.order("ceramic-mug", pay_with_ap=client.authorise(wallets["alice"], 10))
    console.print(f"alice spends 10 AP from the grocery on a {mug['reward']} at Bean Cafe in one step: {mug['status']} once the "
                  f"redemption is final on chain ({mug['paid_with_ap']['status']}, +{mug['paid_with_ap']['reward_points']} points, "
                  f"-{mug['points']})")
    latte = sessions["bob", "cafe"].order("latte")
    code = latte["coupon"]["code"]
    bob_cafe = sessions["bob", "cafe"].balance()["member_ref"]
    used = cafe.http.post("/v1/purchases", headers=cafe.headers("pos", **{"Idempotency-Key": "cafe-till:1"}),
                          json={"member_ref": bob_cafe, "amount_minor": 3_200, "occurred_at": (now + timedelta(seconds=10)).isoformat(),
                                "coupon_code": code}).json()
    again = cafe.http.post("/v1/purchases", headers=cafe.headers("pos", **{"Idempotency-Key": "cafe-till:2"}),
                           json={"member_ref": bob_cafe, "amount_minor": 3_200, "occurred_at": (now + timedelta(seconds=11)).isoformat(),
                                 "coupon_code": code})
    console.print(f"bob's latte coupon {code} takes {used['discount_minor'] / 100:.2f} off a 32.00 cafe purchase; "
                  f"shown again at the till: refused ({again.json()['detail']})")
    liability = grocery.http.get("/v1/audit/liability", headers=grocery.headers("auditor")).json()
    console.print(f"Harbour Grocery points liability: issued {liability['issued']:,}, spent {liability['spent']:,}, exchanged out "
                  f"{liability['exchanged_out']:,}, outstanding {liability['outstanding']:,} "
                  f"(worth {liability['outstanding_value_minor'] / 100:,.2f} {liability['currency']})")


def run(workdir: Path = typer.Option(Path("var/demo"), help="where the brands' databases and keys go (recreated)")) -> None:
    console = Console()
    local = LocalAlliance.start(workdir)
    console.rule("[bold]Alliance")
    console.print(f"contracts deployed on the embedded chain {local.chain.chain_id}; manifest {workdir / 'deployment.json'}")
    # The grocery measures its audience overlap with the cafe (k = 1 only because the demo has three people).
    peers = {"grocery": {"alliance_peers": [CAFE_URL], "overlap_k": 1}, "cafe": {"overlap_answer": True}}
    brands = {bid: local.add_brand(bid, terms, **peers.get(bid, {})) for bid, terms in BRANDS.items()}
    for bid, b in brands.items():
        console.print(f"  {BRANDS[bid].name:16} gateway account {b.address}, {BRANDS[bid].rate} points per AP")

    console.rule("[bold]Members")
    people = {"alice": ("+8613812345678", "Alice Zhang"), "bob": ("+8613900001111", "Bob Li"), "carol": ("+8613700002222", "Carol Wu")}
    wallets = {name: Account.create() for name in people}  # made on each member's own device
    sessions = {}
    for name, (phone, full_name) in people.items():
        for bid in ("grocery", "airline", "cafe"):
            # The code each gateway texts to the phone is read from the development notifier (var/demo/<brand>/notifications).
            sessions[name, bid] = brands[bid].enrol({"phone": phone}, full_name, f"{name}-passphrase-2026", "1990-05-17")
    console.print(f"{len(people)} members enrolled at {len(brands)} brands, each phone proven by a one-time code "
                  "(welcome points; only loyalty_core consent by default)")

    grocery = brands["grocery"]
    now = datetime.now(UTC)  # the till reports purchases made since the members enrolled
    for i, (name, amount) in enumerate((("alice", 268_000), ("alice", 45_000), ("bob", 120_000), ("carol", 35_000))):
        ref = sessions[name, "grocery"].balance()["member_ref"]
        r = grocery.http.post("/v1/purchases", headers=grocery.headers("pos", **{"Idempotency-Key": f"till-7:{i}"}),
                              json={"member_ref": ref, "amount_minor": amount, "occurred_at": (now + timedelta(seconds=i)).isoformat()})
        body = r.json()
        console.print(f"{name} spends {amount / 100:.2f} at Harbour Grocery: +{body['points']} points"
                      f"{' (' + body['campaign'] + ')' if body['campaign'] else ''}, tier {body['tier']}")
    retry = grocery.http.post("/v1/purchases", headers=grocery.headers("pos", **{"Idempotency-Key": "till-7:0"}),
                              json={"member_ref": sessions["alice", "grocery"].balance()["member_ref"], "amount_minor": 268_000,
                                    "occurred_at": now.isoformat()})
    console.print(f"the till retries its first request: replayed={retry.json()['replayed']}, no points added")

    console.rule("[bold]Cross-brand")
    for name in ("alice", "bob"):
        sessions[name, "grocery"].consent("alliance_exchange")
        sessions[name, "grocery"].link_wallet(wallets[name])
    x = sessions["alice", "grocery"].exchange(50)
    console.print(f"alice exchanges {x['brand_points']} Harbour points into {x['ap_amount']} AP ({x['status']}, tx {x['tx_hash'][:12]}...)")
    x = sessions["bob", "grocery"].exchange(20)
    console.print(f"bob exchanges {x['brand_points']} Harbour points into {x['ap_amount']} AP")
    for name, bid, amount in (("alice", "airline", 30), ("bob", "cafe", 15)):
        client = sessions[name, bid]
        client.consent("alliance_exchange")
        if client.linked_wallet() != wallets[name].address:
            client.link_wallet(wallets[name])  # the redeeming brand credits only the wallet's owner
        r = client.redeem(client.authorise(wallets[name], amount))
        console.print(f"{name} redeems {amount} AP at {BRANDS[bid].name}: +{r['reward_points']} {BRANDS[bid].name} points (epoch {r['epoch']})")
    try:
        client = sessions["bob", "cafe"]
        client.redeem(client.authorise(wallets["bob"], 1_000))
    except Exception as exc:
        console.print(f"bob tries to redeem more AP than he holds: refused ({str(exc)[:90]}...)")

    spending_points(console, brands, sessions, wallets, now)

    console.rule("[bold]Privacy")
    sessions["bob", "grocery"].consent("alliance_exchange", granted=False)
    try:
        sessions["bob", "grocery"].exchange(1)
    except Exception as exc:
        console.print(f"bob withdraws alliance_exchange consent; his next exchange is refused at once ({exc.code})")
    erased = sessions["carol", "cafe"].erase()
    export = brands["cafe"].http.get(f"/v1/members/{erased['member_ref']}/export", headers=brands["cafe"].headers("operator")).json()
    console.print(f"carol's data erased at Bean Cafe (data key destroyed: {erased['key_absent']}); "
                  f"export now holds personal data: {export['personal_data'] or 'none'}, ledger lines kept: {len(export['ledger'])}")

    for name in ("alice", "bob"):
        for bid in ("grocery", "cafe"):
            sessions[name, bid].consent("overlap_analytics")
    shared = overlap.measure(brands["grocery"].gateway, "demo", CAFE_URL, "phone", client=brands["cafe"].http)
    console.print(f"Harbour Grocery and Bean Cafe count the members they share by private set intersection (neither learns who; "
                  f"only overlap_analytics consents count): "
                  f"{'not released (below k)' if shared['suppressed'] else 'about ' + str(shared['shared'])} ({shared['mechanism']}, epsilon {shared['epsilon']}; "
                  f"{shared['bytes_sent'] + shared['bytes_received']:,} bytes of PSI messages)")

    console.rule("[bold]Settlement and audit")
    for b in brands.values():
        for kind in ("consent-log", "audit-log"):
            b.http.post("/v1/admin/anchors", json={"kind": kind}, headers=b.headers("operator"))
    # The settlement service indexes the chain, proves its derivation equals the contracts, closes the
    # epoch and proves the close (every net amount re-derived from events, pool = supply x value).
    store = Store(f"sqlite:///{workdir / 'settlement.sqlite'}")
    close = close_epoch(local.alliance, local.governor, store, force=True)
    names = {b.address: BRANDS[bid].name for bid, b in brands.items()}
    positions = Table(title=f"Epoch {close.epoch} net positions (settlement-token units, 6 decimals)")
    for column in ("brand", "issued AP", "redeemed AP", "net", "collateral after"):
        positions.add_column(column, justify="left" if column == "brand" else "right")
    for row in close.to_dict()["settlement"]["brands"]:
        positions.add_row(names.get(row["brand"], row["brand"]), str(row["issued"]), str(row["redeemed"]),
                          f"{row['net_value']:+,}", f"{row['collateral']:,}")
    console.print(positions)
    console.print("close verified before and after against the chain: " + ("[green]yes[/green]" if close.ok else "[red]NO[/red]"))
    supply, pool, value = local.alliance.points.total_supply(), local.alliance.settlement.pool_balance(), local.alliance.settlement.value_per_point()
    console.print(f"AP supply {supply} x {value} = {supply * value:,}; pool {pool:,}: "
                  + ("[green]balanced[/green]" if pool == supply * value else "[red]NOT balanced[/red]"))

    balances = Table(title="Member balances")
    for column in ("member", *[BRANDS[b].name for b in brands], "AP (wallet)"):
        balances.add_column(column, justify="right")
    for name in people:
        row = []
        for bid in brands:
            try:
                row.append(str(sessions[name, bid].balance()["points"]))
            except Exception:
                row.append("erased")
        balances.add_row(name, *row, str(local.alliance.points.balance_of(wallets[name].address)))
    console.print(balances)

    for bid, b in brands.items():
        report = b.http.get("/v1/audit/reconciliation", headers=b.headers("auditor")).json()
        console.print(f"{BRANDS[bid].name:16} reconciliation: " + ("[green]ok[/green]" if report["ok"] else f"[red]{report}[/red]"))

    # An auditor takes one of alice's receipts and checks it without trusting the brand.
    auditor = grocery.headers("auditor")
    proof = grocery.http.get("/v1/audit/logs/consent-log/1/proof", headers=auditor).json()
    key = PublicKey.from_pem(grocery.http.get("/v1/brand").json()["receipt_public_key_pem"].encode())
    verify_receipt(load_receipt(proof["entry"]["payload"]), key)
    anchor = local.alliance.anchor.anchor(grocery.address, "consent-log", proof["anchor"]["period"])
    from privacy.hashchain import entry_body

    included = verify_inclusion(entry_body(1, proof["entry"]["payload"]), 1, proof["tree_size"],
                                [bytes.fromhex(p) for p in proof["proof"]], anchor.root)
    console.print(f"auditor: receipt signature valid, included under the root anchored on chain in block {anchor.block_number}: "
                  + ("[green]yes[/green]" if included else "[red]NO[/red]"))
    federated_training(console, workdir, brands)
    report = build_report(store, local.alliance.manifest.value_per_point, names=names)
    written = write_report(report, workdir / "settlement-report")
    audit = verify(local.alliance, [GatewayAccess(bid, b.address, b.http, b.api_keys["auditor"]) for bid, b in brands.items()], store=store)
    audit_files = audit.write(workdir / "audit")
    console.print("compliance audit of every brand (hash chains, anchors on chain, receipts, consent behind every processing): "
                  + ("[green]pass[/green]" if audit.ok else "[red]FAIL[/red]"))
    console.print(f"settlement report: {', '.join(sorted({str(Path(p).parent) for paths in written.values() for p in paths}))}")
    console.print(f"audit report: {', '.join(audit_files.values())}")
    console.print(f"databases and keys are in {workdir}")
