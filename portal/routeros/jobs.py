"""Jobs that talk to routers over the RouterOS API: facts (Test connection, and the periodic poll), pushes of a
router's configuration, and key rotations that never lose the router.

A push (`RouterPush`) moves in steps, one step per job, each a fenced claim of the row (`attempt`), an intent
audit row committed before the router or the hub is touched, and an outcome written only if the attempt is still
the current one. A step whose successor is due at once wakes the next job; steps that wait (a handshake, a retry)
are found again by `sweep` (every PORTAL_SWEEP_INTERVAL). Every audit row of a push is about its router, so the
router page's job steps show them.

Push:    apply (the router's interface, address, peer and rule; RouterOS 6 refused) -> handshake (the hub must see
         the router's handshake within PORTAL_ROUTEROS_HANDSHAKE_WAIT) -> active, or failed. A hub that cannot
         report handshakes (not managed) ends at apply: "active" then means "the router holds it".
Rotate:  apply (the new private key and preshared key to the router; nothing sent and an error: the rotation is
         cancelled, keys unchanged) -> handshake (the new peer on the hub beside the old one, with the router's
         address, then its handshake) -> the old peer removed, the new keys current: active.
         No handshake in time -> rollback: the address back to the old peer, the old keys back on the router,
         then the new peer removed: failed ("back on the old keys"). A rollback that cannot reach the router keeps
         both peers and tries again (never gives up); a new handshake seen meanwhile completes the rotation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import event, or_, select, update

from portal import live
from portal.audit.service import Actor, record
from portal.errors import DomainError, TransientError, describe
from portal.extensions import db
from portal.jobs import current_job_id, job, work_lock
from portal.jobs.lock import LockBusy, lock_is_held
from portal.jobs.runner import retry_time
from portal.lifecycle import due_scopes, finish_row
from portal.routeros import service
from portal.routeros.client import Access, Facts, RouterSession, require_wireguard, wanted_state
from portal.routeros.hub import handshakes_visible, hub_state
from portal.routeros.models import IN_FLIGHT, PushKind, PushStatus, PushStep, RouterPush
from portal.types import utcnow
from portal.wireguard import hubs
from portal.wireguard import service as wireguard
from portal.wireguard.jobs import hub_lock
from portal.wireguard.models import KIND, ONLINE_WITHIN, Hub, Router, Status, VpnConfiguration
from portal.wireguard.render import PeerConfig, config_tag
from portal.wireguard.wgtext import HubDump

log = logging.getLogger(__name__)

HANDSHAKE_POLL = timedelta(seconds=2)  # a waiting push looks at the hub again after this (and the sweep's tick)
LOCK_WAIT = 0.25
WAKE_AFTER_COMMIT = "portal.routeros.wake"


def push_lock(push_id: int) -> str:
    return f"router_push:{push_id}"


# Pushes -----------------------------------------------------------------------------------------------------

@job("push to a router over the RouterOS API (push {0})", coalesce=True)
def run_push(push_id: int) -> str:
    """One step of the push; the next one is woken when it is due at once."""
    try:
        with work_lock(push_lock(push_id), wait=LOCK_WAIT):
            outcome, go_on = _step(push_id)
    except LockBusy:
        return "another worker has this push"
    if go_on:  # the next step is due now (look for the handshake, roll back); retries wait for the sweep
        run_push.wake(push_id)
    return outcome


@dataclass
class Claim:
    push: RouterPush
    attempt: int
    resumed: bool  # the step was claimed before by a worker that never finished it (it may have sent keys)
    actor: Actor
    configuration_attempt: int = 0  # rotations: the configuration's fencing token when the step began
    go_on: bool = False  # the step's successor should run at once


def _step(push_id: int) -> tuple[str, bool]:
    before = db.session.scalar(select(RouterPush.status).where(RouterPush.id == push_id))
    now = utcnow()
    push = db.session.scalars(
        update(RouterPush).where(RouterPush.id == push_id, RouterPush.status.in_(list(IN_FLIGHT)),
                                 or_(RouterPush.retry_at.is_(None), RouterPush.retry_at <= now))
        .values(status=PushStatus.WORKING, attempt=RouterPush.attempt + 1, updated_at=now, retry_at=None)
        .returning(RouterPush).execution_options(synchronize_session=False, populate_existing=True)
    ).one_or_none()
    if push is None:
        db.session.rollback()
        return "nothing to do", False
    claim = Claim(push, push.attempt, before == PushStatus.WORKING, Actor.worker(current_job_id()))
    steps: dict[tuple[str, str], Callable[[Claim], str]] = {
        (PushKind.PUSH, PushStep.APPLY): _push_apply,
        (PushKind.PUSH, PushStep.HANDSHAKE): _push_handshake,
        (PushKind.ROTATE, PushStep.APPLY): _rotate_apply,
        (PushKind.ROTATE, PushStep.HANDSHAKE): _rotate_handshake,
        (PushKind.ROTATE, PushStep.ROLLBACK): _rotate_rollback,
    }
    outcome = steps[(push.kind, push.step)](claim)
    db.session.commit()
    return outcome, claim.go_on and outcome != "superseded"


def _push_apply(claim: Claim) -> str:
    push = claim.push
    configuration = push.configuration
    if configuration.status in (Status.PENDING, Status.PROVISIONING):
        return _write(claim, PushStatus.PENDING, retry_at=retry_time(claim.attempt),
                      last_error="waiting for the hub to hold the router's peer")
    if configuration.status != Status.ACTIVE:
        return _write(claim, PushStatus.FAILED, audit="router.push.failed",
                      last_error=f"The configuration is {configuration.status}: nothing to push.")
    target = _Target.of(push)
    _intent(claim, "router.push.started", address=target.access.where)
    try:
        facts, changes, fingerprint = _apply_on_router(target.access, target.peer)
    except Exception as error:
        return _apply_failed(claim, error)
    now = utcnow()
    _remember_facts(push.router_id, facts, fingerprint, claim.actor)
    changed = "; ".join(changes)[:1000]
    if not target.handshakes_visible:
        return _write(claim, PushStatus.ACTIVE, audit="router.push.succeeded", changes=changed, keys_sent_at=now,
                      activated_at=now, last_error=None,
                      details={"changes": changes, "handshake": "not checked: the hub is not managed by the portal"})
    wait = current_app.config["PORTAL_ROUTEROS_HANDSHAKE_WAIT"]
    claim.go_on = True
    return _write(claim, PushStatus.WAITING, audit="router.push.applied", step=PushStep.HANDSHAKE, changes=changed,
                  keys_sent_at=now, handshake_by=now + timedelta(seconds=wait), retry_at=now, last_error=None,
                  details={"changes": changes, "handshake_wait_seconds": wait})


def _push_handshake(claim: Claim) -> str:
    push = claim.push
    configuration = push.configuration
    if configuration.status != Status.ACTIVE:
        return _write(claim, PushStatus.FAILED, audit="router.push.failed",
                      last_error=f"The configuration became {configuration.status} while waiting for the handshake.")
    hub, public_key = _detached_hub(configuration), configuration.public_key
    unchanged = push.changes == "unchanged"
    since = utcnow() - ONLINE_WITHIN if unchanged else push.keys_sent_at.replace(microsecond=0)
    by = push.handshake_by
    db.session.commit()
    try:
        seen = _handshake(hub_state(hub), public_key)
    except Exception as error:
        return _still_waiting(claim, by, f"cannot read the hub: {describe(error)}", "router.push.failed")
    if seen is not None and seen >= since:
        return _write(claim, PushStatus.ACTIVE, audit="router.push.succeeded", handshake_at=seen,
                      activated_at=utcnow(), last_error=None, details={"handshake_at": seen.isoformat()})
    return _still_waiting(claim, by, None, "router.push.failed")


def _still_waiting(claim: Claim, by: datetime, error: str | None, failed_action: str) -> str:
    """Wait more for the handshake, or give up (push) / roll back (rotation) once `by` has passed."""
    wait = current_app.config["PORTAL_ROUTEROS_HANDSHAKE_WAIT"]
    if utcnow() < by:  # look again soon, and once more at the deadline
        return _write(claim, PushStatus.WAITING, retry_at=min(utcnow() + HANDSHAKE_POLL, by), last_error=error)
    reason = error or (f"No handshake from the router on the hub within {wait:g} s: check that the router reaches "
                       f"the hub's endpoint over UDP.")
    if claim.push.kind == PushKind.ROTATE:
        claim.go_on = True
        return _write(claim, PushStatus.WAITING, audit="router.rotate.rollback.started", step=PushStep.ROLLBACK,
                      retry_at=utcnow(), last_error=reason, details={"reason": reason})
    return _write(claim, PushStatus.FAILED, audit=failed_action, last_error=reason)


def _rotate_apply(claim: Claim) -> str:
    push = claim.push
    configuration = _rotating(claim)
    if configuration is None:
        return _superseded(claim)
    target = _Target.of(push, new_keys=True)
    sent_before = claim.resumed or push.keys_sent_at is not None
    _hold(configuration.id)
    _intent(claim, "router.rotate.started", address=target.access.where, new_public_key=push.new_public_key)
    session = RouterSession(target.access)
    try:
        facts, changes, fingerprint = _apply_on_router(target.access, target.peer, session)
        error = None
    except Exception as failure:
        error, facts, changes, fingerprint = failure, None, [], None
    if error is not None and not (session.keys_sent or sent_before):  # nothing reached the router: keys unchanged
        _end_rotation(claim, rolled_back=False)
        return _write(claim, PushStatus.FAILED, audit="router.rotate.failed",
                      last_error=f"Keys unchanged: {describe(error)}", details={"error": describe(error)})
    if facts is not None:
        _remember_facts(push.router_id, facts, fingerprint, claim.actor)
    now = utcnow()
    wait = current_app.config["PORTAL_ROUTEROS_HANDSHAKE_WAIT"]
    details = {"changes": changes} if error is None else {
        "error": describe(error), "uncertain": "the router may hold the new keys: its handshake decides"}
    _hold(push.configuration_id)
    claim.go_on = True
    return _write(claim, PushStatus.WAITING, audit="router.rotate.pushed", step=PushStep.HANDSHAKE,
                  changes="; ".join(changes)[:1000] or None, keys_sent_at=now,
                  handshake_by=now + timedelta(seconds=wait), retry_at=now, last_error=None, details=details)


def _rotate_handshake(claim: Claim) -> str:
    configuration = _rotating(claim)
    if configuration is None:
        return _superseded(claim)
    _hold(configuration.id)
    hub, new_peer, by = _detached_hub(configuration), hubs.next_peer(configuration), claim.push.handshake_by
    db.session.commit()
    added = False
    try:
        with work_lock(hub_lock(hub.id)):
            state = hub_state(hub)
            present = state.peers.get(new_peer.public_key)
            if present is None or not present.matches(new_peer):
                # The new peer beside the old one, with the router's address (the router uses the new keys now).
                state, added = hub_state(hub, apply=[new_peer]), True
    except Exception as error:
        return _still_waiting(claim, by, f"cannot update the hub: {describe(error)}", "router.rotate.failed")
    if added:
        record("router.rotate.hub.peer_added", claim.actor, tenant_id=claim.push.tenant_id,
               target=_router(claim.push), details={"push": claim.push.id, "new_public_key": new_peer.public_key,
                                                    "old_peer": "kept until the new handshake"})
    seen = _handshake(state, new_peer.public_key)
    if seen is not None:
        return _complete_rotation(claim, hub, seen)
    return _still_waiting(claim, by, None, "router.rotate.failed")


def _complete_rotation(claim: Claim, hub: Hub, seen: datetime) -> str:
    """The router uses the new keys: drop the old peer, make the new keys current."""
    push = claim.push
    configuration = db.session.get(VpnConfiguration, push.configuration_id)
    old_public_key, new_public_key = configuration.public_key, push.new_public_key
    db.session.commit()
    try:
        with work_lock(hub_lock(hub.id)):
            hub_state(hub, remove=[old_public_key])
    except Exception as error:  # the new keys work; the old peer goes at the next try
        return _write(claim, PushStatus.WAITING, retry_at=retry_time(claim.attempt),
                      last_error=f"the new keys work; removing the old peer from the hub failed: {describe(error)}")
    finished = wireguard.finish_rotation(push.configuration_id, claim.configuration_attempt)
    if finished is None:
        return _superseded(claim)
    finished.retry_at = None  # the hold is over
    live.status_changed(KIND, finished.id, finished.tenant_id, finished.status, router_id=finished.router_id)
    return _write(claim, PushStatus.ACTIVE, audit="router.rotate.succeeded", handshake_at=seen, activated_at=utcnow(),
                  last_error=None, details={"old_public_key": old_public_key, "new_public_key": new_public_key,
                                            "handshake_at": seen.isoformat()})


def _rotate_rollback(claim: Claim) -> str:
    push = claim.push
    configuration = _rotating(claim)
    if configuration is None:
        return _superseded(claim)
    _hold(configuration.id)
    hub, old_peer, new_key = _detached_hub(configuration), hubs.configuration_peer(configuration), push.new_public_key
    target = _Target.of(push, new_keys=False)
    db.session.commit()
    try:
        with work_lock(hub_lock(hub.id)):
            state = hub_state(hub)
            seen = _handshake(state, new_key)
            if seen is None:
                hub_state(hub, apply=[old_peer])  # the address back to the old peer; the new one stays, unrouted
    except Exception as error:
        return _rollback_later(claim, f"cannot update the hub: {describe(error)}")
    if seen is not None:  # the router came through on the new keys after all
        new_peer = hubs.next_peer(db.session.get(VpnConfiguration, push.configuration_id))
        record("router.rotate.rollback.abandoned", claim.actor, tenant_id=push.tenant_id, target=_router(push),
               details={"push": push.id, "handshake_at": seen.isoformat()})
        db.session.commit()
        try:
            with work_lock(hub_lock(hub.id)):
                hub_state(hub, apply=[new_peer])
        except Exception as error:
            return _rollback_later(claim, f"cannot update the hub: {describe(error)}")
        return _complete_rotation(claim, hub, seen)
    _intent(claim, "router.rotate.rollback.router", address=target.access.where)
    try:
        facts, changes, fingerprint = _apply_on_router(target.access, target.peer)
    except Exception as error:
        return _rollback_later(claim, describe(error))
    _remember_facts(push.router_id, facts, fingerprint, claim.actor)
    try:
        with work_lock(hub_lock(hub.id)):
            hub_state(hub, remove=[new_key])
    except Exception as error:
        return _rollback_later(claim, f"the router is back on its old keys; removing the new peer from the hub "
                                      f"failed: {describe(error)}")
    reason = push.last_error or ""
    if not reason or reason.startswith("rolling back"):
        reason = "No handshake with the new keys."
    _end_rotation(claim, rolled_back=True)
    return _write(claim, PushStatus.FAILED, audit="router.rotate.rolled_back",
                  last_error=f"Key rotation failed and was rolled back: the router is back on its old keys. {reason}",
                  details={"changes": changes, "reason": reason, "abandoned_public_key": new_key})


def _rollback_later(claim: Claim, error: str) -> str:
    """The router keeps both peers on the hub (the old one routed) until the old keys are back on it."""
    return _write(claim, PushStatus.WAITING, audit="router.rotate.rollback.retry", retry_at=retry_time(claim.attempt),
                  last_error=f"rolling back to the old keys: {error} (retrying)", details={"error": error})


def _end_rotation(claim: Claim, rolled_back: bool) -> None:
    """The configuration active again on its old keys, the next ones forgotten (fenced by its attempt)."""
    ended = wireguard.finish(claim.push.configuration_id, claim.configuration_attempt, Status.ROTATING,
                             status=Status.ACTIVE, retry_at=None, last_error=None, next_public_key=None,
                             next_private_key=None, next_preshared_key=None)
    if ended is not None:
        record("configuration.rotate.cancelled", claim.actor, tenant_id=ended.tenant_id, target=ended,
               details={"push": claim.push.id, "keys": "old keys kept", "rolled_back": rolled_back})
        live.status_changed(KIND, ended.id, ended.tenant_id, ended.status, router_id=ended.router_id)


def _rotating(claim: Claim) -> VpnConfiguration | None:
    """The push's configuration, if it is still rotating to the push's new key (not revoked, not taken over)."""
    configuration = db.session.get(VpnConfiguration, claim.push.configuration_id, populate_existing=True)
    if configuration.status != Status.ROTATING or configuration.next_public_key != claim.push.new_public_key:
        return None
    claim.configuration_attempt = configuration.attempt
    return configuration


def _superseded(claim: Claim) -> str:
    configuration = db.session.get(VpnConfiguration, claim.push.configuration_id)
    return _write(claim, PushStatus.FAILED, audit="router.rotate.failed",
                  last_error=f"Stopped: the configuration is {configuration.status} now (revoked, or rotated "
                             f"another way meanwhile).")


def _hold(configuration_id: int) -> None:
    """Keep the hub's batch away from a configuration that rotates over the API (see service.ROTATION_HOLD)."""
    db.session.execute(update(VpnConfiguration).where(VpnConfiguration.id == configuration_id,
                                                      VpnConfiguration.status == Status.ROTATING)
                       .values(retry_at=utcnow() + service.ROTATION_HOLD).execution_options(synchronize_session=False))


