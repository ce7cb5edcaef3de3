"""Health and readiness endpoints, against the real database and Redis (and a Redis that is not there)."""

from __future__ import annotations

import time
from contextlib import contextmanager

from portal.jobs.worker import HEARTBEATS
from portal.redis_client import redis_connection
from tests.conftest import free_port
from tests.web.test_factory import built_app


@contextmanager
def registered_worker(app):
    """A heartbeat, as a running `worker.py` sends every two seconds."""
    with app.app_context():
        redis_connection().zadd(HEARTBEATS, {"readyz-test-worker": time.time()})
    try:
        yield
    finally:
        with app.app_context():
            redis_connection().zrem(HEARTBEATS, "readyz-test-worker")


def test_healthz_answers_without_login(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_with_database_redis_and_a_worker(app, client):
    with registered_worker(app):
        response = client.get("/readyz")
    body = response.get_json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert {name: check["state"] for name, check in body["checks"].items()} == {
        "database": "ok", "redis": "ok", "queue": "ok", "hubs": "ok"}
    assert body["checks"]["queue"]["workers"] >= 1
    assert body["checks"]["queue"]["depth"] >= 0


def test_readyz_without_workers_is_not_ready_and_says_why(app):
    with app.app_context():
        redis_connection().delete(HEARTBEATS)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    queue = response.get_json()["checks"]["queue"]
    assert queue["state"] == "error" and "no worker" in queue["error"]


def test_readyz_with_redis_down_is_not_ready_and_the_database_still_ok():
    with built_app({"PORTAL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}) as app:
        response = app.test_client().get("/readyz")
    checks = response.get_json()["checks"]
    assert response.status_code == 503
    assert checks["redis"]["state"] == "error" and "refused" in checks["redis"]["error"].lower()
    assert checks["database"]["state"] == "ok"


def test_readyz_with_the_database_unreachable_answers_503_not_500(tmp_path):
    unreachable = f"sqlite:///{tmp_path}/missing-directory/portal.db"
    with built_app({"SQLALCHEMY_DATABASE_URI": unreachable}) as app:
        response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"]["state"] == "error"


PUBLIC = {"REMOTE_ADDR": "203.0.113.9"}


def test_readyz_tells_a_stranger_only_whether_it_is_ready(app):
    with registered_worker(app):
        answer = app.test_client().get("/readyz", environ_base=PUBLIC)
    assert answer.status_code == 200 and answer.get_json() == {"status": "ready"}
    with app.app_context():
        redis_connection().delete(HEARTBEATS)
    answer = app.test_client().get("/readyz", environ_base=PUBLIC)
    assert answer.status_code == 503 and answer.get_json() == {"status": "not ready"}  # no hosts, no errors


def test_readyz_details_reach_an_outside_monitor_with_the_ops_token(app, monkeypatch):
    monkeypatch.setitem(app.config, "PORTAL_OPS_TOKEN", "a long random monitoring token")
    with registered_worker(app):
        wrong = app.test_client().get("/readyz", environ_base=PUBLIC, headers={"Authorization": "Bearer nope"})
        right = app.test_client().get("/readyz", environ_base=PUBLIC,
                                      headers={"Authorization": "Bearer a long random monitoring token"})
    assert "checks" not in wrong.get_json()
    assert right.get_json()["checks"]["database"]["state"] == "ok"


def test_signed_in_pages_are_never_cached_and_production_sends_hsts(app, admin_client):
    page = admin_client.get("/routers")
    assert page.headers["Cache-Control"] == "private, no-store"
    assert "Strict-Transport-Security" not in page.headers  # development and tests serve plain HTTP
    assert "no-store" not in app.test_client().get("/login").headers.get("Cache-Control", "")
    with built_app({"PORTAL_ENV": "production", "SESSION_COOKIE_SECURE": True}) as production:
        answer = production.test_client().get("/healthz")
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=31536000")
