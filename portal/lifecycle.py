"""The columns and compare-and-set writes of rows that jobs move through states (configurations, clients).

Each row has a status and an `attempt` counter, the fencing token: a worker claims a row with one
compare-and-set that bumps `attempt`, and every later write of that worker says `AND attempt = :mine`, so a
stale worker's writes change nothing. The database, not Redis, decides who wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import ClassVar, Protocol

from sqlalchemy import String, Text, case, or_, select, tuple_, update
from sqlalchemy.orm import Mapped, mapped_column

from portal.extensions import db
from portal.types import UTCDateTime, utcnow


class Lifecycle:
    """Status, `attempt`, the last error shown to people, when a retry is due, and the life's timestamps.

    Subclasses name their states: `IN_FLIGHT` (a worker still has to move the row), `REVOCABLE`,
    `RETRYABLE` (a person may send it back to work) and `DOWNLOADABLE_STATES`.
    """

    IN_FLIGHT: ClassVar[tuple[str, ...]]
    REVOCABLE: ClassVar[tuple[str, ...]]
    RETRYABLE: ClassVar[tuple[str, ...]] = ("failed",)

    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempt: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # after a transient failure: not before then
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def in_flight(self) -> bool:
        """A worker still has to act on it (pages show progress and no downloads)."""
        return self.status in self.IN_FLIGHT

    @property
    def revocable(self) -> bool:
        return self.status in self.REVOCABLE

    @property
    def retryable(self) -> bool:
        return self.status in self.RETRYABLE

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def revoked(self) -> bool:
        return self.status == "revoked"


class Fenced(Protocol):
    """A row worked on by jobs: a status and the `attempt` counter that fences stale workers out."""

    id: int
    tenant_id: int
    status: str
    attempt: int


def compare_and_set(model: type, row_id: int, from_states: Sequence[str], **values) -> bool:
    """Change the row only if its status is one of `from_states` (a person's request: revoke, retry, rotate)."""
    result = db.session.execute(
        update(model).where(model.id == row_id, model.status.in_(list(from_states)))
        .values(updated_at=utcnow(), retry_at=None, **values).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def claim_row(model: type, row_id: int, from_states: Sequence[str], to_state: str):
    """Take the row for one attempt (its `attempt` is the new number), or None if its state forbids it."""
    return _returning(
        model,
        update(model).where(model.id == row_id, model.status.in_(list(from_states)))
        .values(status=to_state, attempt=model.attempt + 1, updated_at=utcnow(), retry_at=None),
    ).one_or_none()


def claim_due(model: type, scope, moves: dict[str, str], limit: int, options: Sequence = ()) -> list:
    """Claim up to `limit` rows in `scope` (a WHERE clause) whose status is a key of `moves` and whose retry is
    due, in id order, with one UPDATE ... RETURNING: each moves to `moves[status]` and its `attempt` goes up.
    `options` are loader options for the rows returned (deferred columns the caller reads)."""
    now = utcnow()
    due = (select(model.id).where(scope, model.status.in_(list(moves)), _retry_due(model, now))
           .order_by(model.id).limit(limit))
    return list(_returning(
        model,
        update(model).where(model.id.in_(due.scalar_subquery()), model.status.in_(list(moves)))
        .values(status=case(moves, value=model.status), attempt=model.attempt + 1, updated_at=now, retry_at=None),
        options,
    ).all())


def due_scopes(model: type, column, statuses: Sequence[str], idle_for: timedelta) -> list:
    """The distinct values of `column` (a hub, a client) among rows in `statuses` that are due and have not
    moved for `idle_for`: work that no job is doing."""
    now = utcnow()
    return list(db.session.scalars(
        select(column).where(model.status.in_(list(statuses)), _retry_due(model, now),
                             model.updated_at <= now - idle_for).distinct()
    ))


def _retry_due(model: type, now: datetime):
    return or_(model.retry_at.is_(None), model.retry_at <= now)


def finish_row(model: type, row_id: int, attempt: int, from_state: str, **values):
    """Write the outcome of attempt `attempt`; None (and nothing written) if a later attempt took over."""
    return _returning(
        model,
        update(model).where(model.id == row_id, model.attempt == attempt, model.status == from_state)
        .values(updated_at=utcnow(), **values),
    ).one_or_none()


def finish_rows(model: type, attempts: dict[int, int], from_state: str, **values) -> list:
    """`finish_row` for many rows ({id: attempt}) at once; the rows this attempt still owned, as they now are."""
    if not attempts:
        return []
    return list(_returning(
        model,
        update(model).where(tuple_(model.id, model.attempt).in_(list(attempts.items())), model.status == from_state)
        .values(updated_at=utcnow(), **values),
    ).all())


def _returning(model: type, statement, options: Sequence = ()):
    """Run an UPDATE and load the rows as they now are, in one round trip."""
    return db.session.scalars(
        statement.returning(model).options(*options)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
