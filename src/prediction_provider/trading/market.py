"""What a decision needs from market data, as an interface.

``features.point_in_time.PointInTimeFeatures`` provides it over any feeder;
tests and other callers may hand in anything else with the same two methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

import pandas as pd


class Snapshot(Protocol):
    """A point-in-time feature vector: what was known at ``as_of``."""

    @property
    def data_as_of(self) -> datetime:
        """Open time of the last bar the vector read."""

    @property
    def values(self) -> Mapping[str, float]: ...


class FeatureSource(Protocol):
    def snapshot(self, symbol: str, as_of: datetime | None) -> Snapshot:
        """The features of the last bar at or before ``as_of`` (the latest bar for None)."""

    def bars(self, symbol: str, as_of: datetime, lookback: int) -> pd.DataFrame:
        """The last ``lookback`` bars at or before ``as_of``, oldest first."""
