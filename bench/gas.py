"""Gas cost of the alliance contracts' hot paths, and redemption throughput, on anvil; prints one
JSON object.

Run from the repository root:  .venv/bin/python bench/gas.py  [--redemptions N] [--senders K]

Keys (targets in brackets; every figure is the gasUsed of a mined transaction on a fresh anvil):
  mint_gas                          one mint to a new holder, the brand's counters already written
  batch_mint_gas_per_member_1/_10/_100
                                    mintBatch to N new holders, divided by N    [_100 <= 35,000]
  redeem_by_signature_gas           the typical redemption: the brand already active in the epoch,
                                    the member's record slot at the brand already written (records
                                    of nonces 2k and 2k+1 share a slot, as v1's nonce words did)
                                                                                 [<= 75,000]
  redeem_fresh_record_gas           a redemption that opens a new record slot (a member's first at
                                    a brand, then every other one)
  redeem_sequence_mean_gas          the mean over a member's nonces 0 to 3 at one brand
  redeem_first_gas                  the brand's first redemption in the epoch (it joins the epoch's
                                    list of brands to settle)
  redeem_batch_gas_per_redemption_50
                                    redeemBatch of 50 members' authorisations, divided by 50
                                                                                 [<= 45,000]
  refund_gas                        a partial refund of a redemption           [<= 80,000]
  close_epoch_gas_per_brand_5/_20   closeEpoch with every brand active in the epoch (each issued
                                    and was redeemed at), divided by the brand count; a steady-state
                                    epoch (not the alliance's first close)      [_20 <= 60,000]
  close_epoch_first_gas_per_brand_20
                                    the same for the very first close, whose settled counters are
                                    written from zero (once per brand, ever)
  anchor_post_gas                   a brand posting its next consent-log root (head already set)
  anchor_first_post_gas             a brand's first post of a log kind
  redemptions_per_s_anvil           signed redemptions submitted with Transactor.send(wait=False)
                                    from several brand accounts at once (one thread each), then
                                    every receipt awaited; with redemptions_count and
                                    redemptions_seconds
  redemptions_per_s_anvil_prebuilt  the same with each transaction built once up front (calldata,
                                    gas limit, fees), so a sender only numbers, signs and sends:
                                    the ceiling of one Python process; _count and _seconds too
``targets`` repeats the targets and ``meets_targets`` says whether all are met.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_account import Account  # noqa: E402

from contracts.chain import Anvil, Chain, Transactor, connect  # noqa: E402
from contracts.client import Alliance  # noqa: E402
from contracts.defaults import EPOCH_S  # noqa: E402
from contracts.deploy import BrandTerms, deploy_alliance, onboard_brand  # noqa: E402

VPP = 10_000
FAR = 2**40
TARGETS = {"redeem_by_signature_gas": 75_000, "batch_mint_gas_per_member_100": 35_000, "close_epoch_gas_per_brand_20": 60_000,
           "redeem_batch_gas_per_redemption_50": 45_000, "refund_gas": 80_000}
ROOMY = BrandTerms("brand", rate=100, credit_limit=10**12, collateral=10**9 * VPP)


def gas(receipt) -> int:
    return int(receipt["gasUsed"])


def alliance_with_brands(chain: Chain, n: int) -> tuple[Alliance, Account, list]:
    governor = chain.new_account()
    alliance = deploy_alliance(chain, governor, value_per_point=VPP, epoch_lengths=(0, EPOCH_S))  # closes back to back
    brands = []
    for i in range(n):
        brand = chain.new_account(10**19)
        onboard_brand(alliance, governor, brand, BrandTerms(f"brand-{i}", ROOMY.rate, ROOMY.credit_limit, ROOMY.collateral))
        brands.append(brand)
    return alliance, governor, brands


def mint(alliance: Alliance, t: Transactor, to: str, ap_amount: int, ref: str):
    """Mint ``ap_amount`` AP: their price in brand points at the brand's first rate."""
    return alliance.points.mint(t, to, ap_amount * ROOMY.rate, 1, ref)


