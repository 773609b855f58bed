"""Bar times from files: ISO 8601, the day-first ``22.03.2017 08:00:00.000`` of MetaTrader and
Dukascopy exports, any strftime format, or Unix epochs; naive times are read in a configured zone.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from prediction_provider.errors import FeederUnavailable, InvalidMarketData

ISO_8601 = "ISO8601"
EPOCH_FORMATS = {"unix": "s", "unix_ms": "ms", "unix_us": "us", "unix_ns": "ns"}
DAY_FIRST_FORMATS = ("%d.%m.%Y %H:%M:%S.%f", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y")
_DAY_FIRST = re.compile(r"^\s*\d{1,2}\.\d{1,2}\.\d{4}")
# A UTC offset after a clock time: 08:00Z, 08:00:00+01:00, 08:00:00.000-0500 (not the day of 2017-03-22).
_OFFSET = r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)\s*$"


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA zone (``UTC``, ``Europe/Berlin``); settings are refused early."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise FeederUnavailable(f"unknown timezone {name!r}", {"timezone": name}) from exc
    return name


def parse_times(
    values: pd.Series, datetime_format: str | None, timezone: str, source: str
) -> pd.DatetimeIndex:
    """``values`` as UTC times.

    ``datetime_format`` is a strftime pattern, ``ISO8601``, one of the ``unix*``
    epoch units, or ``None`` to tell ISO 8601 from the day-first dotted form by
    the first value. Times with an offset keep it; naive ones are taken as wall
    time in ``timezone`` (an ambiguous autumn hour is resolved by the order of
    the rows, a skipped spring hour is an error).
    """
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = pd.DatetimeIndex(values)
    elif datetime_format in EPOCH_FORMATS:
        parsed = _parse_epochs(values, EPOCH_FORMATS[datetime_format], source)
    else:
        parsed = _parse_text(values.astype("string"), datetime_format, source)
    if parsed.tz is None:
        parsed = _localise(parsed, timezone, source)
    return parsed.tz_convert("UTC").as_unit("ns")


def _parse_epochs(values: pd.Series, unit: str, source: str) -> pd.DatetimeIndex:
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any():
        raise _unparseable(values[numbers.isna()], f"Unix time in {unit}", source)
    return pd.DatetimeIndex(pd.to_datetime(numbers.to_numpy(dtype=np.int64), unit=unit, utc=True))


def _parse_text(values: pd.Series, datetime_format: str | None, source: str) -> pd.DatetimeIndex:
    if values.isna().any():
        raise _unparseable(values[values.isna()], datetime_format or "a time", source)
    formats: tuple[str, ...]
    if datetime_format is not None:
        formats = (datetime_format,)
    elif len(values) and _DAY_FIRST.match(str(values.iloc[0])):
        formats = DAY_FIRST_FORMATS
    else:
        formats = (ISO_8601,)
    with_offset = values.str.contains(_OFFSET, regex=True)
    if with_offset.any() and not with_offset.all():
        raise InvalidMarketData(
            f"{source} mixes times with and without a UTC offset",
            {"source": source, "examples": [str(v) for v in values[~with_offset].head(5)]},
        )
    # Offsets may differ from row to row (summer time); reading them as UTC keeps each instant.
    utc = bool(len(values)) and bool(with_offset.all())
    for candidate in formats:
        try:
            return pd.DatetimeIndex(pd.to_datetime(values, format=candidate, utc=utc))
        except (ValueError, TypeError):
            continue
    expected = " or ".join(formats)
    failed = pd.to_datetime(values, format=formats[0], utc=utc, errors="coerce").isna()
    raise _unparseable(values[failed] if failed.any() else values, expected, source)


def _localise(times: pd.DatetimeIndex, timezone: str, source: str) -> pd.DatetimeIndex:
    if timezone.upper() == "UTC":
        return times.tz_localize("UTC")
    try:
        return times.tz_localize(timezone, ambiguous="infer", nonexistent="raise")
    except (ValueError, TypeError) as exc:
        raise InvalidMarketData(
            f"times in {source} cannot be read as {timezone} wall time: {exc}",
            {"source": source, "timezone": timezone},
        ) from exc


def _unparseable(bad: pd.Series, expected: str, source: str) -> InvalidMarketData:
    examples = [str(value) for value in bad.head(5)]
    return InvalidMarketData(
        f"{len(bad)} time(s) in {source} are not {expected}, e.g. {examples[0] if examples else '?'}",
        {"source": source, "expected": expected, "examples": examples},
    )
