"""Synchronous paid predictions on every protocol: a priced model's answer is charged to the
caller's wallet before the response, exactly once per answered row; a caller who cannot pay gets
402 and is charged nothing; the model's owner uses it free; a paid rows job holds its price at
submit and is charged when it completes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from sqlalchemy import func, select
from tritonclient.utils import InferenceServerException

from prediction_provider.db.ledger_models import LedgerTransfer
from prediction_provider.db.models import PredictionJob
from tests.conftest import Account, LiveServer
from tests.upload_models import FEATURES, lightgbm_text, probe_row

PRICE = Decimal("0.001")


def micros(amount: Decimal | str) -> int:
    return int(Decimal(amount) * 1_000_000)


def fund(server: LiveServer, account: Account, amount: str) -> None:
    services = server.services
    with services.db.session() as session:
        services.marketplace.journal.lock(session)
        services.marketplace.journal.single(
            session,
            f"dep:paid:{uuid.uuid4()}",
            "world",
            f"client:{account.user_id}",
            micros(amount),
            "USD",
            "deposit",
        )


def available(server: LiveServer, account: Account) -> int:
    services = server.services
    with services.db.session() as session:
        return services.marketplace.journal.balance(session, f"client:{account.user_id}", "USD").available


def charges(server: LiveServer, charge_id: str) -> int:
    with server.services.db.session() as session:
        return int(
            session.scalar(
                select(func.coalesce(func.sum(LedgerTransfer.amount), 0)).where(
                    LedgerTransfer.request_id == charge_id, LedgerTransfer.kind == "charge"
                )
            )
        )


@pytest.fixture(scope="module")
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def priced(http: httpx.Client, accounts: dict[str, Account], live_server: LiveServer) -> Iterator[str]:
    """A model of the provider's own, priced at 0.001 a row, and a payer with its own account."""
    name = f"paid-{uuid.uuid4().hex[:8]}"
    uploaded = http.post(
        "/api/v1/provider/models",
        headers=accounts["provider"].headers,
        data={"name": name, "format": "lightgbm"},
        files={"file": ("model.txt", lightgbm_text(), "text/plain")},
    )
    assert uploaded.status_code == 201, uploaded.text
    offer = http.post(
        "/api/v1/market/offers",
        headers=accounts["provider"].headers,
        json={
            "model": name,
            "target": "direction",
            "symbols": ["EURUSD"],
            "horizons": [1],
            "price": str(PRICE),
        },
    )
    assert offer.status_code == 201, offer.text
    yield name
    http.delete(f"/api/v1/market/offers/{offer.json()['offer_id']}", headers=accounts["provider"].headers)


@pytest.fixture
def payer(accounts: dict[str, Account], live_server: LiveServer) -> Account:
    """A fresh client, so each test starts from an empty wallet."""
    from prediction_provider.app import account_service

    service = account_service(live_server.services.settings)
    user = service.create_user(
        f"payer-{uuid.uuid4().hex[:8]}",
        f"{uuid.uuid4().hex[:8]}@example.com",
        "payer-password-123",
        "client",
        active=True,
    )
    key = service.regenerate_api_key(user["id"])["api_key"]
    service.db.dispose()
    return Account(user["username"], "payer-password-123", key, user["id"])


def test_predict_charges_each_answer_once_and_refuses_what_the_wallet_cannot_pay(
    http: httpx.Client, priced: str, payer: Account, live_server: LiveServer
) -> None:
    fund(live_server, payer, "0.0025")
    body = {"model": priced, "features": probe_row()}
    first = http.post("/predict", json=body, headers=payer.headers)
    second = http.post("/predict", json=body, headers=payer.headers)
    assert first.status_code == second.status_code == 200, first.text
    assert first.headers["X-Charged"] == "0.001000"
    assert first.headers["X-Charge-Id"] != second.headers["X-Charge-Id"]
    for answer in (first, second):
        assert charges(live_server, answer.headers["X-Charge-Id"]) == micros(PRICE)
    assert available(live_server, payer) == micros("0.0005")
    refused = http.post("/predict", json=body, headers=payer.headers)
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "insufficient_funds"
    assert "X-Charge-Id" not in refused.headers
    assert available(live_server, payer) == micros("0.0005")


