"""Experiments over HTTP against the real app: sticky assignment in two worker processes and on
every protocol, monotone ramps, forcing, the lifecycle, shadow byte-identity, and canary promotion
and rollback driven by the manual clock.

The experiments run on a model registered for this module only (copies of the demo versions), so
no other module's traffic is split and moving its aliases disturbs nobody."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import mlflow
import pytest

from prediction_provider.config import Settings
from tests.conftest import Account, LiveServer, live_settings

START = datetime(2031, 5, 5, 12, 0, tzinfo=UTC)  # ahead of the wall clock (shared database)


@pytest.fixture(scope="module")
def model(live_server: LiveServer) -> str:
    """``exp-direction-<id>``: versions 1-3 are the demo EURUSD versions 1-3, champion 1."""
    registry = live_server.services.registry
    client = registry.client
    name = f"exp-direction-{uuid.uuid4().hex[:6]}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(registry.tracking_uri)  # the registry store looks logged models up there
    try:
        client.create_registered_model(name)
        for version in ("1", "2", "3"):
            source = client.get_model_version("eurusd-direction", version)
            client.create_model_version(name, source.source, run_id=source.run_id)
    finally:
        mlflow.set_tracking_uri(previous)
    client.set_registered_model_alias(name, "champion", "1")
    return name


@pytest.fixture(scope="module")
def operator(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=60, headers=accounts["operator"].headers) as http:
        yield http


@pytest.fixture(scope="module")
def caller(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=60, headers=accounts["client"].headers) as http:
        yield http


def experiment(name: str, model: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "model": model,
        "variants": [
            {"name": "control", "target": f"models:/{model}@champion", "weight": 50, "control": True},
            {"name": "candidate", "target": f"models:/{model}/2", "weight": 50},
        ],
    }
    body.update(changes)
    return body


@pytest.fixture
def running(operator: httpx.Client, model: str) -> Iterator[str]:
    name = f"ab-{uuid.uuid4().hex[:8]}"
    made = operator.post("/api/v1/experiments", json=experiment(name, model))
    assert made.status_code == 201, made.text
    assert made.json()["state"] == "draft"
    started = operator.post(f"/api/v1/experiments/{name}/start")
    assert started.status_code == 200, started.text
    assert started.json()["resolved"]["control"]["version"] == "1"  # the alias, frozen at start
    yield name
    operator.post(f"/api/v1/experiments/{name}/stop")


def predict(
    http: httpx.Client, model: str, row: dict[str, float], unit: str, **headers: str
) -> httpx.Response:
    response = http.post(
        "/predict", json={"model": model, "features": row}, headers={"X-PP-Unit": unit, **headers}
    )
    assert response.status_code == 200, response.text
    return response


def test_every_answer_names_its_variant_and_a_unit_always_gets_the_same_one(
    running: str,
    caller: httpx.Client,
    operator: httpx.Client,
    model: str,
    feature_rows: list[dict[str, float]],
) -> None:
    seen: dict[str, str] = {}
    for index in range(40):
        response = predict(caller, model, feature_rows[index], f"unit-{index}")
        variant = response.headers["X-PP-Variant"]
        assert response.headers["X-PP-Experiment"] == running
        body = response.json()
        assert body["experiment"] == {"name": running, "variant": variant}
        assert body["model"]["version"] == response.headers["X-PP-Model-Version"]
        assert body["model"]["version"] == {"control": "1", "candidate": "2"}[variant]
        seen[f"unit-{index}"] = variant
    assert set(seen.values()) == {"control", "candidate"}  # 50/50 over 40 units: both drawn
    for unit, variant in list(seen.items())[:10]:
        again = predict(caller, model, feature_rows[0], unit)
        assert again.headers["X-PP-Variant"] == variant
    # A pinned version is not the default route: no experiment.
    pinned = caller.post("/predict", json={"model": f"models:/{model}/3", "features": feature_rows[0]})
    assert "X-PP-Experiment" not in pinned.headers
    assert "experiment" not in pinned.json()
    # Results count every answer once per variant, from the shared records.
    results = operator.get(f"/api/v1/experiments/{running}/results")
    assert results.status_code == 200, results.text
    variants = {item["name"]: item for item in results.json()["variants"]}
    served = Counter(seen.values())
    served.update(seen[unit] for unit in list(seen)[:10])
    assert {name: variants[name]["requests"] for name in ("control", "candidate")} == dict(served)
    assert variants["candidate"]["errors"] == 0
    exposition = operator.get("/metrics").text
    counted = [
        line
        for line in exposition.splitlines()
        if line.startswith("pp_experiment_requests_total{")
        and f'experiment="{running}"' in line
        and 'variant="candidate"' in line
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) == served["candidate"]


def test_the_same_unit_gets_the_same_variant_in_another_worker_and_on_every_protocol(
    running: str,
    caller: httpx.Client,
    model: str,
    feature_rows: list[dict[str, float]],
    settings: Settings,
    accounts: dict[str, Account],
) -> None:
    units = [f"sticky-{index}" for index in range(12)]
    first = {unit: predict(caller, model, feature_rows[1], unit).headers["X-PP-Variant"] for unit in units}
    with (
        LiveServer(live_settings(settings, grpc_enabled=False)) as other,
        httpx.Client(base_url=other.url, timeout=60, headers=accounts["client"].headers) as second,
    ):
        for unit in units:
            assert predict(second, model, feature_rows[2], unit).headers["X-PP-Variant"] == first[unit]
            invoked = second.post(
                f"/models/{model}/invocations",
                json={"dataframe_records": [feature_rows[3]]},
                headers={"X-PP-Unit": unit},
            )
            assert invoked.status_code == 200, invoked.text
            assert invoked.headers["X-PP-Variant"] == first[unit]
    row = feature_rows[4]
    names = list(row)
    inputs = [{"name": name, "shape": [1], "datatype": "FP64", "data": [row[name]]} for name in names]
    for unit in units[:4]:
        v2 = caller.post(f"/v2/models/{model}/infer", json={"inputs": inputs}, headers={"X-PP-Unit": unit})
        assert v2.status_code == 200, v2.text
        assert v2.json()["parameters"]["pp_variant"] == first[unit]
        assert v2.json()["model_version"] == {"control": "1", "candidate": "2"}[first[unit]]


def test_raising_the_candidate_weight_only_moves_units_from_the_control(
    operator: httpx.Client, caller: httpx.Client, model: str, feature_rows: list[dict[str, float]]
) -> None:
    name = f"ramp-{uuid.uuid4().hex[:8]}"
    body = experiment(name, model)
    body["variants"][0]["weight"], body["variants"][1]["weight"] = 90, 10
    assert operator.post("/api/v1/experiments", json=body).status_code == 201
    assert operator.post(f"/api/v1/experiments/{name}/start").status_code == 200
    try:
        units = [f"ramp-{index}" for index in range(150)]
        before = {
            unit: predict(caller, model, feature_rows[0], unit).headers["X-PP-Variant"] for unit in units
        }
        patched = operator.patch(
            f"/api/v1/experiments/{name}", json={"weights": {"control": 70, "candidate": 30}}
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["weights"] == {"control": 0.7, "candidate": 0.3}
        after = {
            unit: predict(caller, model, feature_rows[0], unit).headers["X-PP-Variant"] for unit in units
        }
        assert all(after[unit] == "candidate" for unit in units if before[unit] == "candidate")
        assert sum(v == "candidate" for v in after.values()) > sum(v == "candidate" for v in before.values())
    finally:
        operator.post(f"/api/v1/experiments/{name}/stop")


def test_a_forced_variant_is_honored_for_admins_and_ignored_for_clients(
    running: str,
    caller: httpx.Client,
    model: str,
    feature_rows: list[dict[str, float]],
    live_server: LiveServer,
    accounts: dict[str, Account],
) -> None:
    # Find a unit the split puts on the control, then ask for the candidate.
    unit = next(
        f"force-{i}"
        for i in range(200)
        if predict(caller, model, feature_rows[0], f"force-{i}").headers["X-PP-Variant"] == "control"
    )
    ignored = predict(caller, model, feature_rows[0], unit, **{"X-PP-Variant": "candidate"})
    assert ignored.headers["X-PP-Variant"] == "control"
    with httpx.Client(base_url=live_server.url, timeout=60, headers=accounts["admin"].headers) as admin:
        forced = predict(admin, model, feature_rows[0], unit, **{"X-PP-Variant": "candidate"})
    assert forced.headers["X-PP-Variant"] == "candidate"
    assert forced.json()["model"]["version"] == "2"


def test_the_lifecycle_refuses_what_its_state_does_not_allow(
    running: str, operator: httpx.Client, caller: httpx.Client, anonymous: httpx.Client, model: str
) -> None:
    assert anonymous.get("/api/v1/experiments").status_code == 401
    assert caller.get("/api/v1/experiments").status_code == 403
    second = operator.post("/api/v1/experiments", json=experiment(f"two-{uuid.uuid4().hex[:6]}", model))
    assert second.status_code == 409  # the model already has a running experiment
    assert second.json()["error"]["code"] == "experiment_conflict"
    assert operator.post("/api/v1/experiments", json=experiment(running, "goog-direction")).status_code == 409
    assert operator.delete(f"/api/v1/experiments/{running}").status_code == 409  # running
    assert operator.post(f"/api/v1/experiments/{running}/resume").status_code == 409  # not paused
    paused = operator.post(f"/api/v1/experiments/{running}/pause", json={"reason": "looking at it"})
    assert paused.json()["state"] == "paused"
    resumed = operator.post(f"/api/v1/experiments/{running}/resume")
    assert resumed.json()["state"] == "running"
    stopped = operator.post(f"/api/v1/experiments/{running}/stop")
    assert stopped.json()["state"] == "stopped"
    history = operator.get(f"/api/v1/experiments/{running}").json()["transitions"]
    assert [(t["from"], t["to"]) for t in reversed(history)] == [
        (None, "draft"),
        ("draft", "running"),
        ("running", "paused"),
        ("paused", "running"),
        ("running", "stopped"),
    ]
    assert history[2]["reason"] == "looking at it"
    assert all(t["actor"] == "test-operator" for t in history)
    listed = operator.get("/api/v1/experiments", params={"model": model, "state": "stopped"}).json()
    assert running in [item["name"] for item in listed["items"]]
    assert operator.get("/api/v1/experiments", params={"page": 2}).status_code == 422
    assert operator.delete(f"/api/v1/experiments/{running}").status_code == 204
    assert operator.get(f"/api/v1/experiments/{running}").status_code == 404


def test_targets_that_do_not_exist_or_disagree_are_refused(operator: httpx.Client, model: str) -> None:
    missing = experiment(f"bad-{uuid.uuid4().hex[:6]}", model)
    missing["variants"][1]["target"] = f"models:/{model}/99"
    refused = operator.post("/api/v1/experiments", json=missing)
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "invalid_experiment"
    lonely = experiment(f"bad-{uuid.uuid4().hex[:6]}", model)
    lonely["variants"] = lonely["variants"][:1]
    assert operator.post("/api/v1/experiments", json=lonely).status_code == 422  # one variant, no shadow
    assert operator.post("/api/v1/experiments", json={"name": "x"}).status_code == 422


def test_a_shadow_changes_no_byte_of_the_answer_and_is_recorded_beside_it(
    operator: httpx.Client,
    caller: httpx.Client,
    model: str,
    feature_rows: list[dict[str, float]],
    live_server: LiveServer,
) -> None:
    rows = feature_rows[10:30]
    without = [predict(caller, model, row, "shadow-unit").json() for row in rows]
    name = f"shadow-{uuid.uuid4().hex[:8]}"
    body = {
        "name": name,
        "model": model,
        "variants": [{"name": "control", "target": f"models:/{model}@champion"}],
        "shadow": {"target": f"models:/{model}/3", "percent": 100},
    }
    assert operator.post("/api/v1/experiments", json=body).status_code == 201
    assert operator.post(f"/api/v1/experiments/{name}/start").status_code == 200
    try:
        with_shadow = []
        for row in rows:
            response = predict(caller, model, row, "shadow-unit")
            assert "X-PP-Experiment" not in response.headers  # a pure shadow test adds nothing
            with_shadow.append(response.json())
        for plain, shadowed in zip(without, with_shadow, strict=True):
            plain.pop("latency_ms")
            shadowed.pop("latency_ms")
            assert plain == shadowed
        services = live_server.services
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            services.experiment_records.flush()
            shadows = operator.get(
                f"/api/v1/experiments/{name}/records", params={"role": "shadow", "limit": 100}
            )
            assert shadows.status_code == 200, shadows.text
            if len(shadows.json()["items"]) >= len(rows):
                break
            time.sleep(0.1)
        items = shadows.json()["items"]
        assert len(items) == len(rows)
        assert {item["model_version"] for item in items} == {"3"}
        primaries = operator.get(
            f"/api/v1/experiments/{name}/records", params={"role": "primary", "limit": 100}
        )
        assert {item["request_id"] for item in primaries.json()["items"]} == {
            item["request_id"] for item in items
        }
    finally:
        operator.post(f"/api/v1/experiments/{name}/stop")


@pytest.fixture(scope="module")
def manual(settings: Settings) -> Iterator[LiveServer]:
    changed = live_settings(
        settings, clock="manual", clock_start=START, grpc_enabled=False, rollout_interval_s=0, chaos=True
    )
    with LiveServer(changed) as live:
        yield live


def advance(http: httpx.Client, seconds: float) -> None:
    response = http.post("/api/v1/admin/clock", json={"advance_s": seconds})
    assert response.status_code == 200, response.text


def canary(name: str, model: str, candidate: str, **rollout: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": model,
        "variants": [
            {"name": "control", "target": f"models:/{model}@champion", "control": True},
            {"name": "canary", "target": f"models:/{model}/{candidate}"},
        ],
        "rollout": {
            "steps": [50, 100],
            "interval_s": 60,
            "min_requests": 10,
            "checks": [{"metric": "error_rate", "max": 0.2}],
            **rollout,
        },
    }


def test_a_healthy_canary_steps_up_and_is_promoted_moving_the_alias(
    manual: LiveServer, accounts: dict[str, Account], model: str, feature_rows: list[dict[str, float]]
) -> None:
    name = f"canary-{uuid.uuid4().hex[:8]}"
    with (
        httpx.Client(base_url=manual.url, timeout=60, headers=accounts["admin"].headers) as admin,
        httpx.Client(base_url=manual.url, timeout=60, headers=accounts["client"].headers) as http,
    ):
        assert admin.post("/api/v1/experiments", json=canary(name, model, "2")).status_code == 201
        started = admin.post(f"/api/v1/experiments/{name}/start").json()
        assert started["weights"] == {"control": 0.5, "canary": 0.5}
        refused = admin.patch(f"/api/v1/experiments/{name}", json={"weights": {"canary": 90}})
        assert refused.status_code == 409  # the controller owns a rollout's weights
        try:
            for index in range(60):
                predict(http, model, feature_rows[index], f"c-{index}")
            assert admin.post("/api/v1/admin/rollouts/run").json()["evaluated"] == []  # not due yet
            advance(admin, 61)
            ran = admin.post("/api/v1/admin/rollouts/run").json()["evaluated"]
            assert [(item["experiment"], item["action"]) for item in ran] == [(name, "advance")]
            state = admin.get(f"/api/v1/experiments/{name}").json()
            assert state["weights"] == {"control": 0.0, "canary": 1.0}
            assert state["step"] == 1
            # A step with no traffic yet never advances: "no data" is inconclusive.
            advance(admin, 61)
            idle = admin.post("/api/v1/admin/rollouts/run").json()["evaluated"]
            assert [item["action"] for item in idle] == ["stay"]
            for index in range(30):
                assert (
                    predict(http, model, feature_rows[index], f"d-{index}").headers["X-PP-Variant"]
                    == "canary"
                )
            advance(admin, 61)
            done = admin.post("/api/v1/admin/rollouts/run").json()["evaluated"]
            assert [item["action"] for item in done] == ["promote"]
            final = admin.get(f"/api/v1/experiments/{name}").json()
            assert final["state"] == "promoted"
            aliases = manual.services.registry.client.get_registered_model(model).aliases
            assert str(aliases["champion"]) == "2"
            assert str(aliases["previous-champion"]) == "1"
        finally:
            admin.post(f"/api/v1/experiments/{name}/stop")
            restored = admin.put(f"/models/{model}/aliases/champion", json={"version": "1"})
            assert restored.status_code == 200, restored.text
            assert restored.json()["previous"] in ("1", "2")


def test_a_failing_canary_rescued_by_fallbacks_still_counts_as_failing_and_is_rolled_back(
    manual: LiveServer, accounts: dict[str, Account], model: str, feature_rows: list[dict[str, float]]
) -> None:
    name = f"bad-canary-{uuid.uuid4().hex[:8]}"
    fast_abort = {"window": 10, "error_rate": 0.5}
    with (
        httpx.Client(base_url=manual.url, timeout=60, headers=accounts["admin"].headers) as admin,
        httpx.Client(base_url=manual.url, timeout=60, headers=accounts["client"].headers) as http,
    ):
        rule = admin.put(
            f"/api/v1/admin/chaos/{model}/3", json={"fail_rate": 1.0, "delay_ms": 0, "ttl_s": 300}
        )
        assert rule.status_code == 200, rule.text
        try:
            body = canary(name, model, "3", fast_abort=fast_abort)
            assert admin.post("/api/v1/experiments", json=body).status_code == 201
            assert admin.post(f"/api/v1/experiments/{name}/start").status_code == 200
            rescued = 0
            for index in range(40):
                response = predict(http, model, feature_rows[index], f"bad-{index}")  # always a 200
                if response.headers.get("X-PP-Variant") == "canary":
                    assert response.json()["served_by"] == "fallback"
                    assert response.json()["model"]["version"] == "1"  # the control answered
                    assert response.headers["X-PP-Fallback"].startswith(("error", "circuit_open"))
                    rescued += 1
            assert rescued >= 10
            # No interval needed: this pass, or the leader of another server sharing the database
            # (its controller reads the same records), rolls the canary back at once.
            ran = admin.post("/api/v1/admin/rollouts/run").json()["evaluated"]
            assert [item["action"] for item in ran] in ([], ["rollback"])
            history = admin.get(f"/api/v1/experiments/{name}").json()["transitions"]
            assert history[0]["to"] == "rolled_back"
            assert history[0]["reason"] in ("fast_abort_error_rate", "circuit_open")
            assert history[0]["actor"] is None  # the controller, not an operator
            final = admin.get(f"/api/v1/experiments/{name}").json()
            assert final["state"] == "rolled_back"
            assert final["weights"] == {"control": 1.0, "canary": 0.0}
            assert str(manual.services.registry.client.get_registered_model(model).aliases["champion"]) == "1"
            after = predict(http, model, feature_rows[0], "bad-0")
            assert "X-PP-Experiment" not in after.headers  # ended: the default route again
        finally:
            admin.post(f"/api/v1/experiments/{name}/stop")
            admin.delete(f"/api/v1/admin/chaos/{model}/3")


def test_when_the_model_fails_the_class_prior_answers_with_low_confidence(
    manual: LiveServer, accounts: dict[str, Account], model: str, feature_rows: list[dict[str, float]]
) -> None:
    with (
        httpx.Client(base_url=manual.url, timeout=60, headers=accounts["admin"].headers) as admin,
        httpx.Client(base_url=manual.url, timeout=60, headers=accounts["client"].headers) as http,
    ):
        assert admin.put(f"/models/{model}/resilience", json={"fallback": ["prior"]}).status_code == 200
        # A breaker another test opened would answer circuit_open: start from a closed one.
        assert admin.post(f"/models/{model}/resilience/reset", json={"version": "3"}).status_code == 200
        rule = admin.put(
            f"/api/v1/admin/chaos/{model}/3", json={"fail_rate": 1.0, "delay_ms": 0, "ttl_s": 300}
        )
        assert rule.status_code == 200, rule.text
        try:
            response = http.post(
                "/predict", json={"model": f"models:/{model}/3", "features": feature_rows[0]}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["served_by"], body["fallback_target"], body["fallback_reason"]) == (
                "fallback",
                "prior",
                "error",
            )
            assert body["confidence"] == "low"
            priors = manual.services.drift.class_priors(model, "3")
            assert body["prediction"] == max(priors, key=priors.get)  # the majority class of training
            assert body["probabilities"] == pytest.approx(priors)
        finally:
            admin.delete(f"/api/v1/admin/chaos/{model}/3")
            admin.put(f"/models/{model}/resilience", json={})


def test_alias_changes_need_an_operator_and_a_real_version(
    manual: LiveServer, accounts: dict[str, Account], model: str
) -> None:
    with httpx.Client(base_url=manual.url, timeout=60) as http:
        body = {"version": "1"}
        assert http.put(f"/models/{model}/aliases/champion", json=body).status_code == 401
        client = accounts["client"].headers
        assert http.put(f"/models/{model}/aliases/champion", json=body, headers=client).status_code == 403
        operator = accounts["operator"].headers
        missing = http.put(f"/models/{model}/aliases/champion", json={"version": "77"}, headers=operator)
        assert missing.status_code == 404
        bad = http.put(f"/models/{model}/aliases/champion", json={"version": "x"}, headers=operator)
        assert bad.status_code == 422


def test_grpc_answers_name_the_variant_in_trailing_metadata_and_parameters(
    running: str,
    caller: httpx.Client,
    model: str,
    feature_rows: list[dict[str, float]],
    live_server: LiveServer,
    accounts: dict[str, Account],
) -> None:
    import grpc

    from prediction_provider.api.grpc import open_inference_pb2 as pb

    row = feature_rows[5]
    request = pb.ModelInferRequest(model_name=model)
    for name, value in row.items():
        tensor = request.inputs.add(name=name, datatype="FP64", shape=[1])
        tensor.contents.fp64_contents.append(value)
    with grpc.insecure_channel(f"127.0.0.1:{live_server.services.grpc_port}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        for unit in ("grpc-a", "grpc-b", "grpc-c"):
            expected = predict(caller, model, row, unit).headers["X-PP-Variant"]
            metadata = (("x-api-key", accounts["client"].api_key), ("x-pp-unit", unit))
            reply, call = infer.with_call(request, metadata=metadata, timeout=30)
            trailing = dict(call.trailing_metadata() or ())
            assert trailing["x-pp-variant"] == expected
            assert trailing["x-pp-experiment"] == running
            assert reply.parameters["pp_variant"].string_param == expected
            assert reply.model_version == {"control": "1", "candidate": "2"}[expected]
