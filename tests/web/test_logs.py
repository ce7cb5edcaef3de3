"""Structured logs: one line per request and per job with who, what and how it went; JSON in production; no
secret (bodies, query strings and tokens in paths are never logged)."""

from __future__ import annotations

import json
import logging

from portal.logs import JsonFormatter, TextFormatter
from tests import vectors
from tests.conftest import add_router, login, run_worker


def lines(caplog, logger: str) -> list[dict]:
    return [{"message": record.getMessage(), **record.fields} for record in caplog.records if record.name == logger]


def test_each_request_logs_its_route_status_duration_tenant_and_actor(app, admin_client, caplog):
    caplog.set_level(logging.INFO, logger="portal.request")
    admin_client.get("/routers?search=secret-search-term")
    [entry] = lines(caplog, "portal.request")
    assert entry["route"] == "/routers" and entry["status"] == 200 and entry["method"] == "GET"
    assert entry["tenant_id"] == admin_client.tenant_id and entry["user_id"] > 0
    assert entry["duration_ms"] >= 0 and len(entry["request_id"]) == 32
    assert "secret-search-term" not in json.dumps(entry)


def test_a_login_logs_no_password_and_paths_with_ids_log_their_pattern(app, tenant_admin, caplog):
    caplog.set_level(logging.INFO, logger="portal.request")
    client = app.test_client()
    login(client, tenant_admin[1])
    client.get("/routers/987654321")
    logged = json.dumps(lines(caplog, "portal.request"))
    assert vectors.PASSWORD not in logged and tenant_admin[1] not in logged
    assert '"route": "/routers/<int:router_id>"' in logged and "987654321" not in logged


def test_each_job_logs_its_id_function_outcome_and_duration(app, admin_client, caplog):
    caplog.set_level(logging.INFO, logger="portal.job")
    add_router(admin_client, "Logged")
    run_worker(app)
    entries = lines(caplog, "portal.job")
    assert entries and all(entry["outcome"] == "finished" for entry in entries)
    assert {entry["function"] for entry in entries} >= {"portal.wireguard.jobs.sync_hub"}
    assert all(entry["job_id"] and entry["duration_ms"] >= 0 for entry in entries)


def test_json_lines_in_production_and_plain_text_elsewhere():
    record = logging.LogRecord("portal.request", logging.INFO, __file__, 1, "GET %s", ("/routers",), None)
    record.fields = {"route": "/routers", "status": 200, "tenant_id": None}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "GET /routers" and entry["status"] == 200 and entry["level"] == "info"
    assert TextFormatter().format(record).endswith("GET /routers route=/routers status=200")


def test_a_signed_in_browser_fetching_a_stylesheet_costs_no_database_query(app, admin_client):
    from sqlalchemy import event

    from portal.extensions import db

    statements = []
    with app.app_context():
        engine = db.engine
    record = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", record)
    try:
        with admin_client.get("/static/style.css") as stylesheet:
            assert stylesheet.status_code == 200
        assert statements == []
        assert admin_client.get("/routers").status_code == 200
        assert statements  # the listener sees the queries a page makes
    finally:
        event.remove(engine, "before_cursor_execute", record)
