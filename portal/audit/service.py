"""Writing, reading and verifying the audit log.

Every event is written in the caller's transaction, so it commits or rolls back with the change it
records. Each event's hash covers its fields and the previous event's hash; appending locks the head
row, so concurrent writers queue up instead of forking the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, text

from portal import live
from portal.audit.models import GENESIS_HASH, AuditEvent, AuditHead
from portal.extensions import db
from portal.live.reuse import reuse_until_news
from portal.types import utcnow

SECRET_WORDS = ("private", "preshared", "password", "secret", "token")
HEAD_ID = 1
HEAD_LOCK = "audit_head_lock"


@dataclass(frozen=True)
class Actor:
    """Who acts, as the audit log records it. Views build it from the request, jobs from the job."""

    user_id: int | None
    label: str
    impersonator_id: int | None = None
    request_id: str | None = None
    ip: str | None = None

    @classmethod
    def worker(cls, job_id: str | None) -> Actor:
        return cls(user_id=None, label="worker", request_id=job_id)

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(user_id=None, label=label)


def reject_secrets(details: Any) -> None:
    """ValueError if any key, at any depth (inside lists too), names a secret."""
    if isinstance(details, (list, tuple)):
        for item in details:
            reject_secrets(item)
        return
    if not isinstance(details, dict):
        return
    for key, value in details.items():
        if any(word in str(key).lower() for word in SECRET_WORDS):
            raise ValueError(f"audit details must not carry secrets (key {key!r})")
        reject_secrets(value)


def event_hash(event: AuditEvent) -> str:
    fields = {
        "prev": event.prev_hash,
        "at": int(event.created_at.timestamp() * 1_000_000),
        "actor_id": event.actor_id,
        "actor": event.actor_label,
        "impersonator_id": event.impersonator_id,
        "tenant_id": event.tenant_id,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "request_id": event.request_id,
        "ip": event.ip,
        "details": event.details,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def record(
    action: str,
    actor: Actor,
    *,
    tenant_id: int | None,
    target: db.Model | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the current transaction. Call it after the change it records."""
    details = details or {}
    reject_secrets(details)
    head = _locked_head()
    event = AuditEvent(
        created_at=utcnow(),
        actor_id=actor.user_id,
        actor_label=actor.label,
        impersonator_id=actor.impersonator_id,
        tenant_id=tenant_id,
        action=action,
        target_type=target.__tablename__ if target is not None else None,
        target_id=target.id if target is not None else None,
        request_id=actor.request_id,
        ip=actor.ip,
        details=details,
        prev_hash=head.last_hash,
    )
    event.hash = event_hash(event)
    db.session.add(event)
    head.last_hash = event.hash
    if tenant_id is not None:
        live.audit_recorded(tenant_id)  # one hint per tenant and transaction, after the commit
    return event


def _locked_head() -> AuditHead:
    """The head row, locked until the transaction ends (one lock per transaction, however many events).

    It is read fresh under the lock: a stale hash would fork the chain. Events get their ids when the
    session flushes, still under the lock, so id order is chain order.
    """
    session = db.session()
    held = session.info.get(HEAD_LOCK)
    if held is not None and held[0] is session.get_transaction():
        return held[1]
    head = session.execute(
        select(AuditHead).where(AuditHead.id == HEAD_ID).with_for_update().execution_options(populate_existing=True)
    ).scalar_one()
    session.info[HEAD_LOCK] = (session.get_transaction(), head)
    return head


@dataclass(frozen=True)
class VerifyResult:
    checked: int
    broken_event_id: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.broken_event_id is None and self.reason is None


def verify_chain(batch_size: int = 1000) -> VerifyResult:
    """Walk the chain in id order; report the first event whose hash or link does not hold."""
    expected_prev = GENESIS_HASH
    checked = 0
    for event in _events_in_order(batch_size):
        if event.prev_hash != expected_prev:
            return VerifyResult(checked, event.id, "its previous-hash link does not match the event before it")
        if event_hash(event) != event.hash:
            return VerifyResult(checked, event.id, "its content does not match its hash")
        expected_prev = event.hash
        checked += 1
    head = db.session.get(AuditHead, HEAD_ID)
    if head is None or head.last_hash != expected_prev:
        return VerifyResult(checked, None, "the newest events are missing (the head names a later event)")
    return VerifyResult(checked)


def _events_in_order(batch_size: int) -> Iterator[AuditEvent]:
    after = 0
    while True:
        batch = db.session.scalars(
            select(AuditEvent).where(AuditEvent.id > after).order_by(AuditEvent.id).limit(batch_size)
        ).all()
        if not batch:
            return
        yield from batch
        after = batch[-1].id
        db.session.expunge_all()


