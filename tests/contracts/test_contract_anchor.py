"""ConsentAnchor: brands post log roots; periods only move forward and logs never shrink."""

from __future__ import annotations

import hashlib

from contracts.client import AnchorClient
from contracts_testkit import b32, call_revert, reverts

CONSENT = AnchorClient.CONSENT_LOG
AUDIT = AnchorClient.AUDIT_LOG


def root(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def test_kind_constants(w):
    f = w.anchor.contract.functions
    assert f.CONSENT_LOG().call() == CONSENT == b32("consent-log")
    assert f.AUDIT_LOG().call() == AUDIT
    assert f.MODEL_RELEASES().call() == AnchorClient.MODEL_RELEASES
    assert f.registry().call() == w.registry.address


def test_post_and_read(w):
    assert w.anchor.latest(w.a.address, CONSENT) is None
    receipt = w.anchor.post(w.t(w.a), "consent-log", 1, 42, root("a-1"))
    assert w.anchor.events(receipt, "Anchored") == [
        {"brand": w.a.address, "kind": CONSENT, "period": 1, "size": 42, "root": root("a-1")}
    ]
    block = w.chain.w3.eth.get_block(receipt["blockNumber"])
    anchor = w.anchor.anchor(w.a.address, CONSENT, 1)
    assert (anchor.root, anchor.size, anchor.posted_at, anchor.block_number) == (root("a-1"), 42, block["timestamp"], block["number"])
    assert w.anchor.latest(w.a.address, CONSENT) == (1, anchor)
    assert w.anchor.is_anchored(w.a.address, CONSENT, 1, root("a-1"))
    assert not w.anchor.is_anchored(w.a.address, CONSENT, 1, root("other"))
    assert not w.anchor.is_anchored(w.a.address, CONSENT, 2, root("a-1"))
    assert not w.anchor.is_anchored(w.b.address, CONSENT, 1, root("a-1"))
    assert not w.anchor.is_anchored(w.a.address, CONSENT, 7, b"\x00" * 32)

    # periods may skip; the log may stay the same size, with the same root
    w.anchor.post(w.t(w.a), CONSENT, 5, 42, root("a-1"))
    period, latest = w.anchor.latest(w.a.address, CONSENT)
    assert (period, latest.root, latest.size) == (5, root("a-1"), 42)
    w.anchor.post(w.t(w.a), CONSENT, 6, 43, root("a-6"))
    assert w.anchor.anchor(w.a.address, CONSENT, 1).root == root("a-1")  # never overwritten
    # kinds and brands are independent
    w.anchor.post(w.t(w.a), AUDIT, 1, 3, root("audit-1"))
    w.anchor.post(w.t(w.b), CONSENT, 1, 1, root("b-1"))
    assert w.anchor.latest(w.a.address, AUDIT)[0] == 1
    assert w.anchor.latest(w.b.address, CONSENT)[1].root == root("b-1")
    assert w.anchor.latest(w.c.address, CONSENT) is None


def test_post_reverts(w):
    t = w.t(w.c)
    with reverts("NotAdmitted", account=w.outsider.address):
        w.anchor.post(w.t(w.outsider), CONSENT, 1, 1, root("x"))
    with reverts("EmptyRoot"):
        w.anchor.post(t, CONSENT, 1, 1, b"\x00" * 32)
    w.anchor.post(t, CONSENT, 10, 100, root("c-10"))
    with reverts("PeriodNotAfterLatest", period=10, latest=10):
        w.anchor.post(t, CONSENT, 10, 100, root("c-10 again"))
    with reverts("PeriodNotAfterLatest", period=9, latest=10):
        w.anchor.post(t, CONSENT, 9, 100, root("c-9"))
    with reverts("LogShrank", size=99, latestSize=100):
        w.anchor.post(t, CONSENT, 11, 99, root("c-11"))
    w.anchor.post(t, CONSENT, 11, 101, root("c-11"))
    assert w.anchor.latest(w.c.address, CONSENT)[0] == 11


def test_anchors_are_append_only(w):
    """L5: v1 accepted a different root for the same size, and a post at period 2^64-1 locked that log
    kind forever. Larger sizes are checked off chain (RFC 9162 consistency proofs, in the audit)."""
    t = w.t(w.c)
    with reverts("PeriodJumpTooLarge", period=2**64 - 1, latest=0, maxJump=2**16):
        w.anchor.post(t, CONSENT, 2**64 - 1, 1, root("lock"))
    w.anchor.post(t, CONSENT, 2**16, 10, root("c-10"))  # the largest first period
    with reverts("PeriodJumpTooLarge", period=2**17 + 1, latest=2**16, maxJump=2**16):
        w.anchor.post(t, CONSENT, 2**17 + 1, 10, root("c-10"))
    with reverts("RootConflict", size=10, root=root("rewritten"), anchored=root("c-10")):
        w.anchor.post(t, CONSENT, 2**16 + 1, 10, root("rewritten"))
    w.anchor.post(t, CONSENT, 2**17, 10, root("c-10"))
    assert w.anchor.latest(w.c.address, CONSENT)[0] == 2**17


def test_anchors_survive_a_rotation(w):
    w.anchor.post(w.t(w.b), CONSENT, 1, 5, root("b"))
    w.registry.rotate(w.gov, w.b.address, w.candidate.address)
    with reverts("NotAdmitted", account=w.b.address):
        w.anchor.post(w.t(w.b), CONSENT, 2, 6, root("b-2"))
    assert w.anchor.is_anchored(w.candidate.address, CONSENT, 1, root("b"))
    assert w.anchor.is_anchored(w.b.address, CONSENT, 1, root("b"))  # history, by the old account too
    with reverts("PeriodNotAfterLatest", period=1, latest=1):
        w.anchor.post(w.t(w.candidate), CONSENT, 1, 6, root("b-1"))
    w.anchor.post(w.t(w.candidate), CONSENT, 2, 6, root("b-2"))


def test_suspended_brand_still_anchors(w):
    w.registry.suspend(w.gov, w.b.address, "review")
    w.anchor.post(w.t(w.b), CONSENT, 1, 5, root("b"))
    assert w.anchor.is_anchored(w.b.address, CONSENT, 1, root("b"))


def test_no_anchor(w):
    err = call_revert(lambda: w.anchor.anchor(w.a.address, CONSENT, 3))
    assert err.error == "NoAnchor"
    assert (err.args_["brand"].lower(), err.args_["kind"], err.args_["period"]) == (w.a.address.lower(), CONSENT, 3)
    w.anchor.post(w.t(w.a), CONSENT, 4, 1, root("a-4"))
    assert call_revert(lambda: w.anchor.anchor(w.a.address, CONSENT, 3)).error == "NoAnchor"
    assert call_revert(lambda: w.anchor.anchor(w.a.address, AUDIT, 4)).error == "NoAnchor"
