"""Staff looking at a tenant's pages: starting, checking on every request, and ending impersonations.

An impersonation belongs to one sign-in session of a support user or platform admin. It needs a reason, lasts
at most PORTAL_IMPERSONATION_MINUTES (enforced here on every request, and by the worker for open sockets), and
is read-only unless a support user asked for changes with a reason of their own; platform admins only look.
Start, end and every change made meanwhile are audit events in the tenant's log, carrying the staff member.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, case, func, select, update

from portal import live
from portal.audit.models import AuditEvent
from portal.audit.service import Actor, record
from portal.errors import Conflict, DomainError, FieldError
from portal.extensions import db
from portal.tenancy.models import Impersonation, Role, Tenant, User
from portal.types import utcnow

STAFF = (Role.PLATFORM_ADMIN, Role.SUPPORT)
REASON_MAX = 500
RECENT_FAILURES = timedelta(days=1)


def live_for_session(login_session_id: int | None) -> Impersonation | None:
    """The sign-in session's impersonation, if one is running; an expired one is ended here first."""
    if login_session_id is None:
        return None
    found = db.session.scalar(select(Impersonation).where(Impersonation.login_session_id == login_session_id,
                                                          Impersonation.ended_at.is_(None)))
    if found is not None and found.expires_at <= utcnow():
        _end(found, "expired", _staff_actor(found))
        db.session.commit()
        return None
    return found


def start(actor: Actor, staff: User, login_session_id: int, tenant_id: int, reason: str,
          changes_reason: str | None) -> Impersonation:
    """Start looking at `tenant_id`; the caller has checked a fresh second factor and commits."""
    if staff.role not in STAFF or not staff.active:
        raise DomainError("Only support staff and platform admins can look at a tenant.")
    if live_for_session(login_session_id) is not None:
        raise Conflict("You are already looking at a tenant. End that first.")
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise DomainError("No such tenant.")
    reason = _required_text(reason, "reason", "Say why you need to look at this tenant.")
    if changes_reason is not None:
        if staff.role != Role.SUPPORT:
            raise FieldError("allow_changes", "Platform admins look at tenants read-only.")
        changes_reason = _required_text(changes_reason, "changes_reason", "Say which changes you need to make.")
    now = utcnow()
    impersonation = Impersonation(
        staff_id=staff.id, login_session_id=login_session_id, tenant_id=tenant.id, reason=reason,
        changes_reason=changes_reason, started_at=now,
        expires_at=now + timedelta(minutes=current_app.config["PORTAL_IMPERSONATION_MINUTES"]))
    db.session.add(impersonation)
    db.session.flush()
    actor = replace(actor, label=visitor_label(staff, tenant), impersonator_id=staff.id)
    record("support.impersonation_started", actor, tenant_id=tenant.id, target=impersonation,
           details={"reason": reason, "allow_changes": changes_reason is not None, "changes_reason": changes_reason,
                    "expires_at": impersonation.expires_at.isoformat(timespec="seconds")})
    live.session_ended(login_session_id)  # the page's sockets reconnect into the tenant's room only
    return impersonation


def end(actor: Actor, impersonation: Impersonation, reason: str = "ended") -> None:
    """End it (the caller commits); its sockets are closed after the commit."""
    _end(impersonation, reason, actor)


def end_for_sessions(login_session_ids: Sequence[int], reason: str) -> None:
    """End the impersonations of sign-in sessions that were just ended (logout, deactivation, role change)."""
    if not login_session_ids:
        return
    running = db.session.scalars(select(Impersonation).where(
        Impersonation.login_session_id.in_(login_session_ids), Impersonation.ended_at.is_(None))).all()
    for impersonation in running:
        _end(impersonation, reason, _staff_actor(impersonation))


def end_expired() -> int:
    """End every impersonation past its time (the worker runs this, so open sockets close on time)."""
    expired = db.session.scalars(select(Impersonation).where(Impersonation.ended_at.is_(None),
                                                             Impersonation.expires_at <= utcnow())).all()
    for impersonation in expired:
        _end(impersonation, "expired", _staff_actor(impersonation))
    db.session.commit()
    return len(expired)


