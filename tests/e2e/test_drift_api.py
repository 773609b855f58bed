"""Drift monitoring over HTTP against the live server: rows predicted through ``/predict/batch`` are
counted on the training reference the demo logged with the version; every score of ``GET
/models/{name}/drift`` is recomputed here from the counts it returns and the reference it serves;
an uploaded reference takes precedence and a shifted feature drifts; ``/monitoring/drift`` has the
serving-API seed's shape (``drift_score`` null without a reference); roles and errors."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
import pytest

from prediction_provider.features.market_data import load_sample_bars
from prediction_provider.features.pipeline import FEATURE_NAMES, compute_features
from prediction_provider.modelops.drift import statistics as st
from tests.conftest import Account, LiveServer

SOURCE = "eurusd-direction"


@pytest.fixture(scope="module")
def model(live_server: LiveServer) -> str:
    """``drift-direction-<id>``: version 1 is the demo's LightGBM, version 2 its forest."""
    client = live_server.services.registry.client
    name = f"drift-direction-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    aliases = client.get_registered_model(SOURCE).aliases
    for alias in ("lightgbm", "sklearn"):
        source = client.get_model_version(SOURCE, str(aliases[alias]))
        artifacts = client.get_logged_model(source.source.removeprefix("models:/")).artifact_location
        client.create_model_version(name, artifacts, run_id=source.run_id)
    client.set_registered_model_alias(name, "champion", "1")
    return name


@pytest.fixture(scope="module")
def unprofiled(live_server: LiveServer, model: str) -> str:
    """A registered model whose version has no run, so no training reference."""
    client = live_server.services.registry.client
    name = f"drift-unprofiled-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    source = client.get_model_version(model, "1")
    client.create_model_version(name, source.source)
    return name


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return compute_features(load_sample_bars("EURUSD")).dropna().iloc[-900:-600]


def http_as(server: LiveServer, account: Account | None) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60, headers=account.headers if account else {})


