"""Queue plumbing shared by every area: Redis connection, the enqueue helper, and the work lock.

Correctness lives in the database (status + attempt fencing); the Redis lock only keeps two workers
from doing the same work at the same time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import LockError
from rq import Queue, Retry, get_current_job
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker
from sqlalchemy import String, Text, update
from sqlalchemy.orm import Mapped, mapped_column

from portal import live
from portal.audit.service import Actor, record
from portal.extensions import db
from portal.types import UTCDateTime, utcnow

log = logging.getLogger(__name__)

ERROR_MAX = 500
REDIS_EXTENSION = "portal.redis"
LOCK_PREFIX = "portal:lock:"


class TransientError(Exception):
    """Worth retrying later: a hub unreachable, a lock held by another worker."""


class LockBusy(TransientError):
    def __init__(self, name: str):
        super().__init__(f"another worker is working on {name}")


def redis_connection() -> Redis:
    """The app's Redis client, created on first use (never at import or in create_app)."""
    client = current_app.extensions.get(REDIS_EXTENSION)
    if client is None:
        url = current_app.config["PORTAL_REDIS_URL"]
        if not url:
            raise RuntimeError("PORTAL_REDIS_URL is not set (`make run` starts an embedded Redis for you)")
        client = Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        current_app.extensions[REDIS_EXTENSION] = client
    return client


def queue() -> Queue:
    return Queue(current_app.config["PORTAL_QUEUE_NAME"], connection=redis_connection(),
                 serializer=JSONSerializer)


def enqueue(function: str, *args: int | str, description: str) -> Job:
    """Enqueue `function` (a dotted path) with JSON arguments, the job timeout and retry with backoff."""
    config = current_app.config
    intervals = config["PORTAL_JOB_RETRY_INTERVALS"]
    return queue().enqueue(
        function,
        *args,
        description=description,
        job_timeout=config["PORTAL_JOB_TIMEOUT"],
        retry=Retry(max=len(intervals), interval=intervals) if intervals else None,
        result_ttl=86400,
        failure_ttl=7 * 86400,
    )


def is_last_try() -> bool:
    """True when the running job has no retry left (or runs outside a queue, as under `flask` commands)."""
    job = get_current_job()
    return job is None or not job.retries_left


def current_job_id() -> str | None:
    job = get_current_job()
    return job.id if job is not None else None


def lock_is_held(name: str) -> bool:
    return bool(redis_connection().exists(LOCK_PREFIX + name))


