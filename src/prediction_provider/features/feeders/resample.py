"""Coarser bars from finer ones: 1h into 4h, 1d or 1w, 1d into 1w, and so on.

A coarse bar is labelled by its open time and aggregates exactly the fine bars
inside ``[open, open + interval)``: first open, highest high, lowest low, last
close, summed volume. Buckets with no fine bar (weekends, holidays) vanish.
The last bucket is kept only once it is complete, i.e. its final fine slot is
present; otherwise it would describe a bar that has not finished yet, and a
later read would silently change it. An inner bucket is always final: later
bars exist, so the market moved past it (a Friday that closes early is still
a whole trading day).
"""

from __future__ import annotations

import pandas as pd

from prediction_provider.errors import InvalidInput
from prediction_provider.features.feeders.frames import empty_bars
from prediction_provider.features.feeders.intervals import Interval

_AGGREGATION = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}


def resample_bars(
    bars: pd.DataFrame, source: Interval, target: Interval, *, keep_partial: bool = False
) -> pd.DataFrame:
    """``bars`` of interval ``source`` as bars of interval ``target`` (see the module docstring)."""
    if source == target:
        return bars
    if not source.divides(target):
        raise InvalidInput(
            f"cannot build {target} bars from {source} bars",
            [{"field": "interval", "error": f"choose a multiple of {source}"}],
        )
    if bars.empty:
        return empty_bars()
    grouped = bars.resample(target.delta, origin=target.origin, label="left", closed="left")
    coarse = grouped.agg(_AGGREGATION).dropna(subset=["open"])
    if not keep_partial and len(coarse):
        last_slot = coarse.index[-1] + target.delta - source.delta
        if bars.index[-1] < last_slot:
            coarse = coarse.iloc[:-1]
    coarse.index = pd.DatetimeIndex(coarse.index).as_unit("ns").rename("time")
    return coarse.loc[:, list(_AGGREGATION)].astype("float64")


def source_span(
    target: Interval, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The fine-bar range to read for coarse bars labelled within ``[start, end]``: whole buckets, so
    the first coarse bar is not cut short and the last one is complete."""
    first = None if start is None else target.bucket_start(start)
    last = None if end is None else target.bucket_start(end) + target.delta - pd.Timedelta(1, "ns")
    return first, last
