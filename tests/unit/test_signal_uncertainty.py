"""MC-dropout uncertainty: stochastic passes, their spread, and reproducibility from a seed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from prediction_provider.config import Settings
from prediction_provider.errors import ModelLoadFailed
from prediction_provider.signals.artifacts import MC_DROPOUT_FILE, read_card, signal_models_dir
from prediction_provider.signals.levels import Direction
from prediction_provider.signals.predictor import EntryQuery, ExitQuery

torch = pytest.importorskip("torch")

from prediction_provider.signals.mc_dropout import (  # noqa: E402 - only once torch is known to be there
    DROPOUT_RATE,
    HIDDEN_LAYERS,
    MCDropoutSignals,
    Standardizer,
    build_layers,
    summarize,
)


@pytest.fixture(scope="module")
def mc_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"signal_predictor": "mc_dropout", "mc_dropout_passes": 40})


@pytest.fixture(scope="module")
def mc_dropout(mc_settings: Settings) -> MCDropoutSignals:
    return MCDropoutSignals.from_settings(mc_settings)


def rebuilt(predictor: MCDropoutSignals, seed: int, passes: int = 40) -> MCDropoutSignals:
    return MCDropoutSignals(
        predictor.features,
        predictor.pip_size,
        predictor.layers,
        predictor.standardizer,
        hidden=HIDDEN_LAYERS,
        rate=DROPOUT_RATE,
        passes=passes,
        seed=seed,
    )


def query_at(predictor: MCDropoutSignals, back: int) -> EntryQuery:
    return EntryQuery(int(predictor.features.bars.times[len(predictor.features.bars) - back]), 60.0, 30.0)


def test_the_demo_trains_the_network_as_a_state_dict(mc_settings: Settings) -> None:
    card = read_card(signal_models_dir(mc_settings) / MC_DROPOUT_FILE)
    assert card is not None
    assert card["hidden"] == list(HIDDEN_LAYERS)
    assert card["metrics"]["auc"] > 0.75


def test_repeated_passes_differ_and_their_spread_is_reported(mc_dropout: MCDropoutSignals) -> None:
    signal = mc_dropout.entry(query_at(mc_dropout, 120))
    for answer in (signal.buy, signal.sell):
        spread = answer.uncertainty
        assert spread is not None
        assert spread.passes == 40
        assert spread.std > 0
        assert 0.0 <= spread.lower <= spread.mean <= spread.upper <= 1.0
        assert spread.level == 0.9
        assert answer.binary == int(spread.mean >= 0.5)
        assert answer.confidence == pytest.approx(max(spread.mean, 1 - spread.mean))


def test_each_pass_of_one_request_goes_through_another_sub_network(mc_dropout: MCDropoutSignals) -> None:
    samples = mc_dropout.probabilities(
        mc_dropout.features.rows(
            np.array([len(mc_dropout.features.bars) - 60]),
            np.array([1.0]),
            np.array([0.0005]),
            np.array([0.0005]),
        )
    )
    assert samples.shape == (1, 40)
    assert len(np.unique(samples)) > 30


def test_answers_are_reproducible_from_the_seed(mc_settings: Settings, mc_dropout: MCDropoutSignals) -> None:
    card = read_card(signal_models_dir(mc_settings) / MC_DROPOUT_FILE)
    assert card is not None
    query = query_at(mc_dropout, 200)
    same = rebuilt(mc_dropout, seed=card["seed"])
    other = rebuilt(mc_dropout, seed=card["seed"] + 1)
    assert mc_dropout.entry(query) == mc_dropout.entry(query)
    assert same.entry(query) == mc_dropout.entry(query)
    assert other.entry(query).buy.uncertainty != mc_dropout.entry(query).buy.uncertainty


def test_exits_carry_their_uncertainty_too(mc_dropout: MCDropoutSignals) -> None:
    bars = mc_dropout.features.bars
    entry = len(bars) - 80
    close = float(bars.close[entry])
    answer = mc_dropout.exit(
        ExitQuery(int(bars.times[entry]), Direction.BUY, close + 0.001, close - 0.001)
    ).answer
    assert answer.uncertainty is not None
    assert answer.uncertainty.std > 0


def test_the_interval_is_mean_plus_minus_z_std_clipped_to_probabilities() -> None:
    spread = summarize(np.array([0.2, 0.4, 0.6, 0.8]))
    half = 1.6448536269514722 * np.std([0.2, 0.4, 0.6, 0.8])
    assert (spread.mean, spread.lower, spread.upper) == pytest.approx((0.5, 0.5 - half, 0.5 + half))
    clipped = summarize(np.array([0.0, 0.0, 0.0, 0.9]))
    assert clipped.lower == 0.0
    assert clipped.lower <= clipped.mean <= clipped.upper


def test_a_weights_file_holding_objects_is_refused_not_unpickled(
    mc_settings: Settings, tmp_path: Path
) -> None:
    copy = mc_settings.model_copy(update={"data_dir": tmp_path})
    shutil.copytree(signal_models_dir(mc_settings), signal_models_dir(copy))
    weights = signal_models_dir(copy) / MC_DROPOUT_FILE
    evidence = tmp_path / "unpickled"
    torch.save({"payload": PickleBomb(evidence)}, weights)
    with pytest.raises(ModelLoadFailed, match="cannot be read"):
        MCDropoutSignals.from_settings(copy)
    assert not evidence.exists()


class PickleBomb:
    """Unpickling this would create ``evidence``: proof that something ran."""

    def __init__(self, evidence: Path) -> None:
        self.evidence = evidence

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.evidence,))


def test_the_standardizer_maps_missing_inputs_to_the_training_mean() -> None:
    rows = np.array([[1.0, 10.0], [3.0, 10.0]])
    standardizer = Standardizer.fit(rows)
    assert standardizer.transform(np.array([[2.0, np.nan]])).tolist() == [[0.0, 0.0]]
    layers = build_layers(2, (4,))
    assert [tuple(p.shape) for p in layers.parameters()] == [(4, 2), (4,), (1, 4), (1,)]


def test_the_written_out_adam_steps_as_torch_optim_adam_does() -> None:
    from prediction_provider.signals.mc_training import Adam

    torch.manual_seed(3)
    ours, reference = build_layers(3, (5,)), build_layers(3, (5,))
    reference.load_state_dict(ours.state_dict())
    inputs, targets = torch.randn(16, 3), torch.rand(16)
    optimizer = Adam(ours.parameters(), 0.01)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=0.01)
    for _ in range(5):
        for layers, step in ((ours, optimizer.step), (reference, reference_optimizer.step)):
            loss = torch.nn.functional.mse_loss(layers[1](torch.relu(layers[0](inputs))).squeeze(-1), targets)
            loss.backward()
            step()
        reference_optimizer.zero_grad()
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)
        assert mine.grad is None
