"""Chart specs and RED tiles from the in-process metric history (``observability.series``).

Both live pages read ``MetricSeries.window`` with a step of the series' own sampling interval, so a
chart holds one point per sample in the window and its numbers are those of
``GET /api/v1/metrics/series`` for the same window and step (the API link names that step, rounded
to whole seconds, which is exact at the default 5 s interval). Nothing here averages percentiles:
every figure comes from bucket deltas, computed by the series itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request

from prediction_provider.dashboard.render import ApiCall
from prediction_provider.observability.series import GroupBy, MetricSeries, Point, SeriesWindow

WindowName = Literal["5m", "15m", "1h"]
WINDOWS: dict[str, int] = {"5m": 300, "15m": 900, "1h": 3600}
SERIES_API = "/api/v1/metrics/series"
NO_DATA = "No requests sampled in this window yet."


def metric_series(request: Request) -> MetricSeries:
    found: MetricSeries = request.app.state.metric_series
    return found


def api_step(series: MetricSeries) -> int:
    """The API takes whole seconds per point, 1 to 300."""
    return min(300, max(1, round(series.interval_s)))


def series_call(series: MetricSeries, window: str, group_by: GroupBy) -> ApiCall:
    return ApiCall(SERIES_API, {"window": window, "step": api_step(series), "group_by": group_by})


def read_window(series: MetricSeries, seconds: float, group_by: GroupBy) -> SeriesWindow:
    """Blocking (a few thousand differences over an hour): call it in the threadpool."""
    return series.window(seconds, series.interval_s, group_by=group_by)


def times_of(found: SeriesWindow) -> list[float]:
    """Epoch seconds of the window's points: every series of a window shares them."""
    return [point.t.timestamp() for point in found.series[0].points] if found.series else []


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1000.0


def spec(
    x: list[float], series: list[dict[str, Any]], y_label: str, height: int = 200, legend: bool = True
) -> dict[str, Any]:
    return {"x": x, "series": series, "time": True, "y_label": y_label, "height": height,
            "legend": legend, "empty": NO_DATA}  # fmt: skip


def line(label: str, values: list[Any]) -> dict[str, Any]:
    return {"label": label, "values": values, "kind": "line"}


def by_key_chart(found: SeriesWindow, y_label: str) -> dict[str, Any]:
    """Requests per second, one line per route or model."""
    return spec(times_of(found), [line(s.key, [p.rate for p in s.points]) for s in found.series], y_label)


def total_points(found: SeriesWindow) -> list[Point]:
    return found.series[0].points if found.series else []


def status_class_chart(found: SeriesWindow) -> dict[str, Any]:
    """4xx and 5xx answers per second, from the shares of the total series."""
    points = total_points(found)

    def per_second(share: float | None, rate: float) -> float:
        return (share or 0.0) * rate

    return spec(
        times_of(found),
        [
            line("4xx/s", [per_second(p.client_error_share, p.rate) for p in points]),
            line("5xx/s", [per_second(p.error_share, p.rate) for p in points]),
        ],
        "answers per second",
    )


def latency_chart(found: SeriesWindow) -> dict[str, Any]:
    points = total_points(found)
    return spec(
        times_of(found),
        [line(f"{q} (bucket estimate)", [ms(getattr(p, q)) for p in points]) for q in ("p50", "p95", "p99")],
        "milliseconds",
    )


@dataclass(frozen=True, slots=True)
class Tile:
    """One RED tile: the latest step's figure, and a sparkline of the window."""

    key: str
    label: str
    value: float | None
    unit: str
    sub: str
    spark: dict[str, Any]

    @property
    def text(self) -> str:
        if self.value is None:
            return "-"
        if self.unit == "%":
            return f"{self.value:.1f} %"
        if self.unit == "ms":
            return f"{self.value:,.1f} ms"
        return f"{self.value:,.2f}"


def _spark(x: list[float], label: str, values: list[Any]) -> dict[str, Any]:
    sparkline = spec(x, [line(label, values)], "", height=60, legend=False)
    return {**sparkline, "axes": False}  # dashboard.js: no axes, the tile's number is the reading


def red_tiles(found: SeriesWindow, series: MetricSeries) -> list[Tile]:
    """Rate, error share, p50, p99 (all routes) and model calls in flight, each with its sparkline."""
    points = total_points(found)
    x = times_of(found)
    last = points[-1] if points else None
    step = f"last {series.interval_s:g} s"

    def pick(name: str, scale: float = 1.0) -> tuple[float | None, list[Any]]:
        values = [None if getattr(p, name) is None else getattr(p, name) * scale for p in points]
        return (values[-1] if last is not None else None), values

    rate, rates = pick("rate")
    errors, error_values = pick("error_share", 100.0)
    p50, p50s = pick("p50", 1000.0)
    p99, p99s = pick("p99", 1000.0)
    flight_x, flights = in_flight_points(series, found.window_s, found.as_of.timestamp())
    return [
        Tile("rate", "Requests per second", rate, "/s", step, _spark(x, "req/s", rates)),
        Tile("errors", "Server errors (5xx)", errors, "%", step, _spark(x, "5xx %", error_values)),
        Tile("p50", "p50 latency", p50, "ms", f"{step}, bucket estimate", _spark(x, "p50 ms", p50s)),
        Tile("p99", "p99 latency", p99, "ms", f"{step}, bucket estimate", _spark(x, "p99 ms", p99s)),
        Tile(
            "inflight", "Model calls in flight", flights[-1] if flights else None, "", "this process, now",
            _spark(flight_x, "in flight", flights),
        ),
    ]  # fmt: skip


def in_flight_points(series: MetricSeries, seconds: float, as_of: float) -> tuple[list[float], list[float]]:
    """Model calls in flight at each sample of the window (a gauge: no differences needed)."""
    held = [s for s in series.samples() if as_of - seconds < s.t <= as_of]
    return [s.t for s in held], [sum(s.in_flight.values()) for s in held]
