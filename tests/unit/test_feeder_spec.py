"""Feeder specs: parsing, the canonical form, confinement of paths to the data roots, and building
the feeder a spec names through the plugin registry."""

from __future__ import annotations

from pathlib import Path

import pytest

from prediction_provider.config import Settings
from prediction_provider.errors import FeederUnavailable, InvalidInput, UnknownSymbol
from prediction_provider.features.feeders.csv_files import CsvFeeder
from prediction_provider.features.feeders.parquet_files import ParquetFeeder, write_parquet
from prediction_provider.features.feeders.samples import SampleFeeder
from prediction_provider.features.feeders.spec import (
    FeederSpec,
    feeder_for_spec,
    parse_feeder_spec,
    resolve_feeder_spec,
)
from prediction_provider.features.market_data import load_sample_bars


def make_settings(data_dir: Path, **changes: object) -> Settings:
    return Settings(data_dir=data_dir, **changes)  # type: ignore[arg-type]


def write_bars(path: Path, rows: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    bars = load_sample_bars("GOOG").iloc[:rows]
    bars.rename_axis("time").reset_index().to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("text", "plugin", "path"),
    [
        ("backtesting", "backtesting", None),
        ("  database ", "database", None),
        ("yfinance", "yfinance", None),
        ("csv:/data/acme.csv", "csv", "/data/acme.csv"),
        ("parquet:bars/{symbol}.parquet", "parquet", "bars/{symbol}.parquet"),
    ],
)
def test_specs_parse_into_plugin_and_path_and_print_back(text: str, plugin: str, path: str | None) -> None:
    spec = parse_feeder_spec(text)
    assert spec == FeederSpec(plugin, path)
    assert str(spec) == text.strip()
    assert parse_feeder_spec(str(spec)) == spec


def test_an_unknown_plugin_names_the_installed_ones() -> None:
    with pytest.raises(FeederUnavailable, match="no feeder plugin named 'bloomberg'") as raised:
        parse_feeder_spec("bloomberg:/x")
    assert {"backtesting", "csv", "parquet", "database", "yfinance"} <= set(raised.value.details["available"])


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "a feeder spec is"),
        (":/data/x.csv", "a feeder spec is"),
        ("csv", "csv needs a path"),
        ("csv:", "names no path"),
        ("backtesting:/data/x.csv", "takes no path"),
        ("csv:/data/{ticker}.csv", "placeholders"),
    ],
)
def test_malformed_specs_say_what_a_spec_looks_like(text: str, error: str) -> None:
    with pytest.raises(InvalidInput, match=error) as raised:
        parse_feeder_spec(text)
    assert raised.value.details[0]["field"] == "source"


def test_a_relative_path_lands_under_the_datasets_folder(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    resolved = resolve_feeder_spec("csv:acme.csv", settings)
    assert resolved == FeederSpec("csv", str((tmp_path / "datasets" / "acme.csv").resolve()))


@pytest.mark.parametrize(
    "path",
    ["../../outside.csv", "/etc/passwd", "sub/../../../escape/{symbol}.csv", "{symbol}/../../../x.csv"],
)
def test_a_path_outside_the_data_roots_is_refused_before_anything_opens_it(tmp_path: Path, path: str) -> None:
    settings = make_settings(tmp_path / "data")
    with pytest.raises(InvalidInput, match="outside the data roots"):
        feeder_for_spec(f"csv:{path}", settings)


def test_a_symlink_out_of_the_roots_is_refused(tmp_path: Path) -> None:
    outside = write_bars(tmp_path / "elsewhere" / "acme.csv")
    datasets = tmp_path / "data" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "acme.csv").symlink_to(outside)
    with pytest.raises(InvalidInput, match="outside the data roots"):
        feeder_for_spec("csv:acme.csv", make_settings(tmp_path / "data"))


def test_paths_under_the_data_dir_and_extra_roots_are_allowed(tmp_path: Path) -> None:
    extra = tmp_path / "market"
    settings = make_settings(tmp_path / "data", data_roots=[extra])
    in_root = write_bars(extra / "acme.csv")
    in_data_dir = write_bars(tmp_path / "data" / "bars" / "zeta.csv")
    assert feeder_for_spec(f"csv:{in_root}", settings, interval="1d").bars("ACME", "1d").shape[0] == 60
    assert feeder_for_spec(f"csv:{in_data_dir}", settings, interval="1d").bars("ZETA", "1d").shape[0] == 60


def test_files_hold_bars_at_the_asked_interval_unless_pp_feeder_interval_is_set(tmp_path: Path) -> None:
    write_bars(tmp_path / "datasets" / "acme.csv")
    daily = feeder_for_spec("csv:acme.csv", make_settings(tmp_path), interval="1d")
    assert daily.native_interval("ACME") == "1d"
    assert len(daily.bars("ACME", "1d")) == 60
    # Read as hourly bars, the last day is an unfinished bucket and is left out of the daily bars.
    hourly = feeder_for_spec("csv:acme.csv", make_settings(tmp_path, feeder_interval="1h"), interval="1d")
    assert hourly.native_interval("ACME") == "1h"
    assert len(hourly.bars("ACME", "1d")) == 59


def test_a_csv_spec_builds_a_csv_feeder_holding_the_symbol_of_its_file_name(tmp_path: Path) -> None:
    # PP_FEEDER_SYMBOL names the symbol of the configured file, not of a file a spec names.
    settings = make_settings(tmp_path, feeder_symbol="EURUSD", feeder_interval="1d")
    write_bars(tmp_path / "datasets" / "acme.csv")
    feeder = feeder_for_spec("csv:acme.csv", settings)
    assert isinstance(feeder, CsvFeeder)
    assert feeder.symbols() == ("ACME",)
    assert len(feeder.bars("acme", "1d")) == 60
    with pytest.raises(UnknownSymbol):
        feeder.bars("EURUSD", "1d")


def test_a_parquet_template_spec_serves_every_symbol_it_finds(tmp_path: Path) -> None:
    folder = tmp_path / "datasets" / "daily"
    folder.mkdir(parents=True)
    bars = load_sample_bars("GOOG").iloc[:40]
    write_parquet(bars, folder / "ACME.parquet")
    write_parquet(bars, folder / "ZETA.parquet")
    feeder = feeder_for_spec("parquet:daily/{symbol}.parquet", make_settings(tmp_path, feeder_interval="1d"))
    assert isinstance(feeder, ParquetFeeder)
    assert feeder.symbols() == ("ACME", "ZETA")
    assert len(feeder.bars("ZETA", "1d")) == 40


def test_the_configured_feeder_path_is_trusted_as_the_operator_wrote_it(tmp_path: Path) -> None:
    outside = write_bars(tmp_path / "operator" / "bars.csv")
    settings = make_settings(
        tmp_path / "data", feeder="csv", feeder_path=str(outside), feeder_symbol="ACME", feeder_interval="1d"
    )
    feeder = feeder_for_spec(f"csv:{outside}", settings)
    assert feeder.symbols() == ("ACME",)


def test_pathless_specs_build_their_plugin(tmp_path: Path) -> None:
    feeder = feeder_for_spec("backtesting", make_settings(tmp_path))
    assert isinstance(feeder, SampleFeeder)
    assert set(feeder.symbols()) >= {"EURUSD", "GOOG"}
