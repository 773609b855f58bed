"""The prediction endpoints over real HTTP, against real models trained on real bars."""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest

from prediction_provider.features.pipeline import DIRECTION_CLASSES, FEATURE_NAMES
from tests.conftest import MODEL, LiveServer

FRAMEWORK_ALIASES = ("lightgbm", "xgboost", "sklearn", "onnx")


def post_json(client: httpx.Client, path: str, body: object) -> httpx.Response:
    """Send with the stdlib encoder, which writes NaN/Infinity as Python clients do."""
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    return body["error"]


@pytest.mark.parametrize("alias", FRAMEWORK_ALIASES)
def test_predict_matches_the_model_in_process(
    client: httpx.Client, live_server: LiveServer, feature_rows: list[dict[str, float]], alias: str
) -> None:
    reference = f"models:/{MODEL}@{alias}"
    response = client.post("/predict", json={"model": reference, "features": feature_rows[-1]})
    assert response.status_code == 200, response.text
    body = response.json()
    cached = live_server.services.cache.get(reference)
    row = np.array([[feature_rows[-1][name] for name in cached.model.signature.feature_names]])
    expected = cached.model.predict(row)
    assert body["prediction"] == expected.predictions[0]
    assert body["prediction"] in DIRECTION_CLASSES
    assert set(body["probabilities"]) == set(DIRECTION_CLASSES)
    assert math.isclose(sum(body["probabilities"].values()), 1.0, rel_tol=1e-5)
    assert body["probability"] == pytest.approx(max(body["probabilities"].values()))
    assert body["confidence"] in ("high", "medium", "low")
    assert body["model"]["name"] == MODEL
    assert body["model"]["uri"] == f"models:/{MODEL}/{body['model']['version']}"
    assert body["latency_ms"] >= 0


def test_bare_name_serves_the_champion(client: httpx.Client, feature_rows: list[dict[str, float]]) -> None:
    champion = client.get(f"/models/{MODEL}/info").json()
    assert "champion" in champion["aliases"]
    body = client.post("/predict", json={"model": MODEL, "features": feature_rows[0]}).json()
    assert body["model"]["version"] == champion["version"]


