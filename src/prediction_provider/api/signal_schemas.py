"""Bodies of ``/api/v1/predict/entry``, ``/api/v1/predict/exit`` and ``/api/v1/model/info``.

Field names and meanings are those existing strategy clients send and read;
unknown fields are ignored so that clients sending more keep working. The
datetime's format and the direction are checked by the service (400), so the
schema leaves them as strings; a missing or non-numeric field is a 422. ``tp`` and
``sl`` may be left out, as seed clients do: they then mean 5 and 10 points, as a
value of 0 or less does (``signals.levels``).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, FiniteFloat

from prediction_provider.signals.levels import DEFAULT_SL_POINTS, DEFAULT_TP_POINTS

DATETIME_DESCRIPTION = (
    "DD.MM.YYYY HH:MM:SS.fff (day first, as 22.03.2017 08:00:00.000) or ISO 8601; "
    "UTC unless an offset is given."
)
CONFIDENCE_DESCRIPTION = "Probability that the binary answer given is the right one."


class EntrySignalRequest(BaseModel):
    datetime: str = Field(min_length=1, max_length=64, description=DATETIME_DESCRIPTION)
    tp: FiniteFloat = Field(
        default=float(DEFAULT_TP_POINTS),
        description="Take-profit distance in points of PP_PIP_SIZE; missing or <= 0 means 5.",
    )
    sl: FiniteFloat = Field(
        default=float(DEFAULT_SL_POINTS),
        description="Stop-loss distance in points of PP_PIP_SIZE; missing or <= 0 means 10.",
    )
    spread_pips: FiniteFloat | None = Field(
        default=None, ge=0, description="Spread in points (0: not given)."
    )
    commission_per_lot: FiniteFloat | None = Field(
        default=None, ge=0, description="Commission per 100 000 units, one way (0: not given)."
    )
    slippage_pips: FiniteFloat | None = Field(
        default=None, ge=0, description="Slippage in points (0: not given)."
    )


class ExitSignalRequest(BaseModel):
    datetime: str = Field(min_length=1, max_length=64, description=DATETIME_DESCRIPTION)
    direction: str = Field(min_length=1, max_length=16, description="The open position's side: buy or sell.")
    tp_price: FiniteFloat = Field(description="The position's take-profit price (absolute, no cost buffer).")
    sl_price: FiniteFloat = Field(description="The position's stop-loss price (absolute).")


class SignalUncertainty(BaseModel):
    """MC-dropout spread of the probability that the target comes first (``mc_dropout`` only)."""

    mean: float
    std: float
    lower: float
    upper: float
    passes: int
    level: float = Field(
        description="Coverage of lower..upper: mean +- z std, z for this level, clipped to [0, 1]."
    )


class EntrySignalResponse(BaseModel):
    buy_entry_binary: int = Field(ge=0, le=1, description="1: the buy target is reached before its stop.")
    sell_entry_binary: int = Field(ge=0, le=1, description="1: the sell target is reached before its stop.")
    bars_remaining: int = Field(description="Bars to the end of the trading week (Friday 20:00 UTC).")
    buy_confidence: float = Field(description=CONFIDENCE_DESCRIPTION)
    sell_confidence: float = Field(description=CONFIDENCE_DESCRIPTION)
    buy_uncertainty: SignalUncertainty | None = None
    sell_uncertainty: SignalUncertainty | None = None


class ExitSignalResponse(BaseModel):
    exit_binary: int = Field(ge=0, le=1, description="1: keep the position open; 0: close it now.")
    exit_confidence: float = Field(description=CONFIDENCE_DESCRIPTION)
    exit_uncertainty: SignalUncertainty | None = None


class ModelInfoResponse(BaseModel):
    model_name: str
    window_size: int = Field(description="Bars of history needed before the first answer.")
    supported_types: list[str]
    entry_directions: list[str]
    exit_directions: list[str]
    prediction_scope: str
    required_columns: list[str]
    accepts_ohlc_window: bool
    look_ahead: bool = Field(description="True for the oracle, which reads bars after the request time.")


class NoiseSetting(BaseModel):
    """``POST /api/v1/predict/set_noise``: the seed project's body."""

    noise_std: FiniteFloat = Field(
        ge=0, description="Standard deviation of the Gaussian noise on each 0/1 answer (0: the ideal oracle)."
    )


class NoiseSet(BaseModel):
    noise_std: float
    status: str = Field(description='"ok": set, and the counts of /api/v1/predict/metrics reset.')
    predictor: str


class NoiseMetrics(BaseModel):
    """Confusion matrix of the noisy answers against the noiseless oracle (positive: 1)."""

    tp: int
    fp: int
    tn: int
    fn: int
    total_predictions: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    noise_std: float
    predictor: str
    since: datetime = Field(description="The last reset: the predictor's start or the last set_noise.")
