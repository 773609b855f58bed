"""The binary ideal oracle, rule by rule, on small hand-made bar files.

Prices are 5-decimal EURUSD-like quotes and the point is 0.00001 (the
default ``PP_PIP_SIZE``). With ``tp`` 5, ``sl`` 10 and no costs given, the
cost buffer is 5 points, so a buy from P has its target at P + 0.00010 and
its stop at P - 0.00010.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from prediction_provider.config import Settings
from prediction_provider.errors import ModelLoadFailed
from prediction_provider.signals.levels import Direction, TradeCosts
from prediction_provider.signals.oracle import BinaryIdealOracle
from prediction_provider.signals.predictor import EntryQuery, EntrySignal, ExitQuery
from prediction_provider.signals.request_fields import parse_request_time

MONDAY = datetime(2024, 1, 8)
FRIDAY = datetime(2024, 1, 12)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Bar:
    """A bar whose open is its close unless given; high and low default to the body's ends."""

    at: datetime
    close: float
    high: float | None = None
    low: float | None = None

    def row(self) -> str:
        high = self.high if self.high is not None else self.close
        low = self.low if self.low is not None else self.close
        return f"{self.at:%d.%m.%Y %H:%M:%S}.000,{self.close!r},{high!r},{low!r},{self.close!r}"


def hourly(start: datetime, closes: list[float]) -> list[Bar]:
    return [Bar(start + index * HOUR, close) for index, close in enumerate(closes)]


def oracle_over(tmp_path: Path, bars: list[Bar], **settings: object) -> BinaryIdealOracle:
    path = tmp_path / "bars.csv"
    path.write_text("DATE_TIME,OPEN,HIGH,LOW,CLOSE\n" + "\n".join(bar.row() for bar in bars) + "\n")
    return BinaryIdealOracle.from_settings(Settings(oracle_csv=path, **settings))


def at(moment: datetime) -> int:
    return parse_request_time(moment.isoformat())


def entry(
    oracle: BinaryIdealOracle, moment: datetime, tp: float = 5, sl: float = 10, **costs: float
) -> EntrySignal:
    return oracle.entry(EntryQuery(at(moment), tp, sl, TradeCosts(**costs)))


def answers(oracle: BinaryIdealOracle, moment: datetime, **kwargs: float) -> tuple[int, int]:
    signal = entry(oracle, moment, **kwargs)
    return signal.buy.binary, signal.sell.binary


def test_the_request_time_snaps_to_the_nearest_bar_whose_close_is_the_price(tmp_path: Path) -> None:
    # From 10:00 (P 1.10000) the next close reaches the buy target; from 11:00 (P 1.10100) the
    # next bar's low hits the buy stop. Which one answers shows which bar the time snapped to.
    bars = hourly(MONDAY.replace(hour=10), [1.10000, 1.10100, 1.10000])
    oracle = oracle_over(tmp_path, bars)
    assert answers(oracle, MONDAY.replace(hour=10, minute=29))[0] == 1
    assert answers(oracle, MONDAY.replace(hour=10, minute=31))[0] == 0
    assert answers(oracle, MONDAY.replace(hour=9))[0] == 1  # before the data: the first bar
    assert answers(oracle, MONDAY.replace(hour=10, minute=30))[0] == 1  # a tie goes to the earlier bar


def test_the_horizon_ends_at_the_first_friday_bar_at_or_after_20_00(tmp_path: Path) -> None:
    start = FRIDAY.replace(hour=17)
    flat = [1.10000] * 6  # 17:00 .. 22:00
    oracle = oracle_over(tmp_path, hourly(start, flat))
    assert entry(oracle, start).bars_remaining == 3  # 18:00, 19:00, 20:00
    assert entry(oracle, start.replace(hour=20)).bars_remaining == 1  # 21:00 is late Friday too

    reached_at_20 = hourly(start, [1.10000, 1.10000, 1.10000, 1.10010, 1.10000, 1.10000])
    reached_at_21 = hourly(start, [1.10000, 1.10000, 1.10000, 1.10000, 1.10010, 1.10000])
    assert answers(oracle_over(tmp_path, reached_at_20), start)[0] == 1
    assert answers(oracle_over(tmp_path, reached_at_21), start)[0] == 0


