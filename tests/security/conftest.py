"""Fixtures of the attack suite: clients per role, on the shared live server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from prediction_provider.db.session import Database
from tests.conftest import Account, LiveServer


@pytest.fixture
def db(live_server: LiveServer) -> Database:
    database: Database = live_server.services.db
    return database


@pytest.fixture
def admin(live_server: LiveServer, accounts: dict[str, Account]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, headers=accounts["admin"].headers, timeout=60) as http:
        yield http