def test_batch_v2_and_invocations_charge_per_row(
    http: httpx.Client, priced: str, payer: Account, live_server: LiveServer
) -> None:
    fund(live_server, payer, "1")
    rows = [probe_row(seed) for seed in range(3)]
    batch = http.post("/predict/batch", json={"model": priced, "features_list": rows}, headers=payer.headers)
    assert batch.status_code == 200, batch.text
    assert batch.headers["X-Charged"] == "0.003000"
    matrix = [[row[name] for name in FEATURES] for row in rows]
    v2 = http.post(
        f"/v2/models/{priced}/infer",
        headers=payer.headers,
        json={
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [3, len(FEATURES)],
                    "datatype": "FP64",
                    "data": [v for row in matrix for v in row],
                }
            ]
        },
    )
    assert v2.status_code == 200, v2.text
    scored = http.post(
        f"/models/{priced}/invocations",
        headers=payer.headers,
        json={"dataframe_split": {"columns": list(FEATURES), "data": matrix[:2]}},
    )
    assert scored.status_code == 200, scored.text
    assert available(live_server, payer) == micros("1") - micros(PRICE) * (3 + 3 + 2)


def test_grpc_infer_is_charged_and_refused_without_funds(
    priced: str, payer: Account, grpc_server: LiveServer
) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{grpc_server.services.grpc_port}")
    matrix = np.array([[probe_row()[name] for name in FEATURES]], dtype=np.float64)
    tensor = triton.InferInput("input-0", list(matrix.shape), "FP64")
    tensor.set_data_from_numpy(matrix)
    headers = {"x-api-key": payer.api_key}
    with pytest.raises(InferenceServerException) as refused:
        client.infer(priced, [tensor], headers=headers)
    assert "priced" in str(refused.value) or "cannot pay" in str(refused.value)
    fund(grpc_server, payer, "0.001")
    client.infer(priced, [tensor], headers=headers)
    assert available(grpc_server, payer) == 0


def test_the_owner_uses_its_model_free(
    http: httpx.Client, priced: str, accounts: dict[str, Account], live_server: LiveServer
) -> None:
    answer = http.post(
        "/predict", json={"model": priced, "features": probe_row()}, headers=accounts["provider"].headers
    )
    assert answer.status_code == 200
    assert "X-Charge-Id" not in answer.headers


def test_a_paid_rows_job_holds_at_submit_and_is_charged_when_it_completes(
    http: httpx.Client, priced: str, payer: Account, live_server: LiveServer
) -> None:
    body = {"model": priced, "features_list": [probe_row(1), probe_row(2)]}
    with live_server.services.db.session() as session:
        jobs_before = session.scalar(select(func.count()).select_from(PredictionJob))
    refused = http.post("/api/v1/predictions", json=body, headers=payer.headers)
    assert refused.status_code == 402, refused.text
    with live_server.services.db.session() as session:
        assert session.scalar(select(func.count()).select_from(PredictionJob)) == jobs_before
    fund(live_server, payer, "0.002")
    made = http.post("/api/v1/predictions", json=body, headers=payer.headers)
    assert made.status_code in (201, 202), made.text
    job_id = made.json()["id"]
    for _ in range(2000):
        status = http.get(f"/api/v1/predictions/{job_id}", headers=payer.headers).json()["status"]
        if status in {"completed", "failed"}:
            break
    assert status == "completed"
    assert available(live_server, payer) == 0
    with live_server.services.db.session() as session:
        captured = session.get(LedgerTransfer, f"cap:{job_id}")
    assert captured is not None
    assert captured.amount == micros(PRICE) * 2
