"""The model-based signal predictors: trained by the demo on the oracle's answers, no look-ahead."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prediction_provider.config import Settings
from prediction_provider.errors import InvalidInput, ModelLoadFailed
from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import WARMUP_BARS
from prediction_provider.signals.artifacts import LIGHTGBM_FILE, card_path, read_card, signal_models_dir
from prediction_provider.signals.bars import PriceBars
from prediction_provider.signals.dataset import SignalTrainingConfig, oracle_labelled_trades
from prediction_provider.signals.features import SIGNAL_FEATURES, SignalFeatures
from prediction_provider.signals.horizon import WeeklyHorizon
from prediction_provider.signals.levels import Direction, TradeCosts
from prediction_provider.signals.lightgbm_signals import LightGBMSignals
from prediction_provider.signals.oracle import BinaryIdealOracle, NoiseStream
from prediction_provider.signals.predictor import EntryQuery, ExitQuery
from prediction_provider.signals.registry import build_signal_predictor, selected_predictor
from prediction_provider.signals.training import train_signal_models

PIP = Decimal("0.00001")


@pytest.fixture(scope="module")
def sample() -> PriceBars:
    return PriceBars.from_frame(load_sample_bars("EURUSD"))


@pytest.fixture(scope="module")
def lightgbm_signals(settings: Settings) -> LightGBMSignals:
    """The demo-trained model (the session's demo training trains the signal models too)."""
    return LightGBMSignals.from_settings(settings)


def head(bars: PriceBars, count: int) -> PriceBars:
    return PriceBars(
        bars.times[:count], bars.open[:count], bars.high[:count], bars.low[:count], bars.close[:count]
    )


def test_the_demo_trains_the_signal_models_as_text_with_a_card(settings: Settings) -> None:
    model_file = signal_models_dir(settings) / LIGHTGBM_FILE
    assert model_file.read_text().startswith("tree\n")
    card = read_card(model_file)
    assert card is not None
    assert tuple(card["features"]) == SIGNAL_FEATURES
    assert card["label"].startswith("binary_ideal_oracle")
    # Real bars, a real model: it beats the majority class and ranks trades far better than chance.
    metrics = card["metrics"]
    assert metrics["accuracy"] > max(metrics["positive_rate"], 1 - metrics["positive_rate"])
    assert metrics["auc"] > 0.75
    assert (settings.data_dir / "oracle" / "EURUSD_1h.csv").is_file()


def test_training_again_changes_nothing(settings: Settings) -> None:
    model_file = signal_models_dir(settings) / LIGHTGBM_FILE
    before = model_file.stat().st_mtime_ns, card_path(model_file).read_text()
    summary = train_signal_models(settings, SignalTrainingConfig(max_bars=900))
    assert summary.skipped
    assert (model_file.stat().st_mtime_ns, card_path(model_file).read_text()) == before


def test_training_labels_are_the_oracles_answers_for_the_default_trade(sample: PriceBars) -> None:
    bars = sample.tail(900)
    data = oracle_labelled_trades(bars, PIP, 30, SignalTrainingConfig())
    oracle = BinaryIdealOracle(bars, PIP, 30, NoiseStream(0.0, 0))
    entries, first_rows = np.unique(data.entries, return_index=True)
    assert len(entries) > 500
    for entry, row in zip(entries[::7], first_rows[::7], strict=True):
        signal = oracle.entry(EntryQuery(int(bars.times[entry]), 0.0, 0.0, TradeCosts()))
        assert (data.labels[row], data.labels[row + 1]) == (signal.buy.binary, signal.sell.binary)
        direction = SIGNAL_FEATURES.index("direction")
        assert (data.rows[row, direction], data.rows[row + 1, direction]) == (1.0, -1.0)


def test_no_training_trade_reads_a_test_bar_or_a_week_past_the_data(sample: PriceBars) -> None:
    bars = sample.tail(900)
    data = oracle_labelled_trades(bars, PIP, 30, SignalTrainingConfig())
    horizon = WeeklyHorizon.of(bars, 30)
    first_test = int(data.entries[data.is_test].min())
    spans = [horizon.span(int(entry)) for entry in np.unique(data.entries)]
    assert not any(span.runs_out for span in spans)
    assert all(span.last < first_test for span in spans if span.entry < first_test)
    assert data.is_test.sum() >= 50


def test_features_of_a_bar_do_not_change_when_later_bars_do(sample: PriceBars) -> None:
    bars = sample.tail(600)
    rng = np.random.default_rng(1)
    for entry in (WARMUP_BARS, 300, 598):
        later = slice(entry + 1, None)
        altered = PriceBars(
            bars.times.copy(),
            *(
                np.concatenate([c[: entry + 1], c[later] * rng.uniform(0.9, 1.1, len(c[later]))])
                for c in (bars.open, bars.high, bars.low, bars.close)
            ),
        )
        full, cut, changed = (SignalFeatures.of(b) for b in (bars, head(bars, entry + 1), altered))
        assert np.array_equal(full.matrix[entry], cut.matrix[entry], equal_nan=True)
        assert np.array_equal(full.matrix[entry], changed.matrix[entry], equal_nan=True)
        assert full.horizon[entry] == cut.horizon[entry] == changed.horizon[entry]


def test_an_entry_answer_reads_no_bar_after_the_request(lightgbm_signals: LightGBMSignals) -> None:
    bars = lightgbm_signals.features.bars
    entry = len(bars) - 300
    truncated = LightGBMSignals(SignalFeatures.of(head(bars, entry + 1)), PIP, lightgbm_signals.booster)
    query = EntryQuery(int(bars.times[entry]), 40.0, 20.0)
    assert truncated.entry(query) == lightgbm_signals.entry(query)
    exit_query = ExitQuery(int(bars.times[entry]), Direction.SELL, float(bars.close[entry]) - 0.002, 1.3)
    assert truncated.exit(exit_query) == lightgbm_signals.exit(exit_query)


def test_lightgbm_answers_with_binaries_confidences_and_the_calendar_horizon(
    lightgbm_signals: LightGBMSignals,
) -> None:
    bars = lightgbm_signals.features.bars
    entry = len(bars) - 100
    signal = lightgbm_signals.entry(EntryQuery(int(bars.times[entry]), 50.0, 25.0))
    for answer in (signal.buy, signal.sell):
        assert answer.binary in (0, 1)
        assert 0.5 <= answer.confidence <= 1.0
        assert answer.uncertainty is None
    assert signal.bars_remaining == lightgbm_signals.features.horizon[entry]
    info = lightgbm_signals.info().payload()
    assert (info["model_name"], info["look_ahead"], info["window_size"]) == (
        "lightgbm",
        False,
        WARMUP_BARS + 1,
    )


def test_a_close_target_and_far_stop_are_judged_likelier_than_the_reverse(
    lightgbm_signals: LightGBMSignals,
) -> None:
    """Far from proof of skill, but a model that learnt nothing of the geometry fails it."""
    bars = lightgbm_signals.features.bars
    entries = range(len(bars) - 400, len(bars) - 40, 9)
    easy = [lightgbm_signals.entry(EntryQuery(int(bars.times[i]), 5.0, 400.0)).buy for i in entries]
    hard = [lightgbm_signals.entry(EntryQuery(int(bars.times[i]), 400.0, 5.0)).buy for i in entries]
    assert sum(a.binary for a in easy) > 0.8 * len(easy)
    assert sum(a.binary for a in hard) < 0.2 * len(hard)


def test_a_request_between_bars_is_answered_from_the_last_bar_before_it(
    lightgbm_signals: LightGBMSignals,
) -> None:
    bars = lightgbm_signals.features.bars
    stamp = int(bars.times[len(bars) - 50])
    almost_next = stamp + 59 * 60 * 1_000_000_000
    assert lightgbm_signals.entry(EntryQuery(almost_next, 30.0, 30.0)) == lightgbm_signals.entry(
        EntryQuery(stamp, 30.0, 30.0)
    )


def test_a_request_before_the_features_warm_up_is_refused(lightgbm_signals: LightGBMSignals) -> None:
    bars = lightgbm_signals.features.bars
    with pytest.raises(InvalidInput, match="features need"):
        lightgbm_signals.entry(EntryQuery(int(bars.times[WARMUP_BARS - 1]), 5.0, 5.0))
    with pytest.raises(InvalidInput):
        lightgbm_signals.entry(EntryQuery(int(bars.times[0]) - 10**15, 5.0, 5.0))
    lightgbm_signals.entry(EntryQuery(int(bars.times[WARMUP_BARS]), 5.0, 5.0))


def test_an_untrained_model_answers_with_how_to_train_it(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadFailed, match="train-demo"):
        LightGBMSignals.from_settings(Settings(data_dir=tmp_path))


def test_a_model_trained_on_other_features_is_refused(settings: Settings, tmp_path: Path) -> None:
    source = signal_models_dir(settings)
    copy = Settings(data_dir=tmp_path)
    shutil.copytree(source, signal_models_dir(copy))
    card_file = card_path(signal_models_dir(copy) / LIGHTGBM_FILE)
    card = json.loads(card_file.read_text())
    card["features"] = card["features"][:-1]
    card_file.write_text(json.dumps(card))
    with pytest.raises(ModelLoadFailed, match="other features"):
        LightGBMSignals.from_settings(copy)


def test_the_oracle_answers_by_default_when_its_file_is_set_else_lightgbm(tmp_path: Path) -> None:
    assert selected_predictor(Settings()) == "lightgbm"
    assert selected_predictor(Settings(oracle_csv=tmp_path / "bars.csv")) == "binary_ideal_oracle"
    chosen = Settings(oracle_csv=tmp_path / "bars.csv", signal_predictor="mc_dropout")
    assert selected_predictor(chosen) == "mc_dropout"


def test_an_unknown_predictor_name_lists_the_installed_ones() -> None:
    with pytest.raises(ModelLoadFailed) as refused:
        build_signal_predictor(Settings(signal_predictor="crystal_ball"))
    assert {"binary_ideal_oracle", "lightgbm", "mc_dropout"} <= set(refused.value.details["installed"])


def test_model_predictors_read_the_oracle_csv_when_it_is_set(settings: Settings, tmp_path: Path) -> None:
    frame = load_sample_bars("EURUSD").iloc[-200:]
    csv = tmp_path / "bars.csv"
    pd.DataFrame(
        {
            "DATE_TIME": frame.index.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "OPEN": frame["open"],
            "HIGH": frame["high"],
            "LOW": frame["low"],
            "CLOSE": frame["close"],
        }
    ).to_csv(csv, index=False)
    predictor = LightGBMSignals.from_settings(settings.model_copy(update={"oracle_csv": csv}))
    assert len(predictor.features.bars) == 200
