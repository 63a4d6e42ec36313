"""The gateway's database. Every amount of points is an integer; every time is UTC.

Privacy: no raw identifier is stored. A member is found through `member_identifiers` by keyed
pseudonym (HMAC with a versioned pepper); name and contact live only encrypted in `pii_fields` under
a per-member data key kept apart, in the brand's key store (privacy/keystore.py), so erasure destroys
that key and those rows while the pseudonymous ledger, keyed by the random `member_ref`, stays and
still balances.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base

Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    member_ref: Mapped[str] = mapped_column(String(36), unique=True)  # random, brand-local, shown to the member
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | frozen | erased
    enrolled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    jurisdiction: Mapped[str] = mapped_column(String(2))
    # Birth month only (not the date): the birthday earn rule needs nothing more. Erased with the PII.
    birth_month: Mapped[int | None] = mapped_column(Integer, nullable=True)
    passphrase_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tier: Mapped[str] = mapped_column(String(16))
    tier_since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    downgrade_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Running totals kept with every posting (the ledger is the truth; tests check they agree).
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    purchase_count: Mapped[int] = mapped_column(Integer, default=0)
    earned_day: Mapped[str | None] = mapped_column(String(10), nullable=True)  # YYYY-MM-DD of earned_today
    earned_today: Mapped[int] = mapped_column(BigInteger, default=0)
    # The purchase rate limit's whole state (rules.pace): when, in µs since the epoch, the member's
    # next purchase is due at the sustained rate.
    purchase_tat_us: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    wallet_address: Mapped[str | None] = mapped_column(String(42), nullable=True)
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # How the identifiers were proven at enrolment: "code" (one-time codes to each contact identifier)
    # or "staff" (enrolled by a point of sale or an operator, recorded in the audit log with the key).
    # ("none": enrolled before enrolment proved anything.)
    identity_proof: Mapped[str] = mapped_column(String(16), server_default="none")


class PendingEnrolment(Base):
    """A self-enrolment waiting for the one-time codes sent to its contact identifiers. Nothing about
    it says whether an identifier already belongs to a member: that is decided when the codes come
    back. Its personal data is already sealed under the future member's data key; an enrolment that
    is verified becomes the member, one that expires is deleted, key and all."""

    __tablename__ = "enrolments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_ref: Mapped[str] = mapped_column(String(36))
    pseudonyms: Mapped[str] = mapped_column(Text)  # JSON: identifier kind -> pseudonym
    code_hashes: Mapped[str] = mapped_column(Text)  # JSON: contact kind -> SHA-256 of (enrolment id, kind, code)
    sealed: Mapped[str] = mapped_column(Text)  # JSON: the wrapped data key and the encrypted fields
    passphrase_hash: Mapped[str] = mapped_column(String(200))
    birth_month: Mapped[int | None] = mapped_column(Integer, nullable=True)
    jurisdiction: Mapped[str] = mapped_column(String(2))
    channel: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Throttle(Base):
    """One rate limit's whole state (GCRA, services/throttle.py): when its next attempt is due."""

    __tablename__ = "throttles"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of "<action>:<scope>:<value>"
    tat_us: Mapped[int] = mapped_column(BigInteger)


class LoginFailure(Base):
    """Consecutive failed logins of one identifier, whether or not a member has it, and the lock they earned."""

    __tablename__ = "login_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of the identifier's pseudonym
    failures: Mapped[int] = mapped_column(Integer)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class MemberIdentifier(Base):
    __tablename__ = "member_identifiers"

    pseudonym: Mapped[str] = mapped_column(String(80), primary_key=True)  # "v<pepper>.<hmac hex>"
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # phone | email | card


class PiiField(Base):
    __tablename__ = "pii_fields"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    field: Mapped[str] = mapped_column(String(32), primary_key=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)


class MemberToken(Base):
    __tablename__ = "member_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # operator | pos | auditor
    label: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # to the minute


class Consent(Base):
    """A member's current consent per purpose; the history is in the consent log."""

    __tablename__ = "consents"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32), primary_key=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    receipt_id: Mapped[str] = mapped_column(String(36))
    log_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LogEntry:
    """Columns shared by the hash-chained logs (consent log, admin audit log)."""

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsentLogEntry(LogEntry, Base):
    __tablename__ = "consent_log"

    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), nullable=True, index=True)


class AuditLogEntry(LogEntry, Base):
    __tablename__ = "audit_log"


