"""Gateway configuration: environment variables prefixed GATEWAY_ (nested ones with __), and the
.env-style file GATEWAY_ENV_FILE names, if it names one (no file is read unless named)."""

from __future__ import annotations

import os
from functools import cached_property
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, DotEnvSettingsSource, SettingsConfigDict


class TierRule(BaseModel):
    """A tier is reached by meeting ANY of its thresholds over the rolling window."""

    name: str
    min_spend_minor: int = Field(ge=0)  # spend in the window, minor currency units
    min_purchases: int = Field(ge=0)
    min_actions: int = Field(ge=0)  # engagement: reviews, shares, check-ins
    earn_multiplier_pct: int = Field(ge=100, le=1000)  # 150 = x1.5


class CurrencyEarn(BaseModel):
    """What a purchase in one currency earns before multipliers."""

    points_per_unit: int = Field(1, ge=0)  # points per major currency unit (e.g. 1 per yuan)
    minor_per_unit: int = Field(100, ge=1)  # the currency's minor units per major unit (ISO 4217: CNY 100, JPY 1)


class EarnRules(BaseModel):
    """Points per purchase: floor(amount * points_per_unit / minor_per_unit * tier% * campaign%), with
    the rates of the purchase's currency (only the currencies listed are accepted; the first is the
    brand's home currency, taken when a purchase names none).

    Integer arithmetic throughout; campaign multipliers do not stack with each other (the highest
    applies), but they do multiply the tier's."""

    currencies: dict[str, CurrencyEarn] = {"CNY": CurrencyEarn()}
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
    # A purchase or action may be reported this long after it happened (a till's offline backlog) and
    # never before the member enrolled. The daily cap and the day's multipliers apply per day of
    # purchase, so purchases received in one day earn at most daily_cap x (backdating_days + 2): the
    # days from that of (now - backdating_days) to that of now (+ the 5 minutes a till may run fast).
    backdating_days: int = Field(7, ge=0, le=90)

    @field_validator("currencies")
    @classmethod
    def _iso_4217(cls, currencies: dict[str, CurrencyEarn]) -> dict[str, CurrencyEarn]:
        import pycountry

        if not currencies:
            raise ValueError("at least one currency must be accepted")
        unknown = [code for code in currencies if len(code) != 3 or pycountry.currencies.get(alpha_3=code) is None]
        if unknown:
            raise ValueError(f"not ISO 4217 currency codes: {', '.join(unknown)}")
        return currencies

    @property
    def home_currency(self) -> str:
        return next(iter(self.currencies))


DEFAULT_TIERS = [
    TierRule(name="member", min_spend_minor=0, min_purchases=0, min_actions=0, earn_multiplier_pct=100),
    TierRule(name="silver", min_spend_minor=200_000, min_purchases=12, min_actions=40, earn_multiplier_pct=125),
    TierRule(name="gold", min_spend_minor=1_000_000, min_purchases=48, min_actions=150, earn_multiplier_pct=150),
]


PURCHASE_CHANNELS = ("store", "online", "app", "partner")


class Campaign(BaseModel):
    """A time-boxed earn multiplier (a double-points week): purchases made from `starts_at` until
    `ends_at` (optionally only in some channels) earn `multiplier_pct` of the base. It competes with
    the built-in campaigns (first order, birthday month, eco, member day): the highest applies."""

    code: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,23}$")  # kept on each purchase it boosted
    name: str = Field(min_length=1, max_length=80)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    multiplier_pct: int = Field(ge=101, le=1000)
    channels: list[Literal["store", "online", "app", "partner"]] = []  # none: every channel

    @model_validator(mode="after")
    def _ends_after_start(self) -> "Campaign":
        if self.ends_at <= self.starts_at:
            raise ValueError("a campaign ends after it starts")
        return self

    def applies(self, occurred_at: datetime, channel: str) -> bool:
        return self.starts_at <= occurred_at < self.ends_at and (not self.channels or channel in self.channels)


class Programme(BaseModel):
    """What the brand's operator steers without a restart (services/programme.py keeps its versions):
    earn rules, the tier ladder and its window, campaigns. Version 0 is the one in the settings."""

    model_config = ConfigDict(extra="forbid")

    earn: EarnRules = EarnRules()
    tiers: Annotated[list[TierRule], Field(min_length=1, max_length=12)] = DEFAULT_TIERS
    tier_window_days: int = Field(365, ge=30)
    tier_grace_days: int = Field(90, ge=0)
    campaigns: Annotated[list[Campaign], Field(max_length=100)] = []

    @model_validator(mode="after")
    def _ladder(self) -> "Programme":
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError("tier names must be distinct")
        codes = [c.code for c in self.campaigns]
        if len(set(codes)) != len(codes):
            raise ValueError("campaign codes must be distinct")
        return self


