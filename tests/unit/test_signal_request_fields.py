"""The entry/exit request fields the schema leaves to the service: datetime formats and direction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from prediction_provider.errors import InvalidDatetime, UnknownDirection
from prediction_provider.signals.levels import Direction
from prediction_provider.signals.request_fields import parse_direction, parse_request_time


def ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("22.03.2017 08:00:00.000", datetime(2017, 3, 22, 8, tzinfo=UTC)),
        ("22.03.2017 08:00:00", datetime(2017, 3, 22, 8, tzinfo=UTC)),
        ("  22.03.2017 08:00:00.250 ", datetime(2017, 3, 22, 8, 0, 0, 250_000, tzinfo=UTC)),
        ("03.12.2018 23:59:59.999999", datetime(2018, 12, 3, 23, 59, 59, 999_999, tzinfo=UTC)),
        ("2017-03-22T08:00:00", datetime(2017, 3, 22, 8, tzinfo=UTC)),
        ("2017-03-22T08:00:00Z", datetime(2017, 3, 22, 8, tzinfo=UTC)),
        ("2017-03-22 10:00:00+02:00", datetime(2017, 3, 22, 8, tzinfo=UTC)),
        ("2017-03-22", datetime(2017, 3, 22, tzinfo=UTC)),
    ],
)
def test_day_first_and_iso_8601_times_are_read_as_utc(text: str, expected: datetime) -> None:
    assert parse_request_time(text) == ns(expected)


def test_the_day_comes_first_in_dotted_dates() -> None:
    assert parse_request_time("03.12.2018 08:00:00.000") == ns(datetime(2018, 12, 3, 8, tzinfo=UTC))


@pytest.mark.parametrize(
    "text",
    [
        "2017/03/22 08:00:00",
        "03-22-2017 08:00",
        "22.03.2017",
        "22.3.2017 08:00:00.000",
        "31.02.2018 08:00:00.000",
        "22.03.2017 24:00:00.000",
        "22.03.2017 08:00:00.0000000",
        "yesterday",
        "1490169600",
    ],
)
def test_any_other_format_is_refused_naming_the_expected_one(text: str) -> None:
    with pytest.raises(InvalidDatetime) as refused:
        parse_request_time(text)
    assert "DD.MM.YYYY HH:MM:SS.fff" in refused.value.message
    assert "ISO 8601" in refused.value.message
    assert refused.value.details["field"] == "datetime"


@pytest.mark.parametrize(("text", "direction"), [("buy", Direction.BUY), (" SELL ", Direction.SELL)])
def test_directions_are_buy_or_sell_in_any_case(text: str, direction: Direction) -> None:
    assert parse_direction(text) is direction


@pytest.mark.parametrize("text", ["long", "short", "b", "", "buy sell"])
def test_other_directions_are_refused_with_the_accepted_ones(text: str) -> None:
    with pytest.raises(UnknownDirection) as refused:
        parse_direction(text)
    assert refused.value.details == {"field": "direction", "accepted": ["buy", "sell"]}


def test_times_beyond_the_nanosecond_range_are_clamped_to_it() -> None:
    assert parse_request_time("0001-01-01T00:00:00") == -(2**63)
    assert parse_request_time("31.12.9999 23:59:59.999") == 2**63 - 1
