"""The fuzzing suite: Schemathesis against the gateway's own OpenAPI, once per kind of credential
(point of sale, operator, auditor, member, none), with data that fits the schema and data that does
not. Every response must be no 5xx, carry a status the operation declares, a declared content type,
and a body that conforms to the declared schema.

Bounded for CI (EXAMPLES per operation and mode; about a minute in all here). Each operation gets
fresh credentials, so one that revokes a key or erases the member cannot blind the others. Failures
are collected, not shrunk, and reported together; FUZZ_EXAMPLES raises the bound for a longer run."""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import dataclass, field

import pytest
import schemathesis
from harness import Clock, consent, enrol, link_wallet, new_wallet, start_world_brand
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from gateway.auth import create_api_key
from gateway.db import transaction

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
ROLES = ("pos", "operator", "auditor", "member", "none")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
_phones = itertools.count(1)


@dataclass
class Run:
    operations: int = 0
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def target(world, tmp_path_factory):
    clock = Clock()
    brand = start_world_brand(world, "fuzzed", 10, clock=clock)
    schema = schemathesis.openapi.from_asgi("/openapi.json", brand.client.app)
    yield brand, clock, schema
    brand.close()


def _credentials(brand, clock, role: str) -> dict[str, str]:
    """Fresh credentials of the role: a new API key, or a new member with points, consent and a wallet."""
    if role == "none":
        return {}
    if role == "member":
        m = enrol(brand, f"+86132{next(_phones):08d}")
        consent(brand, m, "alliance_exchange")
        link_wallet(brand, m, new_wallet())
        clock.advance(minutes=1)
        # By a till key of its own: the operator's fuzzing may have revoked any earlier key.
        till = _credentials(brand, clock, "pos")
        r = brand.client.post("/v1/purchases", headers=till | {"Idempotency-Key": f"fuzz-{m['member_ref']}"},
                              json={"member_ref": m["member_ref"], "amount_minor": 100_000, "occurred_at": clock.now.isoformat()})
        assert r.status_code == 201, r.text
        return m["auth"]
    with transaction(brand.gw.sessions) as session:
        return {"Authorization": f"Bearer {create_api_key(session, role, f'fuzz {role}', brand.gw.now())[1]}"}


@pytest.mark.parametrize("role", ROLES)
def test_the_api_holds_to_its_openapi(target, role):
    brand, clock, schema = target
    run = Run()
    for result in schema.get_all_operations():
        operation = result.ok()
        run.operations += 1
        auth = _credentials(brand, clock, role)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                clock.advance(seconds=7)  # time moves, as it does between real requests (rate limits, expiry)
                response = case.call(headers=auth)
                run.requests += 1
                run.statuses[response.status_code] += 1
                try:
                    case.validate_response(response, checks=CHECKS, headers=auth)
                except (Exception, BaseExceptionGroup) as exc:  # a failed check (a group of them): collected with the request
                    run.failures.append(f"{operation.label} ({mode.value}) -> {response.status_code}: "
                                        f"{str(exc).strip()[:600]}\n  sent: {case.body!r:.300}")

            try:
                fuzz()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation without parameters has nothing to get wrong
    print(f"\nschemathesis {role}: {run.operations} operations, {run.requests} requests, {len(run.failures)} failures, "
          f"statuses {dict(sorted(run.statuses.items()))}")
    assert run.operations >= 40 and run.requests >= run.operations * 2
    assert not run.failures, "\n".join(run.failures[:20])