def test_a_monday_bar_after_a_gap_ends_a_week_without_a_late_friday_bar(tmp_path: Path) -> None:
    friday = hourly(FRIDAY.replace(hour=17), [1.10000, 1.10000, 1.10000])  # the week stops at 19:00
    monday = hourly(datetime(2024, 1, 15), [1.10000, 1.10010])
    oracle = oracle_over(tmp_path, friday + monday)
    signal = entry(oracle, FRIDAY.replace(hour=17))
    assert signal.bars_remaining == 3  # 18:00, 19:00 and Monday 00:00
    assert signal.buy.binary == 0  # the target comes at Monday 01:00, after the horizon


def test_monday_bars_after_sunday_evening_bars_do_not_end_the_horizon(tmp_path: Path) -> None:
    friday = hourly(FRIDAY.replace(hour=18), [1.10000, 1.10000])
    sunday_to_friday = hourly(datetime(2024, 1, 14, 22), [1.10000] * (2 + 4 * 24 + 21))
    oracle = oracle_over(tmp_path, friday + sunday_to_friday)
    # From Friday 18:00: 19:00, Sunday 22:00 and 23:00, Monday..Thursday, Friday 00:00..20:00.
    assert entry(oracle, FRIDAY.replace(hour=18)).bars_remaining == 1 + 2 + 4 * 24 + 21


def test_when_the_data_runs_out_bars_remaining_is_at_least_the_prediction_horizon(tmp_path: Path) -> None:
    bars = hourly(MONDAY, [1.10000, 1.10000, 1.10000, 1.10000, 1.10010])
    assert entry(oracle_over(tmp_path, bars), MONDAY).bars_remaining == 30
    assert entry(oracle_over(tmp_path, bars, prediction_horizon=2), MONDAY).bars_remaining == 4
    # The bars that exist are still scanned: the last one reaches the target.
    assert answers(oracle_over(tmp_path, bars), MONDAY)[0] == 1
    last = entry(oracle_over(tmp_path, bars), MONDAY + 4 * HOUR)
    assert (last.bars_remaining, last.buy.binary, last.sell.binary) == (30, 0, 0)


def test_within_one_bar_the_stop_is_checked_before_the_target(tmp_path: Path) -> None:
    up_with_dip = Bar(MONDAY + HOUR, close=1.10020, high=1.10020, low=1.09990)  # buy stop and target
    down_with_spike = Bar(MONDAY + HOUR, close=1.09980, high=1.10010, low=1.09980)  # sell stop and target
    assert answers(oracle_over(tmp_path, [Bar(MONDAY, 1.10000), up_with_dip]), MONDAY)[0] == 0
    assert answers(oracle_over(tmp_path, [Bar(MONDAY, 1.10000), down_with_spike]), MONDAY)[1] == 0
    just_above_stop = Bar(MONDAY + HOUR, close=1.10020, high=1.10020, low=1.09991)
    assert answers(oracle_over(tmp_path, [Bar(MONDAY, 1.10000), just_above_stop]), MONDAY)[0] == 1


def test_bars_are_scanned_in_order_so_an_earlier_target_wins_over_a_later_stop(tmp_path: Path) -> None:
    target_then_stop = hourly(MONDAY, [1.10000, 1.10010, 1.09000])
    stop_then_target = hourly(MONDAY, [1.10000, 1.09990, 1.11000])
    assert answers(oracle_over(tmp_path, target_then_stop), MONDAY)[0] == 1
    assert answers(oracle_over(tmp_path, stop_then_target), MONDAY)[0] == 0


def test_the_target_counts_on_the_close_not_on_a_wick(tmp_path: Path) -> None:
    wick = Bar(MONDAY + HOUR, close=1.10005, high=1.10050, low=1.10000)
    assert answers(oracle_over(tmp_path, [Bar(MONDAY, 1.10000), wick]), MONDAY)[0] == 0


def test_neither_level_within_the_horizon_answers_0_for_both_directions(tmp_path: Path) -> None:
    quiet = hourly(FRIDAY.replace(hour=17), [1.10000, 1.10005, 1.09995, 1.10000])
    assert answers(oracle_over(tmp_path, quiet), FRIDAY.replace(hour=17)) == (0, 0)


