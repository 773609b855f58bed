"""Trading: recorded decisions, their BUY/SELL/HOLD split, prices with decision markers, risk gauges.

Decisions come from ``trading.records`` (what ``GET /api/v1/decisions`` calls, with its visibility:
a client sees its own, callers with ``read_all_jobs`` everyone's). Prices come from the decision
service's own market data, so a marker sits on the bars the decision read. Gauges come from the
trading account service for the accounts ``GET /api/v1/accounts`` would list to the viewer; a
role without ``manage_trading_accounts`` (the operator) is refused that list by the API, so sees none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_provider.accounts.principal import Principal
from prediction_provider.accounts.roles import Permission, allows
from prediction_provider.api.account_schemas import USERNAME
from prediction_provider.api.decision_record_schemas import DecisionRecordPublic
from prediction_provider.api.decision_schemas import SYMBOL
from prediction_provider.api.deps import Services, services_of
from prediction_provider.api.query_params import DeclaredQueryOnly
from prediction_provider.dashboard.nav import TRADING
from prediction_provider.dashboard.render import PAGE_SIZE, ApiCall, Paging, render
from prediction_provider.dashboard.session import Viewer, page_viewer
from prediction_provider.errors import InvalidInput, PredictionFailed, PredictionProviderError
from prediction_provider.trading.records import (
    DecisionFilter,
    action_counts,
    find_decision,
    search_decisions,
    sees_every_decision,
)
from prediction_provider.trading.risk import RiskLimits

router = APIRouter(prefix="/dashboard", include_in_schema=False)
TradingViewer = Annotated[Viewer, Depends(page_viewer(TRADING))]
ACTIONS = ("BUY", "SELL", "HOLD")
ACTION_COLOURS = {"BUY": "#059669", "SELL": "#dc2626", "HOLD": "#64748b"}  # buy green, sell red
MAX_CHART_BARS = 20_000  # the most bars read for one chart; thinned before drawing
CHART_POINTS = 600
LEAD_BARS = 24  # bars shown before the earliest decision
CHART_SYMBOLS = 3  # price charts for the first few symbols of the page: bounded on purpose
GAUGE_ACCOUNTS = 12


def _services(request: Request) -> Services:
    services = services_of(request)
    if services.decisions is None:
        raise PredictionFailed("trading decisions are not configured on this server")
    return services


# -- price charts ------------------------------------------------------------------------------------


def price_chart(services: Services, symbol: str, decisions: list[DecisionRecordPublic]) -> dict[str, Any]:
    """The symbol's closes from a little before its earliest decision on the page to its latest,
    thinned to at most ``CHART_POINTS``; each decision a point on the bar its features read (one
    ``points`` series per action)."""
    assert services.decisions is not None
    latest = max(d.data_as_of for d in decisions)
    earliest = min(d.data_as_of for d in decisions)
    try:
        bars = services.decisions.market.bars(symbol, latest, MAX_CHART_BARS)
    except PredictionProviderError:
        return {"x": [], "series": [], "empty": f"No bars for {symbol} in the market data."}
    times = bars.index.asi8 // 1_000_000_000
    first = max(0, int(np.searchsorted(times, int(earliest.timestamp()), "right")) - 1 - LEAD_BARS)
    step = max(1, -(-(len(times) - first) // CHART_POINTS))
    kept = np.arange(first, len(times), step)
    if len(kept) and kept[-1] != len(times) - 1:
        kept = np.append(kept, len(times) - 1)  # the latest bar, on which the latest decision sits
    shown = times[kept]
    closes = [float(v) for v in bars["close"].to_numpy()[kept]]
    markers: dict[str, list[float | None]] = {action: [None] * len(closes) for action in ACTIONS}
    for decision in decisions:
        position = int(np.searchsorted(shown, int(decision.data_as_of.timestamp()), "right")) - 1
        if 0 <= position < len(closes):
            markers[decision.action][position] = closes[position]
    series: list[dict[str, Any]] = [{"label": f"{symbol} close", "values": closes, "kind": "line"}]
    series += [
        {"label": f"{action} decisions", "values": values, "kind": "points", "colour": ACTION_COLOURS[action]}
        for action, values in markers.items()
        if any(v is not None for v in values)
    ]
    return {"x": [int(t) for t in shown], "series": series, "time": True, "y_label": "price", "height": 220}


def distribution_chart(counts: dict[str, int]) -> dict[str, Any]:
    return {
        "x": list(range(len(ACTIONS))),
        "series": [{"label": "decisions", "values": [counts[a] for a in ACTIONS], "kind": "bars"}],
        "categories": list(ACTIONS),
        "time": False,
        "y_label": "decisions",
        "height": 180,
        "empty": "No decisions yet.",
    }


# -- risk gauges -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Gauge:
    """One risk figure of an account against its limit, as the risk checks measure it."""

    label: str
    value: float
    limit: float

    @property
    def over(self) -> bool:
        return self.value > self.limit

    @property
    def high(self) -> float:
        return self.limit * 0.8

    @property
    def top(self) -> float:
        return max(self.limit * 1.5, self.value)


def gauges_of(account: dict[str, Any], limits: RiskLimits) -> list[Gauge]:
    equity = Decimal(account["equity"])
    day_start = Decimal(account["day_start_equity"])
    realized = Decimal(account["realized_pnl_today"])
    exposures = [abs(Decimal(p["market_value"])) for p in account["positions"]]
    sectors: dict[str, Decimal] = {}
    for position in account["positions"]:
        if position["sector"]:
            sector = position["sector"]
            sectors[sector] = sectors.get(sector, Decimal(0)) + abs(Decimal(position["market_value"]))

    def share(amount: Decimal) -> float:
        return float(amount / equity) if equity > 0 else 0.0

    loss = max(day_start - equity, -realized, Decimal(0))
    base = day_start if day_start > 0 else equity
    return [
        Gauge("Largest position", share(max(exposures, default=Decimal(0))), float(limits.max_position)),
        Gauge("Largest sector", share(max(sectors.values(), default=Decimal(0))), float(limits.max_sector)),
        Gauge("Leverage", share(sum(exposures, Decimal(0))), float(limits.max_leverage)),
        Gauge("Day's loss", float(loss / base) if base > 0 else 0.0, float(limits.max_daily_loss)),
    ]


async def account_gauges(services: Services, principal: Principal) -> tuple[list[dict[str, Any]], int] | None:
    """None when the API would refuse the viewer the account list (no manage_trading_accounts)."""
    if services.trading_accounts is None or not allows(principal.role, Permission.MANAGE_TRADING_ACCOUNTS):
        return None
    assert services.decisions is not None
    found, total = await run_in_threadpool(services.trading_accounts.list, principal, GAUGE_ACCOUNTS, 0)
    limits = services.decisions.limits
    return [{"account": a, "gauges": gauges_of(a, limits)} for a in found], total


# -- the page ----------------------------------------------------------------------------------------


@router.get("/trading")
async def trading_page(
    request: Request,
    viewer: TradingViewer,
    symbol: Annotated[str | None, Query(max_length=20)] = None,
    username: Annotated[str | None, Query(max_length=64)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    _query: DeclaredQueryOnly = None,
) -> Response:
    services = _services(request)
    principal = viewer.principal
    symbol = (symbol or "").strip().upper() or None
    username = (username or "").strip() or None
    _check(symbol, SYMBOL, "symbol")
    _check(username, USERNAME, "username")
    sees_all = sees_every_decision(principal)
    filters = DecisionFilter(symbol, username if sees_all else None)
    rows, total = await run_in_threadpool(
        search_decisions, services.db, principal, filters, PAGE_SIZE, offset
    )
    decisions = [DecisionRecordPublic.of(row) for row in rows]
    counts = await run_in_threadpool(action_counts, services.db, principal, filters)
    by_symbol: dict[str, list[DecisionRecordPublic]] = {}
    for decision in decisions:
        by_symbol.setdefault(decision.symbol, []).append(decision)
    charts = {
        name: await run_in_threadpool(price_chart, services, name, found)
        for name, found in list(by_symbol.items())[:CHART_SYMBOLS]
    }
    gauges = await account_gauges(services, principal)
    query = {"symbol": symbol, "username": filters.username}
    return render(
        request, "trading.html", viewer, TRADING, decisions=decisions, counts=counts, total=total,
        paging=Paging(offset, total), charts=charts, distribution=distribution_chart(counts),
        gauges=gauges, sees_all=sees_all, query=query, actions=ACTIONS,
        api_decisions=ApiCall("/api/v1/decisions", {**query, "limit": PAGE_SIZE, "offset": offset or None}),
        api_accounts=ApiCall("/api/v1/accounts"),
    )  # fmt: skip


def _check(value: str | None, pattern: str, field: str) -> None:
    """The API's own patterns; an empty filter field of the form means "any"."""
    if value is not None and re.fullmatch(pattern.strip("^$"), value) is None:
        raise InvalidInput(f"invalid {field}", [{"field": field, "error": f"must match {pattern}"}])


@router.get("/trading/decisions/{decision_id}")
async def decision_page(
    request: Request,
    viewer: TradingViewer,
    decision_id: Annotated[str, Path(min_length=1, max_length=64)],
) -> Response:
    """One decision with its point-in-time features: recomputed from the bars as of its
    ``data_as_of`` (point-in-time features never read a later bar, so they are the ones it saw)."""
    services = _services(request)
    assert services.decisions is not None
    record = await run_in_threadpool(find_decision, services.db, decision_id, viewer.principal)
    decision = DecisionRecordPublic.of(record)
    snapshot: Any = None
    problem = None
    try:
        snapshot = await run_in_threadpool(
            services.decisions.market.snapshot, decision.symbol, decision.data_as_of
        )
    except PredictionProviderError as exc:
        problem = str(exc)
    features = sorted(snapshot.values.items()) if snapshot is not None else []
    snapshot_as_of: datetime | None = snapshot.data_as_of if snapshot is not None else None
    return render(
        request, "trading_decision.html", viewer, TRADING, decision=decision, features=features,
        snapshot_as_of=snapshot_as_of, problem=problem,
        api_decision=ApiCall(f"/api/v1/decisions/{decision.decision_id}"),
    )  # fmt: skip
