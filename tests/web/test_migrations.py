"""Tests for migrations/: one Alembic head; upgrade from empty, downgrade to base and upgrade again, per database."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect, make_url, text
from sqlalchemy.exc import DBAPIError

from portal import create_app
from portal.audit.service import Actor, record, verify_chain
from portal.extensions import db
from portal.wireguard.models import UNIQUE_NAME_INDEX

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
# conftest has set the database URL (postgresql+psycopg:// or sqlite:///) by the time this module is imported.
SESSION_DATABASE_URL = os.environ["PORTAL_DATABASE_URL"]
POSTGRES = SESSION_DATABASE_URL.startswith("postgresql")


def test_there_is_one_alembic_head():
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


@contextmanager
def fresh_sqlite(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path / 'migrated.db'}"


@contextmanager
def fresh_postgres(tmp_path: Path) -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server, dropped afterwards."""
    name = f"portal_migration_{os.getpid()}"
    server = create_engine(SESSION_DATABASE_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
            connection.execute(text(f"CREATE DATABASE {name}"))
        yield make_url(SESSION_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        server.dispose()


def table_names() -> set[str]:
    return set(inspect(db.engine).get_table_names())


INDEX_NAMES = {"sqlite": "SELECT name FROM sqlite_master WHERE type = 'index'",
               "postgresql": "SELECT indexname FROM pg_indexes"}


def not_an_expression_index(item, name, type_, reflected, compare_to) -> bool:
    return name != UNIQUE_NAME_INDEX


def assert_schema_is_current() -> None:
    """Every model's table exists as the models describe it, and the audit chain starts at its genesis."""
    assert table_names() == set(db.metadata.tables) | {"alembic_version"}
    with db.engine.connect() as connection:
        with warnings.catch_warnings():  # SQLite cannot reflect the expression index on router names
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based index")
            context = MigrationContext.configure(connection, opts={"include_object": not_an_expression_index})
            assert compare_metadata(context, db.metadata) == []
        index_names = connection.execute(text(INDEX_NAMES[connection.dialect.name])).scalars()
        assert UNIQUE_NAME_INDEX in set(index_names)
        head = connection.execute(text("SELECT id, last_hash FROM audit_head")).all()
    assert [tuple(row) for row in head] == [(1, "0" * 64)]


def assert_audit_log_works() -> None:
    record("migration.tested", Actor.system("test"), tenant_id=None, details={"step": "upgrade"})
    db.session.commit()
    assert verify_chain().checked == 1
    with pytest.raises(DBAPIError, match="append-only"):
        db.session.execute(text("DELETE FROM audit_events"))
    db.session.rollback()


@pytest.mark.parametrize("fresh_database", [
    fresh_sqlite,
    *([fresh_postgres] if POSTGRES else []),  # PostgreSQL only when the test run uses it
], ids=lambda fresh: fresh.__name__.removeprefix("fresh_"))
def test_upgrade_from_empty_downgrade_to_base_and_upgrade_again(tmp_path, fresh_database):
    with fresh_database(tmp_path) as url:
        app = create_app({"DATABASE_URL": url})
        try:
            with app.app_context():
                assert table_names() == set()
                upgrade()
                assert_schema_is_current()
                assert_audit_log_works()

                db.session.remove()
                downgrade(revision="base")
                assert table_names() == {"alembic_version"}

                upgrade()
                assert_schema_is_current()
                assert_audit_log_works()
                db.session.remove()
        finally:
            with app.app_context():
                db.engine.dispose()