@pytest.fixture(scope="module")
def operator(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with http_as(live_server, accounts["operator"]) as http:
        yield http


@pytest.fixture(scope="module")
def client_http(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with http_as(live_server, accounts["client"]) as http:
        yield http


def predict(http: httpx.Client, model: str, frame: pd.DataFrame) -> dict:
    records = [{k: float(v) for k, v in row.items()} for _, row in frame.iterrows()]
    answer = http.post(
        "/predict/batch", json={"model": model, "features_list": records, "return_proba": True}
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def flush(server: LiveServer) -> None:
    server.services.drift.flush()


def test_scores_are_recomputable_from_the_returned_counts(
    live_server: LiveServer, operator: httpx.Client, client_http: httpx.Client, model: str, rows: pd.DataFrame
) -> None:
    answer = predict(client_http, model, rows)
    flush(live_server)
    report = operator.get(f"/models/{model}/drift").json()
    assert report["version"] == "1"  # the champion
    assert report["reference"]["source"] == "training"
    assert report["window"]["rows"] == len(rows)
    reference = operator.get(f"/models/{model}/drift/reference").json()["profile"]
    entries = {entry["name"]: entry for entry in reference["features"]}
    assert [f["name"] for f in report["features"]] == list(FEATURE_NAMES)
    for feature in report["features"]:
        entry = entries[feature["name"]]
        counts = feature["counts"]
        assert sum(counts["bins"]) == len(rows)
        current = st.proportions(counts["bins"])
        assert feature["score"] == pytest.approx(st.psi(entry["proportions"], current))
        assert feature["statistics"]["js"] == pytest.approx(st.js_distance(entry["proportions"], current))
        fine = np.asarray([*counts["ks"], counts["bins"][-1]])
        ks = st.binned_ks(entry["ks_cdf"], reference["rows"], fine)
        assert feature["statistics"]["ks"] == pytest.approx(ks.statistic)
        # The bins are the reference's deciles: the counts are these rows binned on its edges.
        values = rows[feature["name"]].to_numpy()
        direct = np.bincount(np.searchsorted(entry["edges"], values, side="right"), minlength=12)
        assert counts["bins"][:-1] == direct.tolist()
    classes = ("down", "flat", "up")
    probabilities = np.asarray([[row[c] for c in classes] for row in answer["probabilities"]])
    prediction = report["prediction"]
    assert sum(prediction["label_counts"].values()) == len(rows)
    assert prediction["label_counts"]["up"] == answer["predictions"].count("up")
    assert prediction["expected_accuracy"] == pytest.approx(probabilities.max(axis=1).mean(), abs=1e-6)
    assert report["status"] in ("ok", "warn", "drift")


def test_an_uploaded_reference_takes_precedence_and_a_shifted_feature_drifts(
    live_server: LiveServer, operator: httpx.Client, client_http: httpx.Client, model: str, rows: pd.DataFrame
) -> None:
    training = compute_features(load_sample_bars("EURUSD")).dropna().iloc[:2000]
    body = training.assign(label="up").to_csv(index=False).encode()
    uploaded = operator.post(
        f"/models/{model}/versions/2/drift/reference", content=body, headers={"Content-Type": "text/csv"}
    )
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["rows"] == 2000
    reference = operator.get(f"/models/{model}/drift/reference", params={"version": "2"}).json()
    assert reference["source"] == "upload"
    assert reference["profile"]["class_priors"]["up"] == 1.0
    shifted = rows.copy()
    shifted["rsi_14"] = shifted["rsi_14"] + 40.0
    predict(client_http, f"models:/{model}/2", shifted)
    flush(live_server)
    report = operator.get(f"/models/{model}/drift", params={"version": "2"}).json()
    assert report["reference"]["source"] == "upload"
    assert report["window"]["rows"] == len(rows)
    statuses = {f["name"]: f["status"] for f in report["features"]}
    assert statuses["rsi_14"] == "drift"
    history = operator.get(
        f"/models/{model}/drift/history", params={"version": "2", "feature": "rsi_14"}
    ).json()
    assert history["windows"][0]["status"] == "drift"
    assert history["windows"][0]["rows"] == len(rows)


def test_a_parquet_upload_is_read_too(operator: httpx.Client, model: str) -> None:
    frame = compute_features(load_sample_bars("EURUSD")).dropna().iloc[:500]
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    uploaded = operator.post(
        f"/models/{model}/versions/2/drift/reference",
        content=buffer.getvalue(),
        headers={"Content-Type": "application/vnd.apache.parquet"},
    )
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["rows"] == 500


def test_a_reset_forgets_the_counts(
    live_server: LiveServer, operator: httpx.Client, client_http: httpx.Client, model: str, rows: pd.DataFrame
) -> None:
    predict(client_http, model, rows.iloc[:50])
    flush(live_server)
    reset = operator.post(f"/models/{model}/drift/reset", params={"version": "1"})
    assert reset.status_code == 200, reset.text
    assert operator.get(f"/models/{model}/drift").json()["window"]["rows"] == 0
    predict(client_http, model, rows.iloc[:20])
    flush(live_server)
    report = operator.get(f"/models/{model}/drift").json()
    assert report["window"]["rows"] == 20
    assert report["status"] == "insufficient_data"


def test_monitoring_lists_every_model_and_null_without_a_reference(
    live_server: LiveServer, operator: httpx.Client, model: str, unprofiled: str
) -> None:
    answer = operator.get("/monitoring/drift")
    assert answer.status_code == 200, answer.text
    lines = {line["name"]: line for line in answer.json()["models"]}
    assert set(lines[model]) >= {"name", "version", "status", "drift_score", "drift_share", "window_rows"}
    assert lines[model]["version"] == "1"
    assert lines[unprofiled]["drift_score"] is None
    assert lines[unprofiled]["status"] == "no_reference"
    unprofiled_report = operator.get(f"/models/{unprofiled}/drift").json()
    assert unprofiled_report["drift_score"] is None
    assert unprofiled_report["reference"] is None


def test_gauges_are_exported(
    live_server: LiveServer, operator: httpx.Client, client_http: httpx.Client, model: str, rows: pd.DataFrame
) -> None:
    predict(client_http, model, rows)
    flush(live_server)
    text = operator.get("/metrics").text
    assert f'pp_drift_window_rows{{model="{model}",version="1"}}' in text
    assert f'pp_drift_score{{feature="rsi_14",method="psi",model="{model}",version="1"}}' in text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/models/{m}/drift"),
        ("GET", "/models/{m}/drift/history"),
        ("GET", "/models/{m}/drift/reference"),
        ("POST", "/models/{m}/drift/reset"),
        ("POST", "/models/{m}/versions/1/drift/reference"),
        ("GET", "/monitoring/drift"),
    ],
)
def test_anonymous_calls_are_401_and_clients_403(
    live_server: LiveServer, client_http: httpx.Client, model: str, method: str, path: str
) -> None:
    url = path.format(m=model)
    with http_as(live_server, None) as anonymous:
        assert anonymous.request(method, url, content=b"x,y\n1,2\n").status_code == 401
    assert client_http.request(method, url, content=b"x,y\n1,2\n").status_code == 403


def test_errors(operator: httpx.Client, model: str) -> None:
    assert operator.get("/models/no-such-drift-model/drift").status_code == 404
    assert operator.get(f"/models/{model}/drift", params={"version": "99"}).status_code == 404
    assert operator.get(f"/models/{model}/drift", params={"window": "soon"}).status_code == 422
    assert operator.get(f"/models/{model}/drift", params={"colour": "red"}).status_code == 422
    assert operator.get(f"/models/{model}/drift/history", params={"feature": "nope"}).status_code == 404
    bad = operator.post(f"/models/{model}/versions/1/drift/reference", content=b"\x00\x01garbage\xff")
    assert bad.status_code == 422
    missing = operator.post(
        f"/models/{model}/versions/1/drift/reference", content=b"ret_1,label\n0.1,up\n" * 20
    )
    assert missing.status_code == 422
    assert (
        missing.json()["error"]["code"] in ("invalid_input", "validation_error") or missing.status_code == 422
    )
    too_large = operator.post(
        f"/models/{model}/versions/1/drift/reference", content=b"ret_1\n" + b"0.123456789\n" * 200_000
    )
    assert too_large.status_code == 413
