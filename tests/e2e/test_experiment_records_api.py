"""``GET /api/v1/experiments/{name}/records`` on the running server: an operator pages an
experiment's primary and shadow records newest first with a cursor, filters them, and is refused
a cursor it was never given; clients may not read records, anonymous callers must sign in."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest

from prediction_provider.db.modelops_models import Experiment
from prediction_provider.modelops.records import ServedRows, ShadowRows
from tests.conftest import Account, LiveServer
from tests.security.support import assert_unauthorized, error_of

AT = datetime(2026, 11, 20, 13, tzinfo=UTC)


@pytest.fixture(scope="module")
def experiment(live_server: LiveServer) -> str:
    """A stored experiment with five served requests (two rows each) and their shadows."""
    name = f"records-{uuid.uuid4().hex[:10]}"
    services = live_server.services
    with services.db.session() as session:
        session.add(
            Experiment(id=str(uuid.uuid4()), name=name, model="eurusd-direction", state="running", config={})
        )
    recorder = services.experiment_records
    for index in range(5):
        request_id = f"{name[-10:]}-{index}"
        created_at = AT + timedelta(seconds=index)
        recorder.record(
            ServedRows(
                request_id=request_id, channel="predict", user_id=None, username=None, experiment=name,
                variant="candidate" if index % 2 else "control", target="models:/eurusd-direction/1",
                forced=False, unit_hash="b" * 32, outcome_key=None, model_name="eurusd-direction",
                model_version="1", served_by="primary", fallback_reason=None,
                status="error" if index == 3 else "ok", latency_ms=2.0, classes=("down", "up"),
                predictions=["up", "down"], probabilities=np.array([[0.4, 0.6], [0.7, 0.3]]),
                created_at=created_at, matrix=np.zeros((2, 3)),
            )
        )  # fmt: skip
        recorder.record_shadow(
            ShadowRows(
                experiment=name, variant="control", shadow_of="shadow", target="models:/eurusd-direction/2",
                request_id=request_id, rows=2, unit_hash="b" * 32, created_at=created_at,
                status="dropped" if index == 4 else "ok", latency_ms=None if index == 4 else 5.0,
                classes=("down", "up"), predictions=["up", "up"], probabilities=np.array([[0.5, 0.5]] * 2),
            )
        )  # fmt: skip
    recorder.flush()
    return name


@pytest.fixture
def operator(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, headers=accounts["operator"].headers, timeout=60) as http:
        yield http


def records(http: httpx.Client, name: str, **params: Any) -> dict[str, Any]:
    answer = http.get(f"/api/v1/experiments/{name}/records", params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_an_operator_pages_the_primary_records_newest_first(operator: httpx.Client, experiment: str) -> None:
    seen: list[tuple[str, int]] = []
    params: dict[str, Any] = {"limit": 4}
    pages = []
    while True:
        page = records(operator, experiment, **params)
        pages.append(len(page["items"]))
        seen.extend((item["request_id"], item["row"]) for item in page["items"])
        if page["next_cursor"] is None:
            break
        params["cursor"] = page["next_cursor"]
    prefix = experiment[-10:]
    assert seen == [(f"{prefix}-{index}", row) for index in (4, 3, 2, 1, 0) for row in (1, 0)]
    assert pages == [4, 4, 2]

    first = records(operator, experiment, limit=1)["items"][0]
    assert first["role"] == "primary"
    assert first["experiment"] == experiment
    assert (first["label"], first["status"], first["served_by"]) == ("down", "ok", "primary")
    assert first["probabilities"] == pytest.approx({"down": 0.7, "up": 0.3})
    assert first["unit_hash"] == "b" * 32
    assert first["feature_hash"] is not None
    assert "username" not in first
    assert "user_id" not in first


def test_filters_narrow_the_records_and_shadows_are_read_by_role(
    operator: httpx.Client, experiment: str
) -> None:
    prefix = experiment[-10:]
    errors = records(operator, experiment, status="error")["items"]
    assert {(item["request_id"], item["row"]) for item in errors} == {(f"{prefix}-3", 0), (f"{prefix}-3", 1)}
    candidates = records(operator, experiment, variant="candidate")["items"]
    assert {item["request_id"] for item in candidates} == {f"{prefix}-1", f"{prefix}-3"}
    one = records(operator, experiment, request_id=f"{prefix}-2")["items"]
    assert [item["row"] for item in one] == [1, 0]

    shadows = records(operator, experiment, role="shadow")["items"]
    assert len(shadows) == 10
    assert {item["role"] for item in shadows} == {"shadow"}
    assert {item["shadow_of"] for item in shadows} == {"shadow"}
    dropped = records(operator, experiment, role="shadow", status="dropped")["items"]
    assert [(item["request_id"], item["latency_ms"], item["label"]) for item in dropped] == [
        (f"{prefix}-4", None, None),
        (f"{prefix}-4", None, None),
    ]


def test_bad_queries_are_refused_with_the_error_body(operator: httpx.Client, experiment: str) -> None:
    path = f"/api/v1/experiments/{experiment}/records"
    error_of(operator.get(path, params={"cursor": "bm90LW91cnM"}), 422, "invalid_input")
    error_of(operator.get(path, params={"role": "everyone"}), 422, "validation_error")
    error_of(operator.get(path, params={"limit": 0}), 422, "validation_error")
    error = error_of(operator.get(path, params={"colour": "red"}), 422, "validation_error")
    assert [detail["field"] for detail in error["details"]] == ["query.colour"]


def test_an_unknown_experiment_is_a_404(operator: httpx.Client) -> None:
    missing = operator.get(f"/api/v1/experiments/no-such-{uuid.uuid4().hex[:8]}/records")
    error_of(missing, 404, "experiment_not_found")


def test_records_are_for_operators_and_admins_only(
    live_server: LiveServer, accounts: dict[str, Account], experiment: str, anonymous: httpx.Client
) -> None:
    path = f"/api/v1/experiments/{experiment}/records"
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        assert http.get(path, headers=accounts["admin"].headers).status_code == 200
        error_of(http.get(path, headers=accounts["client"].headers), 403, "forbidden")
        error_of(
            http.get(path, headers=accounts["client"].headers, params={"colour": "red"}), 403, "forbidden"
        )
    assert_unauthorized(anonymous.get(path))
    assert_unauthorized(anonymous.get(path, params={"limit": 0}))