# Pieces of the steps ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Target:
    """What a step sends to a router, read from the database before the session (no ORM use during it)."""

    access: Access
    peer: PeerConfig
    handshakes_visible: bool

    @classmethod
    def of(cls, push: RouterPush, new_keys: bool = False) -> _Target:
        configuration = push.configuration
        peer = wireguard.peer_config(configuration)
        if new_keys:
            peer = replace(peer, private_key=configuration.next_private_key,
                           preshared_key=configuration.next_preshared_key)
        return cls(service.access_for(push.router), peer, handshakes_visible(configuration.hub))


def _apply_on_router(access: Access, peer: PeerConfig,
                     session: RouterSession | None = None) -> tuple[Facts, list[str], str | None]:
    session = session or RouterSession(access)
    try:
        session.connect()
        facts = session.facts()
        require_wireguard(facts)
        changes = session.apply(wanted_state(peer, facts.version_tuple))
    finally:
        session.close()
    return facts, changes, session.seen_fingerprint


def _apply_failed(claim: Claim, error: Exception) -> str:
    transient = isinstance(error, TransientError)
    if not transient and not isinstance(error, DomainError):
        log.exception("push %s failed unexpectedly", claim.push.id)
    message = describe(error)
    if transient:
        return _write(claim, PushStatus.PENDING, audit="router.push.retry", retry_at=retry_time(claim.attempt),
                      last_error=message, details={"error": message})
    return _write(claim, PushStatus.FAILED, audit="router.push.failed", last_error=message, details={"error": message})


