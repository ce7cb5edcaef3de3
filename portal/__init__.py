"""The VPN provisioning portal: `create_app` builds the Flask app; it connects to nothing."""

from __future__ import annotations

import os
import re
import select
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, abort, g, jsonify, make_response, render_template, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from portal import html, logs
from portal.config import build_config
from portal.crypto import KEYRING_EXTENSION, Keyring
from portal.extensions import csrf, db, login_manager, migrate
from portal.jobs.worker import no_worker_alive
from portal.pagination import IdConverter
from portal.tenancy.access import can_change, can_handle_secrets, impersonation, load_impersonation
from portal.types import utcnow
from portal.urls import Portal

ROOT = Path(__file__).resolve().parent.parent
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'self'"


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    app = Portal(__name__, instance_path=str(ROOT / "instance"),
                 template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.update(build_config(os.environ, Path(app.instance_path), overrides or {}))
    logs.configure(app.config["PORTAL_LOG_FORMAT"])
    app.extensions[KEYRING_EXTENSION] = Keyring(app.config["PORTAL_ENCRYPTION_KEYS"])

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"), render_as_batch=True)
    login_manager.init_app(app)
    csrf.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            _tune_sqlite(db.engine)
        elif db.engine.dialect.name == "postgresql":
            _ping_only_when_the_server_spoke(db.engine)

    app.url_map.converters["int"] = IdConverter  # before any route is added
    _register_blueprints(app)
    _register_live(app)
    _register_request_hooks(app)
    logs.log_requests(app)
    _trust_proxies(app)
    _register_error_pages(app)
    _register_commands(app)
    app.jinja_env.filters["plural"] = plural
    app.jinja_env.globals.update(no_worker_alive=no_worker_alive, impersonation=impersonation,
                                 can_change=can_change, can_handle_secrets=can_handle_secrets, now_utc=utcnow,
                                 **html.GLOBALS)
    return app


def plural(count: int, word: str) -> str:
    """`3|plural('router')` is "3 routers", `1|plural('router')` "1 router"."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _tune_sqlite(engine) -> None:
    """WAL, a busy timeout, foreign keys, and BEGIN IMMEDIATE so concurrent writers queue, not fail."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # let the "begin" hook below start transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _ping_only_when_the_server_spoke(engine) -> None:
    """Check a pooled PostgreSQL connection before use without a round trip: a server that ends a connection
    (restart, pg_terminate_backend, idle timeout) says so on its socket, which then reads as ready. Only then is
    it pinged, and replaced if it does not answer. pool_pre_ping's SELECT 1 on every checkout was one round trip
    in eight of a page's, on both sides of it."""

    @event.listens_for(engine, "checkout")
    def check(dbapi_connection, _record, _proxy):
        spoke, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
        if spoke and not _answers(engine, dbapi_connection):
            raise DisconnectionError("the database ended this connection")  # the pool connects anew


def _answers(engine, dbapi_connection) -> bool:
    try:
        return engine.dialect.do_ping(dbapi_connection)
    except engine.dialect.loaded_dbapi.Error:
        return False


def _register_blueprints(app: Flask) -> None:
    from portal.account.views import blueprint as account
    from portal.api.pages import blueprint as api_tokens
    from portal.api.views import blueprint as api
    from portal.audit.views import blueprint as audit
    from portal.auth.views import blueprint as auth
    from portal.dashboard.views import blueprint as dashboard
    from portal.links.views import blueprint as links
    from portal.openvpn.admin_views import blueprint as openvpn_servers
    from portal.openvpn.views import blueprint as openvpn
    from portal.ops.views import blueprint as ops
    from portal.tenancy.support_views import blueprint as support
    from portal.tenancy.views import blueprint as tenancy
    from portal.tenancy.views import users_blueprint as users
    from portal.wireguard.admin_views import blueprint as hubs
    from portal.wireguard.fleet_views import blueprint as fleet
    from portal.wireguard.routeros_views import blueprint as routeros
    from portal.wireguard.views import blueprint as wireguard

    for blueprint in (auth, tenancy, wireguard, hubs, openvpn, openvpn_servers, audit, dashboard, ops, support,
                      users, account, links, fleet, api, api_tokens, routeros):
        app.register_blueprint(blueprint)


def _register_live(app: Flask) -> None:
    from portal.live.server import init_app

    init_app(app)  # the Socket.IO server; it reaches Redis only once a browser connects


def _trust_proxies(app: Flask) -> None:
    """Behind PORTAL_TRUSTED_PROXIES proxies, the client's address (for throttling and the audit log), scheme
    and host come from their X-Forwarded-* headers; with none, those headers are ignored."""
    hops = app.config["PORTAL_TRUSTED_PROXIES"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


def _register_request_hooks(app: Flask) -> None:
    @app.before_request
    def assign_request_id():
        # Only a trusted proxy's request id is taken: a client's own would let it choose what the audit log says.
        incoming = request.headers.get("X-Request-ID", "") if app.config["PORTAL_TRUSTED_PROXIES"] else ""
        g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex

    app.before_request(refuse_nul_characters)
    app.before_request(load_impersonation)
    app.teardown_appcontext(lambda _error: end_session())

    @app.after_request
    def security_headers(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if app.config["PORTAL_ENV"] == "production":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        if response.mimetype == "text/html" and current_user.is_authenticated:
            response.headers.setdefault("Cache-Control", "private, no-store")  # a signed-in page: never cached
        return response


def refuse_nul_characters() -> None:
    """No search or filter anyone types holds a NUL, and PostgreSQL cannot compare one: a page's query string
    with one is refused at the door, before a search turns it into a database error. (Forms check their own
    fields, next to the field; the API answers 422 with the field.)"""
    from portal.api.errors import is_api_request

    if not is_api_request() and any("\x00" in value for value in request.args.values()):
        abort(400, description="The address holds a NUL character (%00), which no search or filter accepts.")


def end_session() -> None:
    """After a request: close the session, its transaction rolled back. Closing lets the loaded objects go as
    they are, where a rollback would first expire each of them."""
    _ending(db.session.close)


def discard_session() -> None:
    """Roll the session back (after an error, the request goes on to its error page)."""
    _ending(db.session.rollback)


def _ending(end) -> None:
    """`end` the session's transaction; a connection the database already ended is dropped instead (ending the
    transaction on it raises, which would turn a request that did its work into a 500)."""
    try:
        end()
    except DBAPIError:
        db.session().invalidate()  # (scoped_session has no invalidate of its own)


def _register_error_pages(app: Flask) -> None:
    from portal.api import errors as api_errors

    def error_page(status: int, title: str, message: str):
        if request.accept_mimetypes.best == "application/json":
            return jsonify(error={"code": status, "message": message}), status
        response = make_response(render_template("errors/error.html", status=status, title=title,
                                                 message=message), status)
        if request.headers.get("HX-Request") == "true":
            # htmx does not swap error responses; tell it to show the error page instead
            response.headers["HX-Retarget"] = "body"
            response.headers["HX-Reswap"] = "innerHTML"
        return response

    @app.errorhandler(CSRFError)
    def csrf_failed(error):
        return error_page(400, "Form expired", "The form was open too long or came from elsewhere. "
                          "Go back, reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if api_errors.is_api_request():  # a path under /api that no view took (404, 405): the API's JSON errors
            return api_errors.response_for(error)
        return error_page(error.code or 500, error.name, _friendly(error))

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        if api_errors.is_api_request():
            discard_session()
            return api_errors.response_for(error)
        app.logger.exception("unhandled error in request %s", g.get("request_id"))
        discard_session()
        return error_page(500, "Something went wrong", "The error was logged with request id "
                          f"{g.get('request_id', '-')}. Nothing was changed.")


def _friendly(error: HTTPException) -> str:
    if error.description != type(error).description:  # a view's own words: abort(403, description=...)
        return error.description or ""
    messages = {
        403: "Your account cannot open this page.",
        404: "There is nothing here, or it belongs to someone else.",
        405: "That action is not available here.",
    }
    return messages.get(error.code or 0, error.description or "")


def _register_commands(app: Flask) -> None:
    from portal.cli import register

    register(app)
