"""The queue, and `job`: a decorator that makes a function something code enqueues by reference.

    @job("provision WireGuard peers on hub {0}", coalesce=True)
    def sync_hub(hub_id: int) -> str: ...

    sync_hub.wake(hub_id)     # after a commit: never raises; a lost wake-up costs one sweep interval
    sync_hub.enqueue(hub_id)  # raises if Redis is away (commands and tests that want to know)

Arguments are JSON (RQ's JSON serializer: a pickle from a queue executes code). With `coalesce`, a job that
is already waiting in the queue for the same arguments takes the new request too: the first thing the job
does is clear its key, so a request that arrives while it runs wakes the next one; a key whose job was lost
(a flushed or restarted Redis, a deleted job) wakes a new one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from rq import Queue, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from portal.redis_client import redis_connection

log = logging.getLogger(__name__)

WAITING_PREFIX = "portal:waiting:"  # + task and arguments -> the id of the job that waits for them
WAITING_TTL = 3600


def queue() -> Queue:
    return Queue(current_app.config["PORTAL_QUEUE_NAME"], connection=redis_connection(), serializer=JSONSerializer)


def current_job_id() -> str | None:
    job_ = get_current_job()
    return job_.id if job_ is not None else None


class Task:
    """A job function: call it to run it here, `enqueue` or `wake` to have a worker run it."""

    def __init__(self, function: Callable[..., Any], description: str, coalesce: bool):
        functools.update_wrapper(self, function)
        self.function, self.description, self.coalesce = function, description, coalesce
        self.path = f"{function.__module__}.{function.__qualname__}"

    def __call__(self, *args: int | str) -> Any:
        if self.coalesce and get_current_job() is not None:
            redis_connection().delete(self._waiting_key(args))
        return self.function(*args)

    def enqueue(self, *args: int | str) -> Job | None:
        """Put a job on the queue; with `coalesce`, None when one for the same arguments is already waiting."""
        if not self.coalesce:
            return self._enqueue(args)
        redis, key = redis_connection(), self._waiting_key(args)
        waiting = redis.get(key)
        if waiting is not None and _still_queued(waiting.decode()):
            return None
        job_ = self._enqueue(args)
        redis.set(key, job_.id, ex=WAITING_TTL)
        return job_

    def _enqueue(self, args: tuple) -> Job:
        return queue().enqueue(self.path, *args, description=self.description.format(*args),
                               job_timeout=current_app.config["PORTAL_JOB_TIMEOUT"],
                               result_ttl=3600, failure_ttl=7 * 86400)

    def wake(self, *args: int | str) -> bool:
        """Enqueue after a commit; a Redis failure is logged, not raised: the sweep finds the work anyway."""
        try:
            self.enqueue(*args)
        except RedisError as error:
            log.warning("could not enqueue %s%s (%s); the next sweep will pick the work up", self.path, args, error)
            return False
        return True

    def _waiting_key(self, args: tuple) -> str:
        return WAITING_PREFIX + self.path + ":" + ",".join(map(str, args))


def _still_queued(job_id: str) -> bool:
    """The job named by a coalescing key still waits in the queue (it was not lost, run or deleted)."""
    try:
        found = Job.fetch(job_id, connection=redis_connection(), serializer=JSONSerializer)
    except NoSuchJobError:
        return False
    return found.get_status(refresh=False) == JobStatus.QUEUED


def job(description: str, *, coalesce: bool = False) -> Callable[[Callable[..., Any]], Task]:
    """Make a function a `Task`; `description` is formatted with the job's arguments."""
    return lambda function: Task(function, description, coalesce)
