"""``GET /api/v1/metrics/series``: RED figures over time, from the in-process metric history."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

QUANTILE_NOTE = (
    "p50, p95 and p99 are bucket estimates, as Prometheus histogram_quantile computes them: linear "
    "inside the latency bucket that holds the quantile (buckets from 0.1 ms to 10 s), so each is at "
    "most that bucket's upper bound; a quantile above the last finite bucket reads as 10 s."
)


class MetricPoint(BaseModel):
    t: datetime = Field(description="When the last sample of this step was taken (UTC).")
    count: int = Field(description="Requests answered in the step.")
    rate: float = Field(description="Requests per second over the step.")
    error_share: float | None = Field(description="Share answered with a 5xx status; null without requests.")
    client_error_share: float | None = Field(description="Share answered with a 4xx status.")
    p50: float | None = Field(
        description="Median latency in seconds (bucket estimate); null without requests."
    )
    p95: float | None = Field(description="95th percentile latency in seconds (bucket estimate).")
    p99: float | None = Field(description="99th percentile latency in seconds (bucket estimate).")


class MetricSeriesLine(BaseModel):
    key: str = Field(description="The route template, the model, or 'total'.")
    points: list[MetricPoint]


class MetricSeriesAnswer(BaseModel):
    as_of: datetime = Field(description="The latest sample (UTC).")
    window_s: int
    step_s: int
    group_by: Literal["route", "model", "total"]
    series: list[MetricSeriesLine]
    note: str = QUANTILE_NOTE