def test_latest_serves_the_newest_version_not_the_champion(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    newest = client.get(f"/models/{MODEL}/versions").json()["versions"][0]["version"]
    body = client.post(
        "/predict", json={"model": f"models:/{MODEL}/latest", "features": feature_rows[0]}
    ).json()
    assert body["model"]["version"] == newest == "4"
    v2 = client.get(f"/v2/models/{MODEL}/versions/latest").json()
    assert v2["parameters"]["version"] == newest


def test_return_proba_false_omits_the_distribution(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    body = client.post(
        "/predict", json={"model": MODEL, "features": feature_rows[0], "return_proba": False}
    ).json()
    assert body["probabilities"] is None
    assert body["probability"] is not None


def test_batch_records_columns_and_single_rows_agree(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    rows = feature_rows[:50]
    model = f"models:/{MODEL}@lightgbm"
    records = client.post(
        "/predict/batch", json={"model": model, "features_list": rows, "return_proba": True}
    )
    columns = {name: [row[name] for row in rows] for name in FEATURE_NAMES}
    columnar = client.post("/predict/batch", json={"model": model, "features_list": columns})
    assert records.status_code == columnar.status_code == 200
    assert records.json()["count"] == 50
    assert records.json()["predictions"] == columnar.json()["predictions"]
    assert columnar.json()["probabilities"] == records.json()["probabilities"]  # return_proba defaults true
    singles = [
        client.post("/predict", json={"model": model, "features": row}).json()["prediction"]
        for row in rows[:5]
    ]
    assert records.json()["predictions"][:5] == singles
    first = records.json()["probabilities"][0]
    assert math.isclose(sum(first.values()), 1.0, rel_tol=1e-5)


def test_unknown_model_and_version_answer_404(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    for reference in (
        "no-such-model",
        "models:/no-such-model/1",
        f"models:/{MODEL}/999",
        f"models:/{MODEL}@nope",
    ):
        response = client.post("/predict", json={"model": reference, "features": feature_rows[0]})
        assert response.status_code == 404, reference
        assert error_of(response)["code"] == "model_not_found"


def test_unknown_run_answers_404(client: httpx.Client, feature_rows: list[dict[str, float]]) -> None:
    response = client.post(
        "/predict", json={"model": "runs:/0123456789abcdef/model", "features": feature_rows[0]}
    )
    assert response.status_code == 404


def test_file_outside_trusted_roots_answers_403(
    client: httpx.Client, feature_rows: list[dict[str, float]]
) -> None:
    response = client.post("/predict", json={"model": "file:///etc/passwd", "features": feature_rows[0]})
    assert response.status_code == 403
    assert error_of(response)["code"] == "untrusted_model_path"


def test_every_offending_feature_is_named(client: httpx.Client, feature_rows: list[dict[str, float]]) -> None:
    features = dict(feature_rows[0])
    del features["ret_1"]
    features["not_a_feature"] = 1.0
    features["rsi_14"] = "high"
    features["macd"] = float("nan")
    features["atr_14"] = float("inf")
    features["body"] = None
    features["vol_10"] = True
    response = post_json(client, "/predict", {"model": MODEL, "features": features})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_features"
    named = {item["field"] for item in error["details"]["errors"]}
    assert named == {
        "features.ret_1",
        "features.not_a_feature",
        "features.rsi_14",
        "features.macd",
        "features.atr_14",
        "features.body",
        "features.vol_10",
    }


def test_batch_errors_name_the_row(client: httpx.Client, feature_rows: list[dict[str, float]]) -> None:
    rows = [dict(row) for row in feature_rows[:3]]
    rows[2]["ret_5"] = float("-inf")
    response = post_json(client, "/predict/batch", {"model": MODEL, "features_list": rows})
    assert response.status_code == 422
    fields = [item["field"] for item in error_of(response)["details"]["errors"]]
    assert fields == ["features_list[2].ret_5"]


def test_ragged_columns_are_refused(client: httpx.Client, feature_rows: list[dict[str, float]]) -> None:
    columns = {name: [feature_rows[0][name]] * 3 for name in FEATURE_NAMES}
    columns["ret_1"] = [0.1]
    response = client.post("/predict/batch", json={"model": MODEL, "features_list": columns})
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_features"


def test_malformed_bodies_get_4xx_with_the_error_shape(client: httpx.Client) -> None:
    cases = [
        (b"{not json", 400),
        (b'{"features": {}}', 422),
        (b'{"model": "x", "features": [1, 2]}', 422),
        (b'{"model": "x", "features": {}, "unexpected": 1}', 422),
        (b"[]", 422),
    ]
    for content, status in cases:
        response = client.post("/predict", content=content, headers={"Content-Type": "application/json"})
        assert response.status_code == status, content
        error_of(response)
    form = client.post(
        "/predict", content=b"model=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 415
    assert error_of(form)["code"] == "unsupported_media_type"


def test_batch_over_the_row_limit_answers_413(
    client: httpx.Client, live_server: LiveServer, feature_rows: list[dict[str, float]]
) -> None:
    limit = live_server.services.settings.max_batch_rows
    rows = [feature_rows[0]] * (limit + 1)
    # Short keys keep this under the body limit, so the row limit is what refuses it.
    compact = [{k: round(v, 4) for k, v in row.items()} for row in rows]
    response = client.post("/predict/batch", json={"model": MODEL, "features_list": compact})
    assert response.status_code == 413, response.text
    assert error_of(response)["code"] == "batch_too_large"


def test_body_over_the_byte_limit_answers_413(client: httpx.Client, live_server: LiveServer) -> None:
    limit = live_server.services.settings.max_body_bytes
    response = client.post(
        "/predict", content=b"x" * (limit + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"

    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    streamed = client.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert error_of(streamed)["code"] == "payload_too_large"


def test_bad_requests_leave_the_cached_model_intact(
    client: httpx.Client, live_server: LiveServer, feature_rows: list[dict[str, float]]
) -> None:
    cache = live_server.services.cache
    good = client.post("/predict", json={"model": MODEL, "features": feature_rows[0]}).json()
    before = cache.get(MODEL)
    loads, evictions = cache.stats.loads, cache.stats.evictions
    post_json(client, "/predict", {"model": MODEL, "features": {"ret_1": float("nan")}})
    post_json(client, "/predict/batch", {"model": MODEL, "features_list": [{"x": "y"}]})
    client.post("/predict", content=b"{", headers={"Content-Type": "application/json"})
    again = client.post("/predict", json={"model": MODEL, "features": feature_rows[0]}).json()
    assert cache.get(MODEL) is before
    assert (cache.stats.loads, cache.stats.evictions) == (loads, evictions)
    assert again["probabilities"] == good["probabilities"]


def test_unknown_route_and_method_share_the_error_shape(client: httpx.Client) -> None:
    missing = client.get("/no/such/route")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    wrong = client.get("/predict")
    assert wrong.status_code == 405
    assert error_of(wrong)["code"] == "method_not_allowed"


def test_concurrent_single_rows_get_their_own_answers(
    live_server: LiveServer, client_headers: dict[str, str], feature_rows: list[dict[str, float]]
) -> None:
    """Adaptive batching merges concurrent rows; each request must still get its own row's answer."""
    import asyncio

    model = f"models:/{MODEL}@lightgbm"

    async def fire() -> list[dict]:
        async with httpx.AsyncClient(base_url=live_server.url, headers=client_headers) as http:
            responses = await asyncio.gather(
                *(http.post("/predict", json={"model": model, "features": row}) for row in feature_rows[:64])
            )
        return [r.json() for r in responses]

    answers = asyncio.run(fire())
    cached = live_server.services.cache.get(model)
    matrix = np.array([[row[n] for n in cached.model.signature.feature_names] for row in feature_rows[:64]])
    expected = cached.model.predict(matrix)
    assert [a["prediction"] for a in answers] == expected.predictions
    for answer, probabilities in zip(answers, expected.probabilities, strict=True):
        assert list(answer["probabilities"].values()) == pytest.approx(probabilities.tolist())
    assert cached.batcher is not None
    assert cached.batcher.stats.rows >= 64
