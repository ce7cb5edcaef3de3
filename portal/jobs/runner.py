"""Fenced work on one row: lock, claim with a compare-and-set, audit the intent, run the side effect, write
the outcome only if this attempt is still the current one. A transient error leaves the row waiting with
a `retry_at` (growing delays, PORTAL_JOB_RETRY_INTERVALS) for the sweep; any other error fails it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app

from portal import live, metrics
from portal.audit.service import Actor, record
from portal.errors import TransientError, describe
from portal.extensions import db
from portal.jobs.lock import work_lock
from portal.jobs.queue import current_job_id
from portal.lifecycle import Fenced
from portal.types import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Transition:
    """One kind of job on a fenced row: from which states it may start, the state it works in, and where a
    transient error (retry later) or any other error (give up) leaves the row."""

    action: str  # the audit action prefix, e.g. "client.provision"
    claim_from: tuple[str, ...]
    working: str
    on_transient: str
    on_failure: str


@dataclass(frozen=True)
class Work:
    """What a claimed job will do: the side effect (touching only detached data) and the intent's details."""

    side_effect: Callable[[], Any]
    details: dict[str, Any]


def retry_time(attempt: int) -> datetime:
    """When a row that failed transiently on attempt `attempt` may be tried again."""
    intervals = current_app.config["PORTAL_JOB_RETRY_INTERVALS"] or [0]
    return utcnow() + timedelta(seconds=intervals[min(attempt, len(intervals)) - 1])


def run_transition(transition: Transition, row_id: int, *, lock: str,
                   claim: Callable[..., Fenced | None], finish: Callable[..., Fenced | None],
                   prepare: Callable[[Fenced], Work], complete: Callable[[int, int, Any], Fenced | None]) -> str:
    """`claim` and `finish` are the area's `claim_row`/`finish_row`; `complete(row_id, attempt, result)` writes
    success."""
    actor = Actor.worker(current_job_id())
    with work_lock(lock):
        row = claim(row_id, transition.claim_from, transition.working)
        if row is None:
            db.session.rollback()
            return "nothing to do"
        attempt = row.attempt
        work = prepare(row)
        record(f"{transition.action}.started", actor, tenant_id=row.tenant_id, target=row,
               details={"attempt": attempt, **work.details})
        hint(transition.action, row, f"{transition.action}.started")
        db.session.commit()
        try:
            result = work.side_effect()
        except Exception as error:
            return record_failure(transition, actor, row_id, attempt, error, finish)
        return _record_outcome(transition, actor, complete(row_id, attempt, result), attempt)


def hint(action: str, row: Fenced, step: str) -> None:
    """Tell the tenant's pages (after the commit) that the row moved and which step was recorded."""
    kind, refs = action.partition(".")[0], {"router_id": getattr(row, "router_id", None)}
    live.status_changed(kind, row.id, row.tenant_id, row.status, **refs)
    live.job_step(kind, row.id, row.tenant_id, step, **refs)


def _record_outcome(transition: Transition, actor: Actor, row: Fenced | None, attempt: int) -> str:
    if row is None:
        db.session.rollback()
        log.info("attempt %s was superseded by a later one; wrote nothing", attempt)
        return "superseded"
    write_success(transition, actor, row, attempt)
    status = row.status
    db.session.commit()
    return status


def record_failure(transition: Transition, actor: Actor, row_id: int, attempt: int, error: Exception,
                   finish: Callable[..., Fenced | None]) -> str:
    """`write_failure` in a transaction of its own, after the side effect's failure. Returns the outcome's name."""
    db.session.rollback()
    outcome = write_failure(transition, actor, row_id, attempt, error, finish)
    if outcome == "superseded":
        db.session.rollback()
    else:
        db.session.commit()
    return outcome


def write_failure(transition: Transition, actor: Actor, row_id: int, attempt: int, error: Exception,
                  finish: Callable[..., Fenced | None]) -> str:
    """A transient error (host unreachable) leaves the row in `on_transient`, any other in `on_failure`; a row
    left in a state that needs work waits until its `retry_at`. Audited and hinted in the caller's
    transaction; "superseded" (nothing written) if a later attempt took over."""
    transient = isinstance(error, TransientError)
    message = describe(error)
    status = transition.on_transient if transient else transition.on_failure
    row = finish(row_id, attempt, transition.working, status=status, last_error=message,
                 retry_at=retry_time(attempt))
    if row is None:
        return "superseded"
    outcome = "retry" if transient else "failed"
    metrics.count("transitions", transition.action, outcome)
    record(f"{transition.action}.{outcome}", actor, tenant_id=row.tenant_id, target=row,
           details={"attempt": attempt, "error": message})
    hint(transition.action, row, f"{transition.action}.{outcome}")
    if not transient:
        log.warning("%s of %s failed: %s", transition.action, row_id, message)
    return outcome


def write_success(transition: Transition, actor: Actor, row: Fenced, attempt: int) -> None:
    """Audit and hint a success already written to `row`, in the caller's transaction."""
    action = f"{transition.action}.succeeded"
    metrics.count("transitions", transition.action, "succeeded")
    if transition.action.endswith(".provision"):
        kind = transition.action.split(".")[0]  # configuration, client
        metrics.observe("provision_seconds", (utcnow() - row.created_at).total_seconds(), kind)
    record(action, actor, tenant_id=row.tenant_id, target=row, details={"attempt": attempt})
    hint(transition.action, row, action)
