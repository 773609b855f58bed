"""MarketSources: one point-in-time store per (feeder spec, interval), shared, confined, built lazily."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from prediction_provider.config import Settings
from prediction_provider.errors import FeederUnavailable, InvalidInput, UnknownSymbol
from prediction_provider.features.feeders.csv_files import CsvFeeder
from prediction_provider.features.feeders.samples import SampleFeeder
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.market_sources import MarketSources


def acme_csv(data_dir: Path, rows: int = 200) -> Path:
    path = data_dir / "datasets" / "acme.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    load_sample_bars("GOOG").iloc[:rows].rename_axis("time").reset_index().to_csv(path, index=False)
    return path


def test_the_default_source_is_the_configured_feeder_at_each_symbols_own_interval(tmp_path: Path) -> None:
    sources = MarketSources(Settings(data_dir=tmp_path))
    features = sources.for_symbol("GOOG")
    assert isinstance(features.feeder, SampleFeeder)
    assert sources.for_symbol("eurusd", None, "backtesting") is features
    assert features.bars("GOOG").index[-1] == load_sample_bars("GOOG").index[-1]


def test_a_csv_source_serves_its_symbol_at_the_asked_interval(tmp_path: Path) -> None:
    path = acme_csv(tmp_path)
    sources = MarketSources(Settings(data_dir=tmp_path))
    features = sources.for_symbol("ACME", "1d", "csv:acme.csv")
    assert isinstance(features.feeder, CsvFeeder)
    assert len(features.bars("ACME")) == 200
    assert features.snapshot("ACME").data_as_of == load_sample_bars("GOOG").index[199]
    # The same file named by its absolute path is the same store.
    assert sources.for_symbol("ACME", "1d", f"csv:{path}") is features
    assert sources.sources() == [(f"csv:{path.resolve()}", "1d")]
    with pytest.raises(UnknownSymbol):
        features.snapshot("GOOG")


def test_a_source_outside_the_data_roots_builds_nothing(tmp_path: Path) -> None:
    sources = MarketSources(Settings(data_dir=tmp_path / "data"))
    with pytest.raises(InvalidInput, match="outside the data roots"):
        sources.for_symbol("ACME", "1d", f"csv:{acme_csv(tmp_path / 'elsewhere')}")
    with pytest.raises(FeederUnavailable):
        sources.for_symbol("ACME", "1d", "nosuchfeeder")
    assert sources.sources() == []


def test_concurrent_first_uses_share_one_store(tmp_path: Path) -> None:
    acme_csv(tmp_path)
    sources = MarketSources(Settings(data_dir=tmp_path))
    seen: list[object] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        barrier.wait()
        seen.append(sources.for_symbol("ACME", "1d", "csv:acme.csv"))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(store) for store in seen}) == 1
    sources.close()
    assert sources.sources() == []
