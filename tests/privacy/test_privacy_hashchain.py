"""Hash-chained log: known answer, tamper detection and location at every position, rows, anchoring."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.errors import ChainError
from privacy.hashchain import GENESIS_PREV_HASH, ChainEntry, HashChain, entry_body, verify_chain
from privacy.merkle import MerkleTree, verify_inclusion

json_scalars = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=10)
payloads = st.dictionaries(st.text(max_size=6), json_scalars, max_size=3)
chains = st.lists(payloads, min_size=2, max_size=10)


def build(items: list[dict[str, Any]]) -> list[ChainEntry]:
    chain = HashChain()
    for p in items:
        chain.append(p)
    return chain.entries


def test_known_answer_for_the_first_entries() -> None:
    chain = HashChain()
    e0 = chain.append({"a": 1})
    e1 = chain.append({"b": "x"})
    assert e0.prev_hash == GENESIS_PREV_HASH == "00" * 32
    assert e0.entry_hash == hashlib.sha256(bytes(32) + b'{"payload":{"a":1},"seq":0}').hexdigest()
    assert e1.prev_hash == e0.entry_hash
    assert e1.entry_hash == hashlib.sha256(bytes.fromhex(e0.entry_hash) + b'{"payload":{"b":"x"},"seq":1}').hexdigest()
    assert chain.head == (1, e1.entry_hash) and len(chain) == 2


@given(chains)
@settings(max_examples=40, deadline=None)
def test_untouched_chain_verifies_from_entries_and_rows(items: list[dict[str, Any]]) -> None:
    entries = build(items)
    result = verify_chain(entries, expected_head=(len(entries) - 1, entries[-1].entry_hash))
    assert result.ok and bool(result) and result.checked == len(entries)
    assert result.head == (len(entries) - 1, entries[-1].entry_hash)
    rows = [e.to_row() for e in entries]
    assert all(isinstance(r["payload_json"], str) for r in rows)
    assert json.loads(json.dumps(rows)) == rows  # plain JSON-able, i.e. fits a DB row
    assert verify_chain(rows, expected_count=len(rows)).ok
    assert [ChainEntry.from_row(r) for r in rows] == entries


@given(chains)
@settings(max_examples=40, deadline=None)
def test_edit_at_every_position_is_located(items: list[dict[str, Any]]) -> None:
    entries = build(items)
    for i, e in enumerate(entries):
        edited = dict(e.payload)
        edited["__tampered__"] = True
        tampered = entries[:i] + [ChainEntry(e.seq, edited, e.prev_hash, e.entry_hash)] + entries[i + 1 :]
        result = verify_chain(tampered)
        assert not result.ok and result.first_bad_seq == i, (i, result)


@given(chains)
@settings(max_examples=40, deadline=None)
def test_delete_at_every_position_is_located(items: list[dict[str, Any]]) -> None:
    entries = build(items)
    head = (len(entries) - 1, entries[-1].entry_hash)
    for i in range(len(entries)):
        result = verify_chain(entries[:i] + entries[i + 1 :], expected_head=head)
        assert not result.ok and result.first_bad_seq == i, (i, result)


@given(chains, payloads)
@settings(max_examples=40, deadline=None)
def test_insert_at_every_position_is_located(items: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    entries = build(items)
    for i in range(len(entries) + 1):
        # A forger who does the work: correct seq, link and hash for the new entry.
        prev = entries[i - 1].entry_hash if i else GENESIS_PREV_HASH
        body = entry_body(i, extra)
        forged = ChainEntry(i, extra, prev, hashlib.sha256(bytes.fromhex(prev) + body).hexdigest())
        result = verify_chain(entries[:i] + [forged] + entries[i:])
        if i < len(entries):
            # The forged entry itself is fine; the original at seq i no longer fits after it.
            assert not result.ok and result.first_bad_seq == i + 1, (i, result)
        else:
            # Appending at the end is what an append-only log allows.
            assert result.ok
        # A lazy forger (copying another entry in) is caught at the insertion point.
        copy = entries[i - 1] if i else entries[1]
        lazy = verify_chain(entries[:i] + [copy] + entries[i:])
        assert not lazy.ok and lazy.first_bad_seq == i, (i, lazy)


def _forge(seq: int, payload: dict[str, Any], prev: str) -> ChainEntry:
    """A self-consistent entry: its own hash is right for its seq, payload and prev_hash."""
    return ChainEntry(seq, payload, prev, hashlib.sha256(bytes.fromhex(prev) + entry_body(seq, payload)).hexdigest())


@given(chains)
@settings(max_examples=40, deadline=None)
def test_replacing_an_entry_with_a_self_consistent_forgery_is_located(items: list[dict[str, Any]]) -> None:
    entries = build(items)
    head = (len(entries) - 1, entries[-1].entry_hash)
    for i, e in enumerate(entries):
        payload = {**e.payload, "__forged__": True}
        # Linked to the right predecessor: entry i is fine, entry i + 1 no longer links to it.
        linked = entries[:i] + [_forge(i, payload, e.prev_hash)] + entries[i + 1 :]
        result = verify_chain(linked, expected_head=head)
        assert not result.ok and result.first_bad_seq == min(i + 1, len(entries) - 1), (i, result)
        # Not linked (e.g. built on a stale head): caught at i itself.
        unlinked = entries[:i] + [_forge(i, payload, "11" * 32)] + entries[i + 1 :]
        result = verify_chain(unlinked)
        assert not result.ok and result.first_bad_seq == i, (i, result)


def test_renumbered_entry_is_rejected() -> None:
    entries = build([{"n": i} for i in range(3)])
    # Self-consistent apart from its position: claims seq 7 while sitting at seq 1.
    forged = _forge(7, {"n": 1}, entries[0].entry_hash)
    result = verify_chain([entries[0], forged])
    assert not result.ok and result.first_bad_seq == 1 and "seq" in (result.reason or "")


@given(chains, st.data())
@settings(max_examples=40, deadline=None)
def test_swapping_two_entries_is_located(items: list[dict[str, Any]], data: st.DataObject) -> None:
    entries = build(items)
    i = data.draw(st.integers(0, len(entries) - 2))
    j = data.draw(st.integers(i + 1, len(entries) - 1))
    swapped = list(entries)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    result = verify_chain(swapped)
    assert not result.ok and result.first_bad_seq == i


@given(chains, st.data())
@settings(max_examples=40, deadline=None)
def test_truncation_is_detected_only_against_an_anchor(items: list[dict[str, Any]], data: st.DataObject) -> None:
    entries = build(items)
    keep = data.draw(st.integers(0, len(entries) - 1))
    truncated = entries[:keep]
    assert verify_chain(truncated).ok  # no anchor: a shorter log looks valid
    head = (len(entries) - 1, entries[-1].entry_hash)
    by_head = verify_chain(truncated, expected_head=head)
    by_count = verify_chain(truncated, expected_count=len(entries))
    assert not by_head.ok and by_head.first_bad_seq == keep
    assert not by_count.ok and by_count.first_bad_seq == keep


def test_full_rewrite_needs_the_anchor_to_be_caught() -> None:
    entries = build([{"n": i} for i in range(6)])
    head = (5, entries[-1].entry_hash)
    # The writer changes entry 2 and recomputes every later hash.
    rewritten = build([{"n": i} if i != 2 else {"n": 99} for i in range(6)])
    assert verify_chain(rewritten).ok
    result = verify_chain(rewritten, expected_head=head)
    assert not result.ok and result.first_bad_seq == 5 and "rewritten" in (result.reason or "")
    # An older anchor that the log has grown past still pins the prefix.
    assert not verify_chain(rewritten, expected_head=(3, entries[3].entry_hash)).ok
    assert verify_chain(entries, expected_head=(3, entries[3].entry_hash)).ok


def test_tampered_and_malformed_rows_are_located() -> None:
    rows = [e.to_row() for e in build([{"n": i} for i in range(5)])]
    edited = [dict(r) for r in rows]
    edited[3]["payload_json"] = '{"n":42}'
    assert verify_chain(edited).first_bad_seq == 3
    broken = [dict(r) for r in rows]
    broken[2]["entry_hash"] = "zz" * 32
    result = verify_chain(broken)
    assert not result.ok and result.first_bad_seq == 2 and "malformed" in (result.reason or "")
    # Stored JSON need not be byte-identical, only equal: whitespace changes are not tampering.
    spaced = [dict(r) for r in rows]
    spaced[1]["payload_json"] = '{ "n" : 1 }'
    assert verify_chain(spaced).ok


def test_resume_after_a_stored_head_and_verify_a_segment() -> None:
    first = build([{"n": i} for i in range(3)])
    chain = HashChain(head=(first[-1].seq, first[-1].entry_hash))
    more = [chain.append({"n": i}) for i in range(3, 6)]
    assert [e.seq for e in more] == [3, 4, 5]
    assert verify_chain(first + more).ok
    assert verify_chain(more, start=(2, first[-1].entry_hash)).ok
    assert verify_chain(more).first_bad_seq == 0  # without the checkpoint it is not a log from genesis
    with pytest.raises(ChainError):
        verify_chain(more, start=(4, first[-1].entry_hash), expected_head=(1, first[1].entry_hash))


def test_entries_are_immune_to_later_changes_of_the_callers_dict() -> None:
    chain = HashChain()
    payload = {"tags": ["a"]}
    entry = chain.append(payload)
    payload["tags"].append("b")
    assert entry.payload == {"tags": ["a"]}
    assert verify_chain(chain.entries).ok


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": 2**60}, {1: "int key"}, ["not", "a", "dict"]])
def test_non_canonical_payloads_are_rejected(bad: Any) -> None:
    with pytest.raises(ChainError):
        HashChain().append(bad)


def test_bad_heads_are_rejected() -> None:
    for head in [(-1, "00" * 32), (0, "xyz"), (0, "AB" * 32)]:
        with pytest.raises(ChainError):
            HashChain(head=head)


def test_log_anchors_to_a_merkle_root_and_proves_one_entry() -> None:
    entries = build([{"receipt_id": f"r{i}", "state": "granted"} for i in range(13)])
    tree = MerkleTree(e.leaf() for e in entries)
    root = tree.root()
    proof = tree.inclusion_proof(7)
    assert verify_inclusion(entries[7].leaf(), 7, len(entries), proof, root)
    assert not verify_inclusion(entries[8].leaf(), 7, len(entries), proof, root)
