"""Reports: FIFO issuer attribution on a worked example, liabilities summing to the supply, and the
JSON, CSV and chart files; from a store on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import json

from contracts.chain import connect
from settlement.indexer import Indexer
from settlement.reports import attribute, build_report, write_report
from settlement.simulate import SimAlliance


def test_fifo_attribution_and_report_files(anvil_url, new_store, tmp_path):
    chain = connect(anvil_url)
    sim = SimAlliance.deploy(chain, 3, members=2, fund_members=True)
    a, b, c = sim.brands
    alice, bob = sim.members
    sim.mint(a, alice.address, 10)   # alice: [A10]
    sim.flush()
    sim.mint(b, alice.address, 5)    # alice: [A10, B5]
    sim.flush()
    sim.transfer(alice, bob.address, 12)  # bob: [A10, B2]; alice: [B3]
    sim.redeem(bob, c, 11)           # C redeems A10 + B1
    sim.flush()
    r = sim.redeem(alice, a, 3)      # A redeems B3
    sim.flush()
    sim.refund(a, r, 1)              # alice gets B1 back
    sim.close_epoch()
    store = new_store()
    Indexer(sim.alliance, store).run()
    att = attribute(store)
    assert att.flows[1] == {(a.address, c.address): 10, (b.address, c.address): 1, (b.address, a.address): 2}
    assert att.outstanding == {a.address: 0, b.address: 2}
    value = sim.alliance.manifest.value_per_point
    report = build_report(store, value, names={a.address: "A", b.address: "B", c.address: "C"})
    assert all(ch["ok"] for ch in report["checks"]), report["checks"]
    e1 = report["per_epoch"][0]
    rows = {r["name"]: r for r in e1["brands"]}
    assert rows["A"]["issued_ap"] == 10 and rows["A"]["redeemed_ap"] == 2 and rows["C"]["redeemed_ap"] == 11
    assert rows["A"]["net_value"] == -8 * value and rows["B"]["outstanding_liability_ap"] == 2
    assert e1["kpis"]["points_usage_rate"] == round(13 / 15, 6)
    assert e1["kpis"]["cross_brand_redemption_share"] == 1.0
    assert e1["flows"]["ap"] == [[0, 0, 10], [2, 0, 1], [0, 0, 0]]
    written = write_report(report, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["epochs"] == [1]
    brands = list(csv.DictReader((tmp_path / "out" / "brands.csv").open()))
    assert {r["name"] for r in brands} == {"A", "B", "C"} and brands[0]["epoch"] == "1"
    assert any(r["issuer"] == "A" and r["redeemer"] == "C" and r["ap"] == "10" for r in csv.DictReader((tmp_path / "out" / "flows.csv").open()))
    pngs = [p for p in written["charts"] if p.endswith(".png")]
    svgs = [p for p in written["charts"] if p.endswith(".svg")]
    assert len(pngs) == len(svgs) == 5
    for p in pngs:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in open(svgs[0]).read()