class ProgrammeVersion(Base):
    """One version of the brand's programme (earn rules, tiers, campaigns: settings.Programme), as the
    operator saved it; the highest version is in force. Version 0, the settings' own, has no row."""

    __tablename__ = "programme_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(Text)  # the Programme as JSON
    actor: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PersonalModel(Base):
    """This brand's personal model of a released global model (federation.personalise): trained on its
    own members' rows, it never leaves the gateway; campaigns score with it."""

    __tablename__ = "personal_models"

    global_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)  # the release it adapts
    task: Mapped[str] = mapped_column(String(16))
    choice: Mapped[str] = mapped_column(String(32))
    model: Mapped[bytes] = mapped_column(LargeBinary)
    model_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LogAnchor(Base):
    """A Merkle root of one of the logs, posted on chain (ConsentAnchor)."""

    __tablename__ = "log_anchors"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[str] = mapped_column(String(64))
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    anchored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LedgerTxn(Base):
    """A balanced posting: its entries sum to zero."""

    __tablename__ = "ledger_txns"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))  # earn | welcome | action | clawback | expire | exchange | exchange_reversal | alliance_redeem
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))  # a member's postings are found by their entries
    ref: Mapped[str | None] = mapped_column(String(64), nullable=True)  # purchase / exchange / redemption id
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    txn_id: Mapped[int] = mapped_column(ForeignKey("ledger_txns.id"))
    account: Mapped[str] = mapped_column(String(24))  # member | issued | expired | clawback | alliance_out | alliance_in
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), nullable=True)
    amount: Mapped[int] = mapped_column(BigInteger)

    # Entries are read through their member: a member's history in posting order, one posting's
    # member leg. Counter legs (member_id NULL) are only ever summed, so they stay out of the index
    # (ingest writes two entries per purchase, and each index entry costs).
    __table_args__ = (Index("ix_ledger_entries_member", "member_id", "account", "txn_id", sqlite_where=text("member_id IS NOT NULL"),
                            postgresql_where=text("member_id IS NOT NULL")),)


