"""``/api/v1/accounts`` over real HTTP: exact decimals, validation, and who may see which account."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import Account, LiveServer
from tests.security.support import error_of

ACCOUNTS = "/api/v1/accounts"


def unique_name() -> str:
    return f"acct-{uuid.uuid4().hex[:12]}"


def as_role(live_server: LiveServer, accounts: dict[str, Account], role: str) -> httpx.Client:
    return httpx.Client(base_url=live_server.url, headers=accounts[role].headers, timeout=60)


def test_owner_opens_an_account_and_manages_positions_exactly(client: httpx.Client) -> None:
    name = unique_name()
    created = client.post(ACCOUNTS, json={"name": name, "equity": "250000.12345678", "currency": "EUR"})
    assert created.status_code == 201, created.text
    assert created.json()["equity"] == "250000.12345678"
    assert created.json()["owner"] == "test-client"
    position = {"quantity": 0.1, "average_price": "1.0812345678", "market_price": 1.1, "sector": "fx"}
    account = client.put(f"{ACCOUNTS}/{name}/positions/EURUSD", json=position).json()
    (stored,) = account["positions"]
    assert stored == {
        "symbol": "EURUSD",
        "sector": "fx",
        "quantity": "0.1",
        "average_price": "1.0812345678",
        "market_price": "1.1",
        "market_value": "0.11",
        "unrealized_pnl": "0.00187654322",
    }
    assert client.get(f"{ACCOUNTS}/{name}").json()["positions"] == [stored]
    assert name in [a["name"] for a in client.get(ACCOUNTS, params={"limit": 500}).json()["items"]]
    assert client.delete(f"{ACCOUNTS}/{name}/positions/EURUSD").json()["positions"] == []
    error_of(client.delete(f"{ACCOUNTS}/{name}/positions/EURUSD"), 404, "account_not_found")


def test_equity_and_the_days_pnl_can_be_set(client: httpx.Client) -> None:
    name = unique_name()
    client.post(ACCOUNTS, json={"name": name, "equity": 1000}).raise_for_status()
    changed = client.put(f"{ACCOUNTS}/{name}", json={"equity": "980.5", "realized_pnl_today": "-19.5"}).json()
    assert (changed["equity"], changed["day_start_equity"], changed["realized_pnl_today"]) == (
        "980.5",
        "1000",
        "-19.5",
    )


def test_a_taken_name_answers_409(
    client: httpx.Client, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    name = unique_name()
    client.post(ACCOUNTS, json={"name": name, "equity": 1}).raise_for_status()
    with as_role(live_server, accounts, "provider") as other:
        error_of(other.post(ACCOUNTS, json={"name": name, "equity": 5}), 409, "conflict")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "equity": 0},
        {"name": "x", "equity": -5},
        {"name": "x", "equity": "1e16"},
        {"name": "x", "equity": "0.123456789"},
        {"name": "x", "equity": "NaN"},
        {"name": "x", "equity": "Infinity"},
        {"name": "x", "equity": "lots"},
        {"name": "bad name", "equity": 1},
        {"name": "x" * 65, "equity": 1},
        {"name": "x", "equity": 1, "currency": "usd"},
        {"name": "x", "equity": 1, "owner": "Not A User"},
        {"name": "x", "equity": 1, "admin": True},
        {"equity": 1},
    ],
    ids=lambda body: str(body)[:40],
)
def test_invalid_accounts_answer_422(client: httpx.Client, body: dict[str, Any]) -> None:
    error_of(client.post(ACCOUNTS, json=body), 422, "validation_error")


@pytest.mark.parametrize(
    "body",
    [
        {"quantity": 1, "average_price": 0, "market_price": 1},
        {"quantity": 1, "average_price": 1, "market_price": -1},
        {"quantity": "1e16", "average_price": 1, "market_price": 1},
        {"quantity": 1, "average_price": "0.00000000001", "market_price": 1},
        {"quantity": 1, "average_price": 1, "market_price": 1, "sector": ""},
        {"quantity": 1, "average_price": 1},
    ],
    ids=lambda body: str(body)[:40],
)
def test_invalid_positions_answer_422(client: httpx.Client, body: dict[str, Any]) -> None:
    name = unique_name()
    client.post(ACCOUNTS, json={"name": name, "equity": 1}).raise_for_status()
    error_of(client.put(f"{ACCOUNTS}/{name}/positions/GOOG", json=body), 422, "validation_error")


def test_position_symbols_are_upper_case_as_decisions_use_them(client: httpx.Client) -> None:
    name = unique_name()
    client.post(ACCOUNTS, json={"name": name, "equity": 1}).raise_for_status()
    position = {"quantity": 1, "average_price": 1, "market_price": 1}
    error_of(client.put(f"{ACCOUNTS}/{name}/positions/goog", json=position), 422, "validation_error")
    assert client.put(f"{ACCOUNTS}/{name}/positions/BRK.B", json=position).status_code == 200


def test_other_users_see_no_account_and_cannot_change_it(
    client: httpx.Client, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    name = unique_name()
    client.post(ACCOUNTS, json={"name": name, "equity": 1000}).raise_for_status()
    position = {"quantity": 1, "average_price": 1, "market_price": 1}
    with as_role(live_server, accounts, "provider") as other:
        error_of(other.get(f"{ACCOUNTS}/{name}"), 404, "account_not_found")
        error_of(other.put(f"{ACCOUNTS}/{name}", json={"equity": 1}), 404, "account_not_found")
        error_of(other.put(f"{ACCOUNTS}/{name}/positions/GOOG", json=position), 404, "account_not_found")
        error_of(other.delete(f"{ACCOUNTS}/{name}/positions/GOOG"), 404, "account_not_found")
        assert name not in [a["name"] for a in other.get(ACCOUNTS, params={"limit": 500}).json()["items"]]
    assert client.get(f"{ACCOUNTS}/{name}").json()["equity"] == "1000"


def test_admins_see_and_open_accounts_for_others(
    client: httpx.Client, live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    mine = unique_name()
    client.post(ACCOUNTS, json={"name": mine, "equity": 1000}).raise_for_status()
    for_client = unique_name()
    with as_role(live_server, accounts, "admin") as admin:
        assert admin.get(f"{ACCOUNTS}/{mine}").json()["owner"] == "test-client"
        assert mine in [a["name"] for a in admin.get(ACCOUNTS, params={"limit": 500}).json()["items"]]
        created = admin.post(ACCOUNTS, json={"name": for_client, "equity": 5, "owner": "test-client"})
        assert created.status_code == 201, created.text
    assert client.get(f"{ACCOUNTS}/{for_client}").json()["owner"] == "test-client"
    error_of(
        client.post(ACCOUNTS, json={"name": unique_name(), "equity": 5, "owner": "test-admin"}),
        403,
        "forbidden",
    )


@pytest.mark.parametrize("role", ["evaluator", "operator"])
def test_roles_that_may_not_predict_have_no_trading_accounts(
    live_server: LiveServer, accounts: dict[str, Account], role: str
) -> None:
    with as_role(live_server, accounts, role) as http:
        error_of(http.post(ACCOUNTS, json={"name": unique_name(), "equity": 1}), 403, "forbidden")
        error_of(http.get(ACCOUNTS), 403, "forbidden")


def test_anonymous_callers_are_refused(anonymous: httpx.Client) -> None:
    error_of(anonymous.get(ACCOUNTS), 401, "unauthorized")
    error_of(anonymous.post(ACCOUNTS, json={"name": unique_name(), "equity": 1}), 401, "unauthorized")