def _handshake(state: HubDump, public_key: str) -> datetime | None:
    seen = state.peers.get(public_key)
    return seen.latest_handshake if seen is not None else None


def _detached_hub(configuration: VpnConfiguration) -> Hub:
    """The configuration's hub, loaded and kept loaded through the next commit, for calls outside a transaction."""
    hub = configuration.hub
    db.session.refresh(hub)
    db.session.expunge(hub)
    return hub


def _router(push: RouterPush) -> Router:
    return db.session.get(Router, push.router_id)


def _intent(claim: Claim, action: str, **details) -> None:
    """The intent audit row, committed before the side effect; the session holds nothing during it."""
    push = claim.push
    record(action, claim.actor, tenant_id=push.tenant_id, target=_router(push),
           details={"push": push.id, "attempt": claim.attempt, **details})
    service.push_hint(push, action)
    db.session.commit()


def _write(claim: Claim, status: PushStatus, audit: str | None = None, details: dict | None = None, **values) -> str:
    """The step's outcome, fenced by the claim's attempt; audited about the router when `audit` names an action."""
    push = finish_row(RouterPush, claim.push.id, claim.attempt, PushStatus.WORKING, status=status, **values)
    if push is None:
        db.session.rollback()
        return "superseded"
    if audit:
        extra = {"error": push.last_error} if status == PushStatus.FAILED and "error" not in (details or {}) else {}
        record(audit, claim.actor, tenant_id=push.tenant_id, target=_router(push),
               details={"push": push.id, "attempt": claim.attempt, **extra, **(details or {})})
    service.push_hint(push, audit)
    claim.push = push
    return f"{status} ({push.step})"


