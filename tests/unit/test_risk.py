"""Pre-trade risk checks: limits, reason codes, allowed-quantity hints, and risk-reducing trades."""

from __future__ import annotations

from decimal import Decimal

import pytest

from prediction_provider.trading.risk import (
    AccountState,
    PositionState,
    ProposedTrade,
    RiskLimits,
    RiskValidation,
    validate,
)

LIMITS = RiskLimits()
D = Decimal


def account(
    *positions: PositionState, equity: str = "100000", day_start: str | None = None, realized: str = "0"
):
    return AccountState("acct", D(equity), D(day_start or equity), D(realized), positions)


def buy(quantity: str, price: str = "100", symbol: str = "GOOG", sector: str | None = "technology"):
    return ProposedTrade(symbol, sector, D(quantity), D(price), D(1))


def sell(quantity: str, price: str = "100", symbol: str = "GOOG", sector: str | None = "technology"):
    return ProposedTrade(symbol, sector, -D(quantity), D(price), D(1))


def position(symbol: str, quantity: str, price: str = "100", sector: str | None = "technology"):
    return PositionState(symbol, sector, D(quantity), D(price))


def failed(result: RiskValidation) -> dict[str, str | None]:
    return {name: check.code for name, check in result.checks.items() if not check.passed}


def test_small_trade_on_a_flat_account_is_approved_with_every_check() -> None:
    result = validate(buy("10"), account(), LIMITS)
    assert result.approved
    assert set(result.checks) == {"position_limit", "concentration", "leverage", "daily_loss_limit"}
    assert result.checks["position_limit"].value == D("0.01")
    assert result.warnings == ()


def test_position_over_a_quarter_of_equity_is_refused_with_an_allowed_quantity() -> None:
    result = validate(buy("300"), account(position("GOOG", "50")), LIMITS)
    assert not result.approved
    assert failed(result) == {"position_limit": "position_limit_exceeded"}
    check = result.checks["position_limit"]
    assert check.value == D("0.35")
    assert check.allowed_quantity == D(200)  # 25,000 / 100 - 50 already held
    assert result.allowed_quantity == D(200)
    assert validate(buy("200"), account(position("GOOG", "50")), LIMITS).approved


def test_allowed_quantity_is_rounded_down_to_the_lot_step() -> None:
    trade = ProposedTrade("GOOG", None, D(1000), D(30), D(10))
    check = validate(trade, account(), LIMITS).checks["position_limit"]
    assert check.allowed_quantity == D(830)  # 833.33 units, in lots of 10


def test_selling_short_counts_the_absolute_position() -> None:
    result = validate(sell("400"), account(position("GOOG", "100")), LIMITS)
    assert failed(result)["position_limit"] == "position_limit_exceeded"
    # From +100, selling 350 leaves -250 (25%): the hint crosses through zero.
    assert result.checks["position_limit"].allowed_quantity == D(350)


def test_a_trade_that_reduces_a_position_over_the_limit_is_allowed() -> None:
    result = validate(sell("100"), account(position("GOOG", "400")), LIMITS)
    assert result.approved
    assert "does not add" in result.checks["position_limit"].message


def test_sector_exposure_counts_every_position_in_the_sector() -> None:
    held = account(position("MSFT", "200"), position("AAPL", "200"), position("XOM", "900", sector="energy"))
    result = validate(buy("150"), held, LIMITS)
    assert failed(result) == {"concentration": "sector_exposure_exceeded"}
    assert result.checks["concentration"].value == D("0.55")
    assert result.checks["concentration"].allowed_quantity == D(100)


def test_a_held_positions_sector_wins_over_the_configured_one() -> None:
    held = account(position("GOOG", "10", sector="energy"), position("XOM", "450", sector="energy"))
    result = validate(buy("100", sector="technology"), held, LIMITS)
    assert result.checks["concentration"].value == D("0.56")
    assert not result.checks["concentration"].passed


def test_unknown_sector_is_its_own_and_says_so() -> None:
    result = validate(buy("10", sector=None), account(position("MSFT", "200")), LIMITS)
    assert result.checks["concentration"].value == D("0.01")
    assert any("no sector known for GOOG" in warning for warning in result.warnings)


def test_leverage_counts_gross_exposure_longs_and_shorts() -> None:
    held = account(
        position("A", "-240", sector="a"),
        position("B", "240", sector="b"),
        position("C", "240", sector="c"),
        position("D", "240", sector="d"),
        position("E", "240", sector="e"),
        position("F", "240", sector="f"),
    )
    result = validate(buy("100", sector="g"), held, LIMITS)
    assert failed(result) == {"leverage": "leverage_exceeded"}
    assert result.checks["leverage"].value == D("1.54")
    assert result.checks["leverage"].allowed_quantity == D(60)


def test_daily_loss_limit_blocks_new_risk_but_not_reductions() -> None:
    losing = account(position("GOOG", "100"), equity="97000", day_start="100000")
    refused = validate(buy("10"), losing, LIMITS)
    assert failed(refused) == {"daily_loss_limit": "daily_loss_limit_reached"}
    assert refused.checks["daily_loss_limit"].value == D("0.03")
    assert refused.checks["daily_loss_limit"].allowed_quantity == 0
    assert validate(sell("10"), losing, LIMITS).approved


def test_realised_losses_count_even_when_equity_recovered() -> None:
    result = validate(buy("10"), account(realized="-2500"), LIMITS)
    assert failed(result) == {"daily_loss_limit": "daily_loss_limit_reached"}
    assert result.checks["daily_loss_limit"].value == D("0.025")


def test_hold_is_always_approved() -> None:
    over_everything = account(position("GOOG", "2000"), equity="97000", day_start="100000")
    assert validate(buy("0"), over_everything, LIMITS).approved


def test_checks_near_their_limit_are_warned_about() -> None:
    result = validate(buy("220"), account(), LIMITS)
    assert result.approved
    assert any(warning.startswith("position_limit near its limit") for warning in result.warnings)


def test_failed_checks_are_in_the_warnings_and_reasons() -> None:
    result = validate(buy("300"), account(), LIMITS, notes=("fell back",))
    assert result.warnings[0] == "fell back"
    assert any(warning.startswith("position_limit_exceeded:") for warning in result.warnings)
    (reason,) = result.reasons
    assert reason["check"] == "position_limit"
    assert reason["code"] == "position_limit_exceeded"
    assert reason["allowed_quantity"] == 250.0


@pytest.mark.parametrize(("trade", "approved"), [(buy("1"), False), (sell("0"), True)])
def test_an_account_without_equity_may_only_reduce(trade: ProposedTrade, approved: bool) -> None:
    result = validate(trade, account(equity="0"), LIMITS)
    assert result.approved is approved
    assert set(result.checks) == {"equity"}


def test_custom_limits_apply() -> None:
    strict = RiskLimits(max_position=D("0.05"))
    assert not validate(buy("60"), account(), strict).approved
    assert validate(buy("50"), account(), strict).approved