@contextmanager
def work_lock(name: str) -> Iterator[None]:
    """Hold the Redis lock `name` while working, or raise LockBusy after a bounded wait.

    The TTL is longer than the job timeout, so a crashed worker's lock expires on its own; a background
    thread extends it while the work goes on.
    """
    config = current_app.config
    ttl = config["PORTAL_LOCK_TTL"]
    lock = redis_connection().lock(LOCK_PREFIX + name, timeout=ttl,
                                   blocking_timeout=config["PORTAL_LOCK_WAIT"], thread_local=False)
    if not lock.acquire():
        raise LockBusy(name)
    stop = threading.Event()
    keeper = threading.Thread(target=_keep_extending, args=(lock, ttl, stop), daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        try:
            lock.release()
        except LockError:
            log.warning("lock %s expired before release; fencing kept the database safe", name)


def _keep_extending(lock, ttl: int, stop: threading.Event) -> None:
    while not stop.wait(ttl / 3):
        try:
            lock.reacquire()
        except LockError:
            return


# An idle worker heartbeats every WORKER_TTL - 15 s; one that died unregisters WORKER_TTL + 60 s after its last
# heartbeat (RQ's default of 420 s left a killed worker "registered", and /readyz ready, for 8 minutes).
WORKER_TTL = 60


class AppWorker(SimpleWorker):
    """A non-forking RQ worker that runs each job inside its own app context.

    Not forking keeps the preloaded app: a forking worker pays 20-300 ms per job to rebuild state.
    """

    def __init__(self, queues, *, app: Flask, **kwargs):
        super().__init__(queues, serializer=JSONSerializer, worker_ttl=WORKER_TTL, **kwargs)
        self.app = app

    def execute_job(self, job: Job, queue: Queue):
        with self.app.app_context():
            return super().execute_job(job, queue)


def make_worker(app: Flask, name: str | None = None) -> AppWorker:
    with app.app_context():
        return AppWorker([queue()], app=app, connection=redis_connection(), name=name)


# Fenced state transitions ------------------------------------------------------------------------

class Lifecycle:
    """The columns of a row that jobs move through states: its status, the `attempt` fencing token, the last
    error shown to people, and when it was created, last moved, activated and revoked."""

    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempt: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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
        .values(updated_at=utcnow(), **values).execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def claim_row(model: type, row_id: int, from_states: Sequence[str], to_state: str):
    """Take the row for one attempt (its `attempt` is the new number), or None if its state forbids it."""
    return _update_returning(
        model,
        update(model).where(model.id == row_id, model.status.in_(list(from_states)))
        .values(status=to_state, attempt=model.attempt + 1, updated_at=utcnow()),
    )


def finish_row(model: type, row_id: int, attempt: int, from_state: str, **values):
    """Write the outcome of attempt `attempt`; None (and nothing written) if a later attempt took over."""
    return _update_returning(
        model,
        update(model).where(model.id == row_id, model.attempt == attempt, model.status == from_state)
        .values(updated_at=utcnow(), **values),
    )


def _update_returning(model: type, statement):
    """Run a one-row UPDATE and load the row as it now is, in one round trip."""
    return db.session.scalars(
        statement.returning(model).execution_options(synchronize_session=False, populate_existing=True)
    ).one_or_none()


@dataclass(frozen=True)
class Transition:
    """One kind of job on a fenced row: from which states it may start, the state it works in, and where a
    transient error (retry later) or any other error (give up) leaves the row."""

    action: str  # the audit action prefix, e.g. "configuration.provision"
    claim_from: tuple[str, ...]
    working: str
    on_transient: str
    on_failure: str


@dataclass(frozen=True)
class Work:
    """What a claimed job will do: the side effect (touching only detached data) and the intent's details."""

    side_effect: Callable[[], Any]
    details: dict[str, Any]


def run_transition(transition: Transition, row_id: int, *, lock: str,
                   claim: Callable[..., Fenced | None], finish: Callable[..., Fenced | None],
                   prepare: Callable[[Fenced], Work], complete: Callable[[int, int, Any], Fenced | None]) -> str:
    """Lock, claim with a compare-and-set, audit the intent, run the side effect, write the outcome if this
    attempt is still the current one. `claim` and `finish` are the area's `claim_row`/`finish_row`;
    `complete(row_id, attempt, result)` writes success.
    """
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
        _hint(transition, row, f"{transition.action}.started")
        db.session.commit()
        try:
            result = work.side_effect()
        except Exception as error:
            _record_failure(transition, actor, row_id, attempt, error, finish)
            raise
        return _record_outcome(transition, actor, complete(row_id, attempt, result),
                               f"{transition.action}.succeeded", attempt)


def _hint(transition: Transition, row: Fenced, step: str) -> None:
    """Tell the tenant's pages (after the commit) that the row moved and which step was recorded."""
    kind, refs = transition.action.partition(".")[0], {"router_id": getattr(row, "router_id", None)}
    live.status_changed(kind, row.id, row.tenant_id, row.status, **refs)
    live.job_step(kind, row.id, row.tenant_id, step, **refs)


def _record_outcome(transition: Transition, actor: Actor, row: Fenced | None, action: str, attempt: int) -> str:
    if row is None:
        db.session.rollback()
        log.info("attempt %s was superseded by a later one; wrote nothing", attempt)
        return "superseded"
    record(action, actor, tenant_id=row.tenant_id, target=row, details={"attempt": attempt})
    _hint(transition, row, action)
    status = row.status
    db.session.commit()
    return status


def _record_failure(transition: Transition, actor: Actor, row_id: int, attempt: int, error: Exception,
                    finish: Callable[..., Fenced | None]) -> None:
    """A transient error (host unreachable) leaves the row in `on_transient` for RQ's retries and, after them,
    the reconciler; any other error moves it to `on_failure`."""
    db.session.rollback()
    transient = isinstance(error, TransientError)
    message = describe(error)
    row = finish(row_id, attempt, transition.working,
                 status=transition.on_transient if transient else transition.on_failure, last_error=message)
    if row is None:
        db.session.rollback()
        return
    outcome = ("retry" if not is_last_try() else "waiting") if transient else "failed"
    record(f"{transition.action}.{outcome}", actor, tenant_id=row.tenant_id, target=row,
           details={"attempt": attempt, "error": message})
    _hint(transition, row, f"{transition.action}.{outcome}")
    db.session.commit()


def describe(error: Exception) -> str:
    """An error as one bounded line for the row's `last_error` and the audit log."""
    text = str(error) or type(error).__name__
    return text[:ERROR_MAX]
