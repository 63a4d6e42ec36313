"""Request and response bodies of the v1 API (they are the OpenAPI contract)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, WithJsonSchema, model_validator

Points = int
MAX_AMOUNT = 10**12  # minor units; anything larger is refused as implausible before any rule runs
IdempotencyKey = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
MEMBER_REF_EXAMPLE = "0b7c2f9e-8f8a-4c52-9a4d-3f1f3c7d2a10"
MAX_DB_INT = 2**63 - 1  # the widest integer column (BIGINT); larger values are refused, never overflow the database

_RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})$")
_ISO_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _rfc3339(value: Any) -> Any:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("a time is an RFC 3339 string with its offset, e.g. 2026-03-03T10:00:00+08:00")
    return value


def _iso_date(value: Any) -> Any:
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("a date is a string YYYY-MM-DD")
    return value


def _in_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is a year before the first
        raise ValueError("the time is out of range in UTC") from None


# Times only as RFC 3339 strings with an offset (no Unix numbers, no naive times), held in UTC from
# here on (the brand's calendar decides a day; times of one zone compare fast); dates as YYYY-MM-DD.
Timestamp = Annotated[datetime, BeforeValidator(_rfc3339), AfterValidator(_in_utc), WithJsonSchema({"type": "string", "format": "date-time"})]
CalendarDate = Annotated[date, BeforeValidator(_iso_date), WithJsonSchema({"type": "string", "format": "date"})]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(BaseModel):
    """An RFC 9457 problem: every error this API answers (application/problem+json)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    type: str = Field(description="/problems/<code>: a URI reference to the kind of problem", examples=["/problems/not_found"])
    title: str = Field(description="the kind of problem, the same for every occurrence")
    status: int = Field(description="the HTTP status")
    detail: str = Field(description="what went wrong with this request")
    code: str = Field(description="machine-readable kind of problem", examples=["not_found"])


class Health(BaseModel):
    status: Literal["ok"]
    brand: str


class ProblemType(BaseModel):
    type: str
    code: str
    status: int
    title: str


class PendingRate(BaseModel):
    rate: int
    version: int
    effective_at: int = Field(description="unix seconds")


class BrandInfo(BaseModel):
    brand_id: str
    name: str
    address: str = Field(description="the brand's account on the alliance chain")
    policy_version: str
    policy_sha256: str
    policy_text: str
    receipt_key_id: str
    receipt_public_key_pem: str
    purposes: dict[str, str] = Field(description="what a member consents to, per purpose (the text each receipt carries)")
    home_currency: str
    points_per_currency_unit: int = Field(description="points that pay one unit of the home currency at the till (100: 100 points = 1)")
    chain_status: Literal["ok", "unreachable", "not_admitted", "not_configured"] = Field(
        description="ok: the chain figures below are current; otherwise they are null (or only what is known without the chain)")
    chain_id: int | None = None
    points_contract: str | None = None
    rate: int | None = Field(None, description="brand points per AP")
    rate_version: int | None = None
    pending_rate: PendingRate | None = Field(None, description="a published rate and when it takes effect")