def test_buy_and_sell_are_judged_independently(tmp_path: Path) -> None:
    # With a stop of 1000 points, the rise reaches the buy target and the fall the sell target.
    path = hourly(MONDAY, [1.10000, 1.10100, 1.09900])
    assert answers(oracle_over(tmp_path, path), MONDAY, tp=50, sl=1000) == (1, 1)


def test_the_buy_target_lies_exactly_tp_plus_the_default_cost_above_the_close(tmp_path: Path) -> None:
    # tp 20 + 5 cost points: the target is 1.07244 exactly; 1.07243 falls one point short.
    exactly = hourly(MONDAY, [1.07219, 1.07244])
    short = hourly(MONDAY, [1.07219, 1.07243])
    assert answers(oracle_over(tmp_path, exactly), MONDAY, tp=20)[0] == 1
    assert answers(oracle_over(tmp_path, short), MONDAY, tp=20)[0] == 0


def test_the_sell_target_boundary_is_exact_where_float_arithmetic_is_not(tmp_path: Path) -> None:
    # 1.23426 - 15 x 0.00001 is 1.2341099999999998 in float64; the bar at 1.23411 must still count.
    assert 1.23426 - 15 * 0.00001 < 1.23411
    path = hourly(MONDAY, [1.23426, 1.23411])
    assert answers(oracle_over(tmp_path, path), MONDAY, tp=10)[1] == 1


def test_given_costs_replace_the_default_buffer(tmp_path: Path) -> None:
    # spread 2 + slippage 1 + 2 x 7 / (100000 x 0.00001) = 17 points: the buy target is P + 37 points.
    costs = {"spread_pips": 2.0, "slippage_pips": 1.0, "commission_per_lot": 7.0}
    at_37 = hourly(MONDAY, [1.10000, 1.10037])
    at_36 = hourly(MONDAY, [1.10000, 1.10036])
    assert answers(oracle_over(tmp_path, at_37), MONDAY, tp=20, **costs)[0] == 1
    assert answers(oracle_over(tmp_path, at_36), MONDAY, tp=20, **costs)[0] == 0
    # Costs of zero are "not given" (what clients send by default): the 5-point buffer applies.
    at_25 = hourly(MONDAY, [1.10000, 1.10025])
    zero = {"spread_pips": 0.0, "slippage_pips": 0.0, "commission_per_lot": 0.0}
    assert answers(oracle_over(tmp_path, at_25), MONDAY, tp=20, **zero)[0] == 1


def test_the_commission_is_counted_twice_in_points_of_the_pip_size(tmp_path: Path) -> None:
    # pip 0.0001: 2 x 10 / (100000 x 0.0001) = 2 points; tp 3 + 2 = 5 points = 0.0005.
    path = hourly(MONDAY, [1.1000, 1.1005])
    oracle = oracle_over(tmp_path, path, pip_size=Decimal("0.0001"))
    assert answers(oracle, MONDAY, tp=3, commission_per_lot=10.0)[0] == 1
    assert answers(oracle, MONDAY, tp=3, commission_per_lot=12.0)[0] == 0


@pytest.mark.parametrize(("tp", "sl"), [(0, 0), (-3, -1)])
def test_tp_and_sl_at_or_below_zero_mean_5_and_10_points(tmp_path: Path, tp: float, sl: float) -> None:
    # Defaults: target P + (5 + 5) points, stop P - 10 points.
    reaches = hourly(MONDAY, [1.10000, 1.10010])
    short = hourly(MONDAY, [1.10000, 1.10009])
    stop_just_missed = [Bar(MONDAY, 1.10000), Bar(MONDAY + HOUR, 1.10010, low=1.09991)]
    stopped = [Bar(MONDAY, 1.10000), Bar(MONDAY + HOUR, 1.10010, low=1.09990)]
    assert answers(oracle_over(tmp_path, reaches), MONDAY, tp=tp, sl=sl)[0] == 1
    assert answers(oracle_over(tmp_path, short), MONDAY, tp=tp, sl=sl)[0] == 0
    assert answers(oracle_over(tmp_path, stop_just_missed), MONDAY, tp=tp, sl=sl)[0] == 1
    assert answers(oracle_over(tmp_path, stopped), MONDAY, tp=tp, sl=sl)[0] == 0


