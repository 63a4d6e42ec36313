"""Earn rules: how many points a purchase or an action is worth. Pure functions, integer maths."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from ..settings import Campaign, CurrencyEarn, EarnRules, TierRule


class Earning(NamedTuple):
    base: int
    multiplier_pct: int  # tier% x campaign% / 100
    campaign: str | None
    points: int  # after multipliers, before the daily cap


def purchase_points(rules: EarnRules, currency: CurrencyEarn, tier: TierRule, amount_minor: int, *, first_order: bool,
                    birth_month: int | None, eco: bool, occurred_at: datetime, channel: str = "store",
                    campaigns: Sequence[Campaign] = ()) -> Earning:
    base = amount_minor * currency.points_per_unit // currency.minor_per_unit
    # Campaigns do not stack: the highest multiplier applies, the first listed on a tie, and one of
    # 100% is no campaign. (Plain comparisons: the ingest path runs this for every purchase.)
    campaign, campaign_pct = None, 100
    if first_order and rules.first_order_multiplier_pct > campaign_pct:
        campaign, campaign_pct = "first_order", rules.first_order_multiplier_pct
    if birth_month == occurred_at.month and rules.birthday_month_multiplier_pct > campaign_pct:
        campaign, campaign_pct = "birthday_month", rules.birthday_month_multiplier_pct
    if eco and rules.eco_multiplier_pct > campaign_pct:
        campaign, campaign_pct = "eco_choice", rules.eco_multiplier_pct
    if occurred_at.day == rules.member_day and rules.member_day_multiplier_pct > campaign_pct:
        campaign, campaign_pct = "member_day", rules.member_day_multiplier_pct
    for c in campaigns:  # the operator's (services/programme.py), by the time and channel of the purchase
        if c.multiplier_pct > campaign_pct and c.applies(occurred_at, channel):
            campaign, campaign_pct = c.code, c.multiplier_pct
    multiplier = tier.earn_multiplier_pct * campaign_pct // 100
    return Earning(base, multiplier, campaign, base * multiplier // 100)


MINUTE_US = 60_000_000


def pace(tat_us: int, now_us: int, burst: int, period_us: int = MINUTE_US) -> tuple[int, int]:
    """A rate limit as GCRA (the generic cell rate algorithm): up to `burst` attempts at once, then
    one every period / burst. Its whole state is one number, the theoretical arrival time (TAT) of
    the next attempt at the sustained rate. Purchases per member use it (a burst of
    `purchases_per_member_per_minute` a minute), and so do enrolment, login and code attempts.

    Returns (the TAT after this attempt, 0) when it fits, or (the TAT unchanged, µs until it would)."""
    interval = period_us // burst
    tat = max(tat_us, now_us)
    wait = tat + interval - period_us - now_us  # > 0: the burst allowance is used up
    return (tat_us, wait) if wait > 0 else (tat + interval, 0)


def capped(points: int, earned_today: int, daily_cap: int) -> int:
    """Points actually credited under the daily cap."""
    return max(0, min(points, daily_cap - earned_today))


def clawback_points(purchase_points_: int, purchase_minor: int, refunded_minor_before: int, refund_minor: int,
                    clawed_back_before: int) -> int:
    """Points to take back for a (partial) refund: proportional to the refunded amount, and exactly
    everything left when the purchase is fully refunded (so rounding never leaves points behind)."""
    if refunded_minor_before + refund_minor >= purchase_minor:
        return purchase_points_ - clawed_back_before
    return purchase_points_ * (refunded_minor_before + refund_minor) // purchase_minor - clawed_back_before
