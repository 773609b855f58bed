"""``/api/v1/webhooks`` over HTTP: endpoints (secret shown once), the default secret, the delivery
log and re-arming, each user seeing their own and admins everyone's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from prediction_provider.config import Settings
from prediction_provider.webhooks.outbox import WebhookDispatcher, announce
from prediction_provider.webhooks.signing import verify
from tests.conftest import Account, LiveServer
from tests.webhook_receiver import WebhookReceiver

WEBHOOKS = "/api/v1/webhooks"
DATA = {"request_id": "e2e-request", "status": "completed", "money": {"price": "0.250000"}}


@pytest.fixture(scope="module")
def server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    """Private targets allowed (the receiver is on 127.0.0.1); the background pass is slowed right
    down so the tests run each pass themselves."""
    changes = {"webhook_allow_private": True, "webhook_poll_s": 3600.0}
    with LiveServer(settings.model_copy(update=changes)) as live:
        yield live


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture
def as_user(server: LiveServer, accounts: dict[str, Account]) -> Iterator[dict[str, httpx.Client]]:
    clients = {
        role: httpx.Client(base_url=server.url, headers=accounts[role].headers, timeout=30)
        for role in ("client", "provider", "admin")
    }
    clients["anonymous"] = httpx.Client(base_url=server.url, timeout=30)
    yield clients
    for http in clients.values():
        http.close()


@pytest.fixture(autouse=True)
def no_endpoints_left(as_user: dict[str, httpx.Client]) -> Iterator[None]:
    """Each test starts with no endpoints, so an announcement reaches only what the test added."""

    def clear() -> None:
        for role in ("client", "provider", "admin"):
            for item in as_user[role].get(WEBHOOKS, params={"limit": 500}).json()["items"]:
                as_user[role].delete(f"{WEBHOOKS}/{item['id']}")

    clear()
    yield
    clear()


def dispatcher_of(server: LiveServer) -> WebhookDispatcher:
    dispatcher: WebhookDispatcher = server.services.webhooks
    return dispatcher


def announce_for(server: LiveServer, user_id: int, event: str, webhook_url: str | None = None) -> list[str]:
    services = server.services
    with services.db.session() as session:
        return announce(session, clock=dispatcher_of(server).clock, user_id=user_id, event_type=event,
                        data=DATA, webhook_url=webhook_url)  # fmt: skip


def delivery(http: httpx.Client, message_id: str) -> dict[str, Any] | None:
    page = http.get(f"{WEBHOOKS}/deliveries", params={"limit": 500}).json()
    return next((item for item in page["items"] if item["id"] == message_id), None)


def test_creating_an_endpoint_shows_its_secret_once(
    as_user: dict[str, httpx.Client], receiver: WebhookReceiver
) -> None:
    client = as_user["client"]
    created = client.post(WEBHOOKS, json={"url": receiver.url, "events": ["prediction_request.completed"]})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_")
    assert body["url"] == receiver.url
    assert body["events"] == ["prediction_request.completed"]
    assert body["active"] is True
    assert body["id"].startswith("ep_")
    listed = client.get(WEBHOOKS).json()
    [mine] = [item for item in listed["items"] if item["id"] == body["id"]]
    assert "secret" not in mine
    assert body["secret"] not in json.dumps(listed)
    assert {"total", "limit", "offset"} <= set(listed)


def test_events_default_to_everything(as_user: dict[str, httpx.Client], receiver: WebhookReceiver) -> None:
    created = as_user["client"].post(WEBHOOKS, json={"url": receiver.url})
    assert created.status_code == 201
    assert created.json()["events"] == ["*"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://example.com/x"}, "invalid_webhook_url"),
        ({"url": "https://user:pw@example.com/x"}, "invalid_webhook_url"),
        ({"url": "https://example.com/x", "events": ["prediction_request.exploded"]}, "invalid_input"),
        ({"url": "https://example.com/x", "events": []}, "invalid_input"),
        ({"url": "https://example.com/x", "secret": "mine"}, "validation_error"),
        ({"events": ["*"]}, "validation_error"),
    ],
)
def test_invalid_endpoints_are_refused_with_422(
    as_user: dict[str, httpx.Client], body: dict, code: str
) -> None:
    answer = as_user["client"].post(WEBHOOKS, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == code


def test_private_targets_are_refused_on_a_default_server(
    live_server: LiveServer, client_headers: dict
) -> None:
    with httpx.Client(base_url=live_server.url, headers=client_headers, timeout=30) as http:
        for url in ("http://127.0.0.1:9000/hook", "http://169.254.169.254/latest", "http://localhost/x"):
            answer = http.post(WEBHOOKS, json={"url": url})
            assert answer.status_code == 422, url
            assert answer.json()["error"]["code"] == "invalid_webhook_url"


def test_signed_in_users_only(as_user: dict[str, httpx.Client]) -> None:
    anonymous = as_user["anonymous"]
    for method, path in (
        ("POST", WEBHOOKS), ("GET", WEBHOOKS), ("GET", f"{WEBHOOKS}/secret"),
        ("GET", f"{WEBHOOKS}/deliveries"), ("DELETE", f"{WEBHOOKS}/ep_x"),
        ("POST", f"{WEBHOOKS}/deliveries/msg_x/retry"),
    ):  # fmt: skip
        answer = anonymous.request(
            method, path, json={"url": "https://example.com"} if method == "POST" else None
        )
        assert answer.status_code == 401, (method, path)


def test_deleting_removes_only_your_own_endpoint(
    as_user: dict[str, httpx.Client], receiver: WebhookReceiver
) -> None:
    client, provider = as_user["client"], as_user["provider"]
    endpoint_id = client.post(WEBHOOKS, json={"url": receiver.url}).json()["id"]
    assert provider.delete(f"{WEBHOOKS}/{endpoint_id}").status_code == 404
    assert endpoint_id not in [item["id"] for item in provider.get(WEBHOOKS).json()["items"]]
    deleted = client.delete(f"{WEBHOOKS}/{endpoint_id}")
    assert deleted.status_code == 200
    assert deleted.json()["active"] is False
    assert endpoint_id not in [item["id"] for item in client.get(WEBHOOKS).json()["items"]]
    again = client.delete(f"{WEBHOOKS}/{endpoint_id}")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "webhook_not_found"


def test_the_default_secret_is_per_user_and_signs_per_request_urls(
    server: LiveServer,
    as_user: dict[str, httpx.Client],
    accounts: dict[str, Account],
    receiver: WebhookReceiver,
) -> None:
    secret = as_user["client"].get(f"{WEBHOOKS}/secret").json()["secret"]
    assert secret.startswith("whsec_")
    assert as_user["client"].get(f"{WEBHOOKS}/secret").json()["secret"] == secret
    assert as_user["provider"].get(f"{WEBHOOKS}/secret").json()["secret"] != secret
    [message_id] = announce_for(server, accounts["client"].user_id, "prediction_request.queued", receiver.url)
    dispatcher_of(server).deliver_due()
    [got] = receiver.where(lambda item: item.webhook_id == message_id)
    assert verify(secret, got.headers, got.body, now=dispatcher_of(server).clock.now()) == message_id


def test_the_delivery_log_shows_your_messages_and_admins_see_all(
    server: LiveServer,
    as_user: dict[str, httpx.Client],
    accounts: dict[str, Account],
    receiver: WebhookReceiver,
) -> None:
    client, provider, admin = as_user["client"], as_user["provider"], as_user["admin"]
    client.post(WEBHOOKS, json={"url": receiver.url, "events": ["wallet.low_balance"]})
    provider.post(WEBHOOKS, json={"url": receiver.url, "events": ["wallet.low_balance"]})
    [client_message] = announce_for(server, accounts["client"].user_id, "wallet.low_balance")
    [provider_message] = announce_for(server, accounts["provider"].user_id, "wallet.low_balance")
    dispatcher_of(server).deliver_due()
    mine = delivery(client, client_message)
    assert mine is not None
    assert mine["status"] == "delivered"
    assert mine["event_type"] == "wallet.low_balance"
    assert mine["payload"]["id"] == client_message
    assert mine["payload"]["data"] == DATA
    [attempt] = mine["deliveries"]
    assert attempt["attempt"] == 1
    assert attempt["status_code"] == 200
    assert attempt["error"] is None
    assert delivery(client, provider_message) is None
    assert delivery(provider, client_message) is None
    assert delivery(admin, client_message) is not None
    assert delivery(admin, provider_message) is not None
    page = client.get(f"{WEBHOOKS}/deliveries", params={"limit": 1, "offset": 0}).json()
    assert len(page["items"]) == 1
    assert page["limit"] == 1
    assert page["total"] >= 1
    bad = client.get(f"{WEBHOOKS}/deliveries", params={"page": 2})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "validation_error"


def test_a_failed_message_is_re_armed_by_its_owner_or_an_admin(
    server: LiveServer,
    as_user: dict[str, httpx.Client],
    accounts: dict[str, Account],
    receiver: WebhookReceiver,
) -> None:
    client, provider, admin = as_user["client"], as_user["provider"], as_user["admin"]
    receiver.status = 500
    [message_id] = announce_for(server, accounts["client"].user_id, "prediction_request.failed", receiver.url)
    dispatcher_of(server).deliver_due()
    failed = delivery(client, message_id)
    assert failed is not None
    assert failed["status"] == "pending"
    assert failed["last_status"] == 500
    assert failed["next_attempt_at"] is not None

    assert provider.post(f"{WEBHOOKS}/deliveries/{message_id}/retry").status_code == 404
    receiver.status = 200
    rearmed = client.post(f"{WEBHOOKS}/deliveries/{message_id}/retry")
    assert rearmed.status_code == 200, rearmed.text
    assert rearmed.json()["status"] == "pending"
    assert rearmed.json()["attempts"] == 0
    dispatcher_of(server).deliver_due()
    done = delivery(client, message_id)
    assert done is not None
    assert done["status"] == "delivered"
    assert [item["status_code"] for item in done["deliveries"]] == [500, 200]
    assert receiver.ids().count(message_id) == 2
    for who in (client, admin):
        again = who.post(f"{WEBHOOKS}/deliveries/{message_id}/retry")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "webhook_already_delivered"
    assert admin.post(f"{WEBHOOKS}/deliveries/msg_unknown/retry").status_code == 404