# Facts --------------------------------------------------------------------------------------------------------

@job("test the RouterOS API connection of router {0}", coalesce=True)
def test_connection(router_id: int) -> str:
    """A person asked: the facts, or the error, on the router page, and in the audit log."""
    return _read_facts(router_id, audited=True)


@job("read the facts of router {0} over the RouterOS API", coalesce=True)
def read_facts(router_id: int) -> str:
    return _read_facts(router_id, audited=False)


def poll_routers() -> int:
    """Every PORTAL_ROUTER_FACTS_INTERVAL: one job per router with API access (one connection each)."""
    router_ids = service.routers_with_access()
    for router_id in router_ids:
        read_facts.wake(router_id)
    return len(router_ids)


def _read_facts(router_id: int, audited: bool) -> str:
    router = db.session.get(Router, router_id)
    if router is None or not router.has_api_access:
        db.session.rollback()
        return "no API access"
    access = service.access_for(router)
    configuration = router.current_configuration
    tag = config_tag(configuration.id) if configuration is not None else None
    db.session.commit()  # nothing held while the router answers
    session, facts, peer_state, error = RouterSession(access), None, None, None
    try:
        session.connect()
        facts = session.facts()
        require_wireguard(facts)
        peer_state = session.peer_state(tag)
    except Exception as failure:
        error = failure
        if not isinstance(failure, TransientError | DomainError):
            log.exception("reading the facts of router %s failed unexpectedly", router_id)
    finally:
        session.close()
    actor = Actor.worker(current_job_id())
    router = db.session.get(Router, router_id)
    if router is None:
        return "router gone"
    if facts is not None:
        _remember_facts(router_id, facts, session.seen_fingerprint, actor)
    router.api_peer_state = peer_state if peer_state is not None else router.api_peer_state
    router.api_checked_at, router.api_error = utcnow(), describe(error) if error is not None else None
    if audited:
        record("router.api.tested", actor, tenant_id=router.tenant_id, target=router,
               details={"address": access.where, "tls": access.tls,
                        **({"identity": facts.identity, "version": facts.version, "board": facts.board}
                           if facts is not None else {}),
                        **({"error": router.api_error} if error is not None else {})})
    live.monitor_changed("router", router.id, router.tenant_id, error is None, router_id=router.id)
    db.session.commit()
    return "ok" if error is None else f"API unreachable: {describe(error)}"


