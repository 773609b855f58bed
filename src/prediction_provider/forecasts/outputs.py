"""What an answer looks like per marketplace target (direction, return, quantiles, entry signal),
and how a symbol forecast gives it.

An evaluator's result is checked against the same schema as the platform's own answer, and its
SHA-256 is taken over the canonical JSON, so a resent result can be told from a different one.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from typing import Any

import orjson

from prediction_provider.errors import InvalidInput
from prediction_provider.forecasts.records import Forecast


def canonical_sha256(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{field} must be a finite number", {"field": field})
    return float(value)


def validate_output(target: str, output: Any) -> dict[str, Any]:
    """The output, checked: ``direction`` {p_up ∈ [0,1]}, ``return`` {expected_return},
    ``quantiles`` {q: {level: value}} with levels in (0,1) and values non-decreasing,
    ``entry_signal`` {buy_entry_binary, sell_entry_binary ∈ {0,1}, confidences optional}."""
    if not isinstance(output, dict):
        raise InvalidInput("output must be an object", {"field": "output"})
    if target == "direction":
        p_up = _number(output.get("p_up"), "output.p_up")
        if not 0.0 <= p_up <= 1.0:
            raise InvalidInput("output.p_up is a probability in [0, 1]", {"field": "output.p_up"})
        return {"p_up": p_up}
    if target == "return":
        return {"expected_return": _number(output.get("expected_return"), "output.expected_return")}
    if target == "quantiles":
        q = output.get("q")
        if not isinstance(q, dict) or not q:
            raise InvalidInput("output.q maps quantile levels to values", {"field": "output.q"})
        levels = []
        for level, value in q.items():
            try:
                number = float(level)
            except ValueError:
                raise InvalidInput(
                    f"quantile level {level!r} is not a number", {"field": "output.q"}
                ) from None
            if not 0.0 < number < 1.0:
                raise InvalidInput(f"quantile level {level} is outside (0, 1)", {"field": "output.q"})
            levels.append((number, level, _number(value, f"output.q.{level}")))
        levels.sort()
        values = [value for _, _, value in levels]
        if any(later < earlier for earlier, later in itertools.pairwise(values)):
            raise InvalidInput("quantile values must not decrease with the level", {"field": "output.q"})
        return {"q": {level: value for _, level, value in levels}}
    if target == "entry_signal":
        body: dict[str, Any] = {}
        for side in ("buy_entry_binary", "sell_entry_binary"):
            value = output.get(side)
            if value not in (0, 1) or isinstance(value, bool):
                raise InvalidInput(f"output.{side} is 0 or 1", {"field": f"output.{side}"})
            body[side] = int(value)
        for side in ("buy_confidence", "sell_confidence"):
            if output.get(side) is not None:
                confidence = _number(output[side], f"output.{side}")
                if not 0.0 <= confidence <= 1.0:
                    raise InvalidInput(f"output.{side} is in [0, 1]", {"field": f"output.{side}"})
                body[side] = confidence
        return body
    raise InvalidInput(f"unknown target {target!r}", {"field": "target"})


def from_forecast(target: str, forecast: Forecast, horizon: int) -> dict[str, Any]:
    """The platform's answer for one horizon of a symbol forecast."""
    step = next((s for s in forecast.steps if s.step == horizon), None)
    if step is None:
        raise InvalidInput(f"the model does not forecast horizon {horizon}", {"field": "horizon"})
    if target == "direction":
        return validate_output(target, {"p_up": step.probabilities.get("up", 0.0)})
    if target == "return":
        return validate_output(target, {"expected_return": step.expected_return})
    if target == "quantiles":
        low, high = step.interval_80
        return validate_output(target, {"q": {"0.1": low, "0.5": step.expected_return, "0.9": high}})
    raise InvalidInput(
        f"the platform does not compute {target!r} answers: evaluators do", {"field": "target"}
    )
