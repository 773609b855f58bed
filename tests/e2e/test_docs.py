"""The docs pages over real HTTP: served from the package's own files, and truthful about credentials."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import LiveServer

ASSET = re.compile(r'(?:src|href)="([^"]+)"')


def test_the_docs_pages_load_only_files_the_server_serves(anonymous: httpx.Client) -> None:
    for page in ("/docs", "/redoc"):
        html = anonymous.get(page).text
        assets = ASSET.findall(html)
        assert assets, page
        for asset in assets:
            assert asset.startswith("/docs/static/"), asset  # no CDN, no other host
            response = anonymous.get(asset)
            assert response.status_code == 200, asset
            assert response.headers["Cache-Control"] == "no-cache"  # kept and revalidated by browsers
            assert len(response.content) > 500, asset
        assert "https://" not in html
    assert anonymous.get("/docs/oauth2-redirect").status_code == 200


def documented_operations(spec: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any]]]]:
    return [
        (method, path, operation["security"])
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "delete", "patch"}
    ]


def test_the_schema_tells_which_operations_need_credentials(live_server: LiveServer) -> None:
    """Called without credentials, exactly the operations documented as protected answer 401."""
    with httpx.Client(base_url=live_server.url, timeout=60) as http:
        spec = http.get("/openapi.json").json()
        wrong = []
        for method, path, security in documented_operations(spec):
            url = re.sub(r"\{[^}]+\}", "1", path)
            body = {} if method in {"post", "put", "patch"} else None
            status = http.request(method, url, json=body).status_code
            if (status == 401) != bool(security):
                wrong.append(f"{method.upper()} {path}: {status}, documented security {security}")
    assert not wrong, "\n".join(wrong)