def exit_answer(oracle: BinaryIdealOracle, direction: Direction, tp_price: float, sl_price: float) -> int:
    return oracle.exit(ExitQuery(at(MONDAY), direction, tp_price, sl_price)).answer.binary


def test_exit_keeps_the_position_open_when_its_target_comes_first(tmp_path: Path) -> None:
    oracle = oracle_over(tmp_path, hourly(MONDAY, [1.10000, 1.10050, 1.09000]))
    assert exit_answer(oracle, Direction.BUY, tp_price=1.10050, sl_price=1.09900) == 1
    # Absolute prices, no buffer: one point further and the target is not reached before the stop.
    assert exit_answer(oracle, Direction.BUY, tp_price=1.10051, sl_price=1.09900) == 0
    assert exit_answer(oracle, Direction.SELL, tp_price=1.09000, sl_price=1.10100) == 1
    assert exit_answer(oracle, Direction.SELL, tp_price=1.09000, sl_price=1.10050) == 0


def test_exit_closes_when_neither_level_is_reached_this_week(tmp_path: Path) -> None:
    oracle = oracle_over(tmp_path, hourly(MONDAY, [1.10000, 1.10010, 1.09990]))
    assert exit_answer(oracle, Direction.BUY, tp_price=1.11000, sl_price=1.09000) == 0
    assert exit_answer(oracle, Direction.SELL, tp_price=1.09000, sl_price=1.11000) == 0


def test_noise_flips_answers_from_one_seeded_stream(tmp_path: Path) -> None:
    bars = hourly(MONDAY, [1.10000, 1.10010])  # truth: buy 1, sell 0
    times = [MONDAY] * 500
    noisy = oracle_over(tmp_path, bars, oracle_noise_probability=0.3, oracle_noise_seed=11)
    again = oracle_over(tmp_path, bars, oracle_noise_probability=0.3, oracle_noise_seed=11)
    other = oracle_over(tmp_path, bars, oracle_noise_probability=0.3, oracle_noise_seed=12)
    first = [answers(noisy, moment) for moment in times]
    assert first == [answers(again, moment) for moment in times]
    assert first != [answers(other, moment) for moment in times]
    # One draw per answer, buy then sell, from default_rng(seed): flipped where the draw < p.
    flips = np.random.default_rng(11).random(2 * len(times)) < 0.3
    expected = [(1 - flips[2 * k], int(flips[2 * k + 1])) for k in range(len(times))]
    assert first == expected
    assert entry(noisy, MONDAY).buy.confidence == pytest.approx(0.7)


def test_noise_probability_one_flips_every_answer_and_zero_none(tmp_path: Path) -> None:
    bars = hourly(MONDAY, [1.10000, 1.10010])
    always = oracle_over(tmp_path, bars, oracle_noise_probability=1.0)
    never = oracle_over(tmp_path, bars)
    assert {answers(always, MONDAY) for _ in range(50)} == {(0, 1)}
    assert {answers(never, MONDAY) for _ in range(50)} == {(1, 0)}
    assert entry(never, MONDAY).buy.confidence == 1.0


def test_the_oracle_says_it_looks_ahead(tmp_path: Path) -> None:
    info = oracle_over(tmp_path, hourly(MONDAY, [1.1, 1.1])).info().payload()
    assert info["model_name"] == "binary_ideal_oracle"
    assert info["look_ahead"] is True
    assert info["supported_types"] == ["entry", "exit"]


def test_an_oracle_without_its_file_cannot_be_built(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="PP_ORACLE_CSV"):
        BinaryIdealOracle.from_settings(Settings())
    with pytest.raises(ModelLoadFailed, match="not a file"):
        BinaryIdealOracle.from_settings(Settings(oracle_csv=tmp_path / "missing.csv"))
    broken = tmp_path / "broken.csv"
    broken.write_text("DATE_TIME,OPEN,HIGH,CLOSE\n08.01.2024 00:00:00.000,1,1,1\n")
    with pytest.raises(ModelLoadFailed, match="LOW"):
        BinaryIdealOracle.from_settings(Settings(oracle_csv=broken))
