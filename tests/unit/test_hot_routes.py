"""Direct dispatch of request-only routes: the same answers, errors and scope as FastAPI's router."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse, Response

from prediction_provider.api.hot_routes import HotRoutes, direct_routes


class Refused(Exception):
    """A domain error the app has a handler for."""


class Broken(Exception):
    """An error nobody handles: the server-error middleware answers 500."""


def build_app() -> tuple[FastAPI, list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []
    router = APIRouter()

    @router.post("/hot")
    async def hot(request: Request) -> Response:
        seen.append({"route": request.scope.get("route"), "body": await request.body()})
        kind = request.headers.get("x-fail")
        if kind == "refused":
            raise Refused("no")
        if kind == "broken":
            raise Broken("boom")
        return JSONResponse({"served": "hot"})

    @router.post("/things/{name}/versions/{version}")
    async def thing(name: str, request: Request, version: str | None = None) -> Response:
        seen.append({"route": request.scope.get("route"), "params": dict(request.path_params)})
        return JSONResponse({"name": name, "version": version})

    @router.get("/hot")
    async def hot_get() -> dict[str, str]:
        return {"served": "fastapi"}

    app = FastAPI()

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        return JSONResponse({"error": "refused"}, status_code=403)

    app.include_router(router)
    app.add_middleware(
        HotRoutes,
        routes=direct_routes(
            router.routes, [("POST", "/hot"), ("POST", "/things/{name}/versions/{version}")]
        ),
        exception_handlers=app.exception_handlers,
    )
    return app, seen


def call(app: FastAPI, requests: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Requests through the whole ASGI stack, middleware included; unhandled errors answer 500."""

    async def run() -> Any:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await requests(client)

    return asyncio.run(run())


def test_a_hot_route_is_answered_with_its_route_in_the_scope() -> None:
    app, seen = build_app()
    response = call(app, lambda client: client.post("/hot", content=b"payload"))
    assert response.status_code == 200
    assert response.json() == {"served": "hot"}
    route = seen[0]["route"]
    assert isinstance(route, APIRoute)
    assert route.path == "/hot"
    assert seen[0]["body"] == b"payload"


def test_other_methods_on_the_same_path_still_go_through_fastapi() -> None:
    app, seen = build_app()

    async def requests(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get("/hot"), await client.put("/hot")]

    got, wrong = call(app, requests)
    assert got.json() == {"served": "fastapi"}
    assert wrong.status_code == 405
    assert seen == []


def test_errors_go_through_the_apps_handlers_and_unhandled_ones_become_500() -> None:
    app, _ = build_app()

    async def requests(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.post("/hot", headers={"x-fail": "refused"}),
            await client.post("/hot", headers={"x-fail": "broken"}),
        ]

    refused, broken = call(app, requests)
    assert refused.status_code == 403
    assert refused.json() == {"error": "refused"}
    assert broken.status_code == 500


def test_only_routes_that_take_the_request_alone_can_be_dispatched_directly() -> None:
    router = APIRouter()

    async def caller() -> str:
        return "someone"

    @router.post("/with-dependency")
    async def with_dependency(request: Request, who: Annotated[str, Depends(caller)]) -> Response:
        return Response()

    @router.post("/items/{item}")
    async def with_path(request: Request, item: int) -> Response:
        return Response()

    class OwnShape(APIRoute):
        pass

    special = APIRouter(route_class=OwnShape)

    @special.post("/special")
    async def own_shape(request: Request) -> Response:
        return Response()

    with pytest.raises(TypeError, match="only the Request and path parameters"):
        direct_routes(router.routes, [("POST", "/with-dependency")])
    with pytest.raises(TypeError, match="str path parameters"):
        direct_routes(router.routes, [("POST", "/items/{item}")])
    with pytest.raises(TypeError, match="route class"):
        direct_routes(special.routes, [("POST", "/special")])
    with pytest.raises(LookupError):
        direct_routes(router.routes, [("POST", "/nowhere")])


def test_path_parameters_are_passed_to_the_endpoint() -> None:
    app, seen = build_app()
    response = call(app, lambda client: client.post("/things/a%20b/versions/7"))
    assert response.json() == {"name": "a b", "version": "7"}
    assert seen[0]["params"] == {"name": "a b", "version": "7"}
    assert seen[0]["route"].path == "/things/{name}/versions/{version}"
