"""Provisioning, revocation and reconciliation jobs for WireGuard configurations.

Each job takes an id, holds the configuration's Redis lock, claims the row with a compare-and-set
that bumps `attempt`, writes an intent audit row, calls the hub driver (an "ensure" operation), then
writes the outcome only if its attempt is still the current one. Any step may run twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app

from portal.audit.service import Actor, record
from portal.extensions import db
from portal.jobs import TransientError, current_job_id, enqueue, is_last_try, lock_is_held, work_lock
from portal.types import utcnow
from portal.wireguard import service
from portal.wireguard.drivers import Peer, driver_for
from portal.wireguard.models import Hub, Status, VpnConfiguration

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


def provision_configuration(configuration_id: int) -> str:
    actor = Actor.worker(current_job_id())
    with work_lock(lock_name(configuration_id)):
        configuration = service.claim(configuration_id, (Status.PENDING, Status.PROVISIONING), Status.PROVISIONING)
        if configuration is None:
            db.session.rollback()
            return "nothing to do"
        attempt, hub = configuration.attempt, configuration.hub
        driver = driver_for(hub)
        peer = Peer(public_key=configuration.public_key, preshared_key=configuration.preshared_key,
                    allowed_ips=(f"{configuration.address}/32",))
        _record_step(actor, configuration, hub, "configuration.provision.started")
        db.session.commit()
        try:
            driver.apply_peer(hub, peer)
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
        attempt, hub, public_key = configuration.attempt, configuration.hub, configuration.public_key
        driver = driver_for(hub)
        _record_step(actor, configuration, hub, "configuration.revoke.started")
        db.session.commit()
        try:
            driver.remove_peer(hub, public_key)
        except Exception as error:
            # Revocation never gives up: it stays `revoking` and the reconciler keeps trying.
            _record_failure(actor, configuration_id, attempt, Status.REVOKING, error,
                            retry_state=Status.REVOKING, final_state=Status.REVOKING, action="configuration.revoke")
            raise
        done = service.finish(configuration_id, attempt, Status.REVOKING, status=Status.REVOKED,
                              revoked_at=utcnow(), private_key=None, preshared_key=None, last_error=None)
        return _record_outcome(actor, done, "configuration.revoke.succeeded", attempt)


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
    db.session.rollback()
    retrying = isinstance(error, TransientError) and not is_last_try()
    message = describe(error)
    configuration = service.finish(configuration_id, attempt, in_state,
                                   status=retry_state if retrying else final_state, last_error=message)
    if configuration is None:
        db.session.rollback()
        return
    record(f"{action}.{'retry' if retrying else 'failed'}", actor, tenant_id=configuration.tenant_id,
           target=configuration, details={"attempt": attempt, "error": message})
    db.session.commit()


def describe(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text[:ERROR_MAX]


@dataclass(frozen=True)
class Requeue:
    configuration_id: int
    status: str

    def __str__(self) -> str:
        verb = "revoke" if self.status == Status.REVOKING else "provision"
        return f"configuration {self.configuration_id} ({self.status}): enqueue {verb}"


def reconcile(dry_run: bool = False) -> list[str]:
    """Re-enqueue every configuration stuck in a non-terminal state whose lock no worker holds.

    Returns what it did (or, with `dry_run`, would do), one line per configuration.
    """
    grace = current_app.config["PORTAL_RECONCILE_GRACE"]
    requeues = [
        Requeue(configuration.id, configuration.status)
        for configuration in service.stuck_configurations(grace)
        if not lock_is_held(lock_name(configuration.id))
    ]
    if dry_run:
        return [str(requeue) for requeue in requeues]
    actor = Actor.worker(current_job_id())
    for requeue in requeues:
        if requeue.status == Status.REVOKING:
            enqueue_revoke(requeue.configuration_id)
        else:
            enqueue_provision(requeue.configuration_id)
        configuration = db.session.get(VpnConfiguration, requeue.configuration_id)
        record("configuration.reconcile.requeued", actor, tenant_id=configuration.tenant_id,
               target=configuration, details={"status": requeue.status})
    db.session.commit()
    return [str(requeue) for requeue in requeues]