class Identifiers(Strict):
    phone: str | None = Field(None, max_length=32, examples=["+86 138 1234 5678"])
    email: str | None = Field(None, max_length=254, examples=["alice@example.com"])
    card: str | None = Field(None, max_length=32, examples=["4539 1488 0343 6467"])

    def given(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


Channel = Literal["app", "pos", "web", "cli", "api", "call_centre"]


class EnrolRequest(Strict):
    """Self-enrolment: a one-time code goes to each contact identifier (phone, e-mail)."""

    identifiers: Identifiers
    name: str = Field(min_length=1, max_length=100, examples=["Alice Zhang"])
    birthday: CalendarDate | None = Field(None, description="YYYY-MM-DD, not in the future", examples=["1990-05-17"])
    passphrase: str = Field(min_length=10, max_length=200, examples=["correct horse battery"])
    jurisdiction: str = Field(None, pattern=r"^[A-Z]{2}$", examples=["CN"], description="default: the brand's")
    channel: Channel = "app"


class EnrolmentStarted(BaseModel):
    """The same answer whether or not an identifier already has an account (its owner is told by
    the message instead)."""

    enrolment_id: str
    expires_at: datetime
    sent_to: list[Literal["phone", "email"]] = Field(description="identifiers a one-time code went to")


class VerificationRequest(Strict):
    codes: dict[Literal["phone", "email"], Annotated[str, Field(pattern=r"^[0-9]{6}$")]] = Field(
        min_length=1, description="the six-digit code sent to each identifier", examples=[{"phone": "123456"}])


class StaffEnrolRequest(Strict):
    """Enrolment by a point of sale or an operator, who see the member: no code (recorded as such)."""

    identifiers: Identifiers
    name: str = Field(min_length=1, max_length=100, examples=["Alice Zhang"])
    birthday: CalendarDate | None = Field(None, description="YYYY-MM-DD, not in the future", examples=["1990-05-17"])
    passphrase: str = Field(None, min_length=10, max_length=200, description="lets the member log in (optional)")
    jurisdiction: str = Field(None, pattern=r"^[A-Z]{2}$", examples=["CN"])
    channel: Channel = "pos"


class EnrolResponse(BaseModel):
    member_ref: str
    token: str
    welcome_points: Points
    balance: Points
    tier: str
    consents: dict[str, bool]


class MemberCreated(BaseModel):
    member_ref: str
    welcome_points: Points
    balance: Points
    tier: str
    consents: dict[str, bool]


class LoginRequest(Strict):
    kind: Literal["phone", "email", "card"]
    value: str = Field(min_length=1, max_length=254)
    passphrase: str = Field(min_length=1, max_length=200)


class TokenResponse(BaseModel):
    member_ref: str
    token: str


class Profile(BaseModel):
    member_ref: str
    status: str
    tier: str
    tier_since: datetime
    downgrade_due_at: datetime | None
    enrolled_at: datetime
    personal_data: dict[str, str] = Field(description="masked")
    wallet_address: str | None
    consents: dict[str, bool]


class Expiring(BaseModel):
    expires_at: datetime
    points: Points


class Balance(BaseModel):
    member_ref: str
    points: Points
    tier: str
    expiring_soon: list[Expiring]
    alliance_points: int | None = Field(description="AP held by the linked wallet (None: no wallet or chain unreachable)")
    wallet_address: str | None


class LedgerLine(BaseModel):
    txn: int
    kind: str
    ref: str | None
    at: datetime
    amount: Points


class ConsentChange(Strict):
    granted: StrictBool
    channel: Channel = "app"


class ConsentResponse(BaseModel):
    purpose: str
    granted: bool
    changed: bool
    receipt: dict = Field(description="the signed receipt (keep it: it proves the consent later)")


class MemberLocator(Strict):
    """The member, by member_ref or by identifier_kind + identifier: exactly one of the two."""

    # The fields are optional but never null, so the schema's oneOf says exactly what is accepted.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["member_ref"], "not": {"anyOf": [{"required": ["identifier_kind"]}, {"required": ["identifier"]}]}},
        {"required": ["identifier_kind", "identifier"], "not": {"required": ["member_ref"]}}]})

    member_ref: str = Field(None, pattern=UUID_PATTERN, examples=[MEMBER_REF_EXAMPLE])
    identifier_kind: Literal["phone", "email", "card"] = None
    identifier: str = Field(None, max_length=254)

    @model_validator(mode="after")
    def _one(self):
        by_identifier = self.identifier_kind is not None or self.identifier is not None
        if (self.member_ref is not None) == by_identifier or (by_identifier and (self.identifier_kind is None or self.identifier is None)):
            raise ValueError("give either member_ref or identifier_kind + identifier")
        return self