@dataclass(frozen=True)
class EventFilter:
    """Which of a tenant's events to show: all of them when nothing is set. `targets` pairs a target type
    (a table name) with ids; `since` is inclusive, `until` exclusive."""

    actor: str | None = None
    action: str | None = None
    target_type: str | None = None
    targets: tuple[tuple[str, tuple[int, ...]], ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def about(cls, rows: Sequence[db.Model]) -> EventFilter:
        """The events about these rows."""
        ids: dict[str, list[int]] = {}
        for row in rows:
            ids.setdefault(row.__tablename__, []).append(row.id)
        return cls(targets=tuple((kind, tuple(found)) for kind, found in ids.items()))


@dataclass(frozen=True)
class EventPage:
    """Newest first. The cursors are event ids: `?before=` the last one for older events, `?after=` the first
    one for newer ones, so a page stays put however many events arrive meanwhile."""

    items: list[AuditEvent]
    has_older: bool
    has_newer: bool

    @property
    def older_cursor(self) -> int | None:
        return self.items[-1].id if self.items else None

    @property
    def newer_cursor(self) -> int | None:
        return self.items[0].id if self.items else None


def events_for(tenant_id: int, *, targets: Sequence[db.Model] = (), per_page: int = 50,
               filters: EventFilter | None = None, before: int | None = None, after: int | None = None) -> EventPage:
    """A page of the tenant's events, newest first; only those about `targets` (or matching `filters`) when
    given. Never counts: each page reads at most `per_page + 1` events through an index, and one more to
    know whether there are events on the other side of the cursor."""
    filters = filters or EventFilter.about(targets)
    conditions = _conditions(tenant_id, filters)
    if conditions is None:
        return EventPage([], has_older=False, has_newer=False)
    query = select(AuditEvent).where(*conditions)
    if after is not None:
        rows = db.session.scalars(query.where(AuditEvent.id > after).order_by(AuditEvent.id).limit(per_page + 1)).all()
        items = list(reversed(rows[:per_page]))
        oldest = items[-1].id if items else after + 1
        return EventPage(items, has_older=_any(conditions, AuditEvent.id < oldest), has_newer=len(rows) > per_page)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    rows = db.session.scalars(query.order_by(AuditEvent.id.desc()).limit(per_page + 1)).all()
    items = list(rows[:per_page])
    newest = items[0].id if items else (before or 0) - 1
    has_newer = before is not None and _any(conditions, AuditEvent.id > newest)
    return EventPage(items, has_older=len(rows) > per_page, has_newer=has_newer)


def matching_events(tenant_id: int, filters: EventFilter, batch_size: int = 500) -> Iterator[list[AuditEvent]]:
    """Every event matching `filters`, oldest first, in batches (each read by keyset, then let go)."""
    conditions = _conditions(tenant_id, filters)
    if conditions is None:
        return
    after = 0
    while True:
        batch = db.session.scalars(select(AuditEvent).where(*conditions, AuditEvent.id > after)
                                   .order_by(AuditEvent.id).limit(batch_size)).all()
        if not batch:
            return
        yield list(batch)
        after = batch[-1].id
        db.session.expunge_all()


def _conditions(tenant_id: int, filters: EventFilter) -> list | None:
    """The WHERE clause of `filters`, or None when no event can match (the time range holds none)."""
    conditions = [AuditEvent.tenant_id == tenant_id]
    if filters.actor:
        conditions.append(AuditEvent.actor_label == filters.actor)
    if filters.action:
        conditions.append(AuditEvent.action == filters.action)
    if filters.target_type:
        conditions.append(AuditEvent.target_type == filters.target_type)
    if filters.targets:
        conditions.append(or_(*(and_(AuditEvent.target_type == kind, AuditEvent.target_id.in_(ids))
                                for kind, ids in filters.targets)))
    if filters.since is not None:
        first = _first_id_at(tenant_id, filters.since)
        if first is None:
            return None
        conditions += [AuditEvent.created_at >= filters.since, AuditEvent.id >= first]
    if filters.until is not None:
        beyond = _first_id_at(tenant_id, filters.until)
        conditions.append(AuditEvent.created_at < filters.until)
        if beyond is not None:
            conditions.append(AuditEvent.id < beyond)
    return conditions


def _first_id_at(tenant_id: int, moment: datetime) -> int | None:
    """The id of the tenant's first event at or after `moment`.

    Ids and times are both given under the head lock, so id order is time order, and a time range is also an
    id range: the planner then reads the range of the index it picks (by action, by actor, or all) instead of
    walking every newer event to reach an old day.
    """
    return db.session.scalar(select(AuditEvent.id).where(AuditEvent.tenant_id == tenant_id,
                                                         AuditEvent.created_at >= moment)
                             .order_by(AuditEvent.created_at, AuditEvent.id).limit(1))


def _any(conditions: list, *more) -> bool:
    return db.session.scalar(select(AuditEvent.id).where(*conditions, *more).limit(1)) is not None


def _distinct(column, tenant_id: int) -> list[str]:
    """The distinct values of an indexed (tenant_id, column, ...) column, one index seek per value (a loose
    index scan), so the list costs the same at 100 events or 100,000."""
    name = column.key
    return list(db.session.scalars(text(f"""
        WITH RECURSIVE seen(value) AS (
            SELECT min({name}) FROM audit_events WHERE tenant_id = :tenant
            UNION ALL
            SELECT (SELECT min({name}) FROM audit_events WHERE tenant_id = :tenant AND {name} > seen.value)
            FROM seen WHERE seen.value IS NOT NULL)
        SELECT value FROM seen WHERE value IS NOT NULL"""), {"tenant": tenant_id}))


def seen(tenant_id: int) -> dict[str, list[str]]:
    """The tenant's actions and actors, the filters' choices: kept until the tenant's room hears news, for at most
    `KEEP_SECONDS` (an action or actor new since shows in the lists that late at worst; filtering on it works at
    once)."""
    return reuse_until_news(tenant_id, "audit:seen", lambda: {
        "actions": _distinct(AuditEvent.action, tenant_id), "actors": _distinct(AuditEvent.actor_label, tenant_id)})
