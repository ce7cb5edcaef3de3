"""WireGuard jobs: one batch per hub for provisioning, revocation and rotation; the sweep; hub bootstrap,
reconciliation and monitoring.

`sync_hub` holds the hub's lock and works in rounds: it claims every configuration of the hub that waits
for work (one UPDATE ... RETURNING that bumps each row's `attempt`, up to PORTAL_BATCH_SIZE), audits the
intents, applies every change in one driver call (one SSH session, one `wg set`, one `wg show dump` to
verify), and writes every outcome, fenced by `attempt`, in one transaction. A peer that fails fails its
configuration, not the batch. Requests that arrive during a round are taken by the next round, so under
load a hub gets a few large batches, not a job per router. Every step is an "ensure": any may run twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from portal import live
from portal.audit.service import Actor, record
from portal.errors import describe
from portal.extensions import db
from portal.ipam.models import TenantSubnet
from portal.jobs import LockBusy, current_job_id, job, work_lock
from portal.jobs.lock import lock_is_held
from portal.jobs.runner import Transition, hint, write_failure, write_success
from portal.lifecycle import claim_due, due_scopes, finish_rows
from portal.remote import RemoteCommandFailed
from portal.types import utcnow
from portal.wireguard import hubs, service
from portal.wireguard.drivers import driver_for
from portal.wireguard.models import KIND, WITH_KEYS, Hub, Status, VpnConfiguration
from portal.wireguard.wgtext import HubDump, Peer

log = logging.getLogger(__name__)

PROVISION = Transition("configuration.provision", claim_from=(Status.PENDING, Status.PROVISIONING),
                       working=Status.PROVISIONING, on_transient=Status.PENDING, on_failure=Status.FAILED)
# Revocation and rotation never give up half way: they stay in their state, and later batches finish them.
REVOKE = Transition("configuration.revoke", claim_from=(Status.REVOKING,), working=Status.REVOKING,
                    on_transient=Status.REVOKING, on_failure=Status.REVOKING)
ROTATE = Transition("configuration.rotate", claim_from=(Status.ROTATING,), working=Status.ROTATING,
                    on_transient=Status.ROTATING, on_failure=Status.ROTATING)
TRANSITIONS = {transition.working: transition for transition in (PROVISION, REVOKE, ROTATE)}
# What a claim does to each waiting status: the state the batch works in.
CLAIM_MOVES = {state: transition.working for transition in TRANSITIONS.values() for state in transition.claim_from}
# A job that finds its hub busy leaves after this wait: the running batch looks for more work before it ends,
# and the wait covers the moment between its last (empty) claim and its release.
LOCK_WAIT = 0.25


def hub_lock(hub_id: int) -> str:
    return f"hub:{hub_id}"


# One batch per hub ------------------------------------------------------------------------------

@dataclass
class Change:
    """What one claimed configuration asks of its hub, and how to tell from the hub's dump that it happened."""

    configuration_id: int
    attempt: int
    working: str
    tenant_id: int
    apply: list[Peer] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)

    def check(self, state: HubDump | None) -> None:
        verify_applied(state, *self.apply)
        verify_removed(state, self.remove)


@job("apply waiting WireGuard changes on hub {0}", coalesce=True)
def sync_hub(hub_id: int) -> str:
    """Batches for the hub until none waits (or half the job timeout passed: then the next job goes on)."""
    try:
        with work_lock(hub_lock(hub_id), wait=LOCK_WAIT):
            return _batches(hub_id)
    except LockBusy:
        return "another worker's batch takes the rest"


def _batches(hub_id: int) -> str:
    """Rounds until none is claimed, or one only met a hub that does not answer (its rows wait for their
    `retry_at`), or half the job timeout passed (then the next job goes on).

    After a round smaller than a full batch, the next one waits PORTAL_BATCH_LINGER seconds, so that routers
    added one by one at a steady rate share rounds instead of paying a round each."""
    config = current_app.config
    deadline = time.monotonic() + config["PORTAL_JOB_TIMEOUT"] / 2
    outcomes: Counter[str] = Counter()
    while batch := run_batch(hub_id):
        outcomes.update(batch)
        if set(batch) == {"retry"}:
            break
        if time.monotonic() > deadline:
            sync_hub.wake(hub_id)
            break
        if batch.total() < config["PORTAL_BATCH_SIZE"]:
            time.sleep(config["PORTAL_BATCH_LINGER"])
    return ", ".join(f"{count} {outcome}" for outcome, count in sorted(outcomes.items())) or "nothing to do"


