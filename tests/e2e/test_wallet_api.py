"""Wallets over HTTP on the shared live server: admins deposit and withdraw (Idempotency-Key
required, a replay moves nothing, an overdraft is 402), clients read their wallet and statement
and set their limits, invoices are read and finalized, and the ledger's admin reads (trial
balance, check, transfers) answer; the journal is never changed (405), and each role is held
to what it may do."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from prediction_provider.ledger.money import format_amount
from tests.conftest import Account, LiveServer

DEPOSITS = "/api/v1/admin/wallets/{}/deposits"
WITHDRAWALS = "/api/v1/admin/wallets/{}/withdrawals"
ADMIN_READS = (
    "/api/v1/admin/ledger/trial-balance",
    "/api/v1/admin/ledger/check",
    "/api/v1/admin/ledger/transfers",
)


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        yield client


@pytest.fixture
def admin(accounts: dict[str, Account]) -> dict[str, str]:
    return accounts["admin"].headers


@pytest.fixture
def holder(live_server: LiveServer) -> Account:
    """A client of its own: the shared accounts' wallets are used by other tests too."""
    service = live_server.services.accounts
    name = f"wallet-{uuid.uuid4().hex[:10]}"
    user = service.create_user(name, f"{name}@example.com", "wallet-password-123", "client", active=True)
    key = service.regenerate_api_key(user["id"])["api_key"]
    return Account(user["username"], "wallet-password-123", key, user["id"])


def keyed(headers: dict[str, str], key: str | None = None) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key or uuid.uuid4().hex}


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


def test_a_deposit_needs_a_key_and_its_replay_moves_nothing(
    http: httpx.Client, admin: dict[str, str], holder: Account
) -> None:
    path = DEPOSITS.format(holder.username)
    missing = http.post(path, json={"amount": "10", "currency": "USD"}, headers=admin)
    assert missing.status_code == 400, missing.text
    assert error_code(missing) == "idempotency_key_missing"
    headers = keyed(admin)
    first = http.post(path, json={"amount": "10.0025", "currency": "USD"}, headers=headers)
    assert first.status_code == 201, first.text
    assert first.json()["available"] == "10.002500"
    assert first.json()["transfer_id"] == f"dep:{holder.user_id}:{headers['Idempotency-Key']}"
    again = http.post(path, json={"amount": "10.0025", "currency": "USD"}, headers=headers)
    assert again.status_code == 201
    assert again.headers.get("Idempotency-Replayed") == "true"
    assert again.json() == first.json()
    wallet = http.get("/api/v1/wallet", headers=holder.headers).json()
    assert wallet["available"] == wallet["posted"] == "10.002500"
    listed = http.get(
        "/api/v1/admin/ledger/transfers", params={"user": holder.username, "kind": "deposit"}, headers=admin
    ).json()
    assert listed["total"] == 1
    assert listed["items"][0]["credit_account"] == f"client:{holder.user_id}"
    number = http.post(path, json={"amount": 2.5}, headers=keyed(admin))  # a JSON number, default currency
    assert number.status_code == 201
    assert number.json()["available"] == "12.502500"


@pytest.mark.parametrize(
    "body", [{"amount": "0.0000001"}, {"amount": "-1"}, {"amount": "0"}, {"amount": "NaN"},
             {"amount": "1", "currency": "XYZ"}, {"amount": "1", "extra": 1}, {}],
)  # fmt: skip
def test_bad_amounts_and_currencies_are_refused(
    http: httpx.Client, admin: dict[str, str], holder: Account, body: dict[str, object]
) -> None:
    response = http.post(DEPOSITS.format(holder.username), json=body, headers=keyed(admin))
    assert response.status_code == 422, response.text
    assert http.get("/api/v1/wallet", headers=holder.headers).json()["posted"] == "0.000000"


def test_a_deposit_to_nobody_is_404(http: httpx.Client, admin: dict[str, str]) -> None:
    response = http.post(DEPOSITS.format("nobody-here"), json={"amount": "1"}, headers=keyed(admin))
    assert response.status_code == 404


