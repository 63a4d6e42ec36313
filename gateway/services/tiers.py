"""Tiers: qualify on spend OR purchases OR engagement over a rolling window. Upgrades apply at once;
a member who no longer qualifies keeps the tier through a grace period, then drops one level at the
next review if still short."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db import as_utc
from ..models import Action, Member, Purchase, TierChange
from ..settings import GatewaySettings, TierRule


def tier_rule(settings: GatewaySettings, name: str) -> TierRule:
    for rule in settings.tiers:
        if rule.name == name:
            return rule
    return settings.tiers[0]  # a tier removed from configuration counts as the base tier


def window_activity(session: Session, member_id: int, now: datetime, window_days: int) -> tuple[int, int, int]:
    since = now - timedelta(days=window_days)
    spend, count = session.execute(
        select(func.coalesce(func.sum(Purchase.amount_minor - Purchase.refunded_minor), 0), func.count(Purchase.id))
        .where(Purchase.member_id == member_id, Purchase.occurred_at > since, Purchase.occurred_at <= now)
    ).one()
    actions = session.scalar(select(func.count(Action.id)).where(
        Action.member_id == member_id, Action.occurred_at > since, Action.occurred_at <= now))
    return int(spend), int(count), int(actions)


def qualifying_tier(settings: GatewaySettings, spend: int, purchases: int, actions: int) -> TierRule:
    best = settings.tiers[0]
    for rule in settings.tiers[1:]:
        if spend >= rule.min_spend_minor or purchases >= rule.min_purchases or actions >= rule.min_actions:
            best = rule
    return best


def _rank(settings: GatewaySettings, name: str) -> int:
    return [t.name for t in settings.tiers].index(tier_rule(settings, name).name)


def _change(session: Session, member: Member, to: str, reason: str, now: datetime) -> None:
    session.add(TierChange(member_id=member.id, from_tier=member.tier, to_tier=to, reason=reason, changed_at=now))
    member.tier = to
    member.tier_since = now
    member.downgrade_due_at = None


def evaluate(session: Session, settings: GatewaySettings, member: Member, now: datetime) -> None:
    """Apply an upgrade at once; start (or cancel) the grace period when the member falls short."""
    spend, purchases, actions = window_activity(session, member.id, now, settings.tier_window_days)
    target = qualifying_tier(settings, spend, purchases, actions)
    current = _rank(settings, member.tier)
    wanted = _rank(settings, target.name)
    if wanted > current:
        _change(session, member, target.name, "qualified", now)
    elif wanted == current:
        member.downgrade_due_at = None
    elif member.downgrade_due_at is None:
        member.downgrade_due_at = now + timedelta(days=settings.tier_grace_days)


def review(session: Session, settings: GatewaySettings, now: datetime) -> int:
    """The scheduled review: re-evaluate members in grace, downgrade those past it. Returns downgrades."""
    downgraded = 0
    # Locked (and re-read) like any other change to a member, so a concurrent purchase's upgrade is
    # neither missed nor overwritten.
    for member in session.scalars(select(Member).where(Member.downgrade_due_at.is_not(None), Member.status != "erased")
                                  .order_by(Member.id).with_for_update().execution_options(populate_existing=True)).all():
        evaluate(session, settings, member, now)
        if member.downgrade_due_at is not None and as_utc(member.downgrade_due_at) <= now:
            lower = settings.tiers[max(0, _rank(settings, member.tier) - 1)].name
            _change(session, member, lower, "grace_period_ended", now)
            evaluate(session, settings, member, now)  # still short of the lower tier: a new grace
            downgraded += 1
    return downgraded


def start_grace_where_due(session: Session, settings: GatewaySettings, now: datetime) -> None:
    """Members above the base tier with no activity at all never trigger `evaluate` from a purchase;
    the review finds them here."""
    base = settings.tiers[0].name
    for member in session.scalars(select(Member).where(Member.tier != base, Member.downgrade_due_at.is_(None), Member.status != "erased")
                                  .order_by(Member.id).with_for_update().execution_options(populate_existing=True)).all():
        evaluate(session, settings, member, now)