def run_batch(hub_id: int) -> Counter[str] | None:
    """Claim, apply and record one batch for the hub (the caller holds its lock); None when nothing waits."""
    actor = Actor.worker(current_job_id())
    rows = claim_due(VpnConfiguration, VpnConfiguration.hub_id == hub_id, CLAIM_MOVES,
                     current_app.config["PORTAL_BATCH_SIZE"], (WITH_KEYS,))  # the peers' preshared keys
    if not rows:
        db.session.rollback()
        return None
    hub = db.session.get(Hub, hub_id)
    changes = [_change(row) for row in rows]
    bootstrap_first = hub.managed and _tenant_new_on_hub(rows)
    details = {"hub": hub.name, "driver": hub.driver, "batch": len(rows)}
    for row in rows:
        action = TRANSITIONS[row.status].action
        record(f"{action}.started", actor, tenant_id=row.tenant_id, target=row,
               details={"attempt": row.attempt, **details})
        hint(action, row, f"{action}.started")
    db.session.expunge(hub)  # loaded, and kept loaded through the commit, for the side effect
    db.session.commit()
    results = _apply(actor, hub, changes, bootstrap_first)
    outcomes = _record_outcomes(actor, changes, results)
    db.session.commit()
    return outcomes


def _change(row: VpnConfiguration) -> Change:
    change = Change(row.id, row.attempt, row.status, row.tenant_id)
    if row.status == Status.PROVISIONING:
        change.apply.append(hubs.configuration_peer(row))
    elif row.status == Status.REVOKING:
        change.remove.extend(key for key in (row.public_key, row.next_public_key) if key)
    else:  # rotating: the new peer in place of the old one, in one `wg set`
        change.apply.append(hubs.next_peer(row))
        change.remove.append(row.public_key)
    return change


def _tenant_new_on_hub(rows: Sequence[VpnConfiguration]) -> bool:
    """A tenant's first configuration on a managed hub: the hub needs its address and firewall rules first."""
    subnet_ids = {row.subnet_id for row in rows if row.status == Status.PROVISIONING}
    return bool(subnet_ids) and db.session.scalar(
        select(TenantSubnet.id).where(TenantSubnet.id.in_(subnet_ids), TenantSubnet.on_hub.is_(False)).limit(1)
    ) is not None


def _apply(actor: Actor, hub: Hub, changes: list[Change], bootstrap_first: bool) -> list[Exception | None]:
    """Every change in one driver call; each change's error, or None."""
    if bootstrap_first:
        try:
            _bootstrap(actor, hub.id)
        except Exception as error:
            db.session.rollback()
            return [error] * len(changes)
    return _apply_peers(hub, changes)


def _apply_peers(hub: Hub, changes: list[Change]) -> list[Exception | None]:
    """A batch the hub refuses as a whole is tried change by change, so one bad peer fails only its own
    configuration; an unreachable hub makes every change wait for a retry."""
    try:
        state = driver_for(hub).apply_peers(hub, apply=[peer for change in changes for peer in change.apply],
                                            remove=[key for change in changes for key in change.remove])
    except RemoteCommandFailed as error:
        if len(changes) == 1:
            return [error]
        return [result for change in changes for result in _apply_peers(hub, [change])]
    except Exception as error:
        return [error] * len(changes)
    return [_checked(change, state) for change in changes]


def _checked(change: Change, state: HubDump | None) -> Exception | None:
    try:
        change.check(state)
    except RemoteCommandFailed as error:
        return error
    return None


def _bootstrap(actor: Actor, hub_id: int) -> None:
    hubs.bootstrap(actor, db.session.get(Hub, hub_id))
    db.session.commit()


def _record_outcomes(actor: Actor, changes: list[Change], results: list[Exception | None]) -> Counter[str]:
    succeeded = [change for change, error in zip(changes, results, strict=True) if error is None]
    rows = _finish_succeeded(succeeded)
    outcomes: Counter[str] = Counter()
    for change in succeeded:
        row = rows.get(change.configuration_id)
        if row is None:
            outcomes["superseded"] += 1
            continue
        write_success(TRANSITIONS[change.working], actor, row, change.attempt)
        outcomes[row.status] += 1
    for change, error in zip(changes, results, strict=True):
        if error is not None:
            outcomes[write_failure(TRANSITIONS[change.working], actor, change.configuration_id, change.attempt,
                                   error, service.finish)] += 1
    return outcomes


