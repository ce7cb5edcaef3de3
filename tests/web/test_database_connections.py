"""Pooled PostgreSQL connections the server ended (a restart, pg_terminate_backend, an idle timeout) are replaced
before a request uses them, without a round trip per checkout while they are alive."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text

from portal.extensions import db


def backend_pid() -> int:
    return db.session.scalar(text("SELECT pg_backend_pid()"))


def one_pooled_connection() -> int:
    """Empty the pool, then leave one connection in it; its server process id."""
    db.engine.dispose()
    pid = backend_pid()
    db.session.close()
    return pid


@pytest.fixture
def postgresql(app):
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("PostgreSQL only: an embedded SQLite database has no server to end a connection")
        administrator = create_engine(db.engine.url, isolation_level="AUTOCOMMIT")
    yield administrator
    administrator.dispose()


def test_a_connection_the_server_ended_is_replaced_before_use(app, postgresql):
    with app.app_context():
        first = one_pooled_connection()
        with postgresql.connect() as connection:
            assert connection.scalar(text(f"SELECT pg_terminate_backend({first})"))
        time.sleep(0.2)  # the server's goodbye reaches the pooled socket
        assert backend_pid() != first  # no error: the ended connection was found at checkout and replaced


def test_a_live_connection_is_reused_as_it_is(app, postgresql):
    with app.app_context():
        first = one_pooled_connection()
        assert backend_pid() == first
