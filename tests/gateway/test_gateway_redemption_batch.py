"""Concurrent redemption requests are accepted together (alliance.accept_redemptions): one statement
per kind of fact for the whole group, and each authorisation judged exactly as it would be alone."""

from __future__ import annotations

from harness import authorise, consent, enrol, link_wallet, new_wallet, new_world, start_world_brand
from sqlalchemy import event, select

from contracts.client import Redemption as RedemptionAuth
from gateway.db import transaction
from gateway.errors import Conflict, ConsentRequired, Forbidden, MemberNotActive
from gateway.models import Member, Redemption
from gateway.services import alliance as chain_ops
from gateway.services import members


def _item(brand, member_ref: str, auth: dict) -> chain_ops.RedemptionItem:
    with brand.gw.sessions() as session:
        member_id = session.scalars(select(Member.id).where(Member.member_ref == member_ref)).one()
    verified = chain_ops.verify_redemption(brand.gw, RedemptionAuth.from_dict(auth), brand.gw.now())
    return chain_ops.RedemptionItem(member_id, verified, chain_ops.quote_or_none(brand.gw))


def test_a_group_of_redemptions_is_judged_one_by_one_in_a_few_statements(request, tmp_path, clock):
    world = new_world(tmp_path)
    brand = start_world_brand(world, "cafe", 7, clock=clock)
    request.addfinalizer(brand.close)
    deadline = world.chain.timestamp() + 3600
    people = {}
    for name, phone in (("linked", "+8613900000001"), ("unlinked", "+8613900000002"), ("no_consent", "+8613900000003"),
                        ("frozen", "+8613900000004"), ("other", "+8613900000005")):
        m = enrol(brand, phone)
        wallet = new_wallet()
        consent(brand, m, "alliance_exchange")
        if name != "unlinked":
            link_wallet(brand, m, wallet)
        if name == "no_consent":
            consent(brand, m, "alliance_exchange", granted=False)  # withdrawn since
        people[name] = (m, wallet)
    with transaction(brand.gw.sessions) as session:
        frozen = session.scalars(select(Member).where(Member.member_ref == people["frozen"][0]["member_ref"])).one()
        members.set_status(session, frozen, "frozen")

    def auth(name: str, amount: int, nonce: int) -> dict:
        return authorise(world.alliance, people[name][1], brand, amount, deadline, nonce=nonce)

    first = auth("linked", 2, 0)
    items = [_item(brand, people[name][0]["member_ref"], a) for name, a in (
        ("linked", first),
        ("linked", first),  # the same authorisation twice in one group: the second is a replay
        ("linked", auth("linked", 3, 0)),  # another with a nonce already presented
        ("linked", auth("linked", 4, 1)),
        ("unlinked", auth("unlinked", 1, 0)),
        ("no_consent", auth("no_consent", 1, 0)),
        ("frozen", auth("frozen", 1, 0)),
        ("other", auth("linked", 5, 2)),  # the linked member's wallet, presented by someone else
        *(("other", auth("other", 1, n)) for n in range(12)),
    )]
    statements = []
    event.listen(brand.gw.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with transaction(brand.gw.sessions) as session:
        out = chain_ops.accept_redemptions(session, brand.gw, items, brand.gw.now())
        outcomes = [type(o).__name__ if isinstance(o, Exception) else ("replay" if o[1] else "new") for o in out]
        refs = [None if isinstance(o, Exception) else o[0] for o in out]
    assert outcomes == ["new", "replay", "Conflict", "new", "Forbidden", "ConsentRequired", "MemberNotActive", "Forbidden"] + ["new"] * 12
    assert refs[0] == refs[1]
    assert isinstance(out[2], Conflict) and isinstance(out[4], Forbidden) and isinstance(out[5], ConsentRequired)
    assert isinstance(out[6], MemberNotActive)
    # One at a time this took five statements or more per authorisation (about a hundred here).
    assert len(statements) <= 8, statements
    with brand.gw.sessions() as session:
        stored = session.scalars(select(Redemption).order_by(Redemption.id)).all()
    assert sorted(r.redemption_ref for r in stored) == sorted({r for r in refs if r is not None})
    assert {(r.owner, r.nonce, r.ap_amount, r.reward_points) for r in stored if r.owner == people["linked"][1].address} == {
        (people["linked"][1].address, "0", 2, 14), (people["linked"][1].address, "1", 4, 28)}
    # Presented again later, alone: the same answers.
    with transaction(brand.gw.sessions) as session:
        row, replayed = chain_ops.accept_redemption(session, brand.gw, session.get(Member, items[0].member_id), items[0].verified,
                                                    brand.gw.now())
    assert replayed and row.redemption_ref == refs[0]