def mint_batch(alliance: Alliance, t: Transactor, grants: list[tuple[str, int, str]]):
    return alliance.points.mint_batch(t, [(to, ap_amount * ROOMY.rate, ref) for to, ap_amount, ref in grants], 1)


def fresh(n: int) -> list[str]:
    return [Account.create().address for _ in range(n)]


def hot_paths(chain: Chain) -> dict[str, int]:
    out: dict[str, int] = {}
    alliance, governor, (a, b) = alliance_with_brands(chain, 2)
    ap = alliance.points
    ta, tb = alliance.transactor(a), alliance.transactor(b)
    member = Account.create()

    # issue: warm the brand's counters first (the alliance's first mint writes them from zero)
    mint(alliance, ta, fresh(1)[0], 1, "warm-up")
    mint(alliance, ta, member.address, 10_000, "member")
    out["mint_gas"] = gas(mint(alliance, ta, fresh(1)[0], 100, "new-holder"))
    for n in (1, 10, 100):
        grants = [(holder, 100 + i, f"batch-{n}-{i}") for i, holder in enumerate(fresh(n))]
        out[f"batch_mint_gas_per_member_{n}"] = round(gas(mint_batch(alliance, ta, grants)) / n)

    # redeem at b: the first one in the epoch puts b on the epoch's settlement list; later ones find it there
    other = Account.create()
    mint(alliance, ta, other.address, 100, "other")
    out["redeem_first_gas"] = gas(ap.redeem(tb, ap.authorise(other, b.address, 1, FAR)))
    steady = [gas(ap.redeem(tb, ap.authorise(member, b.address, 10, FAR, nonce=n))) for n in range(4)]
    out["redeem_fresh_record_gas"] = max(steady[0::2])
    out["redeem_by_signature_gas"] = max(steady[1::2])
    out["redeem_sequence_mean_gas"] = round(sum(steady) / len(steady))
    out["refund_gas"] = gas(ap.refund(tb, member.address, 0, 5))

    # a batch of 50 members' authorisations (each member already holds AP)
    holders = [Account.create() for _ in range(50)]
    mint_batch(alliance, ta, [(h.address, 100, f"holder-{i}") for i, h in enumerate(holders)])
    batch = [ap.authorise(h, b.address, 10, FAR) for h in holders]
    receipt = ap.redeem_batch(tb, batch)
    assert len(ap.events(receipt, "Redeemed")) == 50
    out["redeem_batch_gas_per_redemption_50"] = round(gas(receipt) / 50)

    # anchor
    root = bytes(range(32))
    out["anchor_first_post_gas"] = gas(alliance.anchor.post(ta, "consent-log", 1, 10, root))
    out["anchor_post_gas"] = gas(alliance.anchor.post(ta, "consent-log", 2, 20, bytes(reversed(root))))
    return out


def close_epoch(chain: Chain, n: int) -> dict[str, int]:
    """Every brand issues to a member and redeems another member's AP, so each has a position."""
    alliance, governor, brands = alliance_with_brands(chain, n)
    ap, gov = alliance.points, alliance.transactor(governor)
    members = [Account.create() for _ in brands]
    issuer = alliance.transactor(brands[0])
    mint_batch(alliance, issuer, [(m.address, 1_000, f"seed-{i}") for i, m in enumerate(members)])

    def epoch(round_: int):
        for i, brand in enumerate(brands):
            t = alliance.transactor(brand)
            mint(alliance, t, members[i].address, 50 + i, f"e{round_}-{i}")
            redeemer = members[(i + 1) % n]  # a different member, so no brand nets to zero by accident
            ap.redeem(t, ap.authorise(redeemer, brand.address, 20 + i, FAR))
        return alliance.settlement.close_epoch(gov)

    first = epoch(1)
    steady = epoch(2)
    assert len(alliance.settlement.events(steady, "BrandSettled")) == n
    out = {f"close_epoch_gas_per_brand_{n}": round(gas(steady) / n)}
    if n == 20:
        out["close_epoch_first_gas_per_brand_20"] = round(gas(first) / n)
    return out


