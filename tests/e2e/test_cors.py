"""Browser origins: none by default (see test_accounts_api), the configured ones when set."""

from __future__ import annotations

import httpx

from prediction_provider.config import Settings
from tests.conftest import LiveServer


def test_configured_origins_are_allowed_and_others_are_not(settings: Settings) -> None:
    allowed = "https://dashboard.example"
    server = LiveServer(settings.model_copy(update={"cors_origins": [allowed]}))
    with server, httpx.Client(base_url=server.url) as http:
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-API-KEY",
        }
        ok = http.options("/predict", headers={"Origin": allowed, **preflight})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == allowed
        other = http.options("/predict", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
