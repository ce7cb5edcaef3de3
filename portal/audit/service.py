"""Writing and verifying the audit log.

Every event is written in the caller's transaction, so it commits or rolls back with the change it
records. Each event's hash covers its fields and the previous event's hash; appending locks the head
row, so concurrent writers queue up instead of forking the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select

from portal import live
from portal.audit.models import GENESIS_HASH, AuditEvent, AuditHead
from portal.extensions import db
from portal.pagination import paginate
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


def events_for(tenant_id: int, *, targets: Sequence[db.Model] = (), page: int = 1, per_page: int = 50):
    """A page of the tenant's events, newest first; only those about `targets` when given."""
    query = select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
    if targets:
        query = query.where(or_(*(
            and_(AuditEvent.target_type == target.__tablename__, AuditEvent.target_id == target.id)
            for target in targets
        )))
    return paginate(query.order_by(AuditEvent.id.desc()), page=page, per_page=per_page)
