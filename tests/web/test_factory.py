"""Tests for create_app and portal/config.py: typed settings, refusing to start without secrets, dev secrets."""

from __future__ import annotations

import json
import logging
import stat
from contextlib import contextmanager

import pytest
from cryptography.fernet import Fernet
from flask import request

from portal import create_app
from portal.config import ConfigError, build_config
from portal.extensions import db
from portal.redis_client import REDIS_EXTENSION
from tests import vectors

PRODUCTION_ENVIRON = {
    "PORTAL_ENV": "production",
    "PORTAL_SECRET_KEY": vectors.SECRET_KEY,
    "PORTAL_ENCRYPTION_KEYS": vectors.ENCRYPTION_KEY,
    "PORTAL_DATABASE_URL": "postgresql+psycopg://portal@db.example/portal",
}


@contextmanager
def built_app(overrides: dict):
    """create_app(overrides), its engine closed afterwards."""
    app = create_app(overrides)
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()


def test_testing_config_comes_from_the_environment_and_overrides(app):
    with built_app({"PAGE_SIZE": 7, "WTF_CSRF_ENABLED": False}) as testing:
        config = testing.config
        assert config["TESTING"] is True
        assert config["PORTAL_ENV"] == "testing"
        assert config["SECRET_KEY"] == vectors.SECRET_KEY
        assert config["PORTAL_ENCRYPTION_KEYS"] == [vectors.ENCRYPTION_KEY]
        assert config["PORTAL_IPAM_TENANT_PREFIX"] == 24  # typed: an int from "24"
        assert config["PORTAL_JOB_RETRY_INTERVALS"] == [0, 0]
        assert config["PORTAL_PAGE_SIZE"] == 7
        assert config["WTF_CSRF_ENABLED"] is False
        assert config["SQLALCHEMY_DATABASE_URI"] == app.config["SQLALCHEMY_DATABASE_URI"]


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ENCRYPTION_KEYS"])
def test_production_refuses_to_start_without_its_secrets(missing):
    with pytest.raises(ConfigError, match=f"PORTAL_{missing}"):
        create_app({"ENV": "production", missing: None})


def test_production_names_every_missing_secret(tmp_path):
    with pytest.raises(ConfigError, match="PORTAL_SECRET_KEY, PORTAL_ENCRYPTION_KEYS"):
        build_config({"PORTAL_ENV": "production"}, tmp_path, {})
    assert not (tmp_path / "dev-secrets.json").exists()


@pytest.mark.parametrize("keys", ["not-a-fernet-key", f"{vectors.ENCRYPTION_KEY},c2hvcnQ="])
def test_a_bad_encryption_key_is_refused(tmp_path, keys):
    entry = len(keys.split(","))
    with pytest.raises(ConfigError, match=f"PORTAL_ENCRYPTION_KEYS entry {entry} is not a Fernet key"):
        build_config({**PRODUCTION_ENVIRON, "PORTAL_ENCRYPTION_KEYS": keys}, tmp_path, {})


@pytest.mark.parametrize(("name", "raw"), [("PORTAL_JOB_TIMEOUT", "soon"), ("PORTAL_LOCK_WAIT", "x"),
                                           ("PORTAL_JOB_RETRY_INTERVALS", "5,later")])
def test_a_malformed_setting_is_named(tmp_path, name, raw):
    with pytest.raises(ConfigError, match=name):
        build_config({**PRODUCTION_ENVIRON, name: raw}, tmp_path, {})


def test_an_unknown_environment_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="PORTAL_ENV"):
        build_config({**PRODUCTION_ENVIRON, "PORTAL_ENV": "prod"}, tmp_path, {})


@pytest.mark.parametrize(("overrides", "named"), [
    ({"LOCK_TTL": 2}, "PORTAL_LOCK_TTL"),
    ({"JOB_TIMEOUT": 30, "SSH_CONNECT_TIMEOUT": 10, "SSH_COMMAND_TIMEOUT": 20}, "PORTAL_JOB_TIMEOUT"),
    ({"SWEEP_INTERVAL": 0}, "PORTAL_SWEEP_INTERVAL"),
    ({"BATCH_SIZE": 0}, "PORTAL_BATCH_SIZE"),
])
def test_job_settings_that_cannot_work_are_refused_by_name(tmp_path, overrides, named):
    with pytest.raises(ConfigError, match=named):
        build_config(PRODUCTION_ENVIRON, tmp_path, overrides)
    with pytest.raises(ConfigError, match=named):
        create_app(overrides)


def test_a_dead_workers_lock_frees_its_hub_within_seconds_by_default(tmp_path):
    config = build_config(PRODUCTION_ENVIRON, tmp_path, {})
    assert config["PORTAL_LOCK_TTL"] <= 15 and config["PORTAL_SWEEP_INTERVAL"] <= 5


