"""Domain errors, answered as RFC 9457 problem details (`application/problem+json`).

Each error carries its HTTP status, a machine-readable `code` and a short `title`; the body is
`{type, title, status, detail, code, ...context}`, where `type` is `/problems/<code>` (served by the
gateway, so it resolves against the gateway's own URL) and context fields such as `retry_after_s`,
`available` or `ref` say more. Bad input is never a 500."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

PROBLEM_MEDIA_TYPE = "application/problem+json"


class GatewayError(Exception):
    status = 400
    code = "bad_request"
    title = "The request cannot be processed as sent"

    def __init__(self, detail: str, **context: Any):
        super().__init__(detail)
        self.detail = detail
        self.context = context


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    title = "No such resource"


class Unauthorised(GatewayError):
    status = 401
    code = "unauthorised"
    title = "Credentials missing, unknown, expired or revoked"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"
    title = "Not allowed for these credentials"


class Conflict(GatewayError):
    status = 409
    code = "conflict"
    title = "The resource is not in a state that allows this"


class IdempotencyMismatch(GatewayError):
    """The same idempotency key came back with a different request."""

    status = 422
    code = "idempotency_key_reused"
    title = "The idempotency key was used for a different request"


class ConsentRequired(GatewayError):
    status = 403
    code = "consent_required"
    title = "The member has not consented to this purpose"


class InsufficientPoints(GatewayError):
    status = 409
    code = "insufficient_points"
    title = "Not enough points"


class MemberNotActive(GatewayError):
    status = 409
    code = "member_not_active"
    title = "The account is not active"


class RateLimited(GatewayError):
    """Too many attempts; `retry_after_s` (also the Retry-After header) says when the next one fits."""

    status = 429
    code = "rate_limited"
    title = "Too many requests"


class ChainRejected(GatewayError):
    """The alliance contracts refused the operation (a revert, named after the Solidity error)."""

    status = 409
    code = "chain_rejected"
    title = "The alliance contracts refused the operation"


class ChainUnavailable(GatewayError):
    """The chain could not be reached; an operation already accepted is kept and retried."""

    status = 503
    code = "chain_unavailable"
    title = "The alliance chain cannot be reached"


class CodeInvalid(GatewayError):
    status = 400
    code = "code_invalid"
    title = "A one-time code does not match"


class NotifierDown(GatewayError):
    """A one-time code could not be handed over for delivery (SMTP or the SMS provider is away)."""

    status = 503
    code = "notifier_unavailable"
    title = "The code could not be sent"


# Problems raised outside the domain errors: the request guard, validation, the database.
BODY_TOO_LARGE = (413, "body_too_large", "The request body is larger than this route accepts")
INVALID_REQUEST = (422, "invalid_request", "The request does not match the API's schema")
BUSY = (503, "busy", "The service is busy")
METHOD_NOT_ALLOWED = (405, "method_not_allowed", "Method Not Allowed")

PROBLEMS: dict[str, tuple[int, str]] = {
    cls.code: (cls.status, cls.title)
    for cls in (GatewayError, NotFound, Unauthorised, Forbidden, Conflict, IdempotencyMismatch, ConsentRequired,
                InsufficientPoints, MemberNotActive, RateLimited, ChainRejected, ChainUnavailable, CodeInvalid, NotifierDown)
} | {code: (status, title) for status, code, title in (BODY_TOO_LARGE, INVALID_REQUEST, BUSY, METHOD_NOT_ALLOWED)}


def problem_body(status: int, code: str, title: str, detail: str, **context: Any) -> dict[str, Any]:
    return {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail, "code": code, **context}


def problem(status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None,
            **context: Any) -> JSONResponse:
    """The response for a problem; a `retry_after_s` in the context is also the Retry-After header."""
    headers = dict(headers or {})
    if "retry_after_s" in context:
        headers["Retry-After"] = str(context["retry_after_s"])
    return JSONResponse(problem_body(status, code, title, detail, **context), status_code=status, headers=headers or None,
                        media_type=PROBLEM_MEDIA_TYPE)


def error_response(exc: GatewayError) -> JSONResponse:
    return problem(exc.status, exc.code, exc.title, exc.detail, **exc.context)
