"""Providers upload models in safe formats over HTTP and ``/predict`` serves them at once; pickles
are refused, other people's names are taken, and admins assign ownership of registered models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from prediction_provider.app import account_service
from prediction_provider.config import Settings
from tests.conftest import Account, LiveServer
from tests.upload_models import (
    FEATURES,
    as_matrix,
    feature_list,
    joblib_dump,
    lightgbm_booster,
    lightgbm_text,
    onnx_model_bytes,
    onnx_probabilities,
    pickled_sklearn,
    probe_row,
    xgboost_booster,
    xgboost_json,
)

UPLOAD = "/api/v1/provider/models"
OWNERS = "/api/v1/admin/models/owners"


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    error: dict[str, object] = body["error"]
    return error


@pytest.fixture(scope="module")
def second_provider(settings: Settings) -> Account:
    service = account_service(settings)
    username = f"provider-{uuid.uuid4().hex[:8]}"
    user = service.create_user(
        username, f"{username}@example.com", "provider-password-2", "provider", active=True
    )
    key = service.regenerate_api_key(user["id"])["api_key"]
    service.db.dispose()
    return Account(username, "provider-password-2", key, user["id"])


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=120) as client:
        yield client


def upload(
    http: httpx.Client, account: Account, name: str, fmt: str, content: bytes, **fields: str
) -> httpx.Response:
    return http.post(
        UPLOAD,
        headers=account.headers,
        data={"name": name, "format": fmt, **fields},
        files={"file": ("model.bin", content, "application/octet-stream")},
    )


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_lightgbm_text_model_is_served_by_predict_as_the_booster_predicts(
    http: httpx.Client, accounts: dict[str, Account]
) -> None:
    provider, client = accounts["provider"], accounts["client"]
    name = fresh("up-lgb")
    response = upload(http, provider, name, "lightgbm", lightgbm_text())
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["model"], body["version"], body["uri"], body["format"]) == (
        name, "1", f"models:/{name}/1", "lightgbm",
    )  # fmt: skip
    assert body["features"] == list(FEATURES)

    row = probe_row()
    answer = http.post("/predict", headers=client.headers, json={"model": name, "features": row})
    assert answer.status_code == 200, answer.text
    expected = float(lightgbm_booster().predict(as_matrix(row))[0])
    assert answer.json()["probabilities"]["1"] == pytest.approx(expected, rel=1e-9)
    assert answer.json()["model"]["uri"] == f"models:/{name}/1"

    mine = http.get(UPLOAD, headers=provider.headers, params={"limit": 500}).json()
    assert name in {item["model_name"] for item in mine["items"]}
    assert mine["total"] >= 1


def test_an_xgboost_json_model_with_its_features_in_the_form_is_served(
    http: httpx.Client, accounts: dict[str, Account]
) -> None:
    provider = accounts["provider"]
    name = fresh("up-xgb")
    missing = upload(http, provider, name, "xgboost_json", xgboost_json())
    assert missing.status_code == 422
    assert error_of(missing)["code"] == "invalid_model_file"

    response = upload(http, provider, name, "xgboost_json", xgboost_json(), features=feature_list())
    assert response.status_code == 201, response.text
    row = probe_row(5)
    answer = http.post("/predict", headers=accounts["client"].headers, json={"model": name, "features": row})
    assert answer.status_code == 200, answer.text
    expected = float(xgboost_booster().inplace_predict(as_matrix(row))[0])
    assert answer.json()["prediction"] == pytest.approx(expected, rel=1e-6)


def test_an_onnx_model_is_served_with_the_class_labels_it_was_given(
    http: httpx.Client, accounts: dict[str, Account]
) -> None:
    name = fresh("up-onnx")
    response = upload(
        http,
        accounts["provider"],
        name,
        "onnx",
        onnx_model_bytes(),
        features=",".join(FEATURES),
        classes="down,up",
    )
    assert response.status_code == 201, response.text
    row = probe_row(7)
    answer = http.post("/predict", headers=accounts["client"].headers, json={"model": name, "features": row})
    assert answer.status_code == 200, answer.text
    expected = onnx_probabilities(row)
    got = answer.json()["probabilities"]
    np.testing.assert_allclose([got["down"], got["up"]], expected, rtol=1e-6)
    assert answer.json()["prediction"] == ("up" if expected[1] > 0.5 else "down")


@pytest.mark.parametrize("fmt", ["lightgbm", "onnx", "xgboost_json", "sklearn", "pickle"])
@pytest.mark.parametrize("content", [pickled_sklearn, joblib_dump], ids=["pickle", "joblib"])
def test_a_pickle_is_refused_whatever_format_it_claims_and_nothing_is_registered(
    http: httpx.Client, accounts: dict[str, Account], fmt: str, content: object
) -> None:
    assert callable(content)
    provider = accounts["provider"]
    name = fresh("up-pickle")
    response = upload(http, provider, name, fmt, content(), features=feature_list())
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "unsafe_model_format"
    versions = http.get(f"/models/{name}/versions", headers=provider.headers)
    assert versions.status_code == 404
    mine = http.get(UPLOAD, headers=provider.headers, params={"limit": 500}).json()
    assert name not in {item["model_name"] for item in mine["items"]}


def test_a_client_may_not_upload(http: httpx.Client, accounts: dict[str, Account]) -> None:
    name = fresh("up-client")
    response = upload(http, accounts["client"], name, "lightgbm", lightgbm_text())
    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"
    assert http.get(f"/models/{name}/versions", headers=accounts["client"].headers).status_code == 404
    assert http.get(UPLOAD, headers=accounts["client"].headers).status_code == 403


def test_a_second_provider_cannot_upload_under_a_name_already_owned(
    http: httpx.Client, accounts: dict[str, Account], second_provider: Account
) -> None:
    name = fresh("up-taken")
    assert upload(http, accounts["provider"], name, "lightgbm", lightgbm_text()).status_code == 201
    taken = upload(http, second_provider, name, "lightgbm", lightgbm_text())
    assert taken.status_code == 409, taken.text
    assert error_of(taken)["code"] == "model_name_taken"
    # Nor a demo model nobody owns.
    demo = upload(http, second_provider, "goog-direction", "lightgbm", lightgbm_text())
    assert demo.status_code == 409
    again = upload(http, accounts["provider"], name, "lightgbm", lightgbm_text())
    assert again.status_code == 201
    assert again.json()["version"] == "2"


def test_an_upload_without_its_fields_is_refused_in_the_one_error_shape(
    http: httpx.Client, accounts: dict[str, Account]
) -> None:
    response = http.post(UPLOAD, headers=accounts["provider"].headers, data={"format": "onnx"})
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert {d["field"] for d in error["details"]} == {"name", "file"}  # type: ignore[union-attr]


def test_an_admin_assigns_a_demo_model_to_a_provider(
    http: httpx.Client, accounts: dict[str, Account], second_provider: Account
) -> None:
    admin, provider = accounts["admin"], accounts["provider"]
    response = http.put(
        "/api/v1/admin/models/goog-direction/owner",
        headers=admin.headers,
        json={"username": provider.username},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "goog-direction"
    assert body["provider"] == provider.username
    assert body["assigned_at"]
    mine = http.get(UPLOAD, headers=provider.headers, params={"limit": 500}).json()
    assert "goog-direction" in {item["model_name"] for item in mine["items"]}
    owners = http.get(OWNERS, headers=admin.headers, params={"limit": 500}).json()
    assert {"model_name": "goog-direction", "provider": provider.username}.items() <= next(
        item for item in owners["items"] if item["model_name"] == "goog-direction"
    ).items()
    # The owner may now add versions under the demo model's name; another provider still may not.
    assert upload(http, second_provider, "goog-direction", "lightgbm", lightgbm_text()).status_code == 409


def test_assigning_an_unknown_model_or_to_a_client_or_as_a_provider_is_refused(
    http: httpx.Client, accounts: dict[str, Account]
) -> None:
    admin = accounts["admin"]
    unknown = http.put(
        "/api/v1/admin/models/no-such-model/owner", headers=admin.headers, json={"username": "test-provider"}
    )
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "model_not_found"
    to_client = http.put(
        "/api/v1/admin/models/goog-direction/owner", headers=admin.headers, json={"username": "test-client"}
    )
    assert to_client.status_code == 422
    nobody = http.put(
        "/api/v1/admin/models/goog-direction/owner", headers=admin.headers, json={"username": "nobody-at-all"}
    )
    assert nobody.status_code == 404
    as_provider = http.put(
        "/api/v1/admin/models/goog-direction/owner",
        headers=accounts["provider"].headers,
        json={"username": "test-provider"},
    )
    assert as_provider.status_code == 403
    assert http.get(OWNERS, headers=accounts["provider"].headers).status_code == 403
