"""The leaderboard page: exactly ``GET /api/v1/leaderboard`` with the same query, as a table.

The query parameters are the API's own, with the API's bounds, and are handed to the same
``Outcomes.leaderboard`` call, so the page and the API answer one board (the service caches it by
query and scoring pass). Ranked entries come first; provisional ones (under ``min_n`` scores or
``min_days`` days) follow unranked and say why. The table refreshes itself every 30 s through the
``/dashboard/leaderboard/table`` fragment, which takes the filter form's fields, so no text a user
typed ever sits inside an ``hx-*`` attribute.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.api.deps import services_of
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.api.routes import outcomes as outcomes_api
from prediction_provider.dashboard.nav import LEADERBOARD
from prediction_provider.dashboard.render import PAGE_SIZE, ApiCall, Paging, render
from prediction_provider.dashboard.session import Viewer, page_viewer
from prediction_provider.errors import PredictionFailed
from prediction_provider.outcomes.service import BoardQuery

router = APIRouter(prefix="/dashboard", include_in_schema=False)
Board = Annotated[Viewer, Depends(page_viewer(LEADERBOARD))]
Target = Literal["direction", "return", "quantiles", "entry_signal"]
Window = Literal["7d", "30d", "90d", "all"]
Group = Literal["model", "provider"]
ScoreSet = Literal["organic", "common"]
DIGITS = 4  # floats on the board; tests format the API's numbers with the same ``num``
# How the score is computed, in the API's own words (its OpenAPI description).
FORMULA = inspect.cleandoc(outcomes_api.leaderboard.__doc__ or "")
FORMULA_DOCS = "/docs#/outcomes"


@dataclass(frozen=True, slots=True)
class Filters:
    """The API's query, with the API's defaults."""

    target: str = "direction"
    horizon: int | None = None
    symbol: str | None = None
    window: str = "30d"
    group: str = "model"
    set: str = "organic"
    min_n: int = 30
    min_days: int = 5

    def board_query(self) -> BoardQuery:
        return BoardQuery(
            self.target,
            self.horizon,
            self.symbol,
            self.window,
            self.group,
            self.set,
            self.min_n,
            self.min_days,
        )

    def api_query(self) -> dict[str, Any]:
        defaults = Filters()
        return {k: v for k, v in asdict(self).items() if v != getattr(defaults, k)}


def filters(
    target: Target = "direction",
    horizon: Annotated[int | None, Query(ge=1, le=10_000)] = None,
    symbol: Annotated[str | None, Query(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9._=^-]+$")] = None,
    window: Window = "30d",
    group: Group = "model",
    set: ScoreSet = "organic",
    min_n: Annotated[int, Query(ge=1, le=1_000_000)] = 30,
    min_days: Annotated[int, Query(ge=1, le=10_000)] = 5,
) -> Filters:
    return Filters(target, horizon, symbol, window, group, set, min_n, min_days)


Chosen = Annotated[Filters, Depends(filters)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def performance_api(entry: dict[str, Any], chosen: Filters) -> ApiCall | None:
    """The records behind a model's numbers: its realized metrics per version (none for a provider)."""
    if not entry.get("model_name"):
        return None
    query = {"version": entry.get("model_version"), "window": chosen.window}
    return ApiCall(f"/api/v1/models/{entry['model_name']}/performance", query)


async def _context(request: Request, chosen: Filters, offset: int) -> dict[str, Any]:
    outcomes = services_of(request).outcomes
    if outcomes is None:
        raise PredictionFailed("realized outcomes are not available in this process")
    board: dict[str, Any] = await run_in_threadpool(outcomes.leaderboard, chosen.board_query())
    rows = [*board["entries"], *board["provisional"]]
    shown = rows[offset : offset + PAGE_SIZE]
    return {
        "board": board,
        "rows": [{**entry, "records_api": performance_api(entry, chosen)} for entry in shown],
        "paging": Paging(offset, len(rows)),
        "filters": chosen,
        "digits": DIGITS,
        "api_call": ApiCall("/api/v1/leaderboard", chosen.api_query()),
        "formula": FORMULA,
        "formula_docs": FORMULA_DOCS,
    }


@router.get("/leaderboard")
async def leaderboard_page(
    request: Request, viewer: Board, chosen: Chosen, offset: Offset = 0, _query: DeclaredQueryOnly = None
) -> Response:
    context = await _context(request, chosen, offset)
    return render(request, "leaderboard.html", viewer, LEADERBOARD, **context)


@router.get("/leaderboard/table")
async def leaderboard_table(
    request: Request, viewer: Board, chosen: Chosen, offset: Offset = 0, _query: DeclaredQueryOnly = None
) -> Response:
    """The table alone, for the page's 30 s refresh."""
    context = await _context(request, chosen, offset)
    return render(request, "_leaderboard_table.html", viewer, LEADERBOARD, **context)