class PointLot(Base):
    """Points earned together, spent and expired first-in first-out."""

    __tablename__ = "point_lots"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    txn_id: Mapped[int] = mapped_column(ForeignKey("ledger_txns.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    earned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reminded_days: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the last reminder window it was in (notices)

    __table_args__ = (Index("ix_point_lots_open", "member_id", "expires_at"),)


class LotDebit(Base):
    """How much of which lot a debit took, so a reversal restores exactly those lots."""

    __tablename__ = "lot_debits"

    txn_id: Mapped[int] = mapped_column(ForeignKey("ledger_txns.id"), primary_key=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("point_lots.id"), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)


class Purchase(Base):
    __tablename__ = "purchases"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    purchase_ref: Mapped[str] = mapped_column(String(36), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    channel: Mapped[str] = mapped_column(String(16))
    eco: Mapped[bool] = mapped_column(Boolean, default=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    points: Mapped[int] = mapped_column(BigInteger)  # points earned (after multipliers and cap)
    campaign: Mapped[str | None] = mapped_column(String(24), nullable=True)
    clawed_back: Mapped[int] = mapped_column(BigInteger, default=0)
    txn_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_txns.id"), nullable=True)
    # Paid in part with points and a coupon (services/rewards.py): points earn only on the rest,
    # `amount_minor - discount_minor - burn_value_minor`; a refund returns burned points in proportion.
    points_burned: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    burn_value_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    points_returned: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    discount_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    # A member's purchases by time carry what the tier window and the daily cap sum, so those reads
    # never visit the table's rows (one random page each, for every member of every batch).
    __table_args__ = (Index("ix_purchases_member_time", "member_id", "occurred_at", "amount_minor", "refunded_minor", "points"),)


class Refund(Base):
    __tablename__ = "refunds"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    purchase_id: Mapped[int] = mapped_column(ForeignKey("purchases.id"), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    points: Mapped[int] = mapped_column(BigInteger)  # earned points clawed back
    points_returned: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # burned points given back
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Action(Base):
    """A non-purchase behaviour that earns points and counts as engagement (review, share, check-in)."""

    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(128), unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # NULL: recorded before requests were hashed
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TierChange(Base):
    __tablename__ = "tier_changes"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    from_tier: Mapped[str] = mapped_column(String(16))
    to_tier: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WalletChallenge(Base):
    __tablename__ = "wallet_challenges"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    message: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used: Mapped[bool] = mapped_column(Boolean, default=False)


class ChainTx(Base):
    """A transaction the brand's sender signed (services/outbox.py), stored before it is broadcast so
    that a retry sends the same bytes. One transaction carries one or many rows (a batch)."""

    __tablename__ = "chain_txs"

    hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    nonce: Mapped[int] = mapped_column(BigInteger)
    raw: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SenderLease(Base):
    """Which process is the brand's one chain sender (uvicorn workers share the account): the holder
    renews it while it works; another process takes it over once it has expired."""

    __tablename__ = "sender_lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1: one sender per brand
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ChainOperation:
    """Columns of a row driven through the chain outbox (services/outbox.py): `tx_hash` names the
    stored transaction (`chain_txs`) that carries it."""

    failure: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True, index=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Exchange(ChainOperation, Base):
    """Brand points into AP: the ledger debit and the on-chain mint, kept as one outcome through this
    outbox row (the signed transaction is stored before it is broadcast)."""

    __tablename__ = "exchanges"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    exchange_ref: Mapped[str] = mapped_column(String(64), unique=True)  # also the on-chain mint ref
    # "member:<member_ref>:<key>": 44 characters of scope plus a key of up to 100.
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    wallet_address: Mapped[str | None] = mapped_column(String(42), nullable=True)  # None once the member is erased
    ap_amount: Mapped[int] = mapped_column(BigInteger)
    brand_points: Mapped[int] = mapped_column(BigInteger)
    rate: Mapped[int] = mapped_column(BigInteger)
    rate_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # pending | confirmed | failed
    debit_txn_id: Mapped[int] = mapped_column(ForeignKey("ledger_txns.id"))

    __table_args__ = (Index("ix_exchanges_status", "status"),)


class Redemption(ChainOperation, Base):
    """A member's AP redeemed at this brand for brand points, submitted by this gateway."""

    __tablename__ = "redemptions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    redemption_ref: Mapped[str] = mapped_column(String(36), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    owner: Mapped[str | None] = mapped_column(String(42), nullable=True)  # None once the member is erased
    nonce: Mapped[str] = mapped_column(String(78))  # uint256 as decimal text
    deadline: Mapped[int] = mapped_column(BigInteger)
    ap_amount: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[str | None] = mapped_column(String(200), nullable=True)  # None once the member is erased
    reward_points: Mapped[int] = mapped_column(BigInteger)
    rate: Mapped[int] = mapped_column(BigInteger)
    rate_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # pending | confirmed | failed | refunded
    credit_txn_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_txns.id"), nullable=True)
    epoch: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    order_ref: Mapped[str | None] = mapped_column(String(36), nullable=True)  # the reward order it pays for, if any

    __table_args__ = (UniqueConstraint("owner", "nonce", name="uq_redemptions_owner_nonce"), Index("ix_redemptions_status", "status"))


class Processing(Base):
    """A processing of members' data that relies on their consent, other than an exchange or a
    redemption (those rows are their own record): a federated training read (kind ``training``,
    purpose ``federated_training``) or a campaign target list (kind ``campaign``, purpose ``marketing``).

    The members it covered, each with the consent-log entry it relied on, are a member set: the rounds
    of a training run read the same members unless a consent changed, so a set is stored once and
    every processing that covered exactly those (member, consent) pairs points at it."""

    __tablename__ = "processings"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # training | campaign | overlap
    ref: Mapped[str] = mapped_column(String(100))  # run:<id>:round:<n>:<stage> | campaign ref
    purpose: Mapped[str] = mapped_column(String(32))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when the consents were checked
    member_set_id: Mapped[int] = mapped_column(ForeignKey("member_sets.id"))

    __table_args__ = (Index("ix_processings_kind", "kind", "id"),)


class MemberSet(Base):
    """(member, consent-log seq) pairs, found again by the SHA-256 of those pairs sorted."""

    __tablename__ = "member_sets"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(Integer)


class MemberSetEntry(Base):
    __tablename__ = "member_set_entries"

    member_set_id: Mapped[int] = mapped_column(ForeignKey("member_sets.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), primary_key=True)
    consent_seq: Mapped[int] = mapped_column(BigInteger)  # the consent-log entry relied on

    # Clustered on the key in SQLite: three integers a row, no separate rowid b-tree to write.
    __table_args__ = {"sqlite_with_rowid": False}


class Reward(Base):
    """An item of the brand's rewards catalogue. Every change makes a new version (recorded whole in
    the admin audit log); an order keeps the version it was bought at."""

    __tablename__ = "rewards"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)  # the operator's name for it, in URLs
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # coupon | good | digital | experience
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text)
    points_price: Mapped[int] = mapped_column(BigInteger)
    stock: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # left to order; None: unlimited
    available_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    available_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    min_tier: Mapped[str | None] = mapped_column(String(16), nullable=True)  # this tier and above
    per_member_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)  # orders not cancelled
    coupon_value_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # coupon: off the purchase
    coupon_min_spend_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    coupon_valid_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RewardOrder(Base):
    """A member's order of a reward, paid with points (the debit is `debit_txn_id`)."""

    __tablename__ = "reward_orders"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_ref: Mapped[str] = mapped_column(String(36), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.id"))
    reward_version: Mapped[int] = mapped_column(Integer)
    points: Mapped[int] = mapped_column(BigInteger)
    # awaiting_payment (paid with AP: until the redemption is final on chain) ->
    # ordered -> shipped -> delivered (a good); issued (a coupon); granted (digital, experience); cancelled
    status: Mapped[str] = mapped_column(String(16))
    debit_txn_id: Mapped[int | None] = mapped_column(ForeignKey("ledger_txns.id"), nullable=True)  # None while awaiting payment
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_reward_orders_member", "member_id", "reward_id"),)


class Coupon(Base):
    """A single-use coupon a reward order issued. Its code is never stored: it is an HMAC of the
    coupon's id under the brand's coupon key (keys directory), so a copy of the database cannot spend
    it; the till finds it by the code's SHA-256."""

    __tablename__ = "coupons"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("reward_orders.id"), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    value_minor: Mapped[int] = mapped_column(BigInteger)
    min_spend_minor: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(8))  # open | used | void
    purchase_id: Mapped[int | None] = mapped_column(ForeignKey("purchases.id"), nullable=True)


class Cause(Base):
    """A cause the brand lists for members' donations (P-14), e.g. planting trees."""

    __tablename__ = "causes"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Gift(Base):
    """Points a member gave to another member of the brand (`recipient_id`) or donated to one of its
    causes (`cause_id`): exactly one of the two. Read by the day's limits, per sender and recipient."""

    __tablename__ = "gifts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    gift_ref: Mapped[str] = mapped_column(String(36), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(160), unique=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    sender_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    recipient_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), nullable=True)
    cause_id: Mapped[int | None] = mapped_column(ForeignKey("causes.id"), nullable=True)
    points: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_gifts_sender", "sender_id", "created_at"), Index("ix_gifts_recipient", "recipient_id", "created_at"))


class Notice(Base):
    """A message to a member about their account (services/notices.py), queued in the transaction
    that caused it and sent by the notice job. `subject` names what it is about (a lot and reminder
    window, an order and its status, ...), unique per kind: a reminder is never queued twice."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    kind: Mapped[str] = mapped_column(String(24))  # points_expiring | coupon_expiring | tier_changed | reward_ordered | reward_shipped
    subject: Mapped[str] = mapped_column(String(80))
    data: Mapped[str] = mapped_column(Text)  # JSON: amounts, dates, codes of rewards; never personal data
    status: Mapped[str] = mapped_column(String(8))  # pending | sending (claimed by a run) | sent | skipped | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # handed over (or claimed, while sending)

    __table_args__ = (UniqueConstraint("kind", "subject", name="uq_notices_kind_subject"), Index("ix_notices_status", "status"))


class WebhookSubscription(Base):
    """An endpoint of the brand's own systems that receives events of the listed types. Its signing
    secret is never stored: an HMAC of (id, secret_version) under the brand's webhook key."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[str] = mapped_column(Text)  # JSON list
    description: Mapped[str] = mapped_column(String(200))
    secret_version: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One event for one subscription: queued in the transaction of the event, posted by the
    delivery job with retries; `msg_id` is the Standard Webhooks id the receiver deduplicates on."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    msg_id: Mapped[str] = mapped_column(String(40), unique=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id"))
    event_type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)  # JSON: references and amounts, never personal data
    status: Mapped[str] = mapped_column(String(12))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
                      Index("ix_webhook_deliveries_subscription", "subscription_id", "id"))


class WebhookAttempt(Base):
    """One try at posting a delivery: the delivery log."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