def test_a_withdrawal_never_overdraws(http: httpx.Client, admin: dict[str, str], holder: Account) -> None:
    http.post(DEPOSITS.format(holder.username), json={"amount": "3"}, headers=keyed(admin))
    missing = http.post(WITHDRAWALS.format(holder.username), json={"amount": "1"}, headers=admin)
    assert missing.status_code == 400
    over = http.post(WITHDRAWALS.format(holder.username), json={"amount": "3.000001"}, headers=keyed(admin))
    assert over.status_code == 402, over.text
    assert error_code(over) == "insufficient_funds"
    assert over.json()["error"]["details"]["available"] == "3.000000"
    done = http.post(WITHDRAWALS.format(holder.username), json={"amount": "3"}, headers=keyed(admin))
    assert done.status_code == 201, done.text
    assert done.json()["available"] == "0.000000"
    assert http.get("/api/v1/wallet", headers=holder.headers).json()["posted"] == "0.000000"


def test_the_wallet_and_its_limits(http: httpx.Client, admin: dict[str, str], holder: Account) -> None:
    http.post(DEPOSITS.format(holder.username), json={"amount": "5"}, headers=keyed(admin))
    wallet = http.get("/api/v1/wallet", params={"currency": "USD"}, headers=holder.headers)
    assert wallet.status_code == 200, wallet.text
    assert wallet.json() == {
        "currency": "USD", "available": "5.000000", "held": "0.000000", "posted": "5.000000",
        "limits": {"daily": None, "monthly": None}, "spent": {"today": "0.000000", "month": "0.000000"},
    }  # fmt: skip
    assert http.get("/api/v1/wallet", params={"currency": "EUR"}, headers=holder.headers).json()[
        "posted"
    ] == ("0.000000")
    assert http.get("/api/v1/wallet", params={"currency": "XYZ"}, headers=holder.headers).status_code == 422
    assert http.get("/api/v1/wallet", params={"currncy": "USD"}, headers=holder.headers).status_code == 422
    limits = http.put("/api/v1/wallet/limits", json={"daily": "1.5", "monthly": 20}, headers=holder.headers)
    assert limits.status_code == 200, limits.text
    assert limits.json()["limits"] == {"daily": "1.500000", "monthly": "20.000000"}
    cleared = http.put("/api/v1/wallet/limits", json={"daily": None}, headers=holder.headers)
    assert cleared.json()["limits"] == {"daily": None, "monthly": "20.000000"}
    bad = http.put("/api/v1/wallet/limits", json={"daily": "0.0000001"}, headers=holder.headers)
    assert bad.status_code == 422
    oversight = http.get(f"/api/v1/admin/wallets/{holder.username}", headers=admin)
    assert oversight.json()["limits"] == {"daily": None, "monthly": "20.000000"}


def test_a_statement_closes_at_its_opening_plus_its_entries(
    http: httpx.Client, admin: dict[str, str], holder: Account
) -> None:
    for amount in ("4", "0.25"):
        http.post(DEPOSITS.format(holder.username), json={"amount": amount}, headers=keyed(admin))
    http.post(WITHDRAWALS.format(holder.username), json={"amount": "1.1"}, headers=keyed(admin))
    response = http.get("/api/v1/wallet/statement", params={"currency": "USD"}, headers=holder.headers)
    assert response.status_code == 200, response.text
    statement = response.json()
    amounts = [Decimal(entry["amount"]) for entry in statement["entries"]]
    assert amounts == [Decimal("4"), Decimal("0.25"), Decimal("-1.1")]
    assert Decimal(statement["closing_balance"]) == Decimal(statement["opening_balance"]) + sum(amounts)
    assert statement["entries"][-1]["balance_after"] == statement["closing_balance"] == "3.150000"
    assert [entry["kind"] for entry in statement["entries"]] == ["deposit", "deposit", "withdrawal"]
    later = http.get(
        "/api/v1/wallet/statement", params={"from": statement["entries"][1]["at"]}, headers=holder.headers
    ).json()
    assert later["opening_balance"] == "4.000000"
    assert http.get(
        "/api/v1/wallet/statement", params={"from": "yesterday"}, headers=holder.headers
    ).status_code == (422)


def test_the_trial_balance_balances_and_the_ledger_check_passes(
    http: httpx.Client, admin: dict[str, str], holder: Account
) -> None:
    http.post(DEPOSITS.format(holder.username), json={"amount": "1"}, headers=keyed(admin))
    balance = http.get("/api/v1/admin/ledger/trial-balance", headers=admin)
    assert balance.status_code == 200, balance.text
    assert balance.json()["balanced"] is True
    for currency in balance.json()["currencies"]:
        assert currency["posted_difference"] == currency["pending_difference"] == "0.000000"
    check = http.get("/api/v1/admin/ledger/check", headers=admin)
    assert check.status_code == 200, check.text
    assert check.json()["ok"] is True, check.json()["violations"]
    assert set(check.json()["checks"]) == {
        "conservation", "recompute", "bounds", "clearing", "hash_chain", "seq_gapless",
    }  # fmt: skip


