"""The OpenAPI schema declares the credentials the server takes, so /docs can authorize."""

from __future__ import annotations

from typing import Any

import pytest

from prediction_provider.api.openapi_security import (
    CREDENTIALS,
    PUBLIC_OPERATIONS,
    SECURITY_SCHEMES,
    document_credentials,
)
from prediction_provider.app import HOT_PATHS, create_app
from prediction_provider.config import Settings
from tests.conftest import TEST_JWT_SECRET

EITHER_CREDENTIAL = [{"ApiKey": []}, {"Bearer": []}]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return create_app(Settings(jwt_secret=TEST_JWT_SECRET, grpc_enabled=False)).openapi()


def operations(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "delete", "patch"}
    }


def test_the_schema_declares_the_api_key_header_and_the_bearer_token(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {**schemes["ApiKey"], "type": "apiKey", "in": "header", "name": "X-API-KEY"}
    assert schemes["Bearer"]["type"] == "http"
    assert schemes["Bearer"]["scheme"] == "bearer"
    assert schemes["Bearer"]["bearerFormat"] == "JWT"
    assert "API key" in schemes["Bearer"]["description"]  # a key is taken as a bearer token too


def test_every_operation_says_what_it_accepts(schema: dict[str, Any]) -> None:
    for (method, path), operation in operations(schema).items():
        expected = [] if (method, path) in PUBLIC_OPERATIONS else EITHER_CREDENTIAL
        assert operation.get("security") == expected, (method, path)


def test_public_operations_are_the_probes_metadata_and_login(schema: dict[str, Any]) -> None:
    public = {key for key, operation in operations(schema).items() if operation["security"] == []}
    assert public == PUBLIC_OPERATIONS  # every name in the list is a real operation
    assert ("post", "/api/v1/auth/login") in public
    assert ("get", "/v2/health/ready") in public


def test_routes_served_past_the_router_are_documented_as_protected(schema: dict[str, Any]) -> None:
    documented = operations(schema)
    for method, path in HOT_PATHS:
        assert documented[(method.lower(), path)]["security"] == EITHER_CREDENTIAL, path
    assert documented[("get", "/api/v1/admin/users")]["security"] == EITHER_CREDENTIAL
    assert documented[("get", "/metrics")]["security"] == EITHER_CREDENTIAL


def test_an_operation_stating_its_own_security_keeps_it() -> None:
    own = [{"Bearer": []}]
    schema = {
        "paths": {
            "/x": {"get": {"security": own}, "post": {}, "parameters": []},
            "/health/": {"get": {}},
        }
    }
    finished = document_credentials(schema)
    assert finished["paths"]["/x"]["get"]["security"] == own
    assert finished["paths"]["/x"]["post"]["security"] == CREDENTIALS
    assert finished["paths"]["/health/"]["get"]["security"] == []  # the trailing slash form is public too
    assert finished["components"]["securitySchemes"] == SECURITY_SCHEMES
