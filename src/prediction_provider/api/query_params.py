"""List routes' paging (``limit``/``offset``), and query parameters a route does not declare
refused with a 422 naming them.

Every list route pages the same way: ``limit`` items from ``offset``, and the
answer carries ``total`` (how many match in all), ``limit`` and ``offset``.

FastAPI ignores undeclared query parameters, so ``?limit=3`` on a route that
pages with other names, or a filter it does not know, silently answers the
unfiltered, unpaged list. ``DeclaredQueryOnly`` is the one check: it compares
the request's query parameters with those the matched route (and its
dependencies) declares. List and filter routes take it as their last
parameter, so authentication and permission errors are still answered first.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.routing import APIRoute

from prediction_provider.errors import UnknownQueryParameter

Limit = Annotated[int, Query(ge=1, le=500, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="Skip this many items first.")]

# What a client used to a page/page_size API most likely meant.
RENAMED = {"page": "offset", "page_size": "limit", "per_page": "limit", "size": "limit", "skip": "offset"}

# Routes compare by value and are unhashable; keyed by id, holding the route so the id stays its own.
_declared: dict[int, tuple[APIRoute, frozenset[str]]] = {}


def declared_query_params(route: APIRoute) -> frozenset[str]:
    """The query parameter names ``route`` reads, through every dependency it has."""
    cached = _declared.get(id(route))
    if cached is not None and cached[0] is route:
        return cached[1]
    found: set[str] = set()
    pending: list[Any] = [route.dependant]
    while pending:
        dependant = pending.pop()
        found.update(param.alias for param in dependant.query_params)
        pending.extend(dependant.dependencies)
    names = frozenset(found)
    _declared[id(route)] = (route, names)
    return names


async def reject_undeclared_query(request: Request) -> None:
    """Raises ``UnknownQueryParameter`` naming every parameter the matched route does not take."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    accepted = declared_query_params(route)
    unknown = sorted(set(request.query_params) - accepted)
    if not unknown:
        return
    details = []
    for name in unknown:
        hint = f"; use {RENAMED[name]}" if name in RENAMED and RENAMED[name] in accepted else ""
        details.append({"field": f"query.{name}", "error": f"unknown query parameter{hint}"})
    listed = ", ".join(repr(name) for name in unknown)
    takes = ", ".join(sorted(accepted)) or "none"
    raise UnknownQueryParameter(
        f"unknown query parameter {listed}; this route takes: {takes}",
        details,
    )


DeclaredQueryOnly = Annotated[None, Depends(reject_undeclared_query)]
