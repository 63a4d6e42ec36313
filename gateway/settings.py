"""Gateway configuration (environment variables prefixed GATEWAY_, or a .env file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TierRule(BaseModel):
    """A tier is reached by meeting ANY of its thresholds over the rolling window."""

    name: str
    min_spend_minor: int = Field(ge=0)  # spend in the window, minor currency units
    min_purchases: int = Field(ge=0)
    min_actions: int = Field(ge=0)  # engagement: reviews, shares, check-ins
    earn_multiplier_pct: int = Field(ge=100, le=1000)  # 150 = x1.5


class EarnRules(BaseModel):
    """Points per purchase: floor(amount * points_per_unit / minor_per_unit * tier% * campaign%).

    Integer arithmetic throughout; campaign multipliers do not stack with each other (the highest
    applies), but they do multiply the tier's."""

    points_per_unit: int = Field(1, ge=0)  # points per major currency unit (e.g. 1 per yuan)
    minor_per_unit: int = Field(100, ge=1)
    welcome_points: int = Field(100, ge=0)
    first_order_multiplier_pct: int = Field(200, ge=100)
    birthday_month_multiplier_pct: int = Field(200, ge=100)
    eco_multiplier_pct: int = Field(200, ge=100)
    member_day: int | None = Field(8, ge=1, le=28)  # day of month with the member-day multiplier
    member_day_multiplier_pct: int = Field(200, ge=100)
    action_points: dict[str, int] = {"review": 5, "share": 3, "check_in": 1}
    daily_cap: int = Field(50_000, ge=1)  # most points a member earns per day (anti-farming)
    validity_days: int = Field(365, ge=30, le=3 * 366)  # rolling FIFO expiry
    expiry_notice_days: int = Field(30, ge=1)


DEFAULT_TIERS = [
    TierRule(name="member", min_spend_minor=0, min_purchases=0, min_actions=0, earn_multiplier_pct=100),
    TierRule(name="silver", min_spend_minor=200_000, min_purchases=12, min_actions=40, earn_multiplier_pct=125),
    TierRule(name="gold", min_spend_minor=1_000_000, min_purchases=48, min_actions=150, earn_multiplier_pct=150),
]


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore", env_nested_delimiter="__")

    brand_id: str = Field("brand", pattern=r"^[a-z][a-z0-9-]{1,31}$")
    brand_name: str = "Brand"
    database_url: str = "sqlite:///var/gateway.sqlite"
    chain_url: str = "embedded"
    manifest: Path | None = None  # deployment manifest of the alliance
    keys_dir: Path = Path("var/keys")  # signing key, KEK, pepper, chain key (made by `gateway keys`)
    default_region: str = "CN"  # for phone numbers written without a country code
    jurisdiction: str = Field("CN", pattern=r"^[A-Z]{2}$")
    policy_version: str = "2026-01"
    policy_text: str = "Loyalty privacy policy 2026-01: purposes, retention, rights."
    earn: EarnRules = EarnRules()
    tiers: list[TierRule] = DEFAULT_TIERS
    tier_window_days: int = Field(365, ge=30)
    tier_grace_days: int = Field(90, ge=0)
    member_token_days: int = Field(30, ge=1)
    max_purchase_minor: int = Field(100_000_000, ge=1)  # one purchase above this is refused as implausible
    purchases_per_member_per_minute: int = Field(10, ge=1)  # anti-farming: a burst of this many, then one per minute / this
    anchor_interval_s: int = Field(3600, ge=0)  # 0 turns scheduled anchoring off
    outbox_interval_s: float = Field(5.0, ge=0)  # 0 turns the background retry worker off
    releases_dir: Path | None = None  # released alliance models (federation.releases) for campaign targeting

    @field_validator("tiers")
    @classmethod
    def _tiers_ordered(cls, tiers: list[TierRule]) -> list[TierRule]:
        if not tiers or tiers[0].min_spend_minor or tiers[0].min_purchases or tiers[0].min_actions:
            raise ValueError("the first tier must have no thresholds: every member starts there")
        if len({t.name for t in tiers}) != len(tiers):
            raise ValueError("tier names must be unique")
        return tiers
