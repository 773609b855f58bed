"""HTTP metrics recorded by the outermost middleware, on a small real app driven through ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from prediction_provider.api.body_limit import BodySizeLimit
from prediction_provider.api.middleware import RequestEnvelope
from prediction_provider.config import Settings
from prediction_provider.observability.metrics import LATENCY_BUCKETS, UNMATCHED, AppMetrics

ITEM = "/api/v1/items/{item_id}"
Labels = frozenset[tuple[str, str]]


def samples(exposition: bytes | str) -> dict[tuple[str, Labels], float]:
    """Every sample of a Prometheus text exposition, by name and label set (the parser validates it)."""
    text = exposition.decode() if isinstance(exposition, bytes) else exposition
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist (yet)."""
    return found.get((name, frozenset(labels.items())), 0.0)


def requests_of(found: dict[tuple[str, Labels], float], route: str, method: str, status: int) -> float:
    return value(found, "pp_http_requests_total", method=method, route=route, status=str(status))


def items_app(metrics: AppMetrics) -> FastAPI:
    app = FastAPI()

    @app.get(ITEM)
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.post(ITEM)
    async def replace(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("a bug in a handler")

    # As create_app stacks them: the body limit inside the envelope.
    app.add_middleware(BodySizeLimit, max_body_bytes=64)
    app.add_middleware(RequestEnvelope, metrics=metrics.http)
    return app


@pytest.fixture
def metrics() -> AppMetrics:
    return AppMetrics(lambda: None)


@pytest.fixture
async def http(metrics: AppMetrics) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=items_app(metrics), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_requests_are_labelled_with_the_route_template_never_the_path(
    http: httpx.AsyncClient, metrics: AppMetrics
) -> None:
    for item_id in ("a1", "b2", "c3"):
        assert (await http.get(f"/api/v1/items/{item_id}")).status_code == 200
    found = samples(metrics.exposition())
    assert requests_of(found, ITEM, "GET", 200) == 3
    labelled_routes = {dict(labels).get("route") for _, labels in found}
    assert not any(route and ("a1" in route or "b2" in route) for route in labelled_routes)


async def test_counters_move_by_exactly_the_requests_made(
    http: httpx.AsyncClient, metrics: AppMetrics
) -> None:
    before = samples(metrics.exposition())
    for _ in range(4):
        await http.get("/api/v1/items/x")
    await http.post("/api/v1/items/x")
    after = samples(metrics.exposition())
    assert requests_of(after, ITEM, "GET", 200) - requests_of(before, ITEM, "GET", 200) == 4
    assert requests_of(after, ITEM, "POST", 200) - requests_of(before, ITEM, "POST", 200) == 1
    count = "pp_http_request_duration_seconds_count"
    assert value(after, count, method="GET", route=ITEM) - value(before, count, method="GET", route=ITEM) == 4


async def test_unmatched_paths_share_one_label(http: httpx.AsyncClient, metrics: AppMetrics) -> None:
    for path in ("/nope", "/api/v1/items", "/wp-login.php", "/api/v1/items/x/y"):
        assert (await http.get(path)).status_code == 404
    found = samples(metrics.exposition())
    assert requests_of(found, UNMATCHED, "GET", 404) == 4
    assert {dict(labels).get("route") for _, labels in found} <= {ITEM, UNMATCHED, None}


async def test_unknown_methods_are_counted_as_other(http: httpx.AsyncClient, metrics: AppMetrics) -> None:
    for method in ("BREW", "PROPFIND", "X-ANYTHING"):
        await http.request(method, "/api/v1/items/x")
    found = samples(metrics.exposition())
    assert requests_of(found, ITEM, "OTHER", 405) == 3
    assert not [labels for _, labels in found if dict(labels).get("method") in ("BREW", "PROPFIND")]


async def test_a_body_refused_before_routing_counts_as_unmatched_with_its_status(
    http: httpx.AsyncClient, metrics: AppMetrics
) -> None:
    response = await http.post("/api/v1/items/x", content=b"x" * 1000)
    assert response.status_code == 413
    assert requests_of(samples(metrics.exposition()), UNMATCHED, "POST", 413) == 1


async def test_a_handler_that_raises_counts_as_a_500(http: httpx.AsyncClient, metrics: AppMetrics) -> None:
    assert (await http.get("/broken")).status_code == 500
    assert requests_of(samples(metrics.exposition()), "/broken", "GET", 500) == 1


async def test_latency_histogram_has_sub_millisecond_to_seconds_buckets(
    http: httpx.AsyncClient, metrics: AppMetrics
) -> None:
    for _ in range(3):
        await http.get("/api/v1/items/x")
    found = samples(metrics.exposition())
    buckets = {
        float(dict(labels)["le"]): count
        for (name, labels), count in found.items()
        if name == "pp_http_request_duration_seconds_bucket" and dict(labels)["route"] == ITEM
    }
    assert sorted(buckets) == [*LATENCY_BUCKETS, float("inf")]
    assert min(buckets) <= 0.0001
    assert max(bound for bound in buckets if bound != float("inf")) >= 5
    counts = [buckets[bound] for bound in sorted(buckets)]
    assert counts == sorted(counts)
    assert counts[-1] == 3
    assert value(found, "pp_http_request_duration_seconds_sum", method="GET", route=ITEM) > 0


def test_exposition_without_services_holds_process_and_build_information(metrics: AppMetrics) -> None:
    """Before the lifespan has built the services, a scrape still answers with what exists."""
    names = {family.name for family in text_string_to_metric_families(metrics.exposition().decode())}
    assert {"pp_build_info", "process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names
    assert not [name for name in names if name.startswith(("pp_model_cache", "pp_prediction_jobs"))]
    assert not [name for name in names if name.endswith("_created")]


async def test_every_app_counts_into_its_own_registry() -> None:
    first, second = AppMetrics(lambda: None), AppMetrics(lambda: None)
    transport = httpx.ASGITransport(app=items_app(first))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/api/v1/items/x")
    assert requests_of(samples(first.exposition()), ITEM, "GET", 200) == 1
    assert requests_of(samples(second.exposition()), ITEM, "GET", 200) == 0


def test_many_apps_can_be_built_in_one_process() -> None:
    # Imported here: the multiprocess tests import this module in fresh interpreters, which need
    # only the small app above, not the whole server.
    from prediction_provider.app import create_app

    settings = Settings(jwt_secret="metrics-test-" + "x" * 40, grpc_enabled=False)
    apps = [create_app(settings) for _ in range(3)]
    registries = {id(app.state.metrics.registry) for app in apps}
    assert len(registries) == 3
