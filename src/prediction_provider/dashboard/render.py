"""Rendering: the templates, their filters, and what every page's context holds.

Autoescaping is on for every ``.html`` template and no template marks text ``|safe``: model
names, tags, symbols and feature names come from providers and are shown as text, never markup.
Chart data reaches the page as JSON in an attribute (escaped like any text) and is drawn by
``dashboard.js``, so no page carries inline script and the CSP of ``'self'`` holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from prediction_provider.dashboard.nav import Page, landing, visible_pages
from prediction_provider.dashboard.session import Viewer

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
PAGE_SIZE = 50
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def utc(value: datetime | str | None) -> str:
    """Every time on a page: UTC, to the second, labelled."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def num(value: Any, digits: int = 2) -> str:
    """Floats rounded for reading; Decimals (money) exactly as stored."""
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "-"
        return f"{value:,.{digits}f}"
    return str(value)


def pct(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * 100:.{digits}f} %"


def to_json(value: Any) -> str:
    """For ``data-*`` attributes: autoescaping makes the JSON safe inside the attribute."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode()


templates.env.filters.update(utc=utc, num=num, pct=pct, tojson_text=to_json)


@dataclass(frozen=True, slots=True)
class ApiCall:
    """The public API request behind a panel: shown as ``curl`` under "view as API"."""

    path: str
    query: dict[str, Any] = field(default_factory=dict)
    method: str = "GET"

    @property
    def url(self) -> str:
        query = {k: v for k, v in self.query.items() if v not in (None, "")}
        return self.path + (("?" + urlencode(query, doseq=True)) if query else "")

    def curl(self, origin: str) -> str:
        method = "" if self.method == "GET" else f"-X {self.method} "
        return f"curl {method}-H \"X-API-KEY: $KEY\" '{origin}{self.url}'"


@dataclass(frozen=True, slots=True)
class Paging:
    """Server-side paging by ``offset`` (the API's own paging style): one screen of rows at a time."""

    offset: int
    total: int
    size: int = PAGE_SIZE

    @property
    def page(self) -> int:
        return self.offset // self.size + 1

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def previous(self) -> int | None:
        return max(0, self.offset - self.size) if self.offset > 0 else None

    @property
    def next(self) -> int | None:
        return self.offset + self.size if self.offset + self.size < self.total else None


def query_with(request: Request, **changes: Any) -> str:
    """This page's URL with some query parameters changed (filters and paging live in the URL)."""
    params = dict(request.query_params)
    for key, value in changes.items():
        if value in (None, ""):
            params.pop(key, None)
        else:
            params[key] = str(value)
    return request.url.path + (("?" + urlencode(params)) if params else "")


def is_fragment(request: Request) -> bool:
    """An htmx refresh of one panel, answered with the panel alone."""
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-boosted") != "true"


def render(
    request: Request,
    template: str,
    viewer: Viewer | None,
    page: Page | None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    origin = f"{request.url.scheme}://{request.url.netloc}"
    base: dict[str, Any] = {
        "viewer": viewer,
        "page": page,
        "nav": visible_pages(viewer.principal.role) if viewer is not None else [],
        "home": landing(viewer.principal.role) if viewer is not None else "/dashboard/login",
        "as_of": datetime.now(UTC),
        "origin": origin,
        "query_with": lambda **changes: query_with(request, **changes),
        "fragment": is_fragment(request),
    }
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)
