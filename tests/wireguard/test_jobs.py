"""Jobs: one batch per hub, fenced, idempotent, retried from the database, swept, crash-safe.

Every job here runs in a real RQ worker against a real Redis: in this process (burst mode) or in worker
subprocesses (`worker.py` as production runs it) that the test kills.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis import Redis
from sqlalchemy import func, select

import worker
from portal import remote
from portal.audit.models import AuditEvent
from portal.devserver import processes_named
from portal.errors import TransientError
from portal.extensions import db
from portal.jobs import queue
from portal.jobs.lock import LOCK_PREFIX
from portal.jobs.worker import HEARTBEAT_INTERVAL, HEARTBEATS, Periodic, _every, live_workers, make_worker
from portal.lifecycle import claim_row
from portal.redis_client import REDIS_EXTENSION, redis_connection
from portal.wireguard import drivers, service
from portal.wireguard.jobs import hub_lock, reconcile, sweep, sync_hub
from portal.wireguard.models import WITH_KEYS, Router, Status, VpnConfiguration
from tests.conftest import add_router, free_port, post, run_worker, worker_process


def new_configuration_id(app, client, name: str) -> int:
    response = add_router(client, name)
    router_id = int(response.headers["Location"].rsplit("/", 1)[1])
    with app.app_context():
        return db.session.get(Router, router_id).current_configuration.id


def load(app, configuration_id: int) -> VpnConfiguration:
    with app.app_context():
        configuration = db.session.get(VpnConfiguration, configuration_id, options=[WITH_KEYS])  # read detached
        db.session.expunge(configuration)
        return configuration


def actions_for(app, configuration_id: int) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(
            select(AuditEvent.action).where(AuditEvent.target_type == "vpn_configurations",
                                            AuditEvent.target_id == configuration_id).order_by(AuditEvent.id)))


class FlakyDriver(drivers.NoneDriver):
    """Fails the first `failures` calls with `error`, then succeeds; counts calls and the peers of each."""

    calls: list[tuple[int, int]] = []

    def __init__(self, failures: int, error: Exception):
        self.failures, self.error = failures, error

    def apply_peers(self, hub, apply=(), remove=()):
        FlakyDriver.calls.append((len(apply), len(remove)))
        if len(FlakyDriver.calls) <= self.failures:
            raise self.error


@pytest.fixture
def flaky_driver(monkeypatch):
    def install(failures: int, error: Exception | None = None):
        FlakyDriver.calls = []
        failing = FlakyDriver(failures, error or remote.HostUnreachable("hub.test.example: connection refused"))
        monkeypatch.setitem(drivers.DRIVERS, "none", lambda hub: failing)

    return install


def test_routers_added_together_are_provisioned_in_one_batch(app, admin_client, flaky_driver):
    flaky_driver(failures=0)
    with app.app_context():
        queue().empty()
    ids = [new_configuration_id(app, admin_client, f"batch-{n}") for n in range(5)]
    with app.app_context():
        assert len(queue()) == 1  # five requests, one job waiting for the hub: the wake-ups coalesce
        waiting = db.session.scalar(select(func.count()).where(  # earlier tests' routers wait on the same hub
            VpnConfiguration.hub_id == load(app, ids[0]).hub_id, VpnConfiguration.status == Status.PENDING))
    run_worker(app)
    batch_size = app.config["PORTAL_BATCH_SIZE"]
    assert FlakyDriver.calls == [(min(batch_size, waiting - done), 0) for done in range(0, waiting, batch_size)]
    assert {load(app, configuration_id).status for configuration_id in ids} == {Status.ACTIVE}
    assert actions_for(app, ids[0]) == ["configuration.created", "configuration.provision.started",
                                        "configuration.provision.succeeded"]


def test_enqueued_twice_provisions_once(app, admin_client):
    configuration_id = new_configuration_id(app, admin_client, "dup-job")
    hub_id = load(app, configuration_id).hub_id
    with app.app_context():
        queue().enqueue(sync_hub.path, hub_id)  # past the coalescing key, as a duplicate after a FLUSHALL would be
    run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.ACTIVE and configuration.attempt == 1
    assert actions_for(app, configuration_id).count("configuration.provision.succeeded") == 1


def test_a_stale_workers_outcome_changes_nothing(app, admin_client):
    configuration_id = new_configuration_id(app, admin_client, "fenced")
    with app.app_context():
        queue().empty()
        stale = claim_row(VpnConfiguration, configuration_id, (Status.PENDING,), Status.PROVISIONING).attempt
        db.session.commit()
        current = claim_row(VpnConfiguration, configuration_id, (Status.PROVISIONING,), Status.PROVISIONING).attempt
        db.session.commit()
        assert (stale, current) == (1, 2)
        assert service.finish(configuration_id, stale, Status.PROVISIONING, status=Status.FAILED) is None
        db.session.commit()
        assert service.finish(configuration_id, current, Status.PROVISIONING, status=Status.ACTIVE) is not None
        db.session.commit()
    assert load(app, configuration_id).status == Status.ACTIVE


def test_an_unreachable_hub_leaves_the_router_waiting_then_the_sweep_retries(app, admin_client, flaky_driver):
    flaky_driver(failures=1)
    configuration_id = new_configuration_id(app, admin_client, "flaky-once")
    run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.PENDING and configuration.attempt == 1
    assert configuration.retry_at is not None
    page = admin_client.get(f"/routers/{configuration.router_id}").get_data(as_text=True)
    assert "waiting for hub: hub.test.example: connection refused" in page

    with app.app_context():
        assert "wake its batch" in app.test_cli_runner().invoke(args=["reconcile"]).output
    run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.ACTIVE and configuration.last_error is None
    assert actions_for(app, configuration_id) == [
        "configuration.created", "configuration.provision.started", "configuration.provision.retry",
        "configuration.provision.started", "configuration.provision.succeeded"]


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


def test_one_bad_peer_fails_its_configuration_not_the_batch(app, admin_client, monkeypatch):
    class RefusesOnePeer(drivers.NoneDriver):
        def apply_peers(self, hub, apply=(), remove=()):
            if any(peer.allowed_ips == (f"{refused}/32",) for peer in apply):
                raise remote.RemoteCommandFailed("line 2: not a WireGuard public key")

    monkeypatch.setitem(drivers.DRIVERS, "none", lambda hub: RefusesOnePeer())
    with app.app_context():
        queue().empty()
    ids = [new_configuration_id(app, admin_client, f"one-bad-{n}") for n in range(3)]
    refused = load(app, ids[1]).address
    run_worker(app)
    assert [load(app, configuration_id).status for configuration_id in ids] == [
        Status.ACTIVE, Status.FAILED, Status.ACTIVE]
    assert "not a WireGuard public key" in load(app, ids[1]).last_error


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
    flaky_driver(failures=2)
    post(admin_client, f"/routers/{router_id}/revoke")
    run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.REVOKING and "connection refused" in configuration.last_error
    assert configuration.private_key is not None

    for _ in range(2):
        with app.app_context():
            assert any("wake its batch" in line for line in reconcile())
        run_worker(app)
    configuration = load(app, configuration_id)
    assert configuration.status == Status.REVOKED and configuration.private_key is None


def test_a_busy_hub_lock_leaves_the_work_to_its_holder_or_the_sweep(app, admin_client):
    configuration_id = new_configuration_id(app, admin_client, "locked")
    hub_id = load(app, configuration_id).hub_id
    with app.app_context():
        other_worker = redis_connection().lock(LOCK_PREFIX + hub_lock(hub_id), timeout=30)
        assert other_worker.acquire()
        run_worker(app)  # the job finds the hub busy and leaves
        assert load(app, configuration_id).status == Status.PENDING
        assert reconcile(dry_run=True) == []  # a held lock means someone is working on the hub
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
    assert "would hub default: configurations wait for work: wake its batch" in dry_run.output
    run_worker(app)
    assert load(app, configuration_id).status == Status.PENDING  # a dry run changes nothing
    time.sleep(app.config["PORTAL_SWEEP_INTERVAL"])  # the sweep leaves work alone that moved within an interval
    with app.app_context():
        assert load(app, configuration_id).hub_id in sweep()
    run_worker(app)
    assert load(app, configuration_id).status == Status.ACTIVE


@contextmanager
def redis_away(app):
    """The app's Redis client pointed at a port where nothing listens, as when Redis is down."""
    pool = app.extensions[REDIS_EXTENSION].connection_pool
    saved = pool.connection_kwargs
    pool.connection_kwargs = {**saved, "port": free_port()}
    pool.reset()
    try:
        yield
    finally:
        pool.connection_kwargs = saved
        pool.reset()


