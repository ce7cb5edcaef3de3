"""Queue plumbing shared by every area: Redis connection, the enqueue helper, and the work lock.

Correctness lives in the database (status + attempt fencing); the Redis lock only keeps two workers
from doing the same work at the same time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app
from redis import Redis
from redis.exceptions import LockError
from rq import Queue, Retry, get_current_job
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

log = logging.getLogger(__name__)

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


class AppWorker(SimpleWorker):
    """A non-forking RQ worker that runs each job inside its own app context.

    Not forking keeps the preloaded app: a forking worker pays 20-300 ms per job to rebuild state.
    """

    def __init__(self, queues, *, app: Flask, **kwargs):
        super().__init__(queues, serializer=JSONSerializer, **kwargs)
        self.app = app

    def execute_job(self, job: Job, queue: Queue):
        with self.app.app_context():
            return super().execute_job(job, queue)


def make_worker(app: Flask, name: str | None = None) -> AppWorker:
    with app.app_context():
        return AppWorker([queue()], app=app, connection=redis_connection(), name=name)
