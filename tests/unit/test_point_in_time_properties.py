"""No look-ahead, as a property: features as of ``t`` do not change when bars after ``t`` are appended
or altered, for random bar series and random alterations."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from prediction_provider.features.feeders import MemoryFeeder
from prediction_provider.features.pipeline import FEATURE_NAMES, WARMUP_BARS, compute_features
from prediction_provider.features.point_in_time import PointInTimeFeatures

MAX_BARS = 160
SMALL_LOOKBACK = 64  # so that random series also exercise windows shorter than the history


@dataclass(frozen=True)
class Scenario:
    bars: pd.DataFrame  # the history as first known
    cut: int  # position of t
    altered: pd.DataFrame  # the same bars up to t, different ones after, and more appended


def bar_frame(
    log_returns: list[float], spreads: list[tuple[float, float, float]], start: str
) -> pd.DataFrame:
    close = 1.2 * np.exp(np.cumsum(log_returns))
    open_ = np.concatenate([[1.2], close[:-1]])
    up, down, volume = (np.array(column) for column in zip(*spreads, strict=True))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * (1 + up),
            "low": np.minimum(open_, close) * (1 - down),
            "close": close,
            "volume": volume,
        },
        index=pd.date_range(start, periods=len(close), freq="h", tz="UTC", name="time"),
    )


returns = st.floats(min_value=-0.03, max_value=0.03, allow_nan=False)
spread = st.tuples(
    st.floats(min_value=0, max_value=0.01),
    st.floats(min_value=0, max_value=0.01),
    st.floats(min_value=0, max_value=1e6),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    count = draw(st.integers(min_value=WARMUP_BARS + 2, max_value=MAX_BARS))
    bars = bar_frame(
        draw(st.lists(returns, min_size=count, max_size=count)),
        draw(st.lists(spread, min_size=count, max_size=count)),
        "2017-03-22 08:00",
    )
    cut = draw(st.integers(min_value=WARMUP_BARS, max_value=count - 1))
    altered = bars.copy()
    after = altered.index > altered.index[cut]
    if after.any():
        # Scale every later bar (prices together, so each stays a valid bar) and its volume.
        scale = np.array(
            draw(st.lists(st.floats(0.5, 2.0), min_size=int(after.sum()), max_size=int(after.sum())))
        )
        altered.loc[after, ["open", "high", "low", "close"]] *= scale[:, None]
        altered.loc[after, "volume"] *= scale[::-1]
    extra = draw(st.integers(min_value=0, max_value=30))
    if extra:
        more = bar_frame(
            draw(st.lists(returns, min_size=extra, max_size=extra)),
            draw(st.lists(spread, min_size=extra, max_size=extra)),
            str(bars.index[-1] + pd.Timedelta(hours=1)),
        )
        altered = pd.concat([altered, more])
    return Scenario(bars, cut, altered)


def values(pit: PointInTimeFeatures, scenario: Scenario) -> np.ndarray:
    snapshot = pit.snapshot("X", scenario.bars.index[scenario.cut].to_pydatetime())
    assert snapshot.data_as_of == scenario.bars.index[scenario.cut]
    return np.array([snapshot.values[name] for name in FEATURE_NAMES])


def same(left: np.ndarray, right: np.ndarray) -> None:
    """Bit for bit (a flat window gives NaN %b on both sides)."""
    np.testing.assert_array_equal(left, right, strict=True)


@settings(max_examples=60, deadline=None)
@given(scenario=scenarios(), lookback=st.sampled_from([SMALL_LOOKBACK, 512]))
def test_features_as_of_t_ignore_bars_after_t(scenario: Scenario, lookback: int) -> None:
    known = PointInTimeFeatures(MemoryFeeder({"X": scenario.bars}), lookback_bars=lookback)
    as_of_t = values(known, scenario)

    # A fresh reader that only ever saw the altered future gives the same vector, bit for bit...
    rewritten = PointInTimeFeatures(MemoryFeeder({"X": scenario.altered}), lookback_bars=lookback)
    same(values(rewritten, scenario), as_of_t)
    # ...as does one that never saw anything after t.
    truncated = PointInTimeFeatures(
        MemoryFeeder({"X": scenario.bars.iloc[: scenario.cut + 1]}), lookback_bars=lookback
    )
    same(values(truncated, scenario), as_of_t)

    # The altered bars arriving later (corrections and new bars) leave the cached vector valid,
    # and a vector computed after they arrived is the same.
    known.append_bars("X", scenario.altered.iloc[scenario.cut + 1 :])
    same(values(known, scenario), as_of_t)
    computed_again = PointInTimeFeatures(
        MemoryFeeder({"X": scenario.bars}), lookback_bars=lookback, cache_size=1
    )
    computed_again.append_bars("X", scenario.altered.iloc[scenario.cut + 1 :])
    same(values(computed_again, scenario), as_of_t)


@settings(max_examples=40, deadline=None)
@given(scenario=scenarios())
def test_snapshots_match_the_training_pipeline_on_random_series(scenario: Scenario) -> None:
    pit = PointInTimeFeatures(MemoryFeeder({"X": scenario.altered}))
    training = compute_features(scenario.altered)
    row = training.loc[scenario.bars.index[scenario.cut]]
    same(values(pit, scenario), row.to_numpy())