def _end(impersonation: Impersonation, reason: str, actor: Actor) -> None:
    ended = db.session.execute(update(Impersonation).where(Impersonation.id == impersonation.id,
                                                           Impersonation.ended_at.is_(None))
                               .values(ended_at=utcnow(), end_reason=reason)).rowcount
    if not ended:  # another request or the worker ended it first
        return
    db.session.refresh(impersonation)
    record("support.impersonation_ended", actor, tenant_id=impersonation.tenant_id, target=impersonation,
           details={"reason": reason, "minutes": round((impersonation.ended_at - impersonation.started_at)
                                                        .total_seconds() / 60, 1)})
    live.session_ended(impersonation.login_session_id)


def _staff_actor(impersonation: Impersonation) -> Actor:
    staff = impersonation.staff
    return Actor(user_id=staff.id, label=visitor_label(staff, impersonation.tenant), impersonator_id=staff.id)


def visitor_label(staff: User, tenant: Tenant) -> str:
    """How the audit log names a staff member acting during a visit."""
    return f"{staff.email} (support, as {tenant.name})"


def _required_text(value: str | None, field: str, message: str) -> str:
    value = (value or "").strip()
    if not value:
        raise FieldError(field, message)
    if len(value) > REASON_MAX:
        raise FieldError(field, f"Keep it under {REASON_MAX} characters (this is {len(value)}).")
    return value


@dataclass(frozen=True)
class TenantSummary:
    id: int
    name: str
    routers: int
    clients: int
    recent_failures: int


def tenant_summaries(search: str = "") -> list[TenantSummary]:
    """Every tenant (matching `search`) with its live routers and clients and failures of the last day."""
    from portal.openvpn.models import VpnClient
    from portal.wireguard.models import VpnConfiguration

    since = utcnow() - RECENT_FAILURES

    def per_tenant(model, *conditions):
        return select(model.tenant_id, func.count().label("n")).where(*conditions).group_by(model.tenant_id)

    routers = per_tenant(VpnConfiguration, VpnConfiguration.status != "revoked").subquery()
    clients = per_tenant(VpnClient, VpnClient.status != "revoked").subquery()
    failures = (per_tenant(VpnConfiguration, VpnConfiguration.status == "failed", VpnConfiguration.updated_at >= since)
                .union_all(per_tenant(VpnClient, VpnClient.status == "failed", VpnClient.updated_at >= since))
                .subquery())
    failures = select(failures.c.tenant_id, func.sum(failures.c.n).label("n")).group_by(failures.c.tenant_id).subquery()
    query = (select(Tenant.id, Tenant.name, func.coalesce(routers.c.n, 0), func.coalesce(clients.c.n, 0),
                    func.coalesce(failures.c.n, 0))
             .outerjoin(routers, routers.c.tenant_id == Tenant.id)
             .outerjoin(clients, clients.c.tenant_id == Tenant.id)
             .outerjoin(failures, failures.c.tenant_id == Tenant.id)
             .order_by(case((failures.c.n > 0, 0), else_=1), func.lower(Tenant.name)))
    if search.strip():
        query = query.where(func.lower(Tenant.name).contains(search.strip().lower(), autoescape=True))
    return [TenantSummary(*row) for row in db.session.execute(query.limit(200))]


@dataclass(frozen=True)
class Visit:
    """A support visit as the tenant sees it in its audit log."""

    impersonation: Impersonation
    changes: int


# The changes a visit made: its staff member's events in the tenant between its start and end (or now). Built
# once, its values as parameters: the statement costs more to build than to run.
_NOW = bindparam("now", type_=Impersonation.ended_at.type)
_CHANGES = (select(func.count()).where(
    AuditEvent.tenant_id == Impersonation.tenant_id, AuditEvent.impersonator_id == Impersonation.staff_id,
    AuditEvent.created_at >= Impersonation.started_at,
    AuditEvent.created_at <= func.coalesce(Impersonation.ended_at, _NOW),
    AuditEvent.action.not_in(("support.impersonation_started", "support.impersonation_ended")))
    .correlate(Impersonation).scalar_subquery())
_VISITS = (select(Impersonation, _CHANGES).where(Impersonation.tenant_id == bindparam("tenant_id"))
           .order_by(Impersonation.id.desc()).limit(bindparam("limit")))


def visits_to(tenant_id: int, limit: int = 20) -> list[Visit]:
    """The tenant's latest support visits, with how many changes each made (one query for all of them)."""
    rows = db.session.execute(_VISITS, {"tenant_id": tenant_id, "now": utcnow(), "limit": limit}).all()
    return [Visit(visit, count) for visit, count in rows]
