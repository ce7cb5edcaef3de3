"""The audit log as CSV: the filtered events, oldest first, streamed in batches so an export of 100,000
events holds one batch in memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

from sqlalchemy import select

from portal.audit.models import AuditEvent
from portal.audit.service import EventFilter, matching_events
from portal.audit.targets import NO_LINKS, Target, describe
from portal.extensions import db
from portal.tenancy.models import User

COLUMNS = ("id", "time", "actor", "impersonator", "action", "target type", "target id", "target name", "details",
           "ip", "request id")
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """Text that a spreadsheet would run as a formula gets a leading quote, so it shows as text."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_lines(tenant_id: int, filters: EventFilter) -> Iterator[str]:
    """The header, then one chunk of lines per batch of events."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for batch in matching_events(tenant_id, filters):
        targets = describe(batch, tenant_id, NO_LINKS)
        staff = _emails({event.impersonator_id for event in batch if event.impersonator_id})
        for event in batch:
            row = _row(event, targets.get((event.target_type, event.target_id)), staff.get(event.impersonator_id))
            writer.writerow([safe_cell(cell) for cell in row])
        yield _drain(buffer)
    yield _drain(buffer)


def _row(event: AuditEvent, target: Target | None, impersonator: str | None) -> list[object]:
    return [event.id, event.created_at.isoformat().replace("+00:00", "Z"), event.actor_label,
            impersonator or event.impersonator_id or "", event.action, event.target_type or "", event.target_id or "",
            target.label if target else "", json.dumps(event.details, sort_keys=True, ensure_ascii=False),
            event.ip or "", event.request_id or ""]


def _emails(user_ids: set[int]) -> dict[int, str]:
    if not user_ids:
        return {}
    return dict(db.session.execute(select(User.id, User.email).where(User.id.in_(sorted(user_ids)))).all())


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
