"""``PP_FEEDER=csv``: bars from CSV files, with their own column names, order and time format.

For example, a Dukascopy export (``Gmt time,Open,High,Low,Close,Volume`` with
``22.03.2017 08:00:00.000``) needs no settings beyond the path; a headerless
MetaTrader file needs ``PP_FEEDER_CSV_NAMES=date,time,open,high,low,close,volume``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

import pandas as pd

from prediction_provider.errors import FeederUnavailable
from prediction_provider.features.feeders.files import ColumnMap, FileFeeder

if TYPE_CHECKING:
    from prediction_provider.config import Settings


class CsvFeeder(FileFeeder):
    """``names`` gives the columns of a file without a header row, in order; ``columns`` then maps
    bar fields to those names as for a file with a header."""

    name = "csv"

    def __init__(
        self,
        path: str | Path,
        *,
        interval: str = "1h",
        columns: ColumnMap | Mapping[str, str] | None = None,
        names: Sequence[str] | None = None,
        delimiter: str = ",",
        datetime_format: str | None = None,
        timezone: str = "UTC",
        symbol: str | None = None,
        max_gap: pd.Timedelta | str | None = None,
    ) -> None:
        super().__init__(
            path,
            interval=interval,
            columns=columns,
            datetime_format=datetime_format,
            timezone=timezone,
            symbol=symbol,
            max_gap=max_gap,
        )
        self.names = list(names) if names else None
        self.delimiter = delimiter

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        if settings.feeder_path is None:
            raise FeederUnavailable("PP_FEEDER=csv needs PP_FEEDER_PATH (a file or a {symbol} template)")
        return cls(
            settings.feeder_path,
            interval=settings.feeder_interval,
            columns=settings.feeder_columns,
            names=settings.feeder_csv_names or None,
            delimiter=settings.feeder_csv_delimiter,
            datetime_format=settings.feeder_datetime_format,
            timezone=settings.feeder_timezone,
            symbol=settings.feeder_symbol,
            max_gap=settings.feeder_max_gap,
        )

    def read_table(self, path: Path) -> pd.DataFrame:
        # Everything as text: times are parsed by format, prices by pd.to_numeric, so a stray
        # value is reported with its row instead of turning a column into objects.
        return pd.read_csv(
            path,
            sep=self.delimiter,
            header=None if self.names else 0,
            names=self.names,
            dtype=str,
            skipinitialspace=True,
            keep_default_na=False,
            na_values=[""],
        )
