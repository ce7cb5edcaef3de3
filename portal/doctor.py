"""`flask doctor`: what is wrong with this installation, in plain words, and how to fix it.

Each check answers ok, warning or error with one sentence and, when not ok, what to do. The command exits 1
when any check is an error, so scripts and deploy pipelines can stop on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import click
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import func, select, text

from portal.errors import describe
from portal.extensions import db
from portal.jobs.worker import live_workers
from portal.redis_client import redis_connection
from portal.remote import ssh_target
from portal.ssh import HostKeyMismatch, connect

OK, WARNING, ERROR = "ok", "warning", "error"
CLOCK_SKEW_LIMIT = 2.0  # seconds; TOTP codes, lock TTLs and heartbeats tolerate about this much


@dataclass(frozen=True)
class Finding:
    check: str
    state: str
    message: str
    fix: str = ""


def run_checks() -> Iterator[Finding]:
    """Every check, in the order a person would fix things; a check that crashes is itself a finding. Checks
    that read the database or Redis are skipped once that one failed (its finding says what to fix)."""
    failed: set[str] = set()
    for name, check, needs in CHECKS:
        if failed & needs:
            continue
        try:
            for finding in check():
                if finding.state == ERROR:
                    failed.add(finding.check)
                yield finding
        except Exception as error:  # a broken dependency must not hide the other findings
            db.session.rollback()
            failed.add(name)
            yield Finding(name, ERROR, f"the check itself failed: {describe(error).splitlines()[0]}")


def _settings() -> Iterator[Finding]:
    config = current_app.config
    production = config["PORTAL_ENV"] == "production"
    # A weak secret key or a missing encryption key stops the app before this runs (portal.config).
    if not production:
        yield Finding("settings", WARNING, f"PORTAL_ENV is {config['PORTAL_ENV']!r}: development secrets and "
                      "plain-HTTP cookies", "set PORTAL_ENV=production, PORTAL_SECRET_KEY and PORTAL_ENCRYPTION_KEYS")
        return
    if production and not config.get("PORTAL_MAIL_HOST"):
        yield Finding("settings", WARNING, "no PORTAL_MAIL_HOST: invitations and links are written to the outbox "
                      "folder, not sent", "set PORTAL_MAIL_HOST (and PORTAL_MAIL_USERNAME/PASSWORD)")
    yield Finding("settings", OK, "production, with its own secrets")


def _database() -> Iterator[Finding]:
    with db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        current = MigrationContext.configure(connection).get_current_revision()
    migrations = current_app.extensions["migrate"].directory
    head = ScriptDirectory(migrations).get_current_head()
    if current != head:
        yield Finding("database", ERROR, f"the schema is at {current or 'nothing'}, the code needs {head}",
                      "flask db upgrade")
        return
    yield Finding("database", OK, f"{db.engine.dialect.name}, schema at {head}")


def _redis() -> Iterator[Finding]:
    url = current_app.config["PORTAL_REDIS_URL"]
    try:
        redis_connection().ping()
    except Exception as error:
        yield Finding("redis", ERROR, f"Redis at {url} does not answer: {describe(error).splitlines()[0]}",
                      "start Redis or correct PORTAL_REDIS_URL")
        return
    yield Finding("redis", OK, f"Redis at {url} answers")
    workers = live_workers(redis_connection())
    if not workers:
        yield Finding("workers", ERROR, "no worker is alive: changes wait in the database", "start `python worker.py`")
    else:
        yield Finding("workers", OK, f"{workers} worker(s) alive")


def _clocks() -> Iterator[Finding]:
    local = time.time()
    database_now = db.session.scalar(select(func.now()))
    if isinstance(database_now, datetime):
        if database_now.tzinfo is None:
            database_now = database_now.replace(tzinfo=UTC)
        yield _skew("database", database_now.timestamp() - local)
    seconds, microseconds = redis_connection().time()
    yield _skew("redis", seconds + microseconds / 1e6 - local)


def _skew(what: str, seconds: float) -> Finding:
    if abs(seconds) > CLOCK_SKEW_LIMIT:
        return Finding("clock", ERROR, f"this machine's clock and the {what} server's differ by {seconds:+.1f} s",
                       "run NTP (chrony, systemd-timesyncd) on both")
    return Finding("clock", OK, f"within {CLOCK_SKEW_LIMIT:g} s of the {what} server")


def _hubs() -> Iterator[Finding]:
    from portal.wireguard.models import Hub

    for hub in db.session.scalars(select(Hub).where(Hub.driver == "ssh").order_by(Hub.name)):
        yield _remote_host(f"hub {hub.name}", hub, ["ip", "link", "show", hub.interface],
                           f"flask hub bootstrap {hub.name}")


def _openvpn_servers() -> Iterator[Finding]:
    from portal.openvpn.models import OpenVpnServer

    for server in db.session.scalars(select(OpenVpnServer).where(OpenVpnServer.driver == "ssh")
                                     .order_by(OpenVpnServer.name)):
        yield _remote_host(f"OpenVPN server {server.name}", server, ["test", "-f", f"{server.base_dir}/pki/ca.crt"],
                           f"flask openvpn bootstrap {server.name}")


def _remote_host(label: str, row, bootstrapped_argv: list[str], bootstrap_command: str) -> Finding:
    """Reachable over SSH with the pinned host key, and bootstrapped (`bootstrapped_argv` succeeds)."""
    config = current_app.config
    try:
        with connect(ssh_target(row, label), connect_timeout=config["PORTAL_SSH_CONNECT_TIMEOUT"],
                     command_timeout=config["PORTAL_SSH_COMMAND_TIMEOUT"]) as session:
            bootstrapped = session.run(bootstrapped_argv).ok
    except HostKeyMismatch as error:
        return Finding(label, ERROR, f"its host key changed: {error}",
                       "if the host was reinstalled, pin the new key on its admin page; otherwise stop and "
                       "investigate")
    except Exception as error:
        return Finding(label, ERROR, f"unreachable over SSH: {describe(error).splitlines()[0]}",
                       "check the host, its sshd and the SSH settings on its admin page")
    if not bootstrapped:
        return Finding(label, ERROR, "reachable, but not set up (not bootstrapped)", bootstrap_command)
    return Finding(label, OK, "reachable with the pinned host key, bootstrapped")


# (name, check, the checks it needs to have passed)
CHECKS: tuple[tuple[str, Callable[[], Iterator[Finding]], set[str]], ...] = (
    ("settings", _settings, set()), ("database", _database, set()), ("redis", _redis, set()),
    ("clock", _clocks, {"database", "redis"}), ("hubs", _hubs, {"database"}),
    ("OpenVPN servers", _openvpn_servers, {"database"}),
)
MARKS = {OK: "ok  ", WARNING: "warn", ERROR: "FAIL"}


@click.command("doctor")
@with_appcontext
def doctor_command() -> None:
    """Check settings, database, Redis, workers, clocks, hubs and OpenVPN servers; exit 1 on any failure."""
    failed = False
    for finding in run_checks():
        failed |= finding.state == ERROR
        click.echo(f"[{MARKS[finding.state]}] {finding.check}: {finding.message}")
        if finding.fix:
            click.echo(f"       fix: {finding.fix}")
    if failed:
        raise SystemExit(1)
