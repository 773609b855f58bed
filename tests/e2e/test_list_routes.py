"""One paging style on every list route, and query parameters a route does not take refused.

Every list route pages with ``limit``/``offset`` and answers ``total``; a query
parameter a list or filter route does not declare is a 422 naming it, never
silently ignored (``?limit=3`` on a route paging otherwise used to answer 100).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from prediction_provider.api.query_params import declared_query_params, reject_undeclared_query
from tests.conftest import MODEL, Account, LiveServer
from tests.security.support import error_of

# The Open Inference Protocol's own metadata routes: a protocol, not a list or filter.
PROTOCOL_ROUTES = {"/v2/models/{name}", "/v2/models/{name}/ready"}


def get_routes(app: FastAPI) -> Iterator[APIRoute]:
    """Every GET route of the app, through the routers it includes."""
    pending: list[Any] = list(app.router.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)
        if included is not None:
            pending.extend(included.routes)
        elif isinstance(route, APIRoute) and "GET" in (route.methods or ()):
            yield route


def checks_query(route: APIRoute) -> bool:
    return any(dependency.call is reject_undeclared_query for dependency in route.dependant.dependencies)


def is_list(route: APIRoute) -> bool:
    fields = getattr(route.response_model, "model_fields", {})
    return "total" in fields


@pytest.fixture
def admin(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, headers=accounts["admin"].headers, timeout=60) as http:
        yield http


def test_every_list_route_pages_with_limit_and_offset_and_answers_total(live_server: LiveServer) -> None:
    routes = list(get_routes(live_server.app))
    lists = [route for route in routes if is_list(route)]
    expected = {"/api/v1/admin/users", "/api/v1/admin/audit", "/api/v1/admin/logs", "/api/v1/predictions",
                "/api/v1/decisions", "/api/v1/accounts", "/models"}  # fmt: skip
    assert expected <= {route.path for route in lists}
    for route in lists:
        assert {"limit", "offset"} <= declared_query_params(route), route.path
        assert {"total", "limit", "offset"} <= set(route.response_model.model_fields), route.path  # type: ignore[union-attr]
    for route in routes:
        assert not {"page", "page_size"} & declared_query_params(route), route.path


def test_every_list_or_filter_route_refuses_undeclared_query_parameters(live_server: LiveServer) -> None:
    for route in get_routes(live_server.app):
        if route.path in PROTOCOL_ROUTES:
            continue
        if declared_query_params(route) or is_list(route):
            assert checks_query(route), f"GET {route.path} takes query parameters but ignores unknown ones"


def test_limit_and_offset_page_the_audit_trail(admin: httpx.Client, live_server: LiveServer) -> None:
    for _ in range(4):
        admin.get("/api/v1/admin/stats")
    live_server.services.audit.flush()
    three = admin.get("/api/v1/admin/audit", params={"limit": 3})
    assert three.status_code == 200, three.text
    page = three.json()
    assert (len(page["entries"]), page["limit"], page["offset"]) == (3, 3, 0)
    assert page["total"] >= 4
    after = admin.get("/api/v1/admin/audit", params={"limit": 2, "offset": 1}).json()
    assert [e["id"] for e in after["entries"]] == [e["id"] for e in page["entries"][1:]]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/admin/users",
        "/api/v1/admin/audit",
        "/api/v1/admin/logs",
        "/api/v1/admin/usage/test-client",
        "/api/v1/predictions",
        "/api/v1/decisions",
        "/api/v1/accounts",
        "/models",
        f"/models/{MODEL}/versions",
        f"/models/{MODEL}/info",
    ],
)
def test_an_unknown_query_parameter_is_a_422_naming_it(admin: httpx.Client, path: str) -> None:
    assert admin.get(path).status_code == 200
    error = error_of(admin.get(path, params={"colour": "red"}), 422, "validation_error")
    assert "'colour'" in error["message"]
    assert [detail["field"] for detail in error["details"]] == ["query.colour"]


def test_the_old_paging_names_are_refused_with_the_new_ones_named(admin: httpx.Client) -> None:
    error = error_of(
        admin.get("/api/v1/admin/audit", params={"page": 2, "page_size": 3}), 422, "validation_error"
    )
    hints = {detail["field"]: detail["error"] for detail in error["details"]}
    assert hints == {"query.page": "unknown query parameter; use offset",
                     "query.page_size": "unknown query parameter; use limit"}  # fmt: skip


def test_credentials_and_permissions_are_checked_before_the_query(
    anonymous: httpx.Client, client: httpx.Client
) -> None:
    error_of(anonymous.get("/api/v1/admin/audit", params={"colour": "red"}), 401, "unauthorized")
    error_of(client.get("/api/v1/admin/audit", params={"colour": "red"}), 403, "forbidden")


def test_logs_take_the_seed_filters_user_endpoint_and_hours(
    admin: httpx.Client, client: httpx.Client, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    marker = uuid.uuid4().hex[:12]
    missing = client.get(f"/models/no-such-{marker}/info", headers={"X-Request-ID": f"logs-{marker}"})
    assert missing.status_code == 404
    old = datetime.now(UTC) - timedelta(hours=3)
    live_server.services.audit.record({
        "at": old, "request_id": f"old-{marker}", "user_id": accounts["client"].user_id,
        "username": accounts["client"].username, "role": "client", "method": "GET",
        "path": f"/models/no-such-{marker}/versions", "status": 404, "latency_ms": 1.0,
        "client_address": "127.0.0.1",
    })  # fmt: skip
    live_server.services.audit.flush()

    def logged(**params: Any) -> set[str]:
        response = admin.get("/api/v1/admin/logs", params={"limit": 500, **params})
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == len(page["entries"])
        return {entry["request_id"] for entry in page["entries"]}

    endpoint = f"/models/no-such-{marker}"
    assert logged(user=accounts["client"].username, endpoint=endpoint) == {f"logs-{marker}", f"old-{marker}"}
    assert logged(user=accounts["client"].username, endpoint=endpoint, hours=1) == {f"logs-{marker}"}
    assert logged(user=accounts["client"].username, endpoint=endpoint, hours=5) == {
        f"logs-{marker}",
        f"old-{marker}",
    }
    assert logged(user=accounts["admin"].username, endpoint=endpoint) == set()
    error_of(admin.get("/api/v1/admin/logs", params={"hours": 0}), 422, "validation_error")