class PurchaseRequest(MemberLocator):
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT, strict=True, description="amount in minor currency units", examples=[12_850])
    currency: str = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217; one the brand accepts (default: its home currency)")
    channel: Literal["store", "online", "app", "partner"] = "store"
    eco: StrictBool = Field(False, description="green choice (eco packaging or logistics): double points")
    occurred_at: Timestamp = Field(description="RFC 3339 with offset; within the brand's backdating window, not before enrolment")


COUPON_CODE = Field(None, min_length=12, max_length=20, pattern=r"^[A-Za-z0-9 -]+$", examples=["K7QM-2XWP-9RTA"])


class TillPurchase(PurchaseRequest):
    """A purchase at the till, which may be paid in part with points and a coupon of the member's."""

    points_burned: int = Field(0, ge=0, le=MAX_AMOUNT, strict=True,
                               description="points paying part of it (GET /v1/brand: points_per_currency_unit); earns only on the rest")
    coupon_code: str = COUPON_CODE

    @property
    def pays_with_points(self) -> bool:
        return bool(self.points_burned) or self.coupon_code is not None


class PurchaseResponse(BaseModel):
    purchase_ref: str
    member_ref: str
    points: Points
    campaign: str | None
    capped: Points = Field(description="points withheld by the daily cap")
    balance: Points
    tier: str
    replayed: bool
    points_burned: Points = 0
    discount_minor: int = Field(0, description="taken off by the coupon")
    paid_minor: int | None = Field(None, description="what was paid otherwise, and earned on (purchases paid in part with points)")


class BatchPurchase(PurchaseRequest):
    idempotency_key: str = IdempotencyKey


class BatchRequest(Strict):
    events: list[BatchPurchase] = Field(min_length=1, max_length=10_000)


class BatchItem(BaseModel):
    idempotency_key: str
    ok: bool
    purchase_ref: str | None = None
    points: Points | None = None
    code: str | None = Field(None, description="why the event was refused: a problem code, as in error responses")
    detail: str | None = None
    retry_after_s: int | None = None


class BatchResponse(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItem]


class RefundRequest(Strict):
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT, strict=True)


class RefundResponse(BaseModel):
    purchase_ref: str
    refunded_minor: int
    points_clawed_back: Points
    points_returned: Points = Field(0, description="points that had paid part of the purchase, given back in proportion")
    balance: Points
    replayed: bool


class ActionRequest(MemberLocator):
    kind: str = Field(max_length=16, examples=["review"])
    occurred_at: Timestamp


class ActionResponse(BaseModel):
    member_ref: str
    kind: str
    points: Points
    balance: Points
    replayed: bool


class ChallengeRequest(Strict):
    address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")


class ChallengeResponse(BaseModel):
    challenge_id: str
    message: str = Field(description="sign this text with the wallet (EIP-191 personal_sign)")
    expires_at: datetime


class LinkRequest(Strict):
    challenge_id: str = Field(pattern=UUID_PATTERN)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class WalletLinked(BaseModel):
    wallet_address: str


class ExchangeRequest(Strict):
    ap_amount: int = Field(gt=0, le=10**9, strict=True, description="alliance points wanted", examples=[10])


class ExchangeResponse(BaseModel):
    exchange_ref: str
    status: str
    ap_amount: int
    brand_points: Points
    rate: int
    rate_version: int
    wallet_address: str
    tx_hash: str | None
    failure: str | None
    replayed: bool


class Authorisation(Strict):
    owner: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    brand: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    amount: int = Field(gt=0, le=10**9, strict=True)
    nonce: int = Field(ge=0, lt=2**256, strict=True)
    deadline: int = Field(gt=0, le=MAX_DB_INT, strict=True, description="unix seconds (a uint256 on chain; kept to 63 bits here)")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class RedemptionNonce(BaseModel):
    """What a wallet signs a redemption at this brand with, and the AP it holds."""

    owner: str
    brand: str
    nonce: int
    chain_id: int
    points_contract: str
    balance: int  # the owner's AP on chain (a wallet of many addresses picks the ones to redeem from)
    domain: dict = Field(description="the EIP-712 domain to sign `Redeem` in: name, version, chainId, verifyingContract")


