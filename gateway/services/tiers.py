"""Tiers: qualify on spend OR purchases OR engagement over a rolling window. Upgrades apply at once;
a member who no longer qualifies keeps the tier through a grace period, then drops one level at the
next review if still short."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect
from uuid_utils import uuid7

from ..db import as_utc
from ..models import Action, Member, Purchase, TierChange
from ..settings import Programme, TierRule
from . import notices, webhooks


def tier_rule(programme: Programme, name: str) -> TierRule:
    for rule in programme.tiers:
        if rule.name == name:
            return rule
    return programme.tiers[0]  # a tier removed from the programme counts as the base tier


def window_columns(member_id: ColumnElement[int], now: datetime, window_days: int) -> tuple[ScalarSelect[int], ...]:
    """(spend, purchases, actions) of the member `member_id` names, in the rolling window ending now,
    as columns of a select over members: a batch reads every member's window with the member's row."""
    since = now - timedelta(days=window_days)
    purchases = (Purchase.member_id == member_id, Purchase.occurred_at > since, Purchase.occurred_at <= now)
    spend = cast(func.coalesce(func.sum(Purchase.amount_minor - Purchase.refunded_minor), 0), BigInteger)  # PostgreSQL: not numeric
    return (select(spend).where(*purchases).scalar_subquery(),
            select(func.count(Purchase.id)).where(*purchases).scalar_subquery(),
            select(func.count(Action.id)).where(Action.member_id == member_id, Action.occurred_at > since,
                                                Action.occurred_at <= now).scalar_subquery())


def window_activity(session: Session, member_id: int, now: datetime, window_days: int) -> tuple[int, int, int]:
    """One member's (spend, purchases, actions) in the rolling window ending now."""
    return tuple(session.execute(select(*window_columns(Member.id, now, window_days)).where(Member.id == member_id)).one())


def _qualifying_rank(programme: Programme, spend: int, purchases: int, actions: int) -> int:
    """Position in the tier ladder of the highest tier the activity qualifies for."""
    best = 0
    for i, rule in enumerate(programme.tiers):
        if spend >= rule.min_spend_minor or purchases >= rule.min_purchases or actions >= rule.min_actions:
            best = i
    return best


def rank(programme: Programme, name: str) -> int:
    """Position in the tier ladder; a tier removed from the programme counts as the base tier."""
    for i, t in enumerate(programme.tiers):
        if t.name == name:
            return i
    return 0


def _change(session: Session, member: Member, to: str, reason: str, now: datetime) -> None:
    session.add(TierChange(member_id=member.id, from_tier=member.tier, to_tier=to, reason=reason, changed_at=now))
    announce(session, [(member.id, member.member_ref, member.tier, to, reason)], now)
    member.tier = to
    member.tier_since = now
    member.downgrade_due_at = None


def announce(session: Session, changes: list[tuple[int, str, str, str, str]], now: datetime) -> None:
    """Tell the members (a notice) and the brand's systems (a webhook) of tier changes:
    (member id, member_ref, from, to, reason) each."""
    notices.queue(session, [(member_id, "tier_changed", f"tier:{uuid7()}", {"from": old, "to": new, "reason": reason})
                            for member_id, _, old, new, reason in changes], now)
    webhooks.emit(session, "member.tier_changed", [{"member_ref": ref, "from": old, "to": new, "reason": reason}
                                                   for _, ref, old, new, reason in changes], now)


def decide(programme: Programme, tier: str, downgrade_due_at: datetime | None, activity: tuple[int, int, int],
           now: datetime) -> tuple[str, datetime | None]:
    """(tier, downgrade due) after an evaluation: an upgrade applies at once; falling short starts
    the grace period (or keeps the one running); qualifying again cancels it."""
    wanted = _qualifying_rank(programme, *activity)
    current = rank(programme, tier)
    if wanted > current:
        return programme.tiers[wanted].name, None
    if wanted == current:
        return tier, None
    return tier, downgrade_due_at or now + timedelta(days=programme.tier_grace_days)


def evaluate(session: Session, programme: Programme, member: Member, now: datetime) -> None:
    activity = window_activity(session, member.id, now, programme.tier_window_days)
    tier, due = decide(programme, member.tier, member.downgrade_due_at, activity, now)
    if tier != member.tier:
        _change(session, member, tier, "qualified", now)
    else:
        member.downgrade_due_at = due


def review(session: Session, programme: Programme, now: datetime) -> int:
    """The scheduled review: re-evaluate members in grace, downgrade those past it. Returns downgrades."""
    downgraded = 0
    # Locked (and re-read) like any other change to a member, so a concurrent purchase's upgrade is
    # neither missed nor overwritten.
    for member in session.scalars(select(Member).where(Member.downgrade_due_at.is_not(None), Member.status != "erased")
                                  .order_by(Member.id).with_for_update().execution_options(populate_existing=True)).all():
        evaluate(session, programme, member, now)
        if member.downgrade_due_at is not None and as_utc(member.downgrade_due_at) <= now:
            lower = programme.tiers[max(0, rank(programme, member.tier) - 1)].name
            _change(session, member, lower, "grace_period_ended", now)
            evaluate(session, programme, member, now)  # still short of the lower tier: a new grace
            downgraded += 1
    return downgraded


def start_grace_where_due(session: Session, programme: Programme, now: datetime) -> None:
    """Members above the base tier with no activity at all never trigger `evaluate` from a purchase;
    the review finds them here."""
    base = programme.tiers[0].name
    for member in session.scalars(select(Member).where(Member.tier != base, Member.downgrade_due_at.is_(None), Member.status != "erased")
                                  .order_by(Member.id).with_for_update().execution_options(populate_existing=True)).all():
        evaluate(session, programme, member, now)
