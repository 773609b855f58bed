"""Alembic migrations: a round trip on the real PostgreSQL, and the models agree with them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect

from prediction_provider.db import migrate
from prediction_provider.db.base import Base
from tests.integration.database_fixtures import sqlite_url


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_on_postgresql(postgres_url: str) -> None:
    migrate.upgrade(postgres_url)
    assert migrate.current(postgres_url) == "0011"
    assert tables(postgres_url) == set(Base.metadata.tables)
    migrate.downgrade(postgres_url, "base")
    assert migrate.current(postgres_url) is None
    assert tables(postgres_url) == set()
    migrate.upgrade(postgres_url)
    assert tables(postgres_url) == set(Base.metadata.tables)


def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    migrate.upgrade(url)
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        for name, table in Base.metadata.tables.items():
            assert {c["name"] for c in inspector.get_columns(name)} == {c.name for c in table.columns}
    finally:
        engine.dispose()


def autogenerate_diff(url: str) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_autogenerate_finds_nothing_the_migrations_lack(tmp_path: Path, postgres_url: str) -> None:
    """Tables, columns, types, indexes and constraints: a model change needs a migration."""
    for url in (sqlite_url(tmp_path), postgres_url):
        migrate.upgrade(url)
        assert autogenerate_diff(url) == [], url
