"""Evaluators end to end on a server with a manual clock: claim, result, the money split; one winner
of a claim race; fencing tokens after a lease ran out; three expiries fail and refund; results after
the deadline refused; bad outputs refused with the claim kept; stats computed from rows."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select

from prediction_provider.app import account_service
from prediction_provider.config import Settings
from prediction_provider.db.ledger_models import LedgerTransfer
from prediction_provider.db.market_models import ModelOwner
from prediction_provider.marketplace.quality import FORMULA as QUALITY_FORMULA
from tests.conftest import Account, LiveServer, live_settings

MODEL = "eurusd-1h-forecast"
# Ahead of the wall clock: the suite's system-clock servers share the database, and their sweepers
# must never expire this module's leases, holds or deadlines.
START = datetime(2031, 3, 3, 12, 0, tzinfo=UTC)
PRICE, FEE = "0.5", "0.1"


@pytest.fixture(scope="module")
def server(settings: Settings, accounts: dict[str, Account]) -> Iterator[LiveServer]:
    changed = live_settings(
        settings, clock="manual", clock_start=START, grpc_enabled=False, job_poll_seconds=0.05,
        request_ttl_s=3600.0, max_open_requests=50,
    )  # fmt: skip
    with LiveServer(changed) as live:
        yield live


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def deposit(server: LiveServer, account: Account, amount: str) -> None:
    journal = server.services.marketplace.journal
    with server.services.db.session() as session:
        journal.lock(session)
        journal.single(
            session, f"dep:test:{uuid.uuid4()}", "world", f"client:{account.user_id}",
            int(Decimal(amount) * 1_000_000), "USD", "deposit",
        )  # fmt: skip


def posted(server: LiveServer, code: str) -> int:
    with server.services.db.session() as session:
        return server.services.marketplace.journal.balance(session, code, "USD").posted


def wallet(server: LiveServer, account: Account) -> tuple[int, int]:
    with server.services.db.session() as session:
        balance = server.services.marketplace.journal.balance(session, f"client:{account.user_id}", "USD")
    return balance.available, balance.held


@pytest.fixture(scope="module")
def offer(server: LiveServer, http: httpx.Client, accounts: dict[str, Account]) -> dict:
    with server.services.db.session() as session:
        if session.get(ModelOwner, MODEL) is None:
            session.add(
                ModelOwner(model_name=MODEL, provider_id=accounts["provider"].user_id, assigned_by="test")
            )
    made = http.post(
        "/api/v1/market/offers",
        json={"model": MODEL, "target": "direction", "symbols": ["EURUSD"], "interval": "1h", "horizons": [2],
              "price": PRICE, "execution": "evaluators", "evaluator_fee": FEE},
        headers=accounts["provider"].headers,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    return made.json()


def submit(http: httpx.Client, offer: dict, buyer: Account) -> dict:
    made = http.post(
        "/api/v1/market/requests", json={"offer_id": offer["offer_id"], "max_cost": PRICE},
        headers={**buyer.headers, "Idempotency-Key": str(uuid.uuid4())},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "queued"
    return made.json()


def claim(http: httpx.Client, evaluator: Account, request_id: str) -> httpx.Response:
    return http.post("/api/v1/evaluator/claims", json={"request_id": request_id}, headers=evaluator.headers)


def advance(http: httpx.Client, admin: Account, seconds: float) -> dict:
    moved = http.post("/api/v1/admin/clock", json={"advance_s": seconds}, headers=admin.headers)
    assert moved.status_code == 200, moved.text
    return moved.json()


def status_of(http: httpx.Client, buyer: Account, request_id: str) -> dict:
    return http.get(f"/api/v1/market/requests/{request_id}", headers=buyer.headers).json()


def code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


def test_a_claimed_request_completes_and_the_fee_is_split(
    server: LiveServer, http: httpx.Client, accounts: dict[str, Account], offer: dict
) -> None:
    client, evaluator, admin = accounts["client"], accounts["evaluator"], accounts["admin"]
    provider = accounts["provider"]
    deposit(server, client, "1.00")
    before = wallet(server, client)[0]
    paid_before = posted(server, f"evaluator:{evaluator.user_id}")
    earned_before = posted(server, f"provider:{provider.user_id}")
    fees_before = posted(server, "platform:fees")
    request = submit(http, offer, client)
    queued = http.get("/api/v1/evaluator/queue?symbol=eurusd&target=direction", headers=evaluator.headers)
    assert queued.status_code == 200, queued.text
    item = next(i for i in queued.json()["items"] if i["request_id"] == request["request_id"])
    assert item["evaluator_fee"] == "0.100000"
    assert item["offer_id"] == offer["offer_id"]
    assert item["deadline_at"] == request["deadline_at"]
    assert item["model"] == MODEL
    won = claim(http, evaluator, request["request_id"])
    assert won.status_code == 201, won.text
    held = won.json()
    assert held["lease_token"] == 1
    assert held["input"]["target"] == "direction"
    assert held["input"]["symbol"] == "EURUSD"
    assert held["input"]["data_as_of"] == request["data_as_of"]
    assert status_of(http, client, request["request_id"])["status"] == "claimed"
    assert code(claim(http, evaluator, request["request_id"])) == "already_claimed"
    advance(http, admin, 30)
    path = f"/api/v1/evaluator/claims/{held['claim_id']}/result"
    done = http.post(path, json={"lease_token": 1, "output": {"p_up": 0.625}}, headers=evaluator.headers)
    assert done.status_code == 200, done.text
    assert done.json()["request_status"] == "completed"
    assert done.json()["paid"] == "0.100000"
    again = http.post(path, json={"lease_token": 1, "output": {"p_up": 0.625}}, headers=evaluator.headers)
    assert again.status_code == 200
    assert again.json() == done.json()
    other = http.post(path, json={"lease_token": 1, "output": {"p_up": 0.5}}, headers=evaluator.headers)
    assert other.status_code == 409
    assert code(other) == "already_submitted"
    view = status_of(http, client, request["request_id"])
    assert view["status"] == "completed"
    assert view["result"]["output"] == {"p_up": 0.625}
    assert view["money"]["charged"] == "0.500000"
    assert view["money"]["held"] == "0.000000"
    legs = offer["breakdown"]
    assert legs["evaluator"] == "0.100000"
    assert wallet(server, client) == (before - 500_000, 0)
    assert posted(server, f"evaluator:{evaluator.user_id}") - paid_before == 100_000
    provider_share = int(Decimal(legs["provider"]) * 1_000_000)
    fee_share = int(Decimal(legs["platform_fee"]) * 1_000_000)
    assert provider_share + fee_share + 100_000 == 500_000
    assert posted(server, f"provider:{provider.user_id}") - earned_before == provider_share
    assert posted(server, "platform:fees") - fees_before == fee_share
    with server.services.db.session() as session:
        kinds = sorted(
            t.kind
            for t in session.scalars(
                select(LedgerTransfer).where(LedgerTransfer.request_id == request["request_id"])
            )
        )
    assert kinds == ["capture", "fee", "hold", "payout_evaluator", "payout_provider"]


def test_two_evaluators_racing_for_one_request_one_wins(
    server: LiveServer, http: httpx.Client, accounts: dict[str, Account], offer: dict
) -> None:
    client = accounts["client"]
    deposit(server, client, "0.50")
    request = submit(http, offer, client)
    racers = [accounts["evaluator"], accounts["admin"]] * 4
    barrier = threading.Barrier(len(racers))
    answers: list[tuple[Account, httpx.Response]] = []
    lock = threading.Lock()

    def race(racer: Account) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as own:
            barrier.wait()
            answer = claim(own, racer, request["request_id"])
        with lock:
            answers.append((racer, answer))

    threads = [threading.Thread(target=race, args=(racer,)) for racer in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(a.status_code for _, a in answers)
    assert statuses == [201] + [409] * (len(racers) - 1), [a.text for _, a in answers]
    assert all(code(a) == "already_claimed" for _, a in answers if a.status_code == 409)
    holder, won = next((r, a.json()) for r, a in answers if a.status_code == 201)
    released = http.post(
        f"/api/v1/evaluator/claims/{won['claim_id']}/release",
        json={"lease_token": won["lease_token"], "reason": "technical_issue"}, headers=holder.headers,
    )  # fmt: skip
    assert released.status_code == 200, released.text
    assert released.json()["request_status"] == "queued"
    assert released.json()["attempts"] == 1
    assert (
        http.delete(f"/api/v1/market/requests/{request['request_id']}", headers=client.headers).status_code
        == 200
    )


def test_expired_leases_requeue_with_fencing_then_fail_and_refund(
    server: LiveServer, http: httpx.Client, accounts: dict[str, Account], offer: dict, settings: Settings
) -> None:
    client, evaluator, admin = accounts["client"], accounts["evaluator"], accounts["admin"]
    deposit(server, client, "0.50")
    before = wallet(server, client)
    request = submit(http, offer, client)
    rid = request["request_id"]
    first = claim(http, evaluator, rid).json()
    swept = advance(http, admin, settings.lease_s + 1)
    assert swept["swept"]["leases_expired"] == 1
    late = http.post(
        f"/api/v1/evaluator/claims/{first['claim_id']}/result",
        json={"lease_token": first["lease_token"], "output": {"p_up": 0.4}}, headers=evaluator.headers,
    )  # fmt: skip
    assert late.status_code == 409, late.text
    assert code(late) == "lease_expired"
    view = status_of(http, client, rid)
    assert view["status"] == "queued"
    assert view["attempts"] == 1
    second = claim(http, evaluator, rid).json()
    assert second["lease_token"] == 2
    advance(http, admin, settings.lease_s - 10)
    beat = http.post(
        f"/api/v1/evaluator/claims/{second['claim_id']}/heartbeat", json={"lease_token": 2},
        headers=evaluator.headers,
    )  # fmt: skip
    assert beat.status_code == 200, beat.text
    assert datetime.fromisoformat(beat.json()["lease_expires_at"]) > datetime.fromisoformat(
        second["lease_expires_at"]
    )
    stale = http.post(
        f"/api/v1/evaluator/claims/{first['claim_id']}/result",
        json={"lease_token": first["lease_token"], "output": {"p_up": 0.4}}, headers=evaluator.headers,
    )  # fmt: skip
    assert stale.status_code == 409, stale.text
    assert code(stale) == "stale_lease"
    advance(http, admin, settings.lease_s + 1)
    assert status_of(http, client, rid)["status"] == "queued"
    third = claim(http, evaluator, rid).json()
    assert third["lease_token"] == 3
    assert advance(http, admin, settings.lease_s + 1)["swept"]["leases_expired"] == 1
    view = status_of(http, client, rid)
    assert view["status"] == "failed"
    assert view["attempts"] == 3
    assert view["money"]["charged"] == "0.000000"
    assert view["money"]["refunded"] == "0.500000"
    assert wallet(server, client) == before
    assert code(claim(http, evaluator, rid)) == "already_claimed"


def test_a_result_after_the_deadline_is_refused_and_refunded(
    server: LiveServer, http: httpx.Client, accounts: dict[str, Account], offer: dict
) -> None:
    client, evaluator = accounts["client"], accounts["evaluator"]
    deposit(server, client, "0.50")
    before = wallet(server, client)
    request = submit(http, offer, client)
    held = claim(http, evaluator, request["request_id"]).json()
    # Move the clock without a sweep, as if the evaluator answered in the same instant it passed.
    server.services.clock.set(datetime.fromisoformat(request["deadline_at"]) + timedelta(seconds=1))
    late = http.post(
        f"/api/v1/evaluator/claims/{held['claim_id']}/result",
        json={"lease_token": held["lease_token"], "output": {"p_up": 0.9}}, headers=evaluator.headers,
    )  # fmt: skip
    assert late.status_code == 409, late.text
    assert code(late) == "too_late"
    view = status_of(http, client, request["request_id"])
    assert view["status"] == "failed"
    assert view["money"]["refunded"] == "0.500000"
    assert view["result"] is None
    assert wallet(server, client) == before


def test_a_bad_output_is_refused_and_the_claim_stays_active(
    server: LiveServer, http: httpx.Client, accounts: dict[str, Account], offer: dict
) -> None:
    client, evaluator = accounts["client"], accounts["evaluator"]
    deposit(server, client, "0.50")
    request = submit(http, offer, client)
    held = claim(http, evaluator, request["request_id"]).json()
    path = f"/api/v1/evaluator/claims/{held['claim_id']}/result"
    for bad in ({"p_up": 1.5}, {"expected_return": 0.1}, [0.5], {"p_up": True}):
        refused = http.post(
            path, json={"lease_token": held["lease_token"], "output": bad}, headers=evaluator.headers
        )
        assert refused.status_code == 422, (bad, refused.text)
    active = http.get("/api/v1/evaluator/claims?state=active", headers=evaluator.headers).json()
    assert held["claim_id"] in [c["claim_id"] for c in active["items"]]
    fine = http.post(
        path, json={"lease_token": held["lease_token"], "output": {"p_up": 0.5}}, headers=evaluator.headers
    )
    assert fine.status_code == 200, fine.text


def test_refusals(server: LiveServer, http: httpx.Client, accounts: dict[str, Account], offer: dict) -> None:
    admin, evaluator, client = accounts["admin"], accounts["evaluator"], accounts["client"]
    assert claim(http, evaluator, str(uuid.uuid4())).status_code == 404
    assert claim(http, client, str(uuid.uuid4())).status_code == 403
    assert http.get("/api/v1/evaluator/queue?page=2", headers=evaluator.headers).status_code == 422
    assert http.get("/api/v1/evaluator/stats?window=1y", headers=evaluator.headers).status_code == 422
    deposit(server, admin, "0.50")
    own = submit(http, offer, admin)
    mine = claim(http, admin, own["request_id"])
    assert mine.status_code == 409
    assert code(mine) == "self_dealing"
    assert own["request_id"] not in [
        i["request_id"] for i in http.get("/api/v1/evaluator/queue", headers=admin.headers).json()["items"]
    ]
    held = claim(http, evaluator, own["request_id"]).json()
    bad_reason = http.post(
        f"/api/v1/evaluator/claims/{held['claim_id']}/release",
        json={"lease_token": held["lease_token"], "reason": "bored"}, headers=evaluator.headers,
    )  # fmt: skip
    assert bad_reason.status_code == 422
    wrong = http.post(
        f"/api/v1/evaluator/claims/{held['claim_id']}/heartbeat", json={"lease_token": 99},
        headers=evaluator.headers,
    )  # fmt: skip
    assert wrong.status_code == 409
    assert code(wrong) == "stale_lease"
    foreign = http.post(
        f"/api/v1/evaluator/claims/{held['claim_id']}/heartbeat", json={"lease_token": held["lease_token"]},
        headers=admin.headers,
    )  # fmt: skip
    assert foreign.status_code == 404
    done = http.post(
        f"/api/v1/evaluator/claims/{held['claim_id']}/release",
        json={"lease_token": held["lease_token"], "reason": "other", "details": "cleanup"},
        headers=evaluator.headers,
    )  # fmt: skip
    assert done.status_code == 200
    assert done.json()["request_status"] == "queued"
    assert (
        http.delete(f"/api/v1/market/requests/{own['request_id']}", headers=admin.headers).status_code == 200
    )


def test_the_seed_routes_and_computed_stats(
    server: LiveServer, http: httpx.Client, accounts: dict[str, Account], offer: dict, settings: Settings
) -> None:
    client, admin = accounts["client"], accounts["admin"]
    service = account_service(settings)
    name = f"test-evaluator-{uuid.uuid4().hex[:8]}"
    user = service.create_user(
        name, f"{name}@example.com", "evaluator-password-123", "evaluator", active=True
    )
    fresh = Account(
        name, "evaluator-password-123", service.regenerate_api_key(user["id"])["api_key"], user["id"]
    )
    service.db.dispose()
    empty = http.get("/api/v1/evaluator/stats?window=7d", headers=fresh.headers).json()
    assert empty["claims"] == 0
    assert empty["earnings"] == "0.000000"
    assert empty["success_rate"] is None
    deposit(server, client, "1.50")
    ids = [submit(http, offer, client)["request_id"] for _ in range(3)]
    pending = http.get("/api/v1/evaluator/pending", headers=fresh.headers)
    assert pending.status_code == 200
    assert set(ids) <= {i["request_id"] for i in pending.json()["items"]}
    claimed = http.post(f"/api/v1/evaluator/claim/{ids[0]}", headers=fresh.headers)
    assert claimed.status_code == 201, claimed.text
    assigned = http.get("/api/v1/evaluator/assigned", headers=fresh.headers).json()
    assert [c["request_id"] for c in assigned["items"]] == [ids[0]]
    advance(http, admin, 40)
    submitted = http.post(
        f"/api/v1/evaluator/submit/{ids[0]}", json={"result": {"p_up": 0.7}}, headers=fresh.headers
    )
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["paid"] == "0.100000"
    assert http.post(f"/api/v1/evaluator/claim/{ids[1]}", headers=fresh.headers).status_code == 201
    advance(http, admin, 20)
    released = http.post(f"/api/v1/evaluator/release/{ids[1]}", json={"reason": "insufficient_resources"},
                         headers=fresh.headers)  # fmt: skip
    assert released.status_code == 200, released.text
    assert released.json()["request_status"] == "queued"
    assert (
        http.post("/api/v1/evaluator/claims", json={"request_id": ids[2]}, headers=fresh.headers).status_code
        == 201
    )
    advance(http, admin, settings.lease_s + 1)
    stats = http.get("/api/v1/evaluator/stats?window=7d", headers=fresh.headers)
    assert stats.status_code == 200, stats.text
    assert stats.json() | {"window": "7d"} == {
        "window": "7d", "claims": 3, "active": 0, "completed": 1, "released": 1, "expired": 1,
        "success_rate": pytest.approx(1 / 3), "median_latency_s": 40.0, "earnings": "0.100000",
        "currency": "USD", "scored_n": 0, "mean_primary_metric": None, "quality_score": None,
        "quality_formula": QUALITY_FORMULA,
    }  # fmt: skip
    for rid in ids[1:]:
        assert http.delete(f"/api/v1/market/requests/{rid}", headers=client.headers).status_code == 200
