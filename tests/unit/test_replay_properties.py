"""No look-ahead by the clock, as a property: for random bar series, bar labels and clock times t,
no bar read by ``snapshot``, ``bars`` or ``closed_bars`` closes after t, and altering or appending
bars that close after a snapshot's as-of never changes its features or its ``data_as_of``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from prediction_provider.clock import ManualClock
from prediction_provider.errors import InsufficientHistory
from prediction_provider.features.feeders import MemoryFeeder
from prediction_provider.features.pipeline import FEATURE_NAMES, WARMUP_BARS
from prediction_provider.features.point_in_time import FeatureSnapshot, PointInTimeFeatures
from tests.unit.test_point_in_time_properties import bar_frame, returns, spread

MAX_BARS = 120
HOUR = pd.Timedelta(hours=1)


def series(draw: Callable[[st.SearchStrategy[Any]], Any], count: int, start: str) -> pd.DataFrame:
    return bar_frame(
        draw(st.lists(returns, min_size=count, max_size=count)),
        draw(st.lists(spread, min_size=count, max_size=count)),
        start,
    )


def closes(bars: pd.DataFrame, label: str) -> pd.DatetimeIndex:
    return bars.index + (HOUR if label == "open" else pd.Timedelta(0))


def pit_over(bars: pd.DataFrame, label: str, clock: ManualClock) -> PointInTimeFeatures:
    return PointInTimeFeatures(MemoryFeeder({"X": bars}, "1h"), clock=clock.now, bar_label=label)  # type: ignore[arg-type]


def vector(snapshot: FeatureSnapshot) -> np.ndarray:
    return np.array([snapshot.values[name] for name in FEATURE_NAMES])


@st.composite
def moments(draw: st.DrawFn, bars: pd.DataFrame) -> datetime:
    """A time anywhere from before the first bar to after the last, to the minute."""
    span = int((bars.index[-1] - bars.index[0]) / pd.Timedelta(minutes=1)) + 240
    when: datetime = (bars.index[0] + pd.Timedelta(minutes=draw(st.integers(-60, span)))).to_pydatetime()
    return when


@settings(max_examples=60, deadline=None)
@given(data=st.data(), label=st.sampled_from(["open", "close"]))
def test_no_read_reaches_a_bar_closing_after_the_clock(data: st.DataObject, label: str) -> None:
    bars = series(data.draw, data.draw(st.integers(WARMUP_BARS + 2, MAX_BARS)), "2017-03-22 08:00")
    now = data.draw(moments(bars))
    asked = data.draw(moments(bars))
    clock = ManualClock(now)
    pit = pit_over(bars, label, clock)
    bound = min(now, asked)
    closed_by = closes(bars, label) <= bound
    closed_by_now = closes(bars, label) <= now

    read = pit.closed_bars("X", asked)
    assert (read.index <= bound).all()
    assert read.index.equals(closes(bars, label)[closed_by])  # every closed bar, none other
    assert pit.closed_bars("X").index.equals(closes(bars, label)[closed_by_now])

    for when, mask in ((asked, closed_by), (None, closed_by_now)):
        if not mask.any():
            continue
        assert pit.bars("X", when).index.equals(bars.index[mask])
        try:
            snapshot = pit.snapshot("X", when)
        except InsufficientHistory:
            assert mask.sum() <= WARMUP_BARS
            continue
        assert snapshot.data_as_of == closes(bars, label)[mask][-1]
        assert snapshot.data_as_of <= now


@settings(max_examples=60, deadline=None)
@given(data=st.data(), label=st.sampled_from(["open", "close"]))
def test_bars_closing_after_the_as_of_never_change_its_snapshot(data: st.DataObject, label: str) -> None:
    count = data.draw(st.integers(WARMUP_BARS + 3, MAX_BARS))
    bars = series(data.draw, count, "2017-03-22 08:00")
    # An as-of from the close of the WARMUP_BARS-th bar (so that a snapshot exists) to the last close
    # (so that every appended bar closes after it).
    first = closes(bars, label)[WARMUP_BARS]
    span = int((closes(bars, label)[-1] - first) / pd.Timedelta(minutes=1))
    as_of = (first + pd.Timedelta(minutes=data.draw(st.integers(0, span)))).to_pydatetime()
    late = ManualClock(bars.index[-1].to_pydatetime() + timedelta(days=30))

    altered = bars.copy()
    after = closes(bars, label) > as_of  # with open labels, includes the bar still open at as_of
    if after.any():
        scale = np.array(
            data.draw(st.lists(st.floats(0.5, 2.0), min_size=int(after.sum()), max_size=int(after.sum())))
        )
        altered.loc[after, ["open", "high", "low", "close"]] *= scale[:, None]
        altered.loc[after, "volume"] *= scale[::-1]
    extra = data.draw(st.integers(0, 20))
    if extra:
        altered = pd.concat([altered, series(data.draw, extra, str(bars.index[-1] + HOUR))])

    known = pit_over(bars, label, late)
    before = known.snapshot("X", as_of)
    rewritten = pit_over(altered, label, late).snapshot("X", as_of)
    assert rewritten.data_as_of == before.data_as_of <= as_of
    np.testing.assert_array_equal(vector(rewritten), vector(before))  # bit for bit, NaN as NaN
    # The same bars arriving later, as corrections and new bars, leave it as it was.
    known.append_bars("X", altered[after.tolist() + [True] * extra])
    again = known.snapshot("X", as_of)
    assert again.data_as_of == before.data_as_of
    np.testing.assert_array_equal(vector(again), vector(before))
    # A clock at as_of gives the latest-bar snapshot of exactly those bars.
    at_as_of = pit_over(altered, label, ManualClock(as_of)).snapshot("X")
    assert at_as_of.data_as_of == before.data_as_of
