"""Provisioning and revocation jobs: locked, fenced, idempotent, retried, reconciled, crash-safe.

Every job here runs in a real RQ worker against a real Redis: in this process (burst mode) or in a
worker subprocess that the test kills.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import func, select

import worker
from portal import remote
from portal.audit.models import AuditEvent
from portal.extensions import db
from portal.jobs import LOCK_PREFIX, TransientError, queue, redis_connection
from portal.wireguard import drivers, service
from portal.wireguard.jobs import enqueue_provision, lock_name, reconcile
from portal.wireguard.models import Router, Status, VpnConfiguration
from tests.conftest import add_router, post, run_worker, worker_process


def new_configuration_id(app, client, name: str) -> int:
    response = add_router(client, name)
    router_id = int(response.headers["Location"].rsplit("/", 1)[1])
    with app.app_context():
        return db.session.get(Router, router_id).current_configuration.id


def load(app, configuration_id: int) -> VpnConfiguration:
    with app.app_context():
        configuration = db.session.get(VpnConfiguration, configuration_id)
        db.session.expunge(configuration)
        return configuration


def actions_for(app, configuration_id: int) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(
            select(AuditEvent.action).where(AuditEvent.target_type == "vpn_configurations",
                                            AuditEvent.target_id == configuration_id).order_by(AuditEvent.id)))


class FlakyDriver(drivers.NoneDriver):
    """Fails the first `failures` calls with `error`, then succeeds."""

    calls = 0

    def __init__(self, failures: int, error: Exception):
        self.failures, self.error = failures, error

    def apply_peers(self, hub, apply=(), remove=()):
        FlakyDriver.calls += 1
        if FlakyDriver.calls <= self.failures:
            raise self.error


@pytest.fixture
def flaky_driver(monkeypatch):
    def install(failures: int, error: Exception | None = None):
        FlakyDriver.calls = 0
        failing = FlakyDriver(failures, error or remote.HostUnreachable("hub.test.example: connection refused"))
        monkeypatch.setitem(drivers.DRIVERS, "none", lambda hub: failing)

    return install


def test_enqueued_twice_provisions_once(app, admin_client):
    configuration_id = new_configuration_id(app, admin_client, "dup-job")
    with app.app_context():
        enqueue_provision(configuration_id)
    run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.ACTIVE and configuration.attempt == 1
    assert actions_for(app, configuration_id).count("configuration.provision.succeeded") == 1


def test_a_stale_workers_outcome_changes_nothing(app, admin_client):
    configuration_id = new_configuration_id(app, admin_client, "fenced")
    with app.app_context():
        stale = service.claim(configuration_id, (Status.PENDING,), Status.PROVISIONING).attempt
        db.session.commit()
        current = service.claim(configuration_id, (Status.PROVISIONING,), Status.PROVISIONING).attempt
        db.session.commit()
        assert (stale, current) == (1, 2)
        assert service.finish(configuration_id, stale, Status.PROVISIONING, status=Status.FAILED) is None
        db.session.commit()
        assert service.finish(configuration_id, current, Status.PROVISIONING, status=Status.ACTIVE) is not None
        db.session.commit()
    assert load(app, configuration_id).status == Status.ACTIVE


def test_transient_hub_error_is_retried_then_succeeds(app, admin_client, flaky_driver):
    flaky_driver(failures=1)
    configuration_id = new_configuration_id(app, admin_client, "flaky-once")
    run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.ACTIVE and configuration.last_error is None
    assert actions_for(app, configuration_id) == [
        "configuration.created", "configuration.provision.started", "configuration.provision.retry",
        "configuration.provision.started", "configuration.provision.succeeded"]


def test_an_unreachable_hub_leaves_provisioning_waiting_for_the_reconciler(app, admin_client, flaky_driver):
    flaky_driver(failures=3)  # the first try and both retries
    configuration_id = new_configuration_id(app, admin_client, "flaky-thrice")
    run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.PENDING and configuration.attempt == 3
    page = admin_client.get(f"/routers/{configuration.router_id}").get_data(as_text=True)
    assert "waiting for hub: hub.test.example: connection refused" in page

    assert "enqueue provision" in app.test_cli_runner().invoke(args=["reconcile"]).output
    run_worker(app)
    assert load(app, configuration_id).status == Status.ACTIVE


def test_a_hub_error_fails_with_the_error_shown_and_a_retry_button(app, admin_client, flaky_driver):
    flaky_driver(failures=1, error=remote.RemoteCommandFailed("`bash -c` exited 1: wg: Unable to modify interface"))
    configuration_id = new_configuration_id(app, admin_client, "hub-error")
    run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.FAILED and configuration.attempt == 1
    page = admin_client.get(f"/routers/{configuration.router_id}").get_data(as_text=True)
    assert "Unable to modify interface" in page and "Retry provisioning" in page

    assert post(admin_client, f"/configurations/{configuration_id}/retry").status_code == 303
    run_worker(app)
    assert load(app, configuration_id).status == Status.ACTIVE


def test_an_unexpected_error_fails_at_once(app, admin_client, flaky_driver):
    flaky_driver(failures=1, error=ValueError("hub rejected the peer"))
    configuration_id = new_configuration_id(app, admin_client, "broken")
    run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.FAILED and configuration.attempt == 1
    assert configuration.last_error == "hub rejected the peer"


def test_revocation_never_gives_up(app, admin_client, flaky_driver):
    configuration_id = new_configuration_id(app, admin_client, "stubborn")
    run_worker(app)
    router_id = load(app, configuration_id).router_id
    flaky_driver(failures=3)
    post(admin_client, f"/routers/{router_id}/revoke")
    run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.REVOKING and "connection refused" in configuration.last_error
    assert configuration.private_key is not None

    with app.app_context():
        assert any(f"configuration {configuration_id} (revoking)" in line for line in reconcile())
    run_worker(app)
    assert load(app, configuration_id).status == Status.REVOKED


def test_a_busy_lock_leaves_the_row_alone_until_it_is_free(app, admin_client):
    configuration_id = new_configuration_id(app, admin_client, "locked")
    with app.app_context():
        other_worker = redis_connection().lock(LOCK_PREFIX + lock_name(configuration_id), timeout=30)
        assert other_worker.acquire()
        run_worker(app)  # the try and both retries find the lock taken
        assert load(app, configuration_id).status == Status.PENDING
        assert reconcile(dry_run=True) == []  # a held lock means someone is working on it
        other_worker.release()
        reconcile()
    run_worker(app)
    assert load(app, configuration_id).status == Status.ACTIVE


def test_flushed_redis_loses_nothing(app, admin_client):
    configuration_id = new_configuration_id(app, admin_client, "flushed")
    with app.app_context():
        redis_connection().flushdb()
    run_worker(app)
    assert load(app, configuration_id).status == Status.PENDING
    dry_run = app.test_cli_runner().invoke(args=["reconcile", "--dry-run"])
    assert f"would configuration {configuration_id} (pending): enqueue provision" in dry_run.output
    run_worker(app)
    assert load(app, configuration_id).status == Status.PENDING  # a dry run changes nothing
    result = app.test_cli_runner().invoke(args=["reconcile"])
    assert result.exit_code == 0 and f"configuration {configuration_id} (pending): enqueue provision" in result.output
    run_worker(app)
    assert load(app, configuration_id).status == Status.ACTIVE
    assert "configuration.reconcile.requeued" in actions_for(app, configuration_id)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_worker_killed_mid_job_recovers_to_active_exactly_once(app, admin_client, tmp_path: Path):
    configuration_id = new_configuration_id(app, admin_client, "crashy")
    address = load(app, configuration_id).address
    ready = tmp_path / "in-driver"
    # A short lock TTL, so the test need not wait long for the dead worker's lock to expire.
    short = {"PORTAL_JOB_TIMEOUT": "5", "PORTAL_LOCK_TTL": "6",
             "PORTAL_SSH_CONNECT_TIMEOUT": "1", "PORTAL_SSH_COMMAND_TIMEOUT": "2"}
    worker = worker_process("--block-in-driver", str(ready), env=short)
    try:
        wait_for(ready.exists, 30, "the worker to enter the hub driver")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert load(app, configuration_id).status == Status.PROVISIONING
    redis = Redis.from_url(app.config["PORTAL_REDIS_URL"])
    wait_for(lambda: not redis.exists(LOCK_PREFIX + lock_name(configuration_id)), 10, "the lock to expire")

    with app.app_context():
        reconcile()
    run_worker(app)

    configuration = load(app, configuration_id)
    assert configuration.status == Status.ACTIVE and configuration.address == address
    assert configuration.attempt == 2
    actions = actions_for(app, configuration_id)
    assert actions.count("configuration.provision.started") == 2
    assert actions.count("configuration.provision.succeeded") == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(
            VpnConfiguration.router_id == configuration.router_id)) == 1


def test_two_workers_racing_on_one_router_provision_it_once(app, admin_client):
    configuration_id = new_configuration_id(app, admin_client, "raced")
    with app.app_context():
        for _ in range(3):
            enqueue_provision(configuration_id)
    racers = [worker_process("--burst") for _ in range(2)]
    for racer in racers:
        assert racer.wait(60) == 0
    configuration = load(app, configuration_id)
    assert configuration.status == Status.ACTIVE and configuration.attempt == 1
    assert actions_for(app, configuration_id).count("configuration.provision.succeeded") == 1


def test_transient_errors_are_the_retryable_kind():
    assert issubclass(remote.HostUnreachable, TransientError)


@pytest.mark.parametrize("periodic", worker.PERIODIC, ids=lambda periodic: periodic.function.rsplit(".", 1)[1])
def test_workers_enqueue_periodic_jobs_on_a_schedule_once_per_interval(app, periodic):
    with app.app_context():
        redis_connection().delete(periodic.tick_key)
        queue().empty()
    saved = app.config[periodic.interval_setting]
    app.config[periodic.interval_setting] = 1
    stop = threading.Event()
    tickers = [threading.Thread(target=worker.schedule, args=(app, periodic, stop)) for _ in range(2)]
    try:
        for ticker in tickers:
            ticker.start()
        time.sleep(1.5)  # each ticker wakes once; only one may enqueue in this interval
    finally:
        stop.set()
        for ticker in tickers:
            ticker.join()
        app.config[periodic.interval_setting] = saved
    with app.app_context():
        functions = [job.func_name for job in queue().jobs]
    assert functions == [periodic.function]
    run_worker(app)
