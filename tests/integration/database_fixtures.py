"""Real databases for the tests: a SQLite file and a fresh PostgreSQL database on 127.0.0.1.

Under ``CI`` or ``PP_REQUIRE_SERVICES=1`` an unreachable PostgreSQL fails the
run; elsewhere its cases are skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

POSTGRES_ADMIN_URL = os.environ.get(
    "PP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def services_required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("PP_REQUIRE_SERVICES") == "1"


def _admin_connection():  # type: ignore[no-untyped-def]
    import psycopg

    plain = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(plain, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Callable[[], str]]:
    """Makes new, empty databases on the real server; all are dropped at the end of the session."""
    try:
        _admin_connection().close()
    except Exception as exc:
        if services_required():
            pytest.fail(f"PostgreSQL is required (CI or PP_REQUIRE_SERVICES=1) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    created: list[str] = []
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]

    def make() -> str:
        name = f"pp_test_{uuid.uuid4().hex[:12]}"
        with _admin_connection() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"{base}/{name}"

    try:
        yield make
    finally:
        with _admin_connection() as admin:
            for name in created:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url(postgres_databases: Callable[[], str]) -> str:
    """A fresh database for one test."""
    return postgres_databases()


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'provider.db'}"
