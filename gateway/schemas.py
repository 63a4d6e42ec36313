"""Request and response bodies of the v1 API (they are the OpenAPI contract)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Points = int
MAX_AMOUNT = 10**12  # minor units; anything larger is refused as implausible before any rule runs
IdempotencyKey = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$")
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# Optional (default None): a purchase or action may locate the member by identifier instead.
MemberRef = Field(None, pattern=UUID_PATTERN, examples=["0b7c2f9e-8f8a-4c52-9a4d-3f1f3c7d2a10"])
MAX_DB_INT = 2**63 - 1  # the widest integer column (BIGINT); larger values are refused, never overflow the database


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Identifiers(Strict):
    phone: str | None = Field(None, max_length=32, examples=["+86 138 1234 5678"])
    email: str | None = Field(None, max_length=254, examples=["alice@example.com"])
    card: str | None = Field(None, max_length=32, examples=["4539 1488 0343 6467"])

    def given(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class EnrolRequest(Strict):
    identifiers: Identifiers
    name: str = Field(min_length=1, max_length=100, examples=["Alice Zhang"])
    birthday: date | None = Field(None, examples=["1990-05-17"])
    passphrase: str = Field(min_length=10, max_length=200, examples=["correct horse battery"])
    jurisdiction: str | None = Field(None, pattern=r"^[A-Z]{2}$", examples=["CN"])
    channel: Literal["app", "pos", "web", "cli", "api", "call_centre"] = "app"


class EnrolResponse(BaseModel):
    member_ref: str
    token: str
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
    granted: bool
    channel: Literal["app", "pos", "web", "cli", "api", "call_centre"] = "app"


class ConsentResponse(BaseModel):
    purpose: str
    granted: bool
    changed: bool
    receipt: dict = Field(description="the signed receipt (keep it: it proves the consent later)")


class MemberLocator(Strict):
    member_ref: str | None = MemberRef
    identifier_kind: Literal["phone", "email", "card"] | None = None
    identifier: str | None = Field(None, max_length=254)

    @model_validator(mode="after")
    def _one(self):
        if (self.member_ref is None) == (self.identifier is None or self.identifier_kind is None):
            raise ValueError("give either member_ref or identifier_kind + identifier")
        return self


class PurchaseRequest(MemberLocator):
    amount_minor: int = Field(gt=0, le=MAX_AMOUNT, strict=True, description="amount in minor currency units", examples=[12_850])
    currency: str = Field("CNY", pattern=r"^[A-Z]{3}$")
    channel: Literal["store", "online", "app", "partner"] = "store"
    eco: bool = Field(False, description="green choice (eco packaging or logistics): double points")
    occurred_at: datetime


class PurchaseResponse(BaseModel):
    purchase_ref: str
    member_ref: str
    points: Points
    campaign: str | None
    capped: Points = Field(description="points withheld by the daily cap")
    balance: Points
    tier: str
    replayed: bool


class BatchPurchase(PurchaseRequest):
    idempotency_key: str = IdempotencyKey


class BatchRequest(Strict):
    events: list[BatchPurchase] = Field(min_length=1, max_length=10_000)


class BatchItem(BaseModel):
    idempotency_key: str
    ok: bool
    purchase_ref: str | None = None
    points: Points | None = None
    error: str | None = None
    detail: str | None = None


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
    balance: Points
    replayed: bool


class ActionRequest(MemberLocator):
    kind: str = Field(max_length=16, examples=["review"])
    occurred_at: datetime


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
    nonce: int = Field(ge=0, lt=2**256)
    deadline: int = Field(gt=0, le=MAX_DB_INT, description="unix seconds (a uint256 on chain; kept to 63 bits here)")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


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


class AnchorRequest(Strict):
    kind: Literal["consent-log", "audit-log"] = "consent-log"


class CampaignRequest(Strict):
    model_version: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$", examples=["redeem-logreg-gateway-v3"],
                                      description="a release in the gateway's releases directory (default: the latest)")
    top_k: int = Field(100, ge=1, le=100_000, strict=True, description="at most this many targets, best first")
    min_score: float = Field(0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    as_of: datetime | None = Field(None, description="features as of this time (default: now; never in the future)")


class CampaignTarget(BaseModel):
    member_ref: str
    score: float


class CampaignResponse(BaseModel):
    campaign_ref: str = Field(description="the processing recorded for the auditor")
    model_version: str
    model_sha256: str
    as_of: datetime
    decided_at: datetime = Field(description="when the marketing consents were checked")
    count: int
    targets: list[CampaignTarget]


class ProcessingItem(BaseModel):
    kind: Literal["exchange", "redemption", "training", "campaign"]
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
