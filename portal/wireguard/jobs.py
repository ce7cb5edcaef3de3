"""Provisioning, revocation and reconciliation jobs for WireGuard configurations.

Each job is a fenced transition (`portal.jobs.run_transition`): it holds the configuration's Redis lock,
claims the row with a compare-and-set that bumps `attempt`, writes an intent audit row, calls the hub
driver (an "ensure" operation), then writes the outcome only if its attempt is still the current one.
Any step may run twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from portal import live
from portal.audit.service import Actor, record
from portal.extensions import db
from portal.jobs import Transition, Work, current_job_id, describe, enqueue, lock_is_held, run_transition, work_lock
from portal.remote import RemoteCommandFailed
from portal.types import utcnow
from portal.wireguard import hubs, service
from portal.wireguard.drivers import driver_for
from portal.wireguard.models import Hub, Status, VpnConfiguration
from portal.wireguard.wgtext import HubDump, Peer

log = logging.getLogger(__name__)


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


PROVISION = Transition("configuration.provision", claim_from=(Status.PENDING, Status.PROVISIONING),
                       working=Status.PROVISIONING, on_transient=Status.PENDING, on_failure=Status.FAILED)
# Revocation and rotation never give up half way: they stay in their state and retries or the reconciler
# finish them.
REVOKE = Transition("configuration.revoke", claim_from=(Status.REVOKING,), working=Status.REVOKING,
                    on_transient=Status.REVOKING, on_failure=Status.REVOKING)
ROTATE = Transition("configuration.rotate", claim_from=(Status.ROTATING,), working=Status.ROTATING,
                    on_transient=Status.ROTATING, on_failure=Status.ROTATING)


def _run(transition: Transition, configuration_id: int, prepare, complete) -> str:
    return run_transition(transition, configuration_id, lock=lock_name(configuration_id),
                          claim=service.claim, finish=service.finish, prepare=prepare, complete=complete)


def provision_configuration(configuration_id: int) -> str:
    def prepare(configuration: VpnConfiguration) -> Work:
        hub, peer = configuration.hub, hubs.configuration_peer(configuration)
        bootstrap_first = hub.managed and not configuration.subnet.on_hub

        def apply() -> None:
            if bootstrap_first:
                _bootstrap_for_new_tenant(hub.id)
            verify_applied(driver_for(hub).apply_peer(hub, peer), peer)
        return Work(apply, _detached_hub_details(hub))

    def complete(configuration_id: int, attempt: int, _result) -> VpnConfiguration | None:
        return service.finish(configuration_id, attempt, Status.PROVISIONING,
                              status=Status.ACTIVE, activated_at=utcnow(), last_error=None)
    return _run(PROVISION, configuration_id, prepare, complete)


def revoke_configuration(configuration_id: int) -> str:
    def prepare(configuration: VpnConfiguration) -> Work:
        hub = configuration.hub
        keys = [key for key in (configuration.public_key, configuration.next_public_key) if key]
        return Work(lambda: verify_removed(driver_for(hub).apply_peers(hub, remove=keys), keys),
                    _detached_hub_details(hub))

    def complete(configuration_id: int, attempt: int, _result) -> VpnConfiguration | None:
        return service.finish(configuration_id, attempt, Status.REVOKING, status=Status.REVOKED,
                              revoked_at=utcnow(), private_key=None, preshared_key=None, next_public_key=None,
                              next_private_key=None, next_preshared_key=None, last_error=None)
    return _run(REVOKE, configuration_id, prepare, complete)


def rotate_configuration(configuration_id: int) -> str:
    """Swap the peer on the hub for the one with the new keys (one `wg set`), then make the new keys current."""
    def prepare(configuration: VpnConfiguration) -> Work:
        hub, old_key, new_peer = configuration.hub, configuration.public_key, hubs.next_peer(configuration)

        def swap() -> None:
            state = driver_for(hub).apply_peers(hub, apply=[new_peer], remove=[old_key])
            verify_applied(state, new_peer)
            verify_removed(state, [old_key])
        return Work(swap, _detached_hub_details(hub))

    return _run(ROTATE, configuration_id, prepare,
                lambda configuration_id, attempt, _result: service.finish_rotation(configuration_id, attempt))


def _detached_hub_details(hub: Hub) -> dict:
    """The intent's details; the hub is detached so the side effect can use it after the intent's commit."""
    details = {"hub": hub.name, "driver": hub.driver}
    db.session.expunge(hub)
    return details


def _bootstrap_for_new_tenant(hub_id: int) -> None:
    """A tenant's first configuration on a managed hub: the hub gets its address and firewall rules first."""
    with work_lock(hub_lock(hub_id)):
        hubs.bootstrap(Actor.worker(current_job_id()), db.session.get(Hub, hub_id))
        db.session.commit()


def hub_lock(hub_id: int) -> str:
    return f"hub:{hub_id}"


def enqueue_bootstrap(hub_id: int) -> None:
    enqueue("portal.wireguard.jobs.bootstrap_hub", hub_id, description=f"bootstrap hub {hub_id}")


def bootstrap_hub(hub_id: int) -> str:
    """Bring a hub to the desired state (after a platform admin asked, or a tenant's firewall setting changed).
    A failure is audited on the hub, so its page can say why."""
    actor = Actor.worker(current_job_id())
    with work_lock(hub_lock(hub_id)):
        hub = db.session.get(Hub, hub_id)
        try:
            changes = hubs.bootstrap(actor, hub)
        except Exception as error:
            db.session.rollback()
            record("hub.bootstrap.failed", actor, tenant_id=None, target=db.session.get(Hub, hub_id),
                   details={"error": describe(error)})
            db.session.commit()
            raise
        db.session.commit()
        return "; ".join(changes)


def verify_applied(state: HubDump | None, peer: Peer) -> None:
    """The hub's own report, taken right after the change, must show the peer as wanted."""
    if state is None:  # an unmanaged hub reports nothing
        return
    seen = state.peers.get(peer.public_key)
    if seen is None or not seen.matches(peer):
        raise RemoteCommandFailed("the hub does not show the peer as applied")


def verify_removed(state: HubDump | None, public_keys: list[str]) -> None:
    if state is not None and any(key in state.peers for key in public_keys):
        raise RemoteCommandFailed("the hub still shows the peer after removing it")


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
    with work_lock(hub_lock(hub_id)):
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
            changes = hubs.record_poll(hub, dump, now, sample_every)
            _monitor_hints(changes)
            changed += len(changes)
        db.session.commit()
    hubs.thin_samples(now, timedelta(days=config["PORTAL_TRAFFIC_RETENTION_DAYS"]))
    db.session.commit()
    return f"{changed} configuration(s) changed"


def _monitor_hints(changes: list[hubs.PeerChange]) -> None:
    """One `monitor` hint per configuration whose handshake, traffic or online state changed (after commit)."""
    if not changes:
        return
    routers = dict(db.session.execute(select(VpnConfiguration.id, VpnConfiguration.router_id).where(
        VpnConfiguration.id.in_([change.configuration_id for change in changes]))).all())
    for change in changes:
        live.monitor_changed(service.KIND, change.configuration_id, change.tenant_id, change.online,
                             router_id=routers.get(change.configuration_id))