def test_a_change_commits_and_says_so_when_redis_is_down(app, admin_client):
    with redis_away(app):
        response = add_router(admin_client, "redis-away")
        assert response.status_code == 303
        page = admin_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Router redis-away added" in page and "the job queue did not answer" in page.lower()
    router_id = int(response.headers["Location"].rsplit("/", 1)[1])
    with app.app_context():
        assert db.session.get(Router, router_id).current_configuration.status == Status.PENDING


def wait_for(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_worker_killed_mid_batch_leaves_nothing_behind_and_its_work_is_done_by_another(
        app, admin_client, tmp_path: Path):
    with app.app_context():
        queue().empty()
    crashed_id = new_configuration_id(app, admin_client, "crashy")
    address = load(app, crashed_id).address
    ready = tmp_path / "in-driver"
    marker = f"crashed-worker-{os.getpid()}"
    doomed = worker_process("--block-in-driver", str(ready), "--name", marker)
    try:
        wait_for(ready.exists, 30, "the worker to enter the hub driver")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    assert load(app, crashed_id).status == Status.PROVISIONING
    assert processes_named(marker) == []  # no forked helper outlives the worker

    survivor = worker_process()
    try:
        added_id = new_configuration_id(app, admin_client, "added-after-the-crash")
        # the dead worker's hub lock expires (PORTAL_LOCK_TTL), then the sweep wakes a batch for both
        limit = app.config["PORTAL_LOCK_TTL"] + 3 * app.config["PORTAL_SWEEP_INTERVAL"] + 5
        wait_for(lambda: {load(app, i).status for i in (crashed_id, added_id)} == {Status.ACTIVE}, limit,
                 "both routers to go active")
    finally:
        survivor.terminate()
        survivor.wait(10)

    configuration = load(app, crashed_id)
    assert configuration.address == address and configuration.attempt == 2
    actions = actions_for(app, crashed_id)
    assert actions.count("configuration.provision.started") == 2
    assert actions.count("configuration.provision.succeeded") == 1
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(
            VpnConfiguration.router_id == configuration.router_id)) == 1