def test_the_journal_is_never_changed(http: httpx.Client, admin: dict[str, str], holder: Account) -> None:
    moved = http.post(DEPOSITS.format(holder.username), json={"amount": "1"}, headers=keyed(admin)).json()
    one = f"/api/v1/admin/ledger/transfers/{moved['transfer_id']}"
    assert http.get(one, headers=admin).json()["amount"] == "1.000000"
    for method in ("PUT", "DELETE", "PATCH"):
        for path in ("/api/v1/admin/ledger/transfers", one):
            response = http.request(method, path, json={"amount": "2"}, headers=admin)
            assert response.status_code == 405, (method, path, response.text)
            assert error_code(response) == "method_not_allowed"
    assert http.get(one, headers=admin).json()["amount"] == "1.000000"
    assert http.get("/api/v1/admin/ledger/transfers/nope", headers=admin).status_code == 404


def test_transfers_page_and_filter(http: httpx.Client, admin: dict[str, str], holder: Account) -> None:
    for _ in range(3):
        http.post(DEPOSITS.format(holder.username), json={"amount": "1"}, headers=keyed(admin))
    page = http.get(
        "/api/v1/admin/ledger/transfers",
        params={"user": holder.username, "limit": 2, "offset": 1},
        headers=admin,
    ).json()
    assert (page["total"], page["limit"], page["offset"], len(page["items"])) == (3, 2, 1, 2)
    assert page["items"][0]["seq"] > page["items"][1]["seq"]  # newest first
    unknown = http.get("/api/v1/admin/ledger/transfers", params={"page": 2}, headers=admin)
    assert unknown.status_code == 422
    assert (
        http.get("/api/v1/admin/ledger/transfers", params={"request_id": "none"}, headers=admin).json()[
            "total"
        ]
        == 0
    )


def test_invoices_are_read_and_finalized(http: httpx.Client, admin: dict[str, str], holder: Account) -> None:
    page = http.get("/api/v1/invoices", headers=holder.headers)
    assert page.status_code == 200, page.text
    assert page.json() == {"items": [], "total": 0, "limit": 50, "offset": 0}
    assert http.get("/api/v1/invoices/unknown", headers=holder.headers).status_code == 404
    past = http.post("/api/v1/admin/invoices/finalize", json={"period": "2001-01"}, headers=admin)
    assert past.status_code == 200, past.text
    assert past.json() == {"period": "2001-01", "created": 0, "invoices": []}
    assert (
        http.post("/api/v1/admin/invoices/finalize", json={"period": "2001-1"}, headers=admin).status_code
        == 422
    )
    current = http.post("/api/v1/admin/invoices/finalize", json={"period": "2999-01"}, headers=admin)
    assert current.status_code == 409
    assert error_code(current) == "period_open"
    assert http.put("/api/v1/invoices/unknown", json={}, headers=admin).status_code == 405
    assert http.delete("/api/v1/invoices/unknown", headers=admin).status_code == 405


def test_each_role_is_held_to_what_it_may_do(
    http: httpx.Client, accounts: dict[str, Account], holder: Account
) -> None:
    client, evaluator, operator = accounts["client"], accounts["evaluator"], accounts["operator"]
    path = DEPOSITS.format(holder.username)
    for account in (client, evaluator, operator, holder):
        denied = http.post(path, json={"amount": "1"}, headers=keyed(account.headers))
        assert denied.status_code == 403, (account.username, denied.text)
        for read in (*ADMIN_READS, f"/api/v1/admin/wallets/{holder.username}"):
            assert http.get(read, headers=account.headers).status_code == 403, (account.username, read)
        finalize = http.post(
            "/api/v1/admin/invoices/finalize", json={"period": "2001-01"}, headers=account.headers
        )
        assert finalize.status_code == 403
    assert http.get("/api/v1/wallet", headers=evaluator.headers).status_code == 403  # nothing to spend
    assert http.get("/api/v1/wallet", headers=client.headers).status_code == 200
    assert http.get("/api/v1/wallet").status_code == 401
    assert http.post(path, json={"amount": "1"}, headers={"Idempotency-Key": "x"}).status_code == 401
    assert http.get("/api/v1/wallet", headers=holder.headers).json()["posted"] == format_amount(0)
