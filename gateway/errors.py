"""Domain errors. Each carries the HTTP status and a machine-readable code; the app turns them into
`{"error": code, "detail": reason}` responses, so bad input never surfaces as a 500."""

from __future__ import annotations


class GatewayError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, detail: str, **context):
        super().__init__(detail)
        self.detail = detail
        self.context = context


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class Unauthorised(GatewayError):
    status = 401
    code = "unauthorised"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class IdempotencyMismatch(GatewayError):
    """The same idempotency key came back with a different request body."""

    status = 422
    code = "idempotency_key_reused"


class ConsentRequired(GatewayError):
    status = 403
    code = "consent_required"


class InsufficientPoints(GatewayError):
    status = 409
    code = "insufficient_points"


class MemberNotActive(GatewayError):
    status = 409
    code = "member_not_active"


class RateLimited(GatewayError):
    status = 429
    code = "rate_limited"


class ChainRejected(GatewayError):
    """The alliance contracts refused the operation (a revert, named after the Solidity error)."""

    status = 409
    code = "chain_rejected"


class ChainUnavailable(GatewayError):
    """The chain could not be reached; the operation is kept and retried, nothing is lost."""

    status = 503
    code = "chain_unavailable"