def _finish_succeeded(changes: list[Change]) -> dict[int, VpnConfiguration]:
    """Write every success fenced by its attempt: one UPDATE per kind of change (rotations one by one, each
    takes its own new keys). Revoked configurations free their addresses."""
    now, finished = utcnow(), []
    by_state: dict[str, dict[int, int]] = {}
    for change in changes:
        by_state.setdefault(change.working, {})[change.configuration_id] = change.attempt
    finished += finish_rows(VpnConfiguration, by_state.get(Status.PROVISIONING, {}), Status.PROVISIONING,
                            status=Status.ACTIVE, activated_at=now, last_error=None)
    finished += finish_rows(VpnConfiguration, by_state.get(Status.REVOKING, {}), Status.REVOKING,
                            status=Status.REVOKED, revoked_at=now, last_error=None, **service.REVOKED_KEYS)
    for configuration_id, attempt in by_state.get(Status.ROTATING, {}).items():
        finished.append(service.finish_rotation(configuration_id, attempt))
    rows = {row.id: row for row in finished if row is not None}
    service.release_addresses([row for row in rows.values() if row.status == Status.REVOKED])
    return rows


def verify_applied(state: HubDump | None, *peers: Peer) -> None:
    """The hub's own report, taken right after the change, must show each peer as wanted."""
    if state is None:  # an unmanaged hub reports nothing
        return
    for peer in peers:
        seen = state.peers.get(peer.public_key)
        if seen is None or not seen.matches(peer):
            raise RemoteCommandFailed("the hub does not show the peer as applied")


def verify_removed(state: HubDump | None, public_keys: Sequence[str]) -> None:
    if state is not None and any(key in state.peers for key in public_keys):
        raise RemoteCommandFailed("the hub still shows the peer after removing it")


# The sweep and reconciliation -------------------------------------------------------------------

def hubs_with_waiting_work(idle: timedelta) -> list[int]:
    """Hubs with configurations that wait for work (due, and untouched for `idle`) and whose lock no worker
    holds: their wake-up was lost, or their worker died."""
    return [hub_id for hub_id in due_scopes(VpnConfiguration, VpnConfiguration.hub_id, VpnConfiguration.IN_FLIGHT, idle)
            if not lock_is_held(hub_lock(hub_id))]


def sweep() -> list[int]:
    """Wake a batch for every hub with waiting work that no job is doing (every PORTAL_SWEEP_INTERVAL)."""
    hub_ids = hubs_with_waiting_work(timedelta(seconds=current_app.config["PORTAL_SWEEP_INTERVAL"]))
    for hub_id in hub_ids:
        sync_hub.wake(hub_id)
    return hub_ids


def reconcile(dry_run: bool = False) -> list[str]:
    """Wake the hubs whose work waits (however briefly: a person or the periodic reconciler asked), and compare
    every managed hub with the database (a job per hub; with `dry_run`, here and now). Returns what it did (or
    would do), one line per hub or repair."""
    waiting = hubs_with_waiting_work(timedelta(0))
    managed = hubs.managed_hubs()
    names = {hub.id: hub.name for hub in db.session.scalars(select(Hub).where(Hub.id.in_(waiting)))}
    lines = [f"hub {names[hub_id]}: configurations wait for work: wake its batch" for hub_id in waiting]
    if dry_run:
        return lines + [line for hub in managed for line in _dry_run_hub(hub)]
    for hub_id in waiting:
        sync_hub.wake(hub_id)
    for hub in managed:
        reconcile_hub.wake(hub.id)
    return lines + [f"hub {hub.name}: enqueue comparison" for hub in managed]


def _dry_run_hub(hub: Hub) -> list[str]:
    try:
        return [f"hub {hub.name}: {line}" for line in hubs.reconcile_hub(Actor.system("dry run"), hub, dry_run=True)]
    except Exception as error:
        return [f"hub {hub.name}: cannot compare: {describe(error)}"]


@job("compare hub {0} with the database", coalesce=True)
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


@job("bootstrap hub {0}")
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


# Monitoring ---------------------------------------------------------------------------------------

@job("poll hubs for handshakes and traffic")
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
        live.monitor_changed(KIND, change.configuration_id, change.tenant_id, change.online,
                             router_id=routers.get(change.configuration_id))