class RedemptionResponse(BaseModel):
    redemption_ref: str
    status: str
    ap_amount: int
    reward_points: Points
    rate: int
    epoch: int | None
    tx_hash: str | None
    failure: str | None
    balance: Points
    replayed: bool


class StatusChange(Strict):
    status: Literal["active", "frozen"]
    reason: str = Field(min_length=1, max_length=200)


class ApiKeyRequest(Strict):
    role: Literal["operator", "pos", "auditor"]
    label: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    expires_in_days: int = Field(None, ge=1, le=3660, strict=True, description="none: until revoked")


class ApiKeyInfo(BaseModel):
    """An API key as listed: never its secret."""

    id: int
    role: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="to about the minute")


class ApiKeyIssued(ApiKeyInfo):
    secret: str = Field(description="shown once; only its hash is stored")


class AnchorRequest(Strict):
    kind: Literal["consent-log", "audit-log"] = "consent-log"


class CampaignRequest(Strict):
    model_version: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$", examples=["redeem-logreg-gateway-v3"],
                                      description="a release in the gateway's releases directory (default: the latest)")
    top_k: int = Field(100, ge=1, le=100_000, strict=True, description="at most this many targets, best first")
    min_score: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    as_of: Timestamp = Field(None, description="features as of this time (default: now; never in the future)")


class CampaignTarget(BaseModel):
    member_ref: str
    score: float


class CampaignResponse(BaseModel):
    campaign_ref: str = Field(description="the processing recorded for the auditor")
    model_version: str
    model_sha256: str
    model_used: str = Field(description="`global`, or what this brand's personal model of the release that scored uses (`local-logreg`, `local-xgb`, `mixture-<alpha>`)")
    as_of: datetime
    decided_at: datetime = Field(description="when the marketing consents were checked")
    count: int
    targets: list[CampaignTarget]


ProcessingKind = Literal["exchange", "redemption", "training", "campaign", "overlap"]  # services/processings.KINDS


class ProcessingItem(BaseModel):
    kind: ProcessingKind
    ref: str
    member_ref: str
    purpose: str
    decided_at: datetime
    consent_seq: int | None = Field(description="the consent-log entry relied on (for exchanges and redemptions: the one in force then)")
    status: str | None = Field(description="exchanges and redemptions only")
    tx_hash: str | None
    cursor: str


class ProcessingsPage(BaseModel):
    items: list[ProcessingItem]
    next: str | None = Field(description="pass as `since` for the next page; null on the last one")


RewardCode = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,39}$", examples=["coffee-coupon"])]


class RewardDefinition(Strict):
    """A reward of the catalogue, as the operator defines it (PUT replaces it as a new version)."""

    kind: Literal["coupon", "good", "digital", "experience"]
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=2000)
    points_price: int = Field(gt=0, le=MAX_AMOUNT, strict=True)
    stock: int | None = Field(None, ge=0, le=MAX_AMOUNT, strict=True, description="left to order; null: unlimited")
    available_from: Timestamp
    available_until: Timestamp | None = None
    min_tier: str | None = Field(None, max_length=16, description="this tier and above may order it")
    per_member_limit: int | None = Field(None, ge=1, le=1000, strict=True)
    coupon_value_minor: int | None = Field(None, gt=0, le=MAX_AMOUNT, strict=True, description="a coupon: what it takes off a purchase")
    coupon_min_spend_minor: int | None = Field(None, ge=0, le=MAX_AMOUNT, strict=True)
    coupon_valid_days: int | None = Field(None, ge=1, le=366, strict=True, description="a coupon: days it lasts (default 7)")
    active: StrictBool = True


