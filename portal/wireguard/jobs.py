"""Provisioning, revocation and reconciliation jobs for WireGuard configurations.

Each job takes an id, holds the configuration's Redis lock, claims the row with a compare-and-set
that bumps `attempt`, writes an intent audit row, calls the hub driver (an "ensure" operation), then
writes the outcome only if its attempt is still the current one. Any step may run twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app

from portal.audit.service import Actor, record
from portal.extensions import db
from portal.jobs import TransientError, current_job_id, enqueue, is_last_try, lock_is_held, work_lock
from portal.types import utcnow
from portal.wireguard import hubs, service
from portal.wireguard.drivers import HubCommandFailed, driver_for
from portal.wireguard.models import Hub, Status, VpnConfiguration
from portal.wireguard.wgtext import HubDump, Peer

log = logging.getLogger(__name__)
ERROR_MAX = 500


def lock_name(configuration_id: int) -> str:
    return f"vpn_configuration:{configuration_id}"


def enqueue_provision(configuration_id: int) -> None:
    enqueue("portal.wireguard.jobs.provision_configuration", configuration_id,
            description=f"provision WireGuard configuration {configuration_id}")


def enqueue_revoke(configuration_id: int) -> None:
    enqueue("portal.wireguard.jobs.revoke_configuration", configuration_id,
            description=f"revoke WireGuard configuration {configuration_id}")


def enqueue_rotate(configuration_id: int) -> None:
    enqueue("portal.wireguard.jobs.rotate_configuration", configuration_id,
            description=f"rotate the keys of WireGuard configuration {configuration_id}")


def provision_configuration(configuration_id: int) -> str:
    actor = Actor.worker(current_job_id())
    with work_lock(lock_name(configuration_id)):
        configuration = service.claim(configuration_id, (Status.PENDING, Status.PROVISIONING), Status.PROVISIONING)
        if configuration is None:
            db.session.rollback()
            return "nothing to do"
        attempt, hub, peer = configuration.attempt, configuration.hub, hubs.configuration_peer(configuration)
        subnet_on_hub = configuration.subnet.on_hub
        _record_step(actor, configuration, hub, "configuration.provision.started")
        db.session.commit()
        try:
            if not subnet_on_hub and hub.managed:
                _bootstrap_for_new_tenant(actor, hub.id)
            verify_applied(driver_for(hub).apply_peer(hub, peer), peer)
        except Exception as error:
            _record_failure(actor, configuration_id, attempt, Status.PROVISIONING, error,
                            retry_state=Status.PENDING, final_state=Status.FAILED, action="configuration.provision")
            raise
        done = service.finish(configuration_id, attempt, Status.PROVISIONING,
                              status=Status.ACTIVE, activated_at=utcnow(), last_error=None)
        return _record_outcome(actor, done, "configuration.provision.succeeded", attempt)


def revoke_configuration(configuration_id: int) -> str:
    actor = Actor.worker(current_job_id())
    with work_lock(lock_name(configuration_id)):
        configuration = service.claim(configuration_id, (Status.REVOKING,), Status.REVOKING)
        if configuration is None:
            db.session.rollback()
            return "nothing to do"
        attempt, hub = configuration.attempt, configuration.hub
        keys = [key for key in (configuration.public_key, configuration.next_public_key) if key]
        _record_step(actor, configuration, hub, "configuration.revoke.started")
        db.session.commit()
        try:
            verify_removed(driver_for(hub).apply_peers(hub, remove=keys), keys)
        except Exception as error:
            # Revocation never gives up: it stays `revoking` and the reconciler keeps trying.
            _record_failure(actor, configuration_id, attempt, Status.REVOKING, error,
                            retry_state=Status.REVOKING, final_state=Status.REVOKING, action="configuration.revoke")
            raise
        done = service.finish(configuration_id, attempt, Status.REVOKING, status=Status.REVOKED,
                              revoked_at=utcnow(), private_key=None, preshared_key=None, next_public_key=None,
                              next_private_key=None, next_preshared_key=None, last_error=None)
        return _record_outcome(actor, done, "configuration.revoke.succeeded", attempt)


def rotate_configuration(configuration_id: int) -> str:
    """Swap the peer on the hub for the one with the new keys (one `wg set`), then make the new keys current."""
    actor = Actor.worker(current_job_id())
    with work_lock(lock_name(configuration_id)):
        configuration = service.claim(configuration_id, (Status.ROTATING,), Status.ROTATING)
        if configuration is None:
            db.session.rollback()
            return "nothing to do"
        attempt, hub = configuration.attempt, configuration.hub
        old_key, new_peer = configuration.public_key, hubs.next_peer(configuration)
        _record_step(actor, configuration, hub, "configuration.rotate.started")
        db.session.commit()
        try:
            state = driver_for(hub).apply_peers(hub, apply=[new_peer], remove=[old_key])
            verify_applied(state, new_peer)
            verify_removed(state, [old_key])
        except Exception as error:
            # Like revocation, a rotation is finished by retries or the reconciler, never abandoned half way.
            _record_failure(actor, configuration_id, attempt, Status.ROTATING, error,
                            retry_state=Status.ROTATING, final_state=Status.ROTATING, action="configuration.rotate")
            raise
        done = service.finish_rotation(configuration_id, attempt)
        return _record_outcome(actor, done, "configuration.rotate.succeeded", attempt)


def _bootstrap_for_new_tenant(actor: Actor, hub_id: int) -> None:
    """A tenant's first configuration on a managed hub: the hub gets its address and firewall rules first."""
    with work_lock(f"hub:{hub_id}"):
        hubs.bootstrap(actor, db.session.get(Hub, hub_id))
        db.session.commit()


