"""The marketplace page over HTTP: a client sees its own wallet to the micro-unit and never another
client's, an admin sees the journal and whether the ledger balances (as the API says), an
evaluator sees the queue the API lists, and an operator gets the 403 page."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Account, LiveServer
from tests.dashboard_client import DashboardClient

PAGE = "/dashboard/marketplace"


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        yield client


def new_client(server: LiveServer) -> Account:
    """A client of its own: the shared accounts' wallets move under other tests."""
    name = f"dash-wallet-{uuid.uuid4().hex[:10]}"
    password = "wallet-password-123"
    user = server.services.accounts.create_user(name, f"{name}@example.com", password, "client", active=True)
    key = server.services.accounts.regenerate_api_key(user["id"])["api_key"]
    return Account(user["username"], password, key, user["id"])


def deposit(http: httpx.Client, admin: Account, who: Account, amount: str) -> None:
    answer = http.post(
        f"/api/v1/admin/wallets/{who.username}/deposits",
        json={"amount": amount, "currency": "USD"},
        headers={**admin.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert answer.status_code == 201, answer.text


def field(html: str, name: str) -> str:
    found = re.search(rf'data-field="{name}">([^<]*)<', html)
    assert found, f"no {name} on the page"
    return found.group(1).strip()


def test_a_client_sees_its_own_wallet_exactly_and_not_another_clients(
    live_server: LiveServer, http: httpx.Client, accounts: dict[str, Account]
) -> None:
    first, second = new_client(live_server), new_client(live_server)
    deposit(http, accounts["admin"], first, "12.345678")
    deposit(http, accounts["admin"], second, "98.765432")
    api = http.get("/api/v1/wallet", headers=first.headers).json()
    with DashboardClient(live_server.url, username=first.username, password=first.password) as dash:
        page = dash.get(PAGE)
    assert page.status_code == 200, page.text
    assert field(page.text, "available") == api["available"] == "12.345678"
    assert field(page.text, "posted") == api["posted"]
    assert field(page.text, "spent-month") == api["spent"]["month"]
    assert "98.765432" not in page.text
    assert second.username not in page.text
    assert 'id="ledger"' not in page.text  # the journal is billing oversight's
    assert 'id="queue"' not in page.text
    assert "/api/v1/wallet" in page.text  # its "view as API" request


def test_an_admin_sees_the_journal_and_whether_the_ledger_balances(
    live_server: LiveServer, http: httpx.Client, accounts: dict[str, Account]
) -> None:
    admin = accounts["admin"]
    holder = new_client(live_server)
    deposit(http, admin, holder, "3.000007")
    trial = http.get("/api/v1/admin/ledger/trial-balance", headers=admin.headers).json()
    transfers = http.get("/api/v1/admin/ledger/transfers", params={"limit": 50}, headers=admin.headers).json()
    with DashboardClient(live_server.url, username=admin.username, password=admin.password) as dash:
        page = dash.get(PAGE)
        second = dash.get(PAGE, params={"offset": 50})
        bad = dash.get(PAGE, params={"page": 2})
    assert page.status_code == 200, page.text
    balanced = "yes" if trial["balanced"] else "no"
    assert f'data-balanced="{balanced}"' in page.text
    chip = "ok" if trial["balanced"] else "bad"
    assert re.search(rf'Ledger balances:\s*<span class="chip chip-{chip}">{balanced}</span>', page.text)
    newest = transfers["items"][0]
    row = re.search(rf'<tr data-transfer="{re.escape(newest["id"])}">(.*?)</tr>', page.text, re.S)
    assert row, "the newest transfer is not on the first page"
    assert f'data-field="amount">{newest["amount"]}<' in row.group(1)
    assert "3.000007" in page.text  # this test's deposit, to the micro-unit
    assert page.text.count("<tr data-transfer=") == min(50, transfers["total"])
    assert second.status_code == 200
    assert bad.status_code == 422  # paging is by offset only


def test_an_evaluator_sees_the_queue_the_api_lists(
    live_server: LiveServer, http: httpx.Client, accounts: dict[str, Account]
) -> None:
    evaluator = accounts["evaluator"]
    queue = http.get("/api/v1/evaluator/queue", headers=evaluator.headers).json()
    with DashboardClient(live_server.url, username=evaluator.username, password=evaluator.password) as dash:
        page = dash.get(PAGE)
    assert page.status_code == 200, page.text
    assert 'id="queue"' in page.text
    assert field(page.text, "queue-total") == str(queue["total"])
    for item in queue["items"]:
        assert f'data-request="{item["request_id"]}"' in page.text
    assert 'id="wallet"' not in page.text  # an evaluator does not spend
    assert 'id="ledger"' not in page.text


def test_a_provider_sees_its_own_offers_and_earnings(
    live_server: LiveServer, accounts: dict[str, Account]
) -> None:
    provider = accounts["provider"]
    own = live_server.services.marketplace.offers.search(provider_id=provider.user_id)
    with DashboardClient(live_server.url, username=provider.username, password=provider.password) as dash:
        page = dash.get(PAGE)
    assert page.status_code == 200, page.text
    assert 'id="offers"' in page.text
    assert page.text.count("<tr data-offer=") == min(50, len(own))
    assert re.fullmatch(r"-?\d+\.\d{6}", field(page.text, "earned"))
    assert 'id="ledger"' not in page.text


def test_an_operator_gets_the_403_page(live_server: LiveServer, accounts: dict[str, Account]) -> None:
    operator = accounts["operator"]
    with DashboardClient(live_server.url, username=operator.username, password=operator.password) as dash:
        page = dash.get(PAGE)
    assert page.status_code == 403
    assert 'data-error-code="page_forbidden"' in page.text