class CatalogueItem(BaseModel):
    code: str
    version: int
    kind: str
    name: str
    description: str
    points_price: Points
    stock: int | None
    available_until: datetime | None
    min_tier: str | None
    per_member_limit: int | None
    coupon_value_minor: int | None
    coupon_min_spend_minor: int | None
    coupon_valid_days: int | None


class RewardInfo(CatalogueItem):
    available_from: datetime
    active: bool


class MemberCatalogueItem(CatalogueItem):
    orderable: bool = Field(description="whether this member may order it now, points permitting")
    reason: str | None = Field(None, description="why not, when not orderable")
    affordable: bool


class OrderRequest(Strict):
    reward: RewardCode
    pay_with_ap: Authorisation | None = Field(
        None, description="pay with alliance points instead: a redemption authorisation for this brand whose AP, at its rate, "
                          "cover the points price (the rest is credited as points); the reward is granted when the redemption "
                          "is final on chain")


class CouponInfo(BaseModel):
    code: str = Field(description="show it at the till")
    value_minor: int
    min_spend_minor: int
    expires_at: datetime
    status: Literal["open", "used", "void"]


class OrderInfo(BaseModel):
    order_ref: str
    reward: str
    reward_version: int
    kind: str
    points: Points
    status: str
    created_at: datetime
    updated_at: datetime
    coupon: CouponInfo | None = None


class ApPayment(BaseModel):
    """The redemption that pays for an order with alliance points."""

    redemption_ref: str
    status: str
    ap_amount: int
    reward_points: Points = Field(description="points credited for the AP, the order's price among them")
    rate: int
    tx_hash: str | None
    failure: str | None


class OrderResponse(OrderInfo):
    balance: Points
    replayed: bool
    paid_with_ap: ApPayment | None = None


class OrderStatusChange(Strict):
    status: Literal["shipped", "delivered", "cancelled"]


class CauseDefinition(Strict):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=2000)
    active: StrictBool = True


class CauseInfo(BaseModel):
    code: str
    version: int
    name: str
    description: str
    active: bool
    donated: Points = Field(description="points donated to it so far")


class GiftRequest(Strict):
    to_member_ref: str = Field(pattern=UUID_PATTERN, description="the recipient's member_ref (they find it in their account)")
    points: int = Field(gt=0, le=MAX_AMOUNT, strict=True)


class DonationRequest(Strict):
    cause: RewardCode
    points: int = Field(gt=0, le=MAX_AMOUNT, strict=True)


class GiftResponse(BaseModel):
    gift_ref: str
    points: Points
    to_member_ref: str | None
    cause: str | None
    at: datetime
    balance: Points = Field(description="the giver's balance after")
    replayed: bool


class GiftLine(BaseModel):
    gift_ref: str
    direction: Literal["given", "received", "donated"]
    points: Points
    member_ref: str | None = Field(description="the other member (given: the recipient; received: the giver)")
    cause: str | None
    at: datetime


WebhookEventType = Literal["reward_order.granted", "reward_order.shipped", "reward_order.delivered", "reward_order.cancelled",
                           "coupon.used", "member.tier_changed", "gift.given", "donation.made", "exchange.confirmed",
                           "redemption.confirmed"]


class WebhookSubscriptionRequest(Strict):
    url: str = Field(min_length=8, max_length=2000, description="http(s); public addresses only unless the gateway allows private ones")
    event_types: list[WebhookEventType] = Field(min_length=1, max_length=20)
    description: str = Field("", max_length=200)
    active: StrictBool = True


class WebhookSubscriptionInfo(BaseModel):
    id: int
    url: str
    event_types: list[str]
    description: str
    active: bool
    secret_version: int
    created_at: datetime
    secret: str | None = Field(None, description="the signing secret (Standard Webhooks, whsec_...): only when made or rotated")


class WebhookAttemptInfo(BaseModel):
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class WebhookDeliveryInfo(BaseModel):
    msg_id: str = Field(description="the webhook-id header: the receiver deduplicates on it (a replay keeps it)")
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict
    log: list[WebhookAttemptInfo]
