"""Property-based fuzzing of every operation in the app's OpenAPI document, as the admin.

schemathesis generates requests from ``/openapi.json`` (examples, coverage of
boundaries and fuzzing) and each response must not be a server error. It runs
against a dedicated server with an accounts database of its own: fuzzing as the
admin creates, edits and deactivates users, which must not reach the accounts
the rest of the suite relies on. The admin calls with a bearer token, which
stays valid when the fuzzer regenerates the admin's API key.

Nothing is excluded, and no server error is tolerated.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import not_a_server_error

from prediction_provider.app import create_app
from prediction_provider.config import Settings
from tests.conftest import MODEL, TEST_JWT_SECRET, LiveServer
from tests.security.support import (
    bearer,
    login,
)

FUZZ_ADMIN = "fuzz-admin"
FUZZ_PASSWORD = "fuzz-admin-password-1"

# The document the app serves at /openapi.json, built without starting it, so that the operations are
# known when pytest collects. (schemathesis.pytest.from_fixture, which would load it from the running
# server instead, fails on pytest 9: it sets `Function._nodeid`, which pytest 9 no longer has.)
OPENAPI: dict[str, Any] = create_app(Settings(jwt_secret=TEST_JWT_SECRET, grpc_enabled=False)).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


@pytest.fixture(scope="module")
def fuzz_server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    database: Path = tmp_path_factory.mktemp("fuzz") / "accounts.db"
    isolated = settings.model_copy(
        update={
            "database_url": f"sqlite:///{database}",
            "bootstrap_admin_username": FUZZ_ADMIN,
            "bootstrap_admin_password": FUZZ_PASSWORD,
            "default_model": MODEL,
        }
    )
    with LiveServer(isolated) as server:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            served = http.get("/openapi.json").json()
        assert served == json.loads(json.dumps(OPENAPI)), "the fuzzed document is not the one served"
        yield server


@pytest.fixture(scope="module")
def admin_token(fuzz_server: LiveServer) -> str:
    with httpx.Client(base_url=fuzz_server.url, timeout=60) as http:
        return login(http, FUZZ_ADMIN, FUZZ_PASSWORD)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzzing_as_admin_finds_no_server_error(
    case: Case, fuzz_server: LiveServer, admin_token: str
) -> None:
    case.call_and_validate(
        base_url=fuzz_server.url, headers=bearer(admin_token), checks=[not_a_server_error], timeout=60
    )