def _remember_facts(router_id: int, facts: Facts, fingerprint: str | None, actor: Actor) -> None:
    """What the router said, and its certificate pinned if none was (trust on first use, after a good login)."""
    db.session.execute(update(Router).where(Router.id == router_id).values(
        api_identity=facts.identity[:255], api_version=facts.version[:64], api_board=facts.board[:64],
        api_uptime=facts.uptime[:32], api_checked_at=utcnow(), api_error=None).execution_options(
        synchronize_session="fetch"))
    if fingerprint is None:
        return
    pinned = db.session.execute(update(Router).where(Router.id == router_id, Router.api_fingerprint.is_(None))
                                .values(api_fingerprint=fingerprint).execution_options(synchronize_session="fetch"))
    if pinned.rowcount:
        router = db.session.get(Router, router_id)
        record("router.api.certificate.pinned", actor, tenant_id=router.tenant_id, target=router,
               details={"fingerprint_sha256": fingerprint})


# The sweep ----------------------------------------------------------------------------------------------------

def sweep() -> list[int]:
    """Every PORTAL_SWEEP_INTERVAL: wake the pushes whose next step is due (a handshake to look for, a retry),
    and those whose worker died mid-step (untouched for an interval)."""
    idle = timedelta(seconds=current_app.config["PORTAL_SWEEP_INTERVAL"])
    due = set(due_scopes(RouterPush, RouterPush.id, (PushStatus.PENDING, PushStatus.WAITING), timedelta(0)))
    due |= set(due_scopes(RouterPush, RouterPush.id, (PushStatus.WORKING,), idle))
    woken = [push_id for push_id in sorted(due) if not lock_is_held(push_lock(push_id))]
    for push_id in woken:
        run_push.wake(push_id)
    return woken


def wake_after_commit(push_id: int) -> None:
    """Wake the push's job once the current transaction commits (nothing if it rolls back; the sweep would find
    it anyway): for requests made through another area's view, which wakes its own jobs only."""
    session = db.session()
    session.info.setdefault(WAKE_AFTER_COMMIT, set()).add(push_id)
    if not event.contains(db.session, "after_commit", _wake_pending):
        event.listen(db.session, "after_commit", _wake_pending)
        event.listen(db.session, "after_soft_rollback", _forget_pending)


def _wake_pending(session) -> None:
    for push_id in sorted(session.info.pop(WAKE_AFTER_COMMIT, ())):
        run_push.wake(push_id)


def _forget_pending(session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(WAKE_AFTER_COMMIT, None)
