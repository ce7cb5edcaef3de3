"""Provisioning, revocation, reconciliation and monitoring jobs for OpenVPN clients.

Each client job is a fenced transition (`portal.jobs.run_transition`): it holds the client's Redis lock,
claims the row with a compare-and-set that bumps `attempt`, writes an intent audit row, runs the server
script (an "ensure" operation), then writes the outcome only if its attempt is still the current one.
The script's exit status and error output go into the audit log; of `create`'s output only the serial
and expiry do (the rest is the client's key). Any step may run twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app

from portal.audit.service import Actor, record
from portal.extensions import db
from portal.jobs import Transition, Work, current_job_id, describe, enqueue, lock_is_held, run_transition, work_lock
from portal.openvpn import service
from portal.openvpn.driver import Created, Revoked, driver_for
from portal.openvpn.models import OpenVpnServer, Status, VpnClient
from portal.types import utcnow

log = logging.getLogger(__name__)


def lock_name(client_id: int) -> str:
    return f"vpn_client:{client_id}"


def server_lock_name(server_id: int) -> str:
    return f"openvpn_server:{server_id}"


def enqueue_provision(client_id: int) -> None:
    enqueue("portal.openvpn.jobs.provision_client", client_id, description=f"provision OpenVPN client {client_id}")


def enqueue_revoke(client_id: int) -> None:
    enqueue("portal.openvpn.jobs.revoke_client", client_id, description=f"revoke OpenVPN client {client_id}")


def enqueue_bootstrap(server_id: int) -> None:
    enqueue("portal.openvpn.jobs.bootstrap_server", server_id, description=f"bootstrap OpenVPN server {server_id}")


PROVISION = Transition("client.provision", claim_from=(Status.PENDING, Status.PROVISIONING),
                       working=Status.PROVISIONING, on_transient=Status.PENDING, on_failure=Status.FAILED)
# Revocation never gives up half way: it stays `revoking`, and retries or the reconciler finish it.
REVOKE = Transition("client.revoke", claim_from=(Status.REVOKING,), working=Status.REVOKING,
                    on_transient=Status.REVOKING, on_failure=Status.REVOKING)


def _run(transition: Transition, client_id: int, prepare, complete) -> str:
    return run_transition(transition, client_id, lock=lock_name(client_id), claim=service.claim,
                          finish=service.finish, prepare=prepare, complete=complete)


def _work(client: VpnClient, operation: str) -> Work:
    """The script call for `operation`; the server is detached so the side effect can use it after the
    intent's commit."""
    server, name = client.server, client.name
    details = {"server": server.name, "driver": server.driver, "name": name}
    db.session.expunge(server)
    return Work(lambda: getattr(driver_for(server), operation)(name), details)


def provision_client(client_id: int) -> str:
    def complete(client_id: int, attempt: int, created: Created) -> VpnClient | None:
        client = service.finish(client_id, attempt, Status.PROVISIONING, status=Status.ACTIVE,
                                activated_at=utcnow(), serial=created.serial, not_after=created.not_after,
                                bundle=created.bundle, last_error=None)
        if client is not None:
            _record_script(client, "client.provision.output", attempt, created)
        return client
    return _run(PROVISION, client_id, lambda client: _work(client, "create"), complete)


def revoke_client(client_id: int) -> str:
    def complete(client_id: int, attempt: int, revoked: Revoked) -> VpnClient | None:
        client = service.finish(client_id, attempt, Status.REVOKING, status=Status.REVOKED, revoked_at=utcnow(),
                                bundle=None, connected=False, last_error=None)
        if client is not None:
            _record_script(client, "client.revoke.output", attempt, revoked)
        return client
    return _run(REVOKE, client_id, lambda client: _work(client, "revoke"), complete)


def _record_script(client: VpnClient, action: str, attempt: int, output: Created | Revoked) -> None:
    record(action, Actor.worker(current_job_id()), tenant_id=client.tenant_id, target=client,
           details={"attempt": attempt, **output.details()})


# Reconciliation ---------------------------------------------------------------------------------

ENQUEUE_BY_STATUS = {
    Status.PENDING: ("provision", enqueue_provision),
    Status.PROVISIONING: ("provision", enqueue_provision),
    Status.REVOKING: ("revoke", enqueue_revoke),
}


@dataclass(frozen=True)
class Requeue:
    client_id: int
    status: str

    def __str__(self) -> str:
        return f"OpenVPN client {self.client_id} ({self.status}): enqueue {ENQUEUE_BY_STATUS[self.status][0]}"


def reconcile_clients(dry_run: bool = False) -> list[str]:
    """Re-enqueue every client stuck in a non-terminal state whose lock no worker holds; one line each."""
    grace = current_app.config["PORTAL_RECONCILE_GRACE"]
    requeues = [Requeue(client.id, client.status) for client in service.stuck_clients(grace)
                if not lock_is_held(lock_name(client.id))]
    if dry_run:
        return [str(requeue) for requeue in requeues]
    actor = Actor.worker(current_job_id())
    for requeue in requeues:
        ENQUEUE_BY_STATUS[requeue.status][1](requeue.client_id)
        client = db.session.get(VpnClient, requeue.client_id)
        record("client.reconcile.requeued", actor, tenant_id=client.tenant_id, target=client,
               details={"status": requeue.status})
    db.session.commit()
    return [str(requeue) for requeue in requeues]


# Servers ----------------------------------------------------------------------------------------

def bootstrap_server(server_id: int) -> str:
    """Prepare one server (see `service.bootstrap_server`); the result is kept on the server for its page."""
    actor = Actor.worker(current_job_id())
    with work_lock(server_lock_name(server_id)):
        server = db.session.get(OpenVpnServer, server_id)
        if server is None:
            return "no such server"
        try:
            changes = service.bootstrap_server(actor, server)
        except Exception:
            db.session.commit()  # the failure, on the server row and in the audit log
            raise
        db.session.commit()
        return "; ".join(changes)


def poll_servers() -> str:
    """One `ovpn-client status` per server: who is connected, from where, how many bytes. An unreachable
    server is noted on its row, not fatal."""
    now, changed = utcnow(), 0
    for server_id in [server.id for server in service.all_servers()]:
        server = db.session.get(OpenVpnServer, server_id)
        try:
            sessions = driver_for(server).status()
        except Exception as error:
            server.last_poll_error = describe(error)
            log.warning("polling OpenVPN server %s failed: %s", server.name, server.last_poll_error)
        else:
            changed += len(service.record_status_poll(server, sessions, now))
        db.session.commit()
    return f"{changed} client(s) changed"