def verify_applied(state: HubDump | None, peer: Peer) -> None:
    """The hub's own report, taken right after the change, must show the peer as wanted."""
    if state is None:  # an unmanaged hub reports nothing
        return
    seen = state.peers.get(peer.public_key)
    if seen is None or not seen.matches(peer):
        raise HubCommandFailed("the hub does not show the peer as applied")


def verify_removed(state: HubDump | None, public_keys: list[str]) -> None:
    if state is not None and any(key in state.peers for key in public_keys):
        raise HubCommandFailed("the hub still shows the peer after removing it")


def _record_step(actor: Actor, configuration: VpnConfiguration, hub: Hub, action: str) -> None:
    """The intent row, committed before the hub is touched. The hub is detached to outlive the commit."""
    record(action, actor, tenant_id=configuration.tenant_id, target=configuration,
           details={"attempt": configuration.attempt, "hub": hub.name, "driver": hub.driver})
    db.session.expunge(hub)


def _record_outcome(actor: Actor, configuration: VpnConfiguration | None, action: str, attempt: int) -> str:
    if configuration is None:
        db.session.rollback()
        log.info("attempt %s was superseded by a later one; wrote nothing", attempt)
        return "superseded"
    record(action, actor, tenant_id=configuration.tenant_id, target=configuration, details={"attempt": attempt})
    status = configuration.status
    db.session.commit()
    return status


def _record_failure(actor: Actor, configuration_id: int, attempt: int, in_state: str, error: Exception, *,
                    retry_state: str, final_state: str, action: str) -> None:
    """A transient error (hub unreachable) leaves the row in `retry_state` for RQ's retries and, after them,
    the reconciler; any other error moves it to `final_state`."""
    db.session.rollback()
    transient = isinstance(error, TransientError)
    message = describe(error)
    configuration = service.finish(configuration_id, attempt, in_state,
                                   status=retry_state if transient else final_state, last_error=message)
    if configuration is None:
        db.session.rollback()
        return
    outcome = ("retry" if not is_last_try() else "waiting") if transient else "failed"
    record(f"{action}.{outcome}", actor, tenant_id=configuration.tenant_id,
           target=configuration, details={"attempt": attempt, "error": message})
    db.session.commit()