def test_production_cookies_are_secure_httponly_and_samesite_lax(tmp_path):
    config = build_config(PRODUCTION_ENVIRON, tmp_path, {})
    assert config["TESTING"] is False
    for cookie in ("SESSION", "REMEMBER"):
        assert config[f"{cookie}_COOKIE_HTTPONLY"] is True
        assert config[f"{cookie}_COOKIE_SAMESITE"] == "Lax"
        assert config[f"{cookie}_COOKIE_SECURE"] is True


def test_session_cookie_sent_by_a_production_app_has_the_flags(tmp_path):
    with built_app({"ENV": "production", "DATABASE_URL": f"sqlite:///{tmp_path}/portal.db"}) as production:
        cookie = production.test_client().get("/login").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" in cookie


def test_create_app_does_not_connect_to_redis():
    with built_app({"REDIS_URL": "redis://127.0.0.1:1/0"}) as app:  # nothing listens on port 1
        assert app.config["PORTAL_REDIS_URL"] == "redis://127.0.0.1:1/0"
        assert REDIS_EXTENSION not in app.extensions


def test_development_generates_its_secrets_once_into_the_instance_folder(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="portal.config")
    config = build_config({}, tmp_path, {"ENV": "development"})

    path = tmp_path / "dev-secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secrets = json.loads(path.read_text())
    assert config["SECRET_KEY"] == secrets["SECRET_KEY"]
    assert config["PORTAL_ENCRYPTION_KEYS"] == secrets["ENCRYPTION_KEYS"]
    Fernet(secrets["ENCRYPTION_KEYS"][0])
    assert config["PORTAL_HUB_PUBLIC_KEY"] == secrets["HUB_PUBLIC_KEY"]
    assert config["SESSION_COOKIE_SECURE"] is False
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'portal.db'}"
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "never use them in production" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()

    caplog.clear()
    again = build_config({}, tmp_path, {"ENV": "development"})
    assert again["SECRET_KEY"] == config["SECRET_KEY"]
    assert not caplog.records


def test_development_keeps_keys_given_in_the_environment(tmp_path):
    config = build_config({"PORTAL_SECRET_KEY": "s", "PORTAL_ENCRYPTION_KEYS": vectors.ENCRYPTION_KEY,
                           "PORTAL_HUB_PUBLIC_KEY": vectors.HUB_PUBLIC_KEY}, tmp_path, {"ENV": "development"})
    assert config["SECRET_KEY"] == "s"
    assert not (tmp_path / "dev-secrets.json").exists()


@pytest.mark.parametrize("weak", ["x" * 64, "password-password-password-password", "0123456789abcdef" * 3])
def test_production_refuses_a_weak_secret_key_and_says_why(tmp_path, weak):
    with pytest.raises(ConfigError, match="PORTAL_SECRET_KEY is too weak.*token_urlsafe"):
        build_config({**PRODUCTION_ENVIRON, "PORTAL_SECRET_KEY": weak}, tmp_path, {})


def test_production_takes_a_secret_key_made_as_the_message_says(tmp_path):
    import secrets

    for key in (secrets.token_urlsafe(32), secrets.token_hex(32)):
        assert build_config({**PRODUCTION_ENVIRON, "PORTAL_SECRET_KEY": key}, tmp_path, {})["SECRET_KEY"] == key


def test_behind_a_trusted_proxy_its_request_id_and_the_client_address_are_taken(app):
    with built_app({"TRUSTED_PROXIES": 1}) as proxied:
        seen = {}
        proxied.before_request(lambda: seen.update(address=request.remote_addr) and None)
        response = proxied.test_client().get("/healthz", headers={"X-Request-ID": "from-the-proxy",
                                                                   "X-Forwarded-For": "203.0.113.9"})
    assert response.headers["X-Request-ID"] == "from-the-proxy" and seen["address"] == "203.0.113.9"
    direct = app.test_client().get("/healthz", headers={"X-Request-ID": "from-a-client",
                                                        "X-Forwarded-For": "203.0.113.9"})
    assert direct.headers["X-Request-ID"] != "from-a-client"


def test_a_request_whose_database_connection_died_after_its_work_still_answers(app):
    """The session is closed after each request; when the database already ended the connection (a restart, an
    idle timeout), closing it raises, and the request that did its work must not turn into a 500."""
    from sqlalchemy import text

    def work_then_lose_the_connection():
        db.session.execute(text("SELECT 1"))
        db.session.connection().connection.dbapi_connection.close()  # as a database restart would leave it
        return "done"

    with built_app({}) as fresh:
        fresh.add_url_rule("/test-lost-connection", view_func=work_then_lose_the_connection)
        client = fresh.test_client()
        response = client.get("/test-lost-connection")
        assert response.status_code == 200 and response.text == "done"
        assert client.get("/healthz").status_code == 200  # the dead connection was dropped, not handed out again
        with fresh.app_context():
            assert db.session.execute(text("SELECT 2")).scalar() == 2