def throughput(chain: Chain, count: int, senders: int, prebuilt: bool) -> dict[str, float]:
    """`count` redemptions from `senders` brand accounts, one thread each, sent without waiting;
    then every receipt is awaited. With ``prebuilt`` the transactions (calldata, gas, fees) are
    built once up front and each thread only numbers, signs and sends them through its
    Transactor; otherwise each goes through ``Transactor.send(call, wait=False)``, which estimates
    gas and fills fees per transaction."""
    alliance, governor, brands = alliance_with_brands(chain, senders)
    ap = alliance.points
    per_brand = count // senders
    members = [Account.create() for _ in range(max(1, per_brand // 8))]
    mint_batch(alliance, alliance.transactor(brands[0]), [(m.address, 10**6, f"tp-{i}") for i, m in enumerate(members)])
    # sign every authorisation up front: the member's wallet does this, not the gateway
    work = []
    for brand in brands:
        nonces = {m.address: 0 for m in members}
        batch = []
        for k in range(per_brand):
            m = members[k % len(members)]
            batch.append(ap.authorise(m, brand.address, 1, FAR, nonce=nonces[m.address]))
            nonces[m.address] += 1
        work.append((alliance.transactor(brand), [ap.contract.functions.redeem(r.as_struct(), r.signature) for r in batch]))
    if prebuilt:
        sample = work[0][1][0]
        limit = int(sample.estimate_gas({"from": work[0][0].address}) * 1.5)  # a first redemption costs more
        fees = work[0][0]._fees()
        base = {"to": ap.address, "value": 0, "gas": limit, "chainId": chain.chain_id, **fees}
        work = [(t, [dict(base, data=call._encode_transaction_data()) for call in calls]) for t, calls in work]

    hashes: list = []
    errors: list = []
    lock = threading.Lock()

    def sender(t: Transactor, batch) -> None:
        mine = []
        try:
            for item in batch:
                mine.append(t._sign_and_send(item, False) if prebuilt else t.send(item, wait=False))
        except Exception as exc:  # noqa: BLE001 - reported in the output
            errors.append(repr(exc))
        with lock:
            hashes.extend(mine)

    threads = [threading.Thread(target=sender, args=w) for w in work]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    receipts = [chain.w3.eth.wait_for_transaction_receipt(h, timeout=120, poll_latency=0.01) for h in hashes]
    seconds = time.perf_counter() - start
    ok = sum(1 for r in receipts if r["status"] == 1)
    suffix = "_prebuilt" if prebuilt else ""
    out = {f"redemptions_per_s_anvil{suffix}": round(ok / seconds, 1), f"redemptions_count{suffix}": ok,
           f"redemptions_seconds{suffix}": round(seconds, 3)}
    if errors or ok != len(hashes):
        out[f"redemption_errors{suffix}"] = errors[:5] + ([f"{len(hashes) - ok} reverted"] if ok != len(hashes) else [])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redemptions", type=int, default=400, help="redemptions for the throughput figure")
    parser.add_argument("--senders", type=int, default=4, help="brand accounts sending them concurrently")
    args = parser.parse_args(argv)
    result: dict = {}
    with Anvil() as url:
        chain = connect(url)
        result.update(hot_paths(chain))
        result.update(close_epoch(chain, 5))
        result.update(close_epoch(chain, 20))
        result.update(throughput(chain, args.redemptions, args.senders, prebuilt=False))
        result.update(throughput(chain, args.redemptions, args.senders, prebuilt=True))
        result["redemption_senders"] = args.senders
    result["targets"] = TARGETS
    result["meets_targets"] = all(result[k] <= v for k, v in TARGETS.items())
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
