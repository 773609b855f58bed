"""The in-process metric history: Prometheus's arithmetic on bucket deltas, and the bounded ring."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime

import pytest

from prediction_provider.modelops.metrics import OpsMetrics
from prediction_provider.observability.metrics import AppMetrics
from prediction_provider.observability.series import (
    Counts,
    MetricSeries,
    counts_delta,
    histogram_quantile,
    red_figures,
)

INF = math.inf
BOUNDS = (0.1, 0.5, 1.0, INF)


def test_quantiles_interpolate_inside_the_bucket_holding_the_rank() -> None:
    cumulative = (10, 30, 40, 40)  # 10 up to 0.1 s, 20 in (0.1, 0.5], 10 in (0.5, 1]
    assert histogram_quantile(0.5, BOUNDS, cumulative) == pytest.approx(0.3)  # rank 20: 0.1 + 0.4 * 10/20
    assert histogram_quantile(0.95, BOUNDS, cumulative) == pytest.approx(0.9)  # rank 38: 0.5 + 0.5 * 8/10
    assert histogram_quantile(0.99, BOUNDS, cumulative) == pytest.approx(0.98)  # rank 39.6
    assert histogram_quantile(0.1, BOUNDS, cumulative) == pytest.approx(0.04)  # the first bucket starts at 0
    assert histogram_quantile(0.25, BOUNDS, cumulative) == pytest.approx(0.1)


def test_a_rank_in_the_inf_bucket_answers_the_last_finite_bound() -> None:
    assert histogram_quantile(0.95, BOUNDS, (10, 30, 40, 50)) == 1.0  # rank 47.5, above 1 s
    assert histogram_quantile(0.5, BOUNDS, (0, 0, 0, 8)) == 1.0


def test_no_observations_or_no_inf_bucket_has_no_quantile() -> None:
    assert histogram_quantile(0.5, BOUNDS, (0, 0, 0, 0)) is None
    assert histogram_quantile(0.5, (0.1, 0.5, 1.0), (1, 2, 3)) is None
    assert histogram_quantile(0.5, (INF,), (3,)) is None
    assert histogram_quantile(0.5, (), ()) is None


def test_two_samples_give_rate_error_shares_and_quantiles() -> None:
    earlier = Counts(100, 2, 5, BOUNDS, (50, 80, 95, 100))
    later = Counts(140, 4, 5, BOUNDS, (60, 110, 135, 140))  # bucket deltas (10, 30, 40, 40)
    found = red_figures(earlier, later, 10.0)
    assert found.count == 40
    assert found.rate == pytest.approx(4.0)
    assert found.error_share == pytest.approx(0.05)
    assert found.client_error_share == 0.0
    assert (found.p50, found.p95, found.p99) == pytest.approx((0.3, 0.9, 0.98))


def test_a_count_going_down_is_a_restart_and_the_later_sample_is_the_delta() -> None:
    earlier = Counts(100, 2, 5, BOUNDS, (50, 80, 95, 100))
    later = Counts(7, 1, 0, BOUNDS, (3, 6, 7, 7))
    assert counts_delta(earlier, later) == later
    found = red_figures(earlier, later, 10.0)
    assert found.count == 7
    assert found.rate == pytest.approx(0.7)
    assert found.error_share == pytest.approx(1 / 7)
    # A bucket going down alone is a restart too (another series of the same route restarted).
    assert (
        counts_delta(Counts(5, 0, 0, BOUNDS, (5, 5, 5, 5)), Counts(6, 0, 0, BOUNDS, (1, 6, 6, 6))).requests
        == 6
    )


def test_a_route_first_seen_counts_everything_it_holds() -> None:
    later = Counts(3, 0, 1, BOUNDS, (1, 2, 3, 3))
    assert counts_delta(None, later) == later
    assert red_figures(None, later, 5.0).client_error_share == pytest.approx(1 / 3)


def test_no_requests_is_a_zero_rate_and_no_shares() -> None:
    found = red_figures(Counts(4, 0, 0, BOUNDS, (4, 4, 4, 4)), Counts(4, 0, 0, BOUNDS, (4, 4, 4, 4)), 5.0)
    assert (found.count, found.rate, found.error_share, found.p50) == (0, 0.0, None, None)


@pytest.fixture
def app_metrics() -> AppMetrics:
    return AppMetrics(lambda: None)


def answer(metrics: AppMetrics, route: str, status: int, seconds: float, times: int = 1) -> None:
    for _ in range(times):
        metrics.http.requests.labels("GET", route, str(status)).inc()
        metrics.http.duration.labels("GET", route).observe(seconds)


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def test_the_ring_keeps_the_last_slots_samples(app_metrics: AppMetrics) -> None:
    series = MetricSeries.of_app(app_metrics, lambda: None, slots=3)
    for t in range(1000, 1050, 10):
        series.sample(float(t))
    assert [sample.t for sample in series.samples()] == [1020.0, 1030.0, 1040.0]
    # A time not after the latest is not kept.
    assert series.sample(1035.0).t == 1040.0
    assert len(series.samples()) == 3


def test_samples_sum_methods_and_statuses_per_route(app_metrics: AppMetrics) -> None:
    series = MetricSeries.of_app(app_metrics, lambda: None)
    answer(app_metrics, "/a", 200, 0.003, times=3)
    answer(app_metrics, "/a", 503, 0.2)
    app_metrics.http.requests.labels("POST", "/a", "404").inc()
    counts = series.sample(1000.0).counts[("/a", "")]
    assert (counts.requests, counts.server_errors, counts.client_errors) == (5, 1, 1)
    assert counts.bounds[-1] == INF
    assert counts.buckets[-1] == 4  # the histogram counts the four observed, the counter all five


def test_window_groups_by_route_model_or_in_all_on_shared_step_times(app_metrics: AppMetrics) -> None:
    series = MetricSeries.of_app(app_metrics, lambda: None)
    series.sample(1000.0)
    answer(app_metrics, "/a", 200, 0.003, times=4)
    answer(app_metrics, "/b", 500, 0.2)
    series.sample(1005.0)
    answer(app_metrics, "/a", 200, 0.003, times=2)
    series.sample(1010.0)

    by_route = series.window(60, 5, group_by="route")
    assert by_route.as_of == at(1010.0)
    assert [line.key for line in by_route.series] == ["/a", "/b"]
    a, b = by_route.series
    assert [point.t for point in a.points] == [at(1005.0), at(1010.0)] == [point.t for point in b.points]
    assert [point.count for point in a.points] == [4, 2]
    assert [point.rate for point in a.points] == [pytest.approx(0.8), pytest.approx(0.4)]
    assert a.points[0].p50 is not None
    assert a.points[0].p50 <= 0.005
    assert [(point.count, point.error_share) for point in b.points] == [(1, 1.0), (0, None)]

    [total] = series.window(60, 5, group_by="total").series
    assert (total.key, [point.count for point in total.points]) == ("total", [5, 2])
    assert [point.error_share for point in total.points] == [pytest.approx(0.2), 0.0]

    [only_b] = series.window(60, 5, route="/b").series
    assert only_b.key == "/b"
    # Steps of 10 s: both differences end in (1000, 1010], one point over both.
    [[point]] = [line.points for line in series.window(60, 10, group_by="total").series]
    assert (point.t, point.count) == (at(1010.0), 7)
    assert point.rate == pytest.approx(0.7)
    # The HTTP metrics carry no model: grouping by model has nothing to group.
    assert series.window(60, 5, group_by="model").series == []
    # Only differences ending in the last 5 s.
    [recent] = series.window(5, 5, route="/a").series
    assert [point.count for point in recent.points] == [2]


def test_model_calls_group_by_model_and_stay_out_of_the_http_totals(app_metrics: AppMetrics) -> None:
    ops = OpsMetrics()
    series = MetricSeries.of_app(app_metrics, lambda: ops)
    series.sample(1000.0)
    answer(app_metrics, "/predict", 200, 0.003, times=4)
    for version, outcome, seconds in (("1", "ok", 0.002), ("2", "ok", 0.002), ("1", "ok", 0.004)):
        ops.inc("model_calls", ("m1", version, outcome))
        ops.observe(("m1", version), seconds, "model_call_duration_seconds")
    ops.inc("model_calls", ("m2", "1", "error"))
    ops.observe(("m2", "1"), 0.02, "model_call_duration_seconds")
    series.sample(1010.0)
    found = series.window(300, 5, group_by="model")
    assert [(line.key, line.points[0].count, line.points[0].error_share) for line in found.series] == [
        ("m1", 3, 0.0),
        ("m2", 1, 1.0),
    ]
    assert [line.key for line in series.window(300, 5, group_by="model", model="m2").series] == ["m2"]
    # The model calls are not HTTP requests: the total and the routes count the 4 requests only.
    [total] = series.window(300, 5, group_by="total").series
    assert total.points[0].count == 4
    assert [line.key for line in series.window(300, 5, group_by="route").series] == ["/predict"]
    assert set(series.snapshot(300).models) == {"m1", "m2"}


def test_snapshot_has_the_latest_figures_and_calls_in_flight(app_metrics: AppMetrics) -> None:
    ops = OpsMetrics()
    ops.set("model_inflight", ("m1", "3"), 2)
    ops.set("model_inflight", ("m1", "4"), 1)
    series = MetricSeries.of_app(app_metrics, lambda: ops)
    assert series.snapshot().as_of is None
    series.sample(1000.0)
    answer(app_metrics, "/a", 200, 0.003, times=10)
    series.sample(1010.0)
    answer(app_metrics, "/a", 200, 0.003, times=10)
    series.sample(1070.0)
    snapshot = series.snapshot(60)
    assert snapshot.as_of == at(1070.0)
    assert (snapshot.window_s, snapshot.total.count) == (60.0, 10)
    assert snapshot.routes["/a"].rate == pytest.approx(10 / 60)
    assert snapshot.models == {}
    assert snapshot.in_flight == {"m1": 3.0}


async def test_start_samples_every_interval_until_aclose(app_metrics: AppMetrics) -> None:
    series = MetricSeries.of_app(app_metrics, lambda: None, interval_s=0.01)
    series.start()
    await asyncio.sleep(0.1)
    await series.aclose()
    taken = len(series.samples())
    assert taken >= 2
    await asyncio.sleep(0.05)
    assert len(series.samples()) == taken