def test_two_workers_racing_on_one_hub_provision_each_router_once(app, admin_client):
    ids = [new_configuration_id(app, admin_client, f"raced-{n}") for n in range(3)]
    hub_id = load(app, ids[0]).hub_id
    with app.app_context():
        for _ in range(3):
            queue().enqueue(sync_hub.path, hub_id)
    racers = [worker_process("--burst") for _ in range(2)]
    for racer in racers:
        assert racer.wait(60) == 0
    for configuration_id in ids:
        configuration = load(app, configuration_id)
        assert configuration.status == Status.ACTIVE and configuration.attempt == 1
        assert actions_for(app, configuration_id).count("configuration.provision.succeeded") == 1


def test_a_worker_stops_within_seconds_even_when_its_command_listener_went_back_to_waiting(app):
    """The listener for RQ's commands reads the reply to the unsubscribe a stop sends, then waits again before
    it sees the stop: it must wake on its own soon after, or the worker takes a minute to exit."""
    worker = make_worker(app)
    worker.subscribe()
    worker.pubsub.unsubscribe()  # what a stop sends first; the listener reads the reply and waits again
    time.sleep(0.5)
    started = time.monotonic()
    worker.unsubscribe()
    assert time.monotonic() - started < 5
    assert not worker.pubsub_thread.is_alive()


