"""The unauthenticated health probes name models and versions, never files or artifact paths.

Operators and admins who sign in still see the cache's URIs and the warm-up errors, which name
the files; everyone else (probes, clients, a stale key) gets names and versions only.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from prediction_provider.config import Settings
from prediction_provider.serving.references import parse_model_reference
from tests.conftest import MODEL, Account, LiveServer

SAFE_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[0-9]+|@[A-Za-z0-9_-]+)?$")
HIDDEN_DIR = "hidden-model-dir"


@pytest.fixture(scope="module")
def file_model(live_server: LiveServer, settings: Settings) -> Iterator[str]:
    """An ONNX file under a trusted root, loaded by its file:// URI, and a warm-up that failed on a
    file path: the two ways a path reaches /health/ready."""
    services = live_server.services
    onnx_dir = services.registry.resolve(parse_model_reference(f"models:/{MODEL}@onnx")).location
    target = settings.data_dir / "models" / HIDDEN_DIR / "direction.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(onnx_dir) / "model.onnx", target)
    services.cache.get(target.as_uri())
    missing = (settings.data_dir / "models" / HIDDEN_DIR / "gone.onnx").as_uri()
    services.warm_errors[missing] = f"no model at {missing}"
    try:
        yield target.as_uri()
    finally:
        services.warm_errors.pop(missing, None)
        services.cache.evict(target.resolve().as_uri())


def ready(live_server: LiveServer, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"{live_server.url}/health/ready", headers=headers or {}, timeout=60)


def assert_no_paths(response: httpx.Response, settings: Settings) -> None:
    text = response.text
    assert "file:" not in text
    assert HIDDEN_DIR not in text
    assert str(settings.data_dir) not in text
    details = response.json()["details"]
    for label in [*details["cached_models"], *details["warm_failures"]]:
        assert SAFE_LABEL.match(label), label


def test_a_probe_without_credentials_sees_names_and_versions_only(
    live_server: LiveServer, settings: Settings, file_model: str
) -> None:
    response = ready(live_server)
    assert response.status_code == 503  # the failed warm-up
    assert_no_paths(response, settings)
    details = response.json()["details"]
    assert "direction" in details["cached_models"]  # the file model, by its stem
    champion = live_server.services.cache.resolve(MODEL)
    assert f"{MODEL}/{champion.version}" in details["cached_models"]
    assert list(details["warm_failures"]) == ["gone"]


@pytest.mark.parametrize("role", ["client", "provider", "evaluator"])
def test_roles_without_operator_rights_see_no_paths(
    live_server: LiveServer, settings: Settings, accounts: dict[str, Account], file_model: str, role: str
) -> None:
    assert_no_paths(ready(live_server, accounts[role].headers), settings)


def test_a_wrong_key_gets_the_public_view_not_a_failed_probe(
    live_server: LiveServer, settings: Settings, file_model: str
) -> None:
    response = ready(live_server, {"X-API-KEY": "pp_not-a-real-key"})
    assert response.status_code == 503  # the warm-up failure, not 401
    assert_no_paths(response, settings)


@pytest.mark.parametrize("role", ["operator", "admin"])
def test_operators_and_admins_still_see_uris_and_errors(
    live_server: LiveServer, accounts: dict[str, Account], file_model: str, role: str
) -> None:
    details = ready(live_server, accounts[role].headers).json()["details"]
    resolved_uri = Path(file_model.removeprefix("file://")).resolve().as_uri()
    assert resolved_uri in details["cached_models"]
    assert any(uri.startswith(f"models:/{MODEL}/") for uri in details["cached_models"])
    ((reference, message),) = details["warm_failures"].items()
    assert reference.endswith("gone.onnx")
    assert "gone.onnx" in message


def test_the_other_health_routes_show_no_paths(
    live_server: LiveServer, settings: Settings, file_model: str
) -> None:
    for path in ("/health", "/health/live", "/v2/health/live", "/v2/health/ready"):
        text = httpx.get(f"{live_server.url}{path}", timeout=60).text
        assert "file:" not in text, path
        assert HIDDEN_DIR not in text, path
        assert str(settings.data_dir) not in text, path
