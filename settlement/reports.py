"""Settlement reports per epoch and over a period: JSON, CSV and charts (PNG and SVG).

Per brand: AP issued, AP redeemed at the brand net of refunds (the contracts book a refund as AP the
brand issues again; a report shows it as the redemption it reverses), net settlement value, collateral
after the close, and the **outstanding liability** of the brand as issuer.

**Issuer attribution is FIFO per wallet.** AP are one fungible token, so which brand's issuance a
redemption uses up is a convention. The one used here: every wallet holds a queue of lots
``(issuing brand, amount)`` in the order they arrived (Issued mints them; a wallet-to-wallet Transfer
moves the oldest lots of the sender to the back of the receiver's queue); a Redeemed event consumes the
owner's oldest lots first, and a Refunded event puts back the lots its redemption consumed, newest first.
So the points a member earned first are the ones they spend first, the same rule the brands' own
ledgers use for brand points, and the attribution never depends on anything but the chain's events.

**Outstanding liability** of brand B = AP issued by B − AP issued by B and redeemed anywhere (by the
attribution) − AP of B expired. *AP do not expire*: the contracts have no expiry, so the expired
term is 0 on chain (expiry is a brand-points matter, in each gateway's FIFO lots: each brand's points
liability, as its gateway's audit API states it, is reported beside its AP figures as ``brand_points``:
issued, spent, expired, clawed back, given and donated, outstanding at the declared value, breakage). The sum of
outstanding liabilities over the brands equals the AP supply (checked, and reported as a check).
Valued at the alliance's fixed value per point, in settlement-token units.

**Cross-brand flows**: the matrix ``flows[issuer][redeemer]`` of AP, from the same attribution.

**KPIs** (REQUIREMENTS K-05, K-06, P-52):
- points usage rate = AP redeemed / AP issued in the period;
- cross-brand redemption share = AP redeemed at a brand other than their issuer / AP redeemed;
- breakage (AP) = AP expired / AP issued = 0 by construction (AP never expire); reported with the
  unredeemed share (outstanding / issued), the most that could ever become breakage;
- brand-points expiry rate (when gateway ledgers are given) = brand points expired / brand points issued.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .epochs import Derivation, derive
from .indexer import events
from .store import Store

ZERO = "0x0000000000000000000000000000000000000000"
UNATTRIBUTED = "unattributed"


@dataclass
class Attribution:
    """FIFO attribution of every redemption to issuers, per epoch (see the module docstring)."""

    flows: dict[int, dict[tuple[str, str], int]]  # epoch -> (issuer, redeemer) -> AP
    issued: dict[int, dict[str, int]]  # epoch -> issuer -> AP
    redeemed_by_issuer: dict[int, dict[str, int]]  # epoch -> issuer -> AP of theirs redeemed
    outstanding_after: dict[int, dict[str, int]]  # epoch -> issuer -> outstanding at the end of the epoch
    outstanding: dict[str, int]  # now
    unattributed: int  # AP redeemed or moved that no lot covered (0 unless the events are inconsistent)


def attribute(store: Store) -> Attribution:
    lots: dict[str, deque] = defaultdict(deque)
    consumed: dict[tuple[str, str, int], list[list]] = {}
    flows: dict[int, dict[tuple[str, str], int]] = defaultdict(lambda: defaultdict(int))
    issued: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    redeemed_by_issuer: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    outstanding: dict[str, int] = defaultdict(int)
    outstanding_after: dict[int, dict[str, int]] = {}
    unattributed = 0
    epoch = 1

    def take(wallet: str, amount: int) -> list[list]:
        nonlocal unattributed
        queue, taken = lots[wallet], []
        while amount and queue:
            lot = queue[0]
            n = min(lot[1], amount)
            taken.append([lot[0], n])
            lot[1] -= n
            amount -= n
            if lot[1] == 0:
                queue.popleft()
        if amount:
            unattributed += amount
            taken.append([UNATTRIBUTED, amount])
        return taken

    with store.session() as session:
        for e in events(session, "Issued", "Transfer", "Redeemed", "Refunded", "EpochClosed"):
            if e.name == "Issued":
                lots[e.account].append([e.brand, e.amount])
                issued[epoch][e.brand] += e.amount
                outstanding[e.brand] += e.amount
            elif e.name == "Transfer":
                if e.contract != "AlliancePoints" or e.account == ZERO or e.counterparty == ZERO:
                    continue  # mints and burns are covered by Issued/Refunded and Redeemed
                for issuer, n in take(e.account, e.amount):
                    lots[e.counterparty].append([issuer, n])
            elif e.name == "Redeemed":
                taken = take(e.account, e.amount)
                consumed[e.account, e.brand, int(e.nonce)] = taken
                for issuer, n in taken:
                    flows[epoch][issuer, e.brand] += n
                    redeemed_by_issuer[epoch][issuer] += n
                    outstanding[issuer] -= n
            elif e.name == "Refunded":
                taken = consumed.get((e.account, e.brand, int(e.nonce)), [[UNATTRIBUTED, e.amount]])
                amount = e.amount
                for lot in reversed(taken):
                    if not amount:
                        break
                    n = min(lot[1], amount)
                    lot[1] -= n
                    amount -= n
                    lots[e.account].appendleft([lot[0], n])
                    flows[epoch][lot[0], e.brand] -= n
                    redeemed_by_issuer[epoch][lot[0]] -= n
                    outstanding[lot[0]] += n
            elif e.name == "EpochClosed":
                outstanding_after[epoch] = {k: v for k, v in outstanding.items() if k != UNATTRIBUTED}
                epoch += 1
    return Attribution({k: dict(v) for k, v in flows.items()}, {k: dict(v) for k, v in issued.items()},
                       {k: dict(v) for k, v in redeemed_by_issuer.items()}, outstanding_after,
                       {k: v for k, v in outstanding.items() if k != UNATTRIBUTED}, unattributed)


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 6) if den else None


def _kpis(issued: int, redeemed: int, cross: int, outstanding: int, cumulative_issued: int) -> dict[str, Any]:
    return {"points_usage_rate": _rate(redeemed, issued), "cross_brand_redemption_share": _rate(cross, redeemed),
            "breakage_rate_ap": 0.0 if issued else None, "ap_expired": 0,
            "unredeemed_share": _rate(outstanding, cumulative_issued),
            "definitions": {
                "points_usage_rate": "AP redeemed / AP issued in the period",
                "cross_brand_redemption_share": "AP redeemed at a brand other than their (FIFO) issuer / AP redeemed",
                "breakage_rate_ap": "AP expired / AP issued: AP never expire, so 0",
                "unredeemed_share": "AP outstanding / AP ever issued: the upper bound of eventual breakage"}}


def build_report(store: Store, value_per_point: int, *, epochs: Iterable[int] | None = None,
                 names: dict[str, str] | None = None, brand_points: dict[str, dict[str, int]] | None = None,
                 derivation: Derivation | None = None) -> dict[str, Any]:
    """The settlement report over ``epochs`` (closed epochs; default all), each epoch on its own and
    the period as a whole."""
    d = derivation or derive(store, value_per_point)
    att = attribute(store)
    names = {**d.names, **(names or {})}
    chosen = sorted(d.epochs) if epochs is None else [e for e in sorted(set(epochs)) if e in d.epochs]
    brands = list(d.brands)
    label = lambda b: names.get(b, b)  # noqa: E731

    def epoch_rows(e: int) -> list[dict[str, Any]]:
        record = d.epochs[e]
        out_after = att.outstanding_after.get(e, {})
        rows = []
        for b in brands:
            be = record.brands.get(b)
            issued, redeemed = (be.issued - be.refunded, be.redeemed - be.refunded) if be else (0, 0)
            rows.append({"brand": b, "name": label(b), "issued_ap": issued, "redeemed_ap": redeemed,
                         "net_value": (redeemed - issued) * value_per_point,
                         "collateral": be.collateral if be else None,
                         "issuer_redeemed_ap": att.redeemed_by_issuer.get(e, {}).get(b, 0),
                         "expired_ap": 0,
                         "outstanding_liability_ap": out_after.get(b, 0),
                         "outstanding_liability_value": out_after.get(b, 0) * value_per_point,
                         "settled_as_derived": be.ok if be else True})
        return rows

    def matrix(flows: dict[tuple[str, str], int]) -> dict[str, Any]:
        issuers = brands + ([UNATTRIBUTED] if any(i == UNATTRIBUTED for i, _ in flows) else [])
        return {"issuers": [label(b) for b in issuers], "redeemers": [label(b) for b in brands], "addresses": issuers,
                "ap": [[flows.get((i, r), 0) for r in brands] for i in issuers]}

    def kpis_for(flows: dict[tuple[str, str], int], issued: int, redeemed: int, outstanding: int, cumulative: int):
        cross = sum(v for (i, r), v in flows.items() if i != r)
        return _kpis(issued, redeemed, cross, outstanding, cumulative)

    per_epoch = []
    period_flows: dict[tuple[str, str], int] = defaultdict(int)
    cumulative = 0
    for e in sorted(d.epochs):
        cumulative += d.epochs[e].issued - d.epochs[e].refunded
        if e not in chosen:
            continue
        record = d.epochs[e]
        flows = att.flows.get(e, {})
        for k, v in flows.items():
            period_flows[k] += v
        outstanding = sum(att.outstanding_after.get(e, {}).values())
        per_epoch.append({
            "epoch": e, "opened_at": record.opened_at, "closed_at": record.closed_at, "close_tx": record.close_tx,
            "issued_ap": record.issued - record.refunded, "redeemed_ap": record.redeemed - record.refunded, "pool": record.pool, "supply": record.supply,
            "pool_equals_supply_x_value": record.pool == (record.supply or 0) * value_per_point,
            "outstanding_ap": outstanding, "brands": epoch_rows(e), "flows": matrix(flows),
            "kpis": kpis_for(flows, record.issued - record.refunded, record.redeemed - record.refunded, outstanding, cumulative),
            "checks": [c.to_dict() for c in record.checks(value_per_point)]})
    period_issued = sum(p["issued_ap"] for p in per_epoch)
    period_redeemed = sum(p["redeemed_ap"] for p in per_epoch)
    last = per_epoch[-1] if per_epoch else None
    period_brands = []
    for b in brands:
        rows = [r for p in per_epoch for r in p["brands"] if r["brand"] == b]
        period_brands.append({
            "brand": b, "name": label(b), "issued_ap": sum(r["issued_ap"] for r in rows), "redeemed_ap": sum(r["redeemed_ap"] for r in rows),
            "net_value": sum(r["net_value"] for r in rows), "collateral": next((r["collateral"] for r in reversed(rows) if r["collateral"] is not None), None),
            "expired_ap": 0, "outstanding_liability_ap": rows[-1]["outstanding_liability_ap"] if rows else 0,
            "outstanding_liability_value": rows[-1]["outstanding_liability_value"] if rows else 0,
            "brand_points": (brand_points or {}).get(b)})
    outstanding_now = sum(att.outstanding.values())
    return {
        "value_per_point": value_per_point, "epochs": [p["epoch"] for p in per_epoch], "indexed_block": d.block,
        "attribution": "FIFO per wallet (see settlement.reports)", "expiry": "AP do not expire (expired = 0); brand-points expiry per gateway",
        "per_epoch": per_epoch,
        "period": {"issued_ap": period_issued, "redeemed_ap": period_redeemed,
                   "net_value_sum": sum(r["net_value"] for r in period_brands),
                   "brands": period_brands, "flows": matrix(period_flows),
                   "kpis": kpis_for(period_flows, period_issued, period_redeemed, last["outstanding_ap"] if last else 0, cumulative)},
        "open_epoch": {"epoch": d.current_epoch, "issued": {label(b): v for b, v in d.open_issued.items()},
                       "redeemed": {label(b): v for b, v in d.open_redeemed.items()}},
        "checks": [
            {"name": "outstanding liabilities sum to the AP supply", "ok": outstanding_now == d.supply,
             "detail": {"outstanding": outstanding_now, "supply": d.supply}},
            {"name": "every redemption attributed to an issuer", "ok": att.unattributed == 0, "detail": {"unattributed_ap": att.unattributed}},
            *[c.to_dict() for c in d.checks()]],
    }


# ---------------------------------------------------------------------------------------- files


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


# The brand's own points, beside its AP (the period's rows: the liability as its gateway states it now).
BRAND_POINTS_FIGURES = ["issued", "spent", "expired", "clawed_back", "given", "donated", "outstanding", "outstanding_value_minor",
                        "breakage_bp"]
BRAND_COLUMNS = ["epoch", "brand", "name", "issued_ap", "redeemed_ap", "net_value", "collateral", "expired_ap",
                 "outstanding_liability_ap", "outstanding_liability_value", *(f"brand_points_{k}" for k in BRAND_POINTS_FIGURES)]


def brands_csv(report: dict[str, Any]) -> str:
    rows = [{"epoch": p["epoch"], **r} for p in report["per_epoch"] for r in p["brands"]]
    rows += [{"epoch": "period", **r, **{f"brand_points_{k}": (r["brand_points"] or {}).get(k) for k in BRAND_POINTS_FIGURES}}
             for r in report["period"]["brands"]]
    return _csv(rows, BRAND_COLUMNS)


def flows_csv(report: dict[str, Any]) -> str:
    rows = []
    for scope, m in [(p["epoch"], p["flows"]) for p in report["per_epoch"]] + [("period", report["period"]["flows"])]:
        for issuer, line in zip(m["issuers"], m["ap"]):
            for redeemer, ap in zip(m["redeemers"], line):
                if ap:
                    rows.append({"epoch": scope, "issuer": issuer, "redeemer": redeemer, "ap": ap})
    return _csv(rows, ["epoch", "issuer", "redeemer", "ap"])


def epochs_csv(report: dict[str, Any]) -> str:
    rows = [{**p, **{k: v for k, v in p["kpis"].items() if k != "definitions"}} for p in report["per_epoch"]]
    return _csv(rows, ["epoch", "opened_at", "closed_at", "issued_ap", "redeemed_ap", "pool", "supply", "pool_equals_supply_x_value",
                       "outstanding_ap", "points_usage_rate", "cross_brand_redemption_share", "breakage_rate_ap", "close_tx"])


# ---------------------------------------------------------------------------------------- charts


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none"})
    return plt


def _short(name: str, n: int = 16) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def positions_chart(rows: list[dict[str, Any]], title: str):
    """Issued vs redeemed per brand (bars) with the net settlement value (diamonds, right axis)."""
    plt = _plt()
    names = [_short(r["name"]) for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(rows) + 3), 4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["issued_ap"] for r in rows], 0.4, label="AP issued", color="#4C78A8")
    ax.bar([i + 0.2 for i in x], [r["redeemed_ap"] for r in rows], 0.4, label="AP redeemed here", color="#F58518")
    ax.set_xticks(list(x), names, rotation=30 if len(rows) > 5 else 0, ha="right" if len(rows) > 5 else "center")
    ax.set_ylabel("alliance points")
    ax2 = ax.twinx()
    nets = [r["net_value"] for r in rows]
    ax2.scatter(list(x), nets, marker="D", color=["#54A24B" if n >= 0 else "#E45756" for n in nets], zorder=3, label="net value")
    ax2.axhline(0, color="#999", lw=0.8)
    ax2.set_ylabel("net settlement value (token units; + paid to brand)")
    ax2.spines["right"].set_visible(True)
    ax.set_title(title)
    handles = ax.get_legend_handles_labels()
    h2 = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + h2[0], handles[1] + h2[1], loc="upper center", bbox_to_anchor=(0.5, -0.12 if len(rows) <= 5 else -0.3),
              ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def flows_chart(m: dict[str, Any], title: str):
    """Heat map of AP from issuer (rows) to redeeming brand (columns), numbers in the cells."""
    plt = _plt()
    data = m["ap"]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.5 * len(m["redeemers"]) + 3), max(3.5, 0.4 * len(m["issuers"]) + 2)))
    im = ax.imshow(data or [[0]], cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(m["redeemers"])), [_short(n) for n in m["redeemers"]], rotation=35, ha="right")
    ax.set_yticks(range(len(m["issuers"])), [_short(n) for n in m["issuers"]])
    ax.set_xlabel("redeemed at")
    ax.set_ylabel("issued by (FIFO)")
    peak = max((max(r) for r in data if r), default=0) or 1
    if len(m["redeemers"]) <= 12:
        for i, row in enumerate(data):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, f"{v:,}", ha="center", va="center", fontsize=8, color="white" if v > peak * 0.6 else "black")
    fig.colorbar(im, ax=ax, label="AP")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def liability_chart(report: dict[str, Any]):
    """Outstanding liability per issuer after each epoch (stacked), AP supply as a line."""
    plt = _plt()
    epochs = [p["epoch"] for p in report["per_epoch"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    if epochs:
        names = [r["name"] for r in report["per_epoch"][0]["brands"]]
        bottom = [0] * len(epochs)
        cmap = plt.get_cmap("tab20")
        for k, name in enumerate(names):
            vals = [p["brands"][k]["outstanding_liability_ap"] for p in report["per_epoch"]]
            ax.bar(epochs, vals, bottom=bottom, label=_short(name), color=cmap(k % 20))
            bottom = [a + b for a, b in zip(bottom, vals)]
        ax.plot(epochs, [p["supply"] for p in report["per_epoch"]], "k.--", label="AP supply")
        ax.set_xticks(epochs)
    ax.set_xlabel("epoch")
    ax.set_ylabel("outstanding AP (liability by issuer)")
    ax.set_title("Outstanding liability after each close")
    if epochs and len(report["per_epoch"][0]["brands"]) <= 12:
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    fig.tight_layout()
    return fig


def svg_of(fig) -> str:
    """The figure as inline SVG text (for the console)."""
    plt = _plt()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _save(fig, path: Path) -> list[Path]:
    plt = _plt()
    out = []
    for ext in ("png", "svg"):
        target = path.with_suffix("." + ext)
        fig.savefig(target, dpi=130 if ext == "png" else None)
        out.append(target)
    plt.close(fig)
    return out


def write_report(report: dict[str, Any], outdir: str | Path, charts: bool = True) -> dict[str, list[str]]:
    """report.json, brands.csv, flows.csv, epochs.csv and, per epoch and for the period, PNG+SVG charts."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {"json": [], "csv": [], "charts": []}
    (outdir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    written["json"].append(str(outdir / "report.json"))
    for name, text in (("brands.csv", brands_csv(report)), ("flows.csv", flows_csv(report)), ("epochs.csv", epochs_csv(report))):
        (outdir / name).write_text(text)
        written["csv"].append(str(outdir / name))
    if charts:
        for p in report["per_epoch"]:
            written["charts"] += map(str, _save(positions_chart(p["brands"], f"Epoch {p['epoch']}: issued, redeemed, net per brand"),
                                                outdir / f"epoch_{p['epoch']}_positions"))
            written["charts"] += map(str, _save(flows_chart(p["flows"], f"Epoch {p['epoch']}: cross-brand flows (AP)"),
                                                outdir / f"epoch_{p['epoch']}_flows"))
        written["charts"] += map(str, _save(positions_chart(report["period"]["brands"], "Period: issued, redeemed, net per brand"),
                                            outdir / "period_positions"))
        written["charts"] += map(str, _save(flows_chart(report["period"]["flows"], "Period: cross-brand flows (AP)"), outdir / "period_flows"))
        written["charts"] += map(str, _save(liability_chart(report), outdir / "period_liability"))
    return written
