"""``PP_FEEDER=parquet``: bars from Parquet files (read with pyarrow).

Times may be a timestamp column (with or without a zone), text, or the frame's
index as pandas writes it; the column map and time settings are the CSV ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Self

import pandas as pd

from prediction_provider.errors import FeederUnavailable
from prediction_provider.features.feeders.files import FileFeeder

if TYPE_CHECKING:
    from prediction_provider.config import Settings


class ParquetFeeder(FileFeeder):
    name = "parquet"

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        if settings.feeder_path is None:
            raise FeederUnavailable("PP_FEEDER=parquet needs PP_FEEDER_PATH (a file or a {symbol} template)")
        return cls(
            settings.feeder_path,
            interval=settings.feeder_interval,
            columns=settings.feeder_columns,
            datetime_format=settings.feeder_datetime_format,
            timezone=settings.feeder_timezone,
            symbol=settings.feeder_symbol,
            max_gap=settings.feeder_max_gap,
        )

    def read_table(self, path: Path) -> pd.DataFrame:
        return pd.read_parquet(path, engine="pyarrow")


def write_parquet(bars: pd.DataFrame, path: str | Path) -> None:
    """Store feeder bars so that ``ParquetFeeder`` reads them back unchanged (time as a UTC column)."""
    bars.rename_axis("time").reset_index().to_parquet(path, engine="pyarrow", index=False)
