"""What a test needs from the machine, and what happens when the machine lacks it.

Outside `make test` a missing component skips the tests that need it, saying why. `make test`
installs anvil, the contract toolchain and Chromium itself and names them in
ALLIANCE_TESTS_REQUIRE: there a missing one fails the run instead of hiding its tests. PostgreSQL
is a service the machine runs or not, so it is required only where the caller asks for it."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(component: str, reason: str) -> NoReturn:
    if component in os.environ.get("ALLIANCE_TESTS_REQUIRE", "").split(","):
        pytest.fail(f"{component} is required here ({reason})", pytrace=False)
    pytest.skip(reason)