class Throttle(BaseModel):
    """A GCRA rate limit (services/throttle.py): `burst` attempts at once, then one every period / burst."""

    burst: int = Field(ge=1)
    period_s: int = Field(ge=1)


class Throttles(BaseModel):
    """Who may try how often. Per identifier keys are the identifier's pseudonym, whether or not a
    member has it, so a refusal says nothing about membership; per address keys are the client's IP
    (an IPv6 client's /64)."""

    enrol_per_identifier: Throttle = Throttle(burst=3, period_s=3600)
    enrol_per_address: Throttle = Throttle(burst=10, period_s=3600)
    login_per_identifier: Throttle = Throttle(burst=10, period_s=900)
    login_per_address: Throttle = Throttle(burst=30, period_s=60)
    code_per_identifier: Throttle = Throttle(burst=10, period_s=600)
    code_per_address: Throttle = Throttle(burst=20, period_s=600)


class SmtpSettings(BaseModel):
    host: str
    port: int = Field(587, ge=1, le=65535)
    sender: str  # the From address
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(10.0, gt=0)


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", env_nested_delimiter="__")

    brand_id: str = Field("brand", pattern=r"^[a-z][a-z0-9-]{1,31}$")
    brand_name: str = "Brand"
    # Unless set, every per-brand path derives from the brand id (var/<brand id>/...): two brands
    # started in one directory never share a database, keys or an account on the chain.
    database_url: str = ""  # default sqlite:///var/<brand id>/gateway.sqlite
    chain_url: str = "embedded"
    manifest: Path | None = None  # deployment manifest of the alliance
    keys_dir: Path = Path()  # default var/<brand id>/keys: signing key, pepper, chain key (made by `gateway keys`)
    # The members' data keys and the KEKs wrapping them (privacy/keystore.py): by default beside the
    # other keys; point it at a volume of its own to keep it out of the database's and keys' backups.
    keystore_dir: Path | None = None
    default_region: str = "CN"  # for phone numbers written without a country code
    jurisdiction: str = Field("CN", pattern=r"^[A-Z]{2}$")
    timezone: str = "Asia/Shanghai"  # IANA name: the brand's calendar days (daily cap, member day, birthday month)
    policy_version: str = "2026-01"
    policy_text: str = "Loyalty privacy policy 2026-01: purposes, retention, rights."
    # The controller every consent receipt names (Kantara CR v1.1: contact, address, policy URL).
    controller_email: str = "privacy@brand.example"
    controller_url: str = "https://brand.example"
    policy_url: str = "https://brand.example/privacy"
    earn: EarnRules = EarnRules()
    tiers: list[TierRule] = DEFAULT_TIERS
    tier_window_days: int = Field(365, ge=30)
    tier_grace_days: int = Field(90, ge=0)
    member_token_days: int = Field(30, ge=1)
    # Spending points (P-15, one simple equation): this many points pay one major unit of the home
    # currency (100: 100 points = ¥1) at the till; the brand's points liability is booked at this value.
    points_per_currency_unit: int = Field(100, ge=1, le=1_000_000)
    # Gifts and donations (P-14) with the controls that stop farmed points being sold (P-38, P-41):
    # a new account cannot give, and each member gives and receives at most so much per day.
    gift_min_tenure_days: int = Field(30, ge=0)
    gift_daily_points: int = Field(2_000, ge=1)  # given or donated by one member per day
    gift_daily_count: int = Field(5, ge=1)  # gifts and donations by one member per day
    gift_received_daily_points: int = Field(5_000, ge=1)  # received by one member per day (fan-in)
    max_purchase_minor: int = Field(100_000_000, ge=1)  # one purchase above this is refused as implausible
    purchases_per_member_per_minute: int = Field(10, ge=1)  # anti-farming: a burst of this many, then one per minute / this
    anchor_interval_s: int = Field(3600, ge=0)  # 0 turns scheduled anchoring off
    outbox_interval_s: float = Field(5.0, ge=0)  # 0 turns the background retry worker off
    delivery_interval_s: float = Field(5.0, ge=0)  # members' notices and webhook deliveries are sent this often; 0: off
    reminder_interval_s: int = Field(3600, ge=0)  # the scan for points and coupons about to expire; 0: off
    webhook_allow_private: bool = False  # webhooks may post to private and loopback addresses (an internal network, tests)
    # The KEK wrapping the members' data keys is replaced this often, and the old one destroyed: an
    # erasure is final (no copy of the erased key decrypts, in any file or backup) within this. 0: never.
    kek_rotation_s: int = Field(86_400, ge=0)
    chain_batch_max: int = Field(100, ge=1, le=500)  # rows per chain transaction (a block holds ~600 redemptions)
    releases_dir: Path | None = None  # released alliance models (federation.releases) for campaign targeting
    # The other gateways of the alliance (origins, e.g. https://airline.example): their member wallet
    # pages may call this gateway's API from the browser (CORS), this one's may call theirs, and they
    # are the only gateways an audience overlap is measured with (no other URL is ever fetched).
    alliance_peers: list[Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")]] = []
    # Audience overlap by PSI (services/overlap.py): epsilon of the geometric noise per released count,
    # the budget per peer brand over 30 days, and the smallest count released at all.
    overlap_epsilon: float = Field(0.5, gt=0, le=10)
    overlap_budget_epsilon: float = Field(5.0, gt=0)
    overlap_k: int = Field(10, ge=1)
    # Answer other brands' overlap requests. Off by default: the initiator computes the count, so an
    # initiator that runs modified software could ask about one person and learn whether they are a
    # consenting member here; the responder cannot enforce k or the noise yet.
    overlap_answer: bool = False
    # The request guard (gateway/guard.py): body sizes and JSON depth, refused before parsing.
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    max_batch_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)  # POST /v1/purchases/batch: up to 10,000 events
    max_overlap_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # POST /v1/alliance/overlap: ~48 bytes per member
    max_json_depth: int = Field(32, ge=4, le=256)
    # Self-enrolment: a one-time code proves each contact identifier (phone, e-mail) before the account exists.
    notifier: Literal["dev", "smtp"] = "dev"  # dev: messages appended to notifications_dir/<brand>.jsonl
    notifications_dir: Path = Path()  # default var/<brand id>/notifications
    smtp: SmtpSettings | None = None  # for notifier=smtp (e-mail codes)
    sms_sender: str | None = None  # "package.module:factory" of an SmsSender, for phone codes with notifier=smtp
    enrolment_code_ttl_s: int = Field(600, ge=60, le=86_400)
    enrolment_code_attempts: int = Field(5, ge=1, le=20)
    throttles: Throttles = Throttles()
    # Consecutive failed logins of one identifier lock it for login_lock_base_s, doubling with every
    # further failure up to login_lock_max_s; a success clears it.
    login_lock_after: int = Field(5, ge=1)
    login_lock_base_s: int = Field(60, ge=1)
    login_lock_max_s: int = Field(86_400, ge=1)
    api_key_cache_s: float = Field(5.0, ge=0, le=300)  # a revoked or expired API key is refused by every worker within this
    open_wallet_challenges: int = Field(5, ge=1, le=100)  # unexpired, unused challenges a member may hold

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        # A .env file in the working directory is not read unless GATEWAY_ENV_FILE names it: a file
        # left there silently configured a gateway started in that directory.
        named = os.environ.get("GATEWAY_ENV_FILE")
        if not named:
            return init_settings, env_settings, file_secret_settings
        if not Path(named).is_file():
            raise ValueError(f"GATEWAY_ENV_FILE names {named}, which is not a file")
        return init_settings, env_settings, DotEnvSettingsSource(settings_cls, env_file=named), file_secret_settings

    @cached_property
    def programme(self) -> Programme:
        """Version 0 of the programme: the one these settings describe (services/programme.py)."""
        return Programme(earn=self.earn, tiers=self.tiers, tier_window_days=self.tier_window_days, tier_grace_days=self.tier_grace_days)

    @model_validator(mode="after")
    def _paths_of_this_brand(self) -> "GatewaySettings":
        home = Path("var") / self.brand_id
        self.database_url = self.database_url or f"sqlite:///{home / 'gateway.sqlite'}"
        if self.keys_dir == Path():
            self.keys_dir = home / "keys"
        if self.notifications_dir == Path():
            self.notifications_dir = home / "notifications"
        return self

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai)") from None
        return name

    @property
    def zone(self):
        from zoneinfo import ZoneInfo

        return ZoneInfo(self.timezone)  # ZoneInfo keeps one instance per name

    @field_validator("tiers")
    @classmethod
    def _tiers_ordered(cls, tiers: list[TierRule]) -> list[TierRule]:
        if not tiers or tiers[0].min_spend_minor or tiers[0].min_purchases or tiers[0].min_actions:
            raise ValueError("the first tier must have no thresholds: every member starts there")
        if len({t.name for t in tiers}) != len(tiers):
            raise ValueError("tier names must be unique")
        return tiers