def test_readiness_counts_live_heartbeats_after_a_kill_and_a_flush(app):
    with app.app_context():
        redis = redis_connection()
        time.sleep(HEARTBEAT_INTERVAL + 0.5)  # a worker another test left running beats again after the app's flush
        before = live_workers(redis)
        first, second = worker_process(), worker_process()
        try:
            wait_for(lambda: live_workers(redis) == before + 2, 20, "two heartbeats")
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            gone = wait_for(lambda: live_workers(redis) == before + 1, 10, "the killed worker to be forgotten")
            redis.flushdb()
            back = wait_for(lambda: live_workers(redis) == before + 1, 10, "the live worker to beat again")
        finally:
            for process in (first, second):
                process.kill()
                process.wait(10)
    assert gone < 10 and back < 10


def test_transient_errors_are_the_retryable_kind():
    assert issubclass(remote.HostUnreachable, TransientError)


def test_periodic_work_runs_once_per_interval_across_workers(app):
    calls = []
    task = Periodic(lambda: calls.append(threading.current_thread().name), "PORTAL_SWEEP_INTERVAL")
    with app.app_context():
        redis_connection().delete(f"portal:tick:{task.name}")
    stop = threading.Event()
    workers = [threading.Thread(target=_every, args=(app, task, stop), name=f"worker-{n}") for n in range(2)]
    for thread in workers:
        thread.start()
    time.sleep(1.5 * app.config["PORTAL_SWEEP_INTERVAL"])  # each wakes once; only one may run in the interval
    stop.set()
    for thread in workers:
        thread.join()
    assert len(calls) == 1


def test_every_worker_runs_the_sweep_monitoring_reconciliation_and_ends_support_visits():
    names = {periodic.name.rsplit(".", 2)[-2:][0] + "." + periodic.function.__name__ for periodic in worker.PERIODIC}
    assert names == {"jobs.sweep", "jobs.poll_hubs", "jobs.poll_servers", "jobs.reconcile",
                     "impersonation.end_expired", "jobs.poll_routers", "jobs.sample_fleets"}
    assert {periodic.function.__module__ for periodic in worker.PERIODIC} == {
        "portal.wireguard.jobs", "portal.openvpn.jobs", "portal.tenancy.impersonation", "portal.routeros.jobs",
        "portal.dashboard.jobs"}


def test_a_dead_redis_lock_holder_frees_the_hub_within_the_lock_ttl(app):
    with app.app_context():
        redis = Redis.from_url(app.config["PORTAL_REDIS_URL"])
        redis.set(LOCK_PREFIX + hub_lock(999_999), "dead-worker", px=int(app.config["PORTAL_LOCK_TTL"] * 1000))
        assert wait_for(lambda: not redis.exists(LOCK_PREFIX + hub_lock(999_999)), 10, "the lock to expire") <= (
            app.config["PORTAL_LOCK_TTL"] + 0.5)


def test_pages_say_so_when_no_worker_is_running(app, admin_client):
    with app.app_context():
        redis_connection().delete(HEARTBEATS)
    router_page = add_router(admin_client, "no-worker-yet").headers["Location"]
    notice = "No worker is running"
    assert notice in admin_client.get(router_page).get_data(as_text=True)
    assert notice in admin_client.get("/routers").get_data(as_text=True)
    with app.app_context():
        redis_connection().zadd(HEARTBEATS, {"a-live-worker": time.time()})
    try:
        assert notice not in admin_client.get(router_page).get_data(as_text=True)
        assert notice not in admin_client.get("/routers").get_data(as_text=True)
    finally:
        with app.app_context():
            redis_connection().zrem(HEARTBEATS, "a-live-worker")
