"""deploy/prometheus.yml against what it scrapes: a wrong path or target fails no request, it
just collects nothing, so the file is checked against the app and the compose stack here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from prediction_provider.config import Settings

REPOSITORY = Path(__file__).resolve().parents[2]


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPOSITORY / name).read_text())
    return loaded


def scrape_job() -> dict[str, Any]:
    jobs = [
        job
        for job in load("deploy/prometheus.yml")["scrape_configs"]
        if job["job_name"] == "prediction-provider"
    ]
    assert len(jobs) == 1
    return jobs[0]


def test_the_scrape_path_is_the_apps_metrics_route() -> None:
    from prediction_provider.app import create_app

    app = create_app(Settings(jwt_secret="deploy-test-" + "x" * 40, grpc_enabled=False))
    paths = app.openapi()["paths"]
    assert "get" in paths[scrape_job()["metrics_path"]]


def test_prometheus_signs_in_with_a_bearer_credential_from_a_file() -> None:
    authorization = scrape_job()["authorization"]
    assert authorization["type"] == "Bearer"
    assert authorization["credentials_file"] == "/etc/prometheus/secrets/pp_api_key"
    assert "credentials" not in authorization  # never the key itself in the config
    # The setup service writes the file (tests/unit/test_compose_settings.py); Prometheus only reads it.
    mounts = load("docker-compose.yml")["services"]["prometheus"]["volumes"]
    assert "prometheus_key:/etc/prometheus/secrets:ro" in mounts


def test_the_target_is_the_compose_api_service_on_the_servers_port() -> None:
    job = scrape_job()
    assert job["scrape_interval"] == "15s"
    [target] = [target for group in job["static_configs"] for target in group["targets"]]
    host, port = target.split(":")
    compose = load("docker-compose.yml")
    assert host in compose["services"]
    assert int(port) == Settings.model_fields["port"].default
    mounts = compose["services"]["prometheus"]["volumes"]
    assert any(mount.startswith("./deploy/prometheus.yml:/etc/prometheus/prometheus.yml") for mount in mounts)