def describe(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text[:ERROR_MAX]


ENQUEUE_BY_STATUS = {
    Status.PENDING: ("provision", enqueue_provision),
    Status.PROVISIONING: ("provision", enqueue_provision),
    Status.REVOKING: ("revoke", enqueue_revoke),
    Status.ROTATING: ("rotate", enqueue_rotate),
}


@dataclass(frozen=True)
class Requeue:
    configuration_id: int
    status: str

    def __str__(self) -> str:
        return f"configuration {self.configuration_id} ({self.status}): enqueue {ENQUEUE_BY_STATUS[self.status][0]}"


def reconcile(dry_run: bool = False) -> list[str]:
    """Re-enqueue every configuration stuck in a non-terminal state whose lock no worker holds, and compare
    every managed hub with the database (a job per hub; with `dry_run`, here and now).

    Returns what it did (or, with `dry_run`, would do), one line per configuration or hub repair.
    """
    grace = current_app.config["PORTAL_RECONCILE_GRACE"]
    requeues = [
        Requeue(configuration.id, configuration.status)
        for configuration in service.stuck_configurations(grace)
        if not lock_is_held(lock_name(configuration.id))
    ]
    managed = hubs.managed_hubs()
    if dry_run:
        return [str(requeue) for requeue in requeues] + [line for hub in managed for line in _dry_run_hub(hub)]
    actor = Actor.worker(current_job_id())
    for requeue in requeues:
        ENQUEUE_BY_STATUS[requeue.status][1](requeue.configuration_id)
        configuration = db.session.get(VpnConfiguration, requeue.configuration_id)
        record("configuration.reconcile.requeued", actor, tenant_id=configuration.tenant_id,
               target=configuration, details={"status": requeue.status})
    db.session.commit()
    for hub in managed:
        enqueue("portal.wireguard.jobs.reconcile_hub", hub.id, description=f"compare hub {hub.name} with the database")
    return [str(requeue) for requeue in requeues] + [f"hub {hub.name}: enqueue comparison" for hub in managed]


def _dry_run_hub(hub: Hub) -> list[str]:
    try:
        return [f"hub {hub.name}: {line}" for line in hubs.reconcile_hub(Actor.system("dry run"), hub, dry_run=True)]
    except Exception as error:
        return [f"hub {hub.name}: cannot compare: {describe(error)}"]


def reconcile_hub(hub_id: int) -> str:
    """Repair one hub's drift from the database; the result is kept on the hub for its page."""
    actor = Actor.worker(current_job_id())
    with work_lock(f"hub:{hub_id}"):
        hub = db.session.get(Hub, hub_id)
        if hub is None or not hub.managed:
            return "not managed"
        try:
            lines = hubs.reconcile_hub(actor, hub)
        except Exception as error:
            db.session.rollback()
            hub = db.session.get(Hub, hub_id)
            hub.last_reconciled_at, hub.last_reconcile_result = utcnow(), f"failed: {describe(error)}"
            db.session.commit()
            raise
        db.session.commit()
        return hub.last_reconcile_result if not lines else f"{len(lines)} repair(s)"


def poll_hubs() -> str:
    """One `wg show dump` per managed hub: handshakes, endpoints, traffic. An unreachable hub is noted, not fatal."""
    config = current_app.config
    now, sample_every = utcnow(), timedelta(seconds=config["PORTAL_TRAFFIC_SAMPLE_INTERVAL"])
    changed = 0
    for hub_id in [hub.id for hub in hubs.managed_hubs()]:
        hub = db.session.get(Hub, hub_id)
        try:
            dump = driver_for(hub).dump(hub)
        except Exception as error:
            hub.last_poll_error = describe(error)
            log.warning("polling hub %s failed: %s", hub.name, hub.last_poll_error)
        else:
            changed += len(hubs.record_poll(hub, dump, now, sample_every))
        db.session.commit()
    hubs.thin_samples(now, timedelta(days=config["PORTAL_TRAFFIC_RETENTION_DAYS"]))
    db.session.commit()
    return f"{changed} configuration(s) changed"
