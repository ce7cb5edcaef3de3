"""Provisioning, revocation, reconciliation and monitoring jobs for OpenVPN clients.

Each client job is a fenced transition (`portal.jobs.runner.run_transition`): it holds the client's Redis lock,
claims the row with a compare-and-set that bumps `attempt`, writes an intent audit row, runs the server
script (an "ensure" operation), then writes the outcome only if its attempt is still the current one.
The script's exit status and error output go into the audit log; of `create`'s output only the serial
and expiry do (the rest is the client's key). Any step may run twice.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from portal.audit.service import Actor, record
from portal.errors import describe
from portal.extensions import db
from portal.jobs import current_job_id, job, work_lock
from portal.jobs.lock import lock_is_held
from portal.jobs.runner import Transition, Work, run_transition
from portal.lifecycle import due_scopes
from portal.openvpn import servers, service
from portal.openvpn.drivers import Created, Revoked, driver_for
from portal.openvpn.models import OpenVpnServer, Status, VpnClient
from portal.types import utcnow

log = logging.getLogger(__name__)


def lock_name(client_id: int) -> str:
    return f"vpn_client:{client_id}"


def server_lock_name(server_id: int) -> str:
    return f"openvpn_server:{server_id}"


PROVISION = Transition("client.provision", claim_from=(Status.PENDING, Status.PROVISIONING),
                       working=Status.PROVISIONING, on_transient=Status.PENDING, on_failure=Status.FAILED)
# Revocation never gives up half way: it stays `revoking`, and later attempts finish it.
REVOKE = Transition("client.revoke", claim_from=(Status.REVOKING,), working=Status.REVOKING,
                    on_transient=Status.REVOKING, on_failure=Status.REVOKING)


def _run(transition: Transition, client_id: int, prepare, complete) -> str:
    return run_transition(transition, client_id, lock=lock_name(client_id), claim=service.claim,
                          finish=service.finish, prepare=prepare, complete=complete)


def _work(client: VpnClient, operation: str) -> Work:
    """The script call for `operation` on the client's certificate (by its common name); the server is detached
    so the side effect can use it after the intent's commit."""
    server, common_name = client.server, client.common_name
    details = {"server": server.name, "driver": server.driver, "name": client.name, "common_name": common_name}
    db.session.expunge(server)
    return Work(lambda: getattr(driver_for(server), operation)(common_name), details)


@job("provision OpenVPN client {0}", coalesce=True)
def provision_client(client_id: int) -> str:
    def complete(client_id: int, attempt: int, created: Created) -> VpnClient | None:
        client = service.finish(client_id, attempt, Status.PROVISIONING, status=Status.ACTIVE,
                                activated_at=utcnow(), serial=created.serial, not_after=created.not_after,
                                bundle=created.bundle, last_error=None)
        if client is not None:
            _record_script(client, "client.provision.output", attempt, created)
        return client
    return _run(PROVISION, client_id, lambda client: _work(client, "create"), complete)


@job("revoke OpenVPN client {0}", coalesce=True)
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


# The sweep --------------------------------------------------------------------------------------

JOB_FOR_STATUS = {Status.PENDING: provision_client, Status.PROVISIONING: provision_client,
                  Status.REVOKING: revoke_client}


def clients_with_waiting_work(idle: timedelta) -> list[tuple[int, str]]:
    """(client id, status) of clients that wait for work (due, untouched for `idle`) and whose lock no worker
    holds: their wake-up was lost, or their worker died."""
    ids = [client_id for client_id in due_scopes(VpnClient, VpnClient.id, VpnClient.IN_FLIGHT, idle)
           if not lock_is_held(lock_name(client_id))]
    rows = db.session.execute(
        select(VpnClient.id, VpnClient.status).where(VpnClient.id.in_(ids)).order_by(VpnClient.id))
    return [(client_id, status) for client_id, status in rows]


def sweep(dry_run: bool = False, idle: timedelta | None = None) -> list[str]:
    """Wake a job for every client whose work waits (untouched for `idle`, by default a sweep interval) and
    that no job is doing; one line each."""
    if idle is None:
        idle = timedelta(seconds=current_app.config["PORTAL_SWEEP_INTERVAL"])
    lines = []
    for client_id, status in clients_with_waiting_work(idle):
        task = JOB_FOR_STATUS[status]
        lines.append(f"OpenVPN client {client_id} ({status}): enqueue {task.__name__}")
        if not dry_run:
            task.wake(client_id)
    return lines


# Servers ----------------------------------------------------------------------------------------

@job("bootstrap OpenVPN server {0}")
def bootstrap_server(server_id: int) -> str:
    """Prepare one server (see `servers.bootstrap_server`); the result is kept on the server for its page."""
    actor = Actor.worker(current_job_id())
    with work_lock(server_lock_name(server_id)):
        server = db.session.get(OpenVpnServer, server_id)
        if server is None:
            return "no such server"
        try:
            changes = servers.bootstrap_server(actor, server)
        except Exception:
            db.session.commit()  # the failure, on the server row and in the audit log
            raise
        db.session.commit()
        return "; ".join(changes)


@job("poll OpenVPN servers for sessions")
def poll_servers() -> str:
    """One `ovpn-client status` per server: who is connected, from where, how many bytes. An unreachable
    server is noted on its row, not fatal."""
    now, changed = utcnow(), 0
    for server_id in [server.id for server in servers.all_servers()]:
        server = db.session.get(OpenVpnServer, server_id)
        try:
            sessions = driver_for(server).status()
        except Exception as error:
            server.last_poll_error = describe(error)
            log.warning("polling OpenVPN server %s failed: %s", server.name, server.last_poll_error)
        else:
            changed += len(servers.record_status_poll(server, sessions, now))
        db.session.commit()
    return f"{changed} client(s) changed"
