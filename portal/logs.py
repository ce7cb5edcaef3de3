"""Logging: one line per event, JSON in production (one object per line, for log shippers), plain text under
`make run` and in tests. Requests and jobs each log one line with what they were, who asked, and how it went.

Only fields named here are logged: never a request's body, query string or a path with a token in it (the
route's pattern is logged instead), so no secret reaches the log.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from flask import Flask, g, request

from portal import metrics

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(fields_text)s"
request_log = logging.getLogger("portal.request")
job_log = logging.getLogger("portal.job")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        record.fields_text = "".join(f" {key}={value}" for key, value in fields.items() if value is not None)
        return super().format(record)


class PortalHandler(logging.StreamHandler):
    """The portal's own handler on the root logger (one, however many apps a process builds)."""


def configure(log_format: str) -> None:
    """Send every logger's lines to stderr in `log_format`; other handlers (a test runner's) stay."""
    handler = PortalHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [kept for kept in root.handlers if not isinstance(kept, PortalHandler)] + [handler]
    root.setLevel(logging.INFO)


def log_requests(app: Flask) -> None:
    """One line per request: id, method, route pattern, status, duration, tenant and actor."""

    @app.before_request
    def start_clock():
        g.request_started = time.perf_counter()

    @app.before_request
    def remember_who():
        # Read before the view: a commit in it expires the signed-in user, and reading it again would cost a query.
        if request.endpoint != "static":  # a stylesheet is not logged, and needs no one signed in
            g.who = _who()

    @app.after_request
    def log_request(response):
        if request.endpoint != "static":
            elapsed = time.perf_counter() - g.get("request_started", time.perf_counter())
            metrics.count("http_requests", _route(), request.method, response.status_code)
            metrics.observe("http_request_seconds", elapsed, _route())
            request_log.info("%s %s %s", request.method, _route(), response.status_code, extra={"fields": {
                "request_id": g.get("request_id"), "method": request.method, "route": _route(),
                "status": response.status_code, "duration_ms": _elapsed_ms(g.get("request_started")),
                **(g.get("who") or _who()),  # or whoever signed in during the request
            }})
        return response


def log_job(job_id: str, function: str, outcome: str, started: float) -> None:
    job_log.info("%s %s", function, outcome, extra={"fields": {
        "job_id": job_id, "function": function, "outcome": outcome, "duration_ms": _elapsed_ms(started)}})


def _route() -> str:
    return request.url_rule.rule if request.url_rule is not None else "(no route)"


def _elapsed_ms(started: float | None) -> float | None:
    return round((time.perf_counter() - started) * 1000, 1) if started is not None else None


def _who() -> dict[str, Any]:
    from flask_login import current_user

    from portal.tenancy.access import current_tenant_id, impersonation

    if not current_user or not current_user.is_authenticated:
        return {}
    looking = impersonation()
    return {"tenant_id": current_tenant_id(), "user_id": current_user.id,
            "impersonating": looking.tenant_id if looking is not None else None}
