"""Bar intervals (``1m``, ``15m``, ``1h``, ``4h``, ``1d``, ``1w``) and the buckets they cut time into."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from prediction_provider.errors import InvalidInput

_PATTERN = re.compile(r"^\s*(\d+)\s*(min|m|h|d|wk|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIT_ALIASES = {"min": "m", "m": "m", "h": "h", "d": "d", "w": "w", "wk": "w"}
# Buckets start at the Unix epoch (a Thursday, midnight UTC), so hours and days fall on UTC
# midnight; weeks start on Mondays, as exchanges and chart vendors count them.
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_FIRST_MONDAY = pd.Timestamp("1970-01-05", tz="UTC")


@dataclass(frozen=True, slots=True)
class Interval:
    """A fixed bar length. ``text`` is canonical (``60m`` and ``1h`` are the same interval)."""

    text: str
    seconds: int

    @classmethod
    def parse(cls, text: str | Interval) -> Interval:
        if isinstance(text, Interval):
            return text
        match = _PATTERN.match(text) if isinstance(text, str) else None
        # An upper-case M is a month to most vendors; months have no fixed length, so refuse them.
        if match is None or match.group(2) == "M" or int(match.group(1)) == 0:
            raise InvalidInput(
                f"unknown bar interval {text!r}",
                [{"field": "interval", "error": "use a count and a unit: m, h, d or w (e.g. 15m, 1h, 1d)"}],
            )
        seconds = int(match.group(1)) * _UNIT_SECONDS[_UNIT_ALIASES[match.group(2).lower()]]
        return cls(_canonical(seconds), seconds)

    @property
    def delta(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.seconds)

    @property
    def origin(self) -> pd.Timestamp:
        return _FIRST_MONDAY if self.seconds % _UNIT_SECONDS["w"] == 0 else _EPOCH

    def divides(self, coarser: Interval) -> bool:
        """Whether bars of this interval tile bars of ``coarser`` exactly (1h tiles 4h, 1d and 1w)."""
        return coarser.seconds % self.seconds == 0 and coarser.seconds >= self.seconds

    def bucket_start(self, time: pd.Timestamp) -> pd.Timestamp:
        """The open time of the bar of this interval that contains ``time``."""
        step = self.delta
        return self.origin + ((time - self.origin) // step) * step

    def __str__(self) -> str:
        return self.text


def _canonical(seconds: int) -> str:
    for unit in ("w", "d", "h"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds // 60}m"
